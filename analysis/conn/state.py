"""Per-connection state objects: plain ``__slots__`` holders, no behaviour.

Kept apart from the logic so the memory layout is visible in one place: a tracked
connection is one :class:`Connection` plus, for TCP, two :class:`Endpoint` objects.
Everything is plain ints/floats/strs; history is a bitmask of letters already seen plus
the (short) history string itself, extended only when a new letter is earned.
"""

from __future__ import annotations

# TCP endpoint states, in Zeek's enum order (the order matters for nothing but debugging).
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)
STATE_NAMES = ("INACTIVE", "SYN_SENT", "SYN_ACK_SENT", "PARTIAL", "ESTABLISHED", "CLOSED", "RESET")

# history masks (per direction; the responder's are shifted by 16)
H_SYN, H_FIN, H_RST, H_FIN_RST, H_DATA, H_ACK, H_MULTI = 1, 2, 4, 8, 16, 32, 64
RESP_SHIFT = 16

# Connection.flags bits
F_PARTIAL = 1        # TCP: started without a clean SYN
F_SEEN_ORIG = 2      # TCP: first packet from the originator processed
F_SEEN_RESP = 4
F_WEIRD = 8          # a connection weird was raised (Zeek's DidWeird)
F_ACTIVE = 16        # TCP: Zeek's is_active (timers still meaningful)
F_REASSEMBLE = 32    # TCP: a reassembler is attached (gap accounting)
F_CLOSE_DEFERRED = 64
F_T_ATTEMPT = 128    # timer_at is the TCP attempt timer
F_T_DELETE = 256     # timer_at removes the connection (close / reset delay)
F_T_RESET = 512      # with F_T_DELETE: it is Zeek's ResetTimer (raises connection_reset when it fires)
F_T_PARTIAL = 1024   # timer_at is Zeek's PartialCloseTimer (raises connection_partial_close)
F_DEFER_GEN = 2048   # Zeek's deferred_gen_event: a deferred close owes connection_finished
F_T_SESSION = 4096   # timer_at is an analyzer's session expiry tick (DNS over UDP); timeout its interval


class Endpoint:
    """One direction of a TCP connection (Zeek's TCP_Endpoint + its reassembler's bookkeeping)."""

    __slots__ = (
        "state", "prev_state", "start_seq", "last_seq", "ack_seq", "seq_wraps", "ack_wraps",
        "fin_seq", "did_close", "h_syn", "h_fin", "h_rst",
        "reassem_seq", "trim_seq", "blocks", "skip", "did_eof",
    )

    def __init__(self) -> None:
        self.state = INACTIVE
        self.prev_state = INACTIVE
        self.start_seq = 0
        self.last_seq = 0
        self.ack_seq = 0
        self.seq_wraps = 0
        self.ack_wraps = 0
        self.fin_seq = None      # relative seq after the (last) FIN; None: no FIN seen
        self.did_close = False
        self.h_syn = 0
        self.h_fin = 0
        self.h_rst = 0
        self.reassem_seq = 1     # relative: the first data byte after the SYN
        self.trim_seq = 1
        self.blocks = None       # list[[seq, upper]] of data above a hole, or None
        self.skip = False
        self.did_eof = False


_INF = float("inf")

TRANSPORT = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}

_SHARED_INTS: dict[int, int] = {}


def shared_int(v: int) -> int:
    """One shared object per value for per-connection bit sets (history masks take few values;
    each private int would cost 28 bytes per connection)."""
    got = _SHARED_INTS.get(v)
    if got is None:
        if len(_SHARED_INTS) < 65536:
            _SHARED_INTS[v] = v
        return v
    return got


class Connection:
    """One tracked connection.  ``analyzer`` is the slot protocol analyzers attach to (in practice
    :class:`analysis.dpd.ConnAnalyzers`): when set, the table calls ``analyzer(is_orig, seq,
    payload, ts)`` for every packet carrying payload (``seq`` relative, -1 for UDP), and
    ``analyzer.ack(is_orig, up_to, ts)`` when the peer acknowledges above a hole,
    ``analyzer.eof(is_orig, ts)`` when a side's FIN/RST is reached, ``analyzer.done(ts)`` on removal."""

    __slots__ = (
        "key", "uid", "proto", "orig_h", "orig_p", "resp_h", "resp_p",
        "start", "last", "timeout", "timer_at",
        "history", "hist_seen", "flags",
        "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
        "orig_size", "resp_size", "o", "r", "missed",
        "tun", "ext", "scaled", "analyzer", "service",
    )

    @property
    def transport(self) -> str:
        """conn.log's ``proto`` (derived: one slot less per connection)."""
        return TRANSPORT.get(self.proto, "unknown_transport")

    def __init__(self) -> None:
        self.history = ""
        self.hist_seen = 0
        self.flags = 0
        self.orig_pkts = 0
        self.orig_ip_bytes = 0
        self.resp_pkts = 0
        self.resp_ip_bytes = 0
        self.orig_size = -1
        self.resp_size = -1
        self.o = None
        self.r = None
        self.missed = 0
        self.timer_at = _INF     # one shared float: a private inf costs 24 bytes per connection
        self.uid = None          # made on first use (see ConnTable.uid_of): most never need one early
        self.tun = None          # [encap key, tunnel parent uids] for tunnelled connections
        self.ext = None          # (orig_mac, resp_mac, vlan, inner_vlan) when conn.log extensions want them
        self.scaled = None       # {code: [count, threshold]} for C/T/W/G (both sides), made on first use
        self.analyzer = None
        self.service = None      # list of conn.log service names in confirmation order, made on first use

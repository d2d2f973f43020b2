"""DHCP analyzer and dhcp.log, with Zeek 9 semantics (``base/protocols/dhcp/main.zeek``).

* :func:`parse_message` is the sans-I/O parser: one BOOTP/DHCP datagram in, one immutable
  :class:`DHCPMessage` (Zeek's ``DHCP::Msg`` plus the ``DHCP::Options`` dhcp.log uses) out, or a
  :class:`Malformed` with the reason.  Options are walked with a bounded loop over the datagram.
* dhcp.log is not per connection: Zeek joins every message with the same transaction id (xid),
  whichever connection carried it (client broadcasts, server unicasts and broadcasts are
  separate "connections"), into one row.  :class:`DHCPAggregator` is that join table
  (``DHCP::join_data``): a row is written when ``DHCP::max_uids_per_log_entry`` or
  ``DHCP::max_msg_types_per_log_entry`` is reached, or when the entry expires in network time
  (created 10 s ago and quiet for 5 s, or watched longer than ``DHCP::max_txid_watch_time``),
  or when the last DHCP connection ends (Zeek writes the rest at ``zeek_done``).
  One aggregator is shared by all DHCP analyzers of an engine (see :func:`_aggregator_for`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from analysis.logs.schema import (
    Addr, Interval, LogRecord, String, Time, log_stream, set_of, vector_of,
)
from analysis.protocols._datagram import Malformed, accept
from analysis.protocols.base import Analyzer, AnalyzerSpec, register

MAGIC_COOKIE = b"\x63\x82\x53\x63"
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s")   # op .. chaddr (44 bytes)
MIN_LEN = 240                                    # fixed part + sname + file + cookie

MESSAGE_TYPES = {
    1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK", 7: "RELEASE", 8: "INFORM",
    9: "FORCERENEW", 10: "LEASEQUERY", 11: "LEASEUNASSIGNED", 12: "LEASEUNKNOWN", 13: "LEASEACTIVE",
    14: "BULKLEASEQUERY", 15: "LEASEQUERYDONE", 16: "ACTIVELEASEQUERY", 17: "LEASEQUERYSTATUS", 18: "TLS",
}

#: a cap on the join table (Zeek has none; a flood of distinct xids must not grow memory unbounded)
MAX_JOIN_ENTRIES = 65536


def message_type_name(n: int) -> str:
    return MESSAGE_TYPES.get(n) or f"unknown-message-type-{n}"


def fmt_mac(b: bytes) -> str:
    """Zeek's fmt_mac: EUI-48 when 6 bytes (or bytes 6-7 are zero), EUI-64 for 8+, else empty."""
    n = len(b)
    if n < 8 and n != 6:
        return ""
    if n == 6 or (b[6] == 0 and b[7] == 0):
        return ":".join(f"{x:02x}" for x in b[:6])
    return ":".join(f"{x:02x}" for x in b[:8])


def _ip4(b: bytes) -> str:
    return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}"


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


# -- parser events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DHCPMessage:
    """Zeek's ``DHCP::Msg`` and the options dhcp.log reads (None = option absent)."""

    op: int
    m_type: int
    xid: int
    secs: int
    flags: int
    ciaddr: str
    yiaddr: str
    siaddr: str
    giaddr: str
    chaddr: str
    host_name: str | None = None
    domain_name: str | None = None
    addr_request: str | None = None
    lease: float | None = None
    message: str | None = None
    client_id: tuple[int, str] | None = None     # (hwtype, hwaddr)
    client_fqdn: str | None = None
    param_list: tuple[int, ...] | None = None
    serv_addr: str | None = None


def _fqdn_name(data: bytes, wire: bool) -> str:
    """Option 81's domain name: DNS wire labels when the E flag is set, else plain text."""
    if not wire:
        return _text(data)
    labels = []
    pos = 0
    n = len(data)
    while pos < n:
        ln = data[pos]
        pos += 1
        if ln == 0 or ln > 63 or pos + ln > n:
            break
        labels.append(data[pos:pos + ln])
        pos += ln
    return _text(b".".join(labels))


def parse_message(data: bytes) -> DHCPMessage | Malformed:
    """Parse one BOOTP/DHCP datagram."""
    if len(data) < MIN_LEN:
        return Malformed("DHCP message too short")
    op, htype, hlen, _hops, xid, secs, flags, ci, yi, si, gi, ch = _FIXED.unpack_from(data, 0)
    if op not in (1, 2):
        return Malformed(f"Unknown DHCP message op code ({op})")
    if data[236:240] != MAGIC_COOKIE:
        return Malformed("DHCP magic cookie missing")
    opts: dict = {}
    m_type = 0
    pos = 240
    n = len(data)
    while pos < n:          # each step consumes >= 1 byte: bounded by the datagram size
        code = data[pos]
        pos += 1
        if code == 0:
            continue        # pad
        if code == 255:
            break           # end
        if pos >= n:
            break
        ln = data[pos]
        pos += 1
        val = data[pos:pos + ln]
        pos += ln
        if len(val) < ln:
            return Malformed("DHCP option runs past the end of the message")
        if code == 53 and ln >= 1:
            m_type = val[0]
        elif code == 12:
            opts["host_name"] = _text(val)
        elif code == 15:
            opts["domain_name"] = _text(val)
        elif code == 50 and ln == 4:
            opts["addr_request"] = _ip4(val)
        elif code == 51 and ln == 4:
            opts["lease"] = float(struct.unpack("!I", val)[0])
        elif code == 56:
            opts["message"] = _text(val)
        elif code == 61 and ln >= 1:
            opts["client_id"] = (val[0], fmt_mac(val[1:]))
        elif code == 81 and ln >= 3:
            opts["client_fqdn"] = _fqdn_name(val[3:], bool(val[0] & 0x04))
        elif code == 55:
            opts["param_list"] = tuple(val)
        elif code == 54 and ln == 4:
            opts["serv_addr"] = _ip4(val)
    return DHCPMessage(op, m_type, xid, secs, flags, _ip4(ci), _ip4(yi), _ip4(si), _ip4(gi),
                       fmt_mac(ch), **opts)


# -- the log record ------------------------------------------------------------------------------


@log_stream("dhcp")
class DHCPInfo(LogRecord, kw_only=True):
    ts: Time
    uids: set_of("string")
    client_addr: Addr | None = None
    server_addr: Addr | None = None
    mac: String | None = None
    host_name: String | None = None
    client_fqdn: String | None = None
    domain: String | None = None
    requested_addr: Addr | None = None
    assigned_addr: Addr | None = None
    lease_time: Interval | None = None
    client_message: String | None = None
    server_message: String | None = None
    msg_types: vector_of("string")
    duration: Interval = 0.0


@dataclass(slots=True)
class DHCPOptions:
    max_txid_watch_time: float = field(default=30.0, metadata={"zeek": "DHCP::max_txid_watch_time"})
    max_uids_per_log_entry: int = field(default=10, metadata={"zeek": "DHCP::max_uids_per_log_entry"})
    max_msg_types_per_log_entry: int = field(default=50, metadata={"zeek": "DHCP::max_msg_types_per_log_entry"})
    # the engine-wide join table, made by the first analyzer that needs it (not a Zeek option)
    join_table: "DHCPAggregator | None" = field(default=None, compare=False, repr=False)


_DEFAULTS = DHCPOptions()


class _Entry:
    """One DHCP::Info being joined (plus Zeek's bookkeeping fields)."""

    __slots__ = ("ts", "uids", "client_addr", "server_addr", "mac", "host_name", "client_fqdn", "domain",
                 "requested_addr", "assigned_addr", "lease_time", "client_message", "server_message",
                 "msg_types", "duration", "client_chaddr", "last", "check_at")

    def __init__(self, ts: float) -> None:
        self.ts = ts
        self.uids: list[str] = []
        self.client_addr = self.server_addr = self.mac = self.host_name = self.client_fqdn = None
        self.domain = self.requested_addr = self.assigned_addr = self.lease_time = None
        self.client_message = self.server_message = self.client_chaddr = None
        self.msg_types: list[str] = []
        self.duration = 0.0
        self.last = ts
        self.check_at = ts + 10.0     # &create_expire=10secs

    def record(self) -> DHCPInfo:
        mac = self.mac if self.mac is not None else self.client_chaddr
        return DHCPInfo(ts=self.ts, uids=list(self.uids), client_addr=self.client_addr,
                        server_addr=self.server_addr, mac=mac, host_name=self.host_name,
                        client_fqdn=self.client_fqdn, domain=self.domain, requested_addr=self.requested_addr,
                        assigned_addr=self.assigned_addr, lease_time=self.lease_time,
                        client_message=self.client_message, server_message=self.server_message,
                        msg_types=list(self.msg_types), duration=self.duration)


class DHCPAggregator:
    """Zeek's ``DHCP::join_data``: one entry per xid across connections, in network time."""

    def __init__(self, options: DHCPOptions | None = None) -> None:
        self.opts = options or _DEFAULTS
        self.join: dict[int, _Entry] = {}
        self.live = 0               # DHCP analyzers attached and not done
        self._next_check = float("inf")

    def expire(self, now: float, write, terminating: bool = False) -> None:
        """Run Zeek's join_data_expiration for entries due at ``now`` (all when terminating)."""
        if not terminating and now < self._next_check:
            return
        nxt = float("inf")
        watch = self.opts.max_txid_watch_time
        for xid, e in list(self.join.items()):
            if terminating or e.check_at <= now:
                if terminating or now - e.last > 5.0 or now - e.ts > watch:
                    write(e.record())
                    del self.join[xid]
                    continue
                e.check_at = now + 5.0
            if e.check_at < nxt:
                nxt = e.check_at
        self._next_check = nxt

    def add(self, ts: float, conn, uid: str, is_orig: bool, msg: DHCPMessage, write) -> None:
        """Zeek's DHCP::aggregate_msgs handlers for one message."""
        self.expire(ts, write)
        e = self.join.get(msg.xid)
        if e is None:
            if len(self.join) >= MAX_JOIN_ENTRIES:
                old_xid = next(iter(self.join))
                write(self.join.pop(old_xid).record())
            e = self.join[msg.xid] = _Entry(ts)
            e.uids.append(uid)
            self._next_check = min(self._next_check, e.check_at)
        e.duration = ts - e.ts
        if uid not in e.uids:
            e.uids.append(uid)
        e.msg_types.append(message_type_name(msg.m_type))
        oh, op, rh, rp = conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p
        is_client = is_orig and (oh == "0.0.0.0" or op == 68 or rp == 67)
        if msg.message is not None:
            if is_client:
                e.client_message = msg.message
            else:
                e.server_message = msg.message
        e.last = ts
        if is_client:
            if oh != "0.0.0.0" and oh != "255.255.255.255":
                e.client_addr = oh
            if msg.host_name is not None:
                e.host_name = msg.host_name
            if msg.client_fqdn is not None:
                e.client_fqdn = msg.client_fqdn
            if msg.client_id is not None and msg.client_id[0] == 1:
                e.mac = msg.client_id[1]
            else:
                e.client_chaddr = msg.chaddr
            if msg.addr_request is not None:
                e.requested_addr = msg.addr_request
        else:
            if msg.yiaddr != "0.0.0.0":
                e.server_addr = oh if is_orig else rh
            if msg.chaddr != "" and e.mac is None:
                e.mac = msg.chaddr
            if msg.yiaddr != "0.0.0.0":
                e.assigned_addr = msg.yiaddr
            if e.client_addr is None and e.assigned_addr is not None:
                e.client_addr = e.assigned_addr
            if msg.domain_name is not None:
                e.domain = msg.domain_name
            if msg.lease is not None:
                e.lease_time = msg.lease
        if len(e.uids) >= self.opts.max_uids_per_log_entry or \
                len(e.msg_types) >= self.opts.max_msg_types_per_log_entry:
            write(e.record())
            del self.join[msg.xid]


def _aggregator_for(ctx) -> DHCPAggregator:
    """The engine-wide join table.

    Preferred: ``ctx.shared`` (one object per analyzer type per engine, when the engine offers
    it).  Otherwise it lives on the options object, which the engine creates once per run.
    """
    shared = getattr(ctx, "shared", None)
    if isinstance(shared, DHCPAggregator):
        return shared
    opts = getattr(ctx, "options", None)
    if not isinstance(opts, DHCPOptions):
        return DHCPAggregator()
    if opts.join_table is None:
        opts.join_table = DHCPAggregator(opts)
    return opts.join_table


class DHCPAnalyzer(Analyzer):
    """One per DHCP "connection"; feeds the shared join table."""

    def __init__(self, ctx, aggregator: DHCPAggregator | None = None) -> None:
        super().__init__(ctx)
        self.agg = aggregator if aggregator is not None else _aggregator_for(ctx)
        self.agg.live += 1
        self.confirmed = False
        self.finished = False
        self._write = self._write_row

    def _write_row(self, rec: DHCPInfo) -> None:
        self.ctx.write_log("dhcp", rec)

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        msg = parse_message(payload)
        ctx = self.ctx
        if not accept(self, msg):
            return
        ctx.event("dhcp_message", is_orig, msg)
        self.agg.add(ts, ctx.conn, ctx.conn.uid, is_orig, msg, self._write)

    def done(self, ts: float) -> None:
        if self.finished:
            return
        self.finished = True
        agg = self.agg
        agg.live -= 1
        # the last DHCP connection gone: whatever is left would expire before any new message
        agg.expire(ts, self._write, terminating=agg.live <= 0)


SPEC = register(AnalyzerSpec(
    name="dhcp",
    factory=DHCPAnalyzer,
    transports=frozenset(("udp",)),
    ports=frozenset(((67, "udp"), (68, "udp"), (4011, "udp"))),
    zeek_scripts=("base/protocols/dhcp",),
    logs=("dhcp",),
    options=DHCPOptions,
    events=("dhcp_message",),
))

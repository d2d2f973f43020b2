"""The decoded packet: the one contract between the decoder and the connection table.

The decoder (``analysis/decode``) turns raw link-layer bytes into ``Packet`` objects; the
connection table (``analysis/conn``) consumes them.  Nothing else crosses that line, so the
two halves can be optimised and tested alone.  ``__slots__`` keeps it cheap: one object per
packet (plus one per tunnel layer) is the whole allocation budget of the hot path.
"""

from __future__ import annotations

# IP protocol numbers the connection table distinguishes.
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMP6 = 58

# TCP flag bits as in the header.
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PUSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20


class Encap:
    """One tunnel layer a packet arrived through (outermost first in ``Packet.encap``).

    ``tunnel_type`` is Zeek's enum text without the module (``"GRE"``, ``"IP"``, ``"VXLAN"``,
    ``"GENEVE"``, ``"TEREDO"``, ``"AYIYA"``, ``"GTPv1"``, ...).  The addresses/ports are those of the
    outer header that carried it; ``proto`` is the outer transport (17 for UDP tunnels, else the
    IP protocol of the outer header).  The connection table turns each layer into a tunnel
    parent uid and a tunnel.log row.
    """

    __slots__ = ("tunnel_type", "src", "dst", "sport", "dport", "proto")

    def __init__(self, tunnel_type: str, src: str, dst: str, sport: int, dport: int, proto: int) -> None:
        self.tunnel_type = tunnel_type
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.proto = proto

    def key(self) -> tuple:
        return (self.tunnel_type, self.src, self.dst, self.sport, self.dport, self.proto)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Encap({self.tunnel_type} {self.src}:{self.sport}->{self.dst}:{self.dport}/{self.proto})"


class Packet:
    """One IP packet as the connection table needs it.

    Addresses are text (``"10.0.0.1"``, ``"2001:db8::1"``): that is what every log writes, the
    decoder caches the conversion, and string keys hash fast.  Ports for ICMP follow Zeek:
    ``sport`` is the ICMP type and ``dport`` the code (the connection table maps them to Zeek's
    orig/resp ports).  ``payload`` is the transport payload actually captured (may be shorter
    than ``payload_len`` when the snaplen cut it).
    """

    __slots__ = (
        "ts",            # float seconds (network time)
        "ip_version",    # 4 or 6
        "src", "dst",    # str
        "proto",         # int IP protocol of the transport (after extension headers)
        "sport", "dport",  # int (ICMP: type, code)
        "ip_len",        # int: IP total length from the header (what Zeek counts as ip_bytes)
        "payload_len",   # int: transport payload length per the headers (not the caplen)
        "payload",       # bytes | memoryview: captured transport payload
        "tcp_flags", "seq", "ack", "win",  # int, TCP only (0 otherwise)
        "ttl",           # int TTL / hop limit
        "src_mac", "dst_mac",  # str | None ("00:11:22:33:44:55") when the link layer had them
        "vlan", "inner_vlan",  # int | None
        "encap",         # tuple[Encap, ...] outermost first; () when not tunnelled
        "bad_checksum",  # bool: transport checksum verified and wrong (decoder decides whether to drop)
        "wire_len",      # int: length of the whole frame on the wire
    )

    def __init__(self) -> None:
        self.ts = 0.0
        self.ip_version = 4
        self.src = ""
        self.dst = ""
        self.proto = 0
        self.sport = 0
        self.dport = 0
        self.ip_len = 0
        self.payload_len = 0
        self.payload = b""
        self.tcp_flags = 0
        self.seq = 0
        self.ack = 0
        self.win = 0
        self.ttl = 0
        self.src_mac = None
        self.dst_mac = None
        self.vlan = None
        self.inner_vlan = None
        self.encap = ()
        self.bad_checksum = False
        self.wire_len = 0

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (f"Packet({self.ts:.6f} {self.src}:{self.sport}->{self.dst}:{self.dport} "
                f"proto={self.proto} len={self.ip_len} flags={self.tcp_flags:#x} encap={self.encap})")

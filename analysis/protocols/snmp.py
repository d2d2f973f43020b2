"""SNMP (v1, v2c, v3) over UDP: message parsing, confirmation/violation and Zeek's events.

Zeek's ``base/protocols/snmp`` analyzer turns every datagram into one ``snmp_*`` event per PDU,
decoding each variable binding's OID with ``asn1_oid_to_val``; an overlong OID subidentifier is
a *network* weird (``asn_oid_subidentifier_too_long``, addl = its byte length, no connection
columns).  The responder's first well-formed message confirms the protocol; a message that does
not parse is a violation.  snmp.log is ``main.zeek``'s: one row per connection, written at its end.
"""

from __future__ import annotations

from dataclasses import dataclass

from analysis.logs.schema import ConnIdRecord, Count, Interval, String, Time, log_stream
from analysis.protocols.asn1 import ASN1Error, TLV, children, oid_to_str, read_tlv, to_int, to_uint
from analysis.protocols.base import Analyzer, AnalyzerSpec, register

#: Resource cap: variable bindings decoded per PDU.
MAX_BINDINGS = 1024

# PDU tag -> Zeek event name
PDU_EVENTS = {
    0xA0: "snmp_get_request", 0xA1: "snmp_get_next_request", 0xA2: "snmp_response",
    0xA3: "snmp_set_request", 0xA4: "snmp_trap", 0xA5: "snmp_get_bulk_request",
    0xA6: "snmp_inform_request", 0xA7: "snmp_trapV2", 0xA8: "snmp_report",
}


@dataclass(frozen=True, slots=True)
class Header:
    version: int                     # 0 = v1, 1 = v2c, 3 = v3 (the wire value)
    community: bytes | None = None   # v1/v2c
    msg_id: int | None = None        # v3
    flags: int | None = None         # v3: auth 1, priv 2, reportable 4


@dataclass(frozen=True, slots=True)
class Binding:
    oid: str
    tag: int                         # the value's ASN.1 tag (SNMP::ObjectValue$tag)
    value: bytes                     # raw value content


@dataclass(frozen=True, slots=True)
class PDU:
    tag: int
    request_id: int
    error_status: int                # bulk: non_repeaters
    error_index: int                 # bulk: max_repetitions
    bindings: tuple[Binding, ...]
    enterprise: str | None = None    # v1 trap only


@dataclass(frozen=True, slots=True)
class Message:
    """One parsed datagram.  ``pdu`` is None for an encrypted (v3 privacy) or unknown PDU;
    ``overlong_oids`` lists the byte lengths of overlong OID subidentifiers met while decoding."""

    header: Header
    pdu: PDU | None
    encrypted: bool
    overlong_oids: tuple[int, ...]
    unknown_tag: int | None = None   # tag of an unknown PDU


def _oid(buf: bytes, t: TLV, overlong: list[int]) -> str:
    s, bad = oid_to_str(buf[t.start:t.end])
    if bad:
        overlong.append(bad)
    return s


def _bindings(buf: bytes, t: TLV, overlong: list[int]) -> tuple[Binding, ...]:
    out = []
    for vb in children(buf, t.start, t.end, MAX_BINDINGS):
        parts = children(buf, vb.start, vb.end, 2)
        if len(parts) != 2 or parts[0].tag != 0x06:
            raise ASN1Error("bad variable binding")
        name, val = parts
        out.append(Binding(_oid(buf, name, overlong), val.tag, buf[val.start:val.end]))
    return tuple(out)


def _pdu(buf: bytes, t: TLV, overlong: list[int]) -> PDU:
    if t.tag == 0xA4:      # v1 trap: enterprise, agent-addr, generic, specific, time-stamp, bindings
        f = children(buf, t.start, t.end, 6)
        if len(f) != 6 or f[0].tag != 0x06:
            raise ASN1Error("bad trap PDU")
        ent = _oid(buf, f[0], overlong)
        return PDU(t.tag, 0, to_int(buf, f[2]), to_int(buf, f[3]), _bindings(buf, f[5], overlong), ent)
    f = children(buf, t.start, t.end, 4)
    if len(f) != 4 or f[3].tag != 0x30:
        raise ASN1Error("bad PDU")
    return PDU(t.tag, to_int(buf, f[0]), to_int(buf, f[1]), to_int(buf, f[2]), _bindings(buf, f[3], overlong))


def parse_message(buf: bytes) -> Message:
    """Parse one SNMP datagram; raises :class:`ASN1Error` when it is not SNMP."""
    top = read_tlv(buf, 0, len(buf))
    if top.tag != 0x30:
        raise ASN1Error("not an SNMP message")
    f = children(buf, top.start, top.end, 4)
    if len(f) < 3 or f[0].tag != 0x02:
        raise ASN1Error("bad SNMP message")
    version = to_uint(buf, f[0])
    overlong: list[int] = []
    if version in (0, 1):
        if f[1].tag != 0x04 or len(f) != 3:
            raise ASN1Error("bad community")
        hdr = Header(version, community=buf[f[1].start:f[1].end])
        pdu_t = f[2]
        if pdu_t.tag not in PDU_EVENTS:
            return Message(hdr, None, False, (), pdu_t.tag)
        return Message(hdr, _pdu(buf, pdu_t, overlong), False, tuple(overlong))
    if version == 3:
        if len(f) != 4 or f[1].tag != 0x30:
            raise ASN1Error("bad SNMPv3 message")
        g = children(buf, f[1].start, f[1].end, 4)
        if len(g) != 4:
            raise ASN1Error("bad SNMPv3 header")
        flags = buf[g[2].start] if g[2].end > g[2].start else 0
        hdr = Header(3, msg_id=to_uint(buf, g[0]), flags=flags)
        scoped = f[3]
        if scoped.tag == 0x04:           # encryptedPDU
            return Message(hdr, None, True, ())
        s = children(buf, scoped.start, scoped.end, 3)
        if len(s) != 3 or s[2].tag not in PDU_EVENTS:
            return Message(hdr, None, False, (), s[-1].tag if s else None)
        return Message(hdr, _pdu(buf, s[2], overlong), False, tuple(overlong))
    raise ASN1Error(f"unknown SNMP version {version}")


VERSIONS = {0: "1", 1: "2c", 3: "3"}
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
_UNSIGNED_TAGS = frozenset({0x41, 0x42, 0x43, 0x46})    # Counter32, Gauge32, TimeTicks, Counter64
_COUNTED = {"snmp_get_request": "get_requests", "snmp_get_next_request": "get_requests",
            "snmp_get_bulk_request": "get_bulk_requests", "snmp_response": "get_responses",
            "snmp_set_request": "set_requests"}


@log_stream("snmp")
class SNMPInfo(ConnIdRecord, kw_only=True):
    duration: Interval = 0.0
    version: String
    community: String | None = None
    get_requests: Count = 0
    get_bulk_requests: Count = 0
    get_responses: Count = 0
    set_requests: Count = 0
    display_string: String | None = None
    up_since: Time | None = None


class SNMPAnalyzer(Analyzer):
    """One per UDP flow: each datagram is one message; ``info`` is main.zeek's ``c$snmp``."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.confirmed = False
        self.info: SNMPInfo | None = None

    def _state(self, h: Header, ts: float) -> SNMPInfo:
        s = self.info
        if s is None:
            c = self.ctx.conn
            s = self.info = SNMPInfo(ts=ts, uid=c.uid, orig_h=c.orig_h, orig_p=c.orig_p, resp_h=c.resp_h,
                                     resp_p=c.resp_p, version=VERSIONS.get(h.version, "unknown"))
        if s.community is None and h.community is not None:
            s.community = h.community.decode("utf-8", "surrogateescape")
        s.duration = ts - s.ts
        return s

    def _log(self, name: str, msg: Message, ts: float) -> None:
        s = self._state(msg.header, ts)
        pdu = msg.pdu
        if pdu is None or name not in _COUNTED:
            return
        attr = _COUNTED[name]
        setattr(s, attr, getattr(s, attr) + len(pdu.bindings))
        if name == "snmp_response":
            for b in pdu.bindings:
                if b.oid == SYS_DESCR and b.tag == 0x04:
                    s.display_string = b.value.decode("utf-8", "surrogateescape")
                elif b.oid == SYS_UPTIME and b.tag in _UNSIGNED_TAGS:
                    s.up_since = ts - int.from_bytes(b.value[-8:], "big") / 100.0

    def done(self, ts: float) -> None:
        if self.info is not None:
            self.ctx.write_log("snmp", self.info)
            self.info = None

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        ctx = self.ctx
        try:
            msg = parse_message(bytes(payload))
        except ASN1Error as e:
            ctx.violation(f"SNMP: {e}")
            return
        if msg.overlong_oids:
            # Zeek reports this one without a connection (reporter->Weird); a context without
            # ``net_weird`` gets it as a connection weird rather than losing it.
            net = getattr(ctx, "net_weird", None)
            for n in msg.overlong_oids:
                if net is not None:
                    net("asn_oid_subidentifier_too_long", str(n), "")
                else:
                    ctx.weird("asn_oid_subidentifier_too_long", str(n), source="")
        if not is_orig and not self.confirmed:
            self.confirmed = True
            ctx.confirm()
        if msg.encrypted:
            name = "snmp_encrypted_pdu"
            ctx.event(name, is_orig, msg.header)
        elif msg.pdu is None:
            name = "snmp_unknown_pdu"
            ctx.event(name, is_orig, msg.header, msg.unknown_tag)
        else:
            name = PDU_EVENTS[msg.pdu.tag]
            ctx.event(name, is_orig, msg.header, msg.pdu)
        self._log(name, msg, ts)


SPEC = register(AnalyzerSpec(
    name="snmp",
    factory=SNMPAnalyzer,
    transports=frozenset({"udp"}),
    ports=frozenset({(161, "udp"), (162, "udp")}),
    zeek_scripts=("base/protocols/snmp",),
    logs=("snmp",),
    events=tuple(PDU_EVENTS.values()) + ("snmp_unknown_pdu", "snmp_encrypted_pdu"),
))

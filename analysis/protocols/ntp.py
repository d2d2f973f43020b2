"""NTP analyzer: protocol confirmation (conn.log ``service`` ``ntp``) and ntp.log per Zeek 9.

:func:`parse_message` is the sans-I/O parser (one datagram -> :class:`NTPMessage` or
:class:`Malformed`).  Zeek logs standard messages (modes 1-5) one row each; control (mode 6)
and private (mode 7) messages confirm the protocol but are not logged in ntp.log.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from analysis.logs.schema import ConnIdRecord, Count, Interval, String, Time, log_stream
from analysis.protocols._datagram import Malformed, accept
from analysis.protocols.base import Analyzer, AnalyzerSpec, register

_STD = struct.Struct("!BBbbhhhh4sQQQQ")   # flags, stratum, poll, precision, delay, disp, refid, 4 stamps
NTP_EPOCH_OFFSET = 2208988800               # 1900-01-01 -> 1970-01-01
MAC_MAX = 24                                # key id + (MD5 | SHA1) digest; smaller tails are a MAC


@dataclass(frozen=True, slots=True)
class StandardMessage:
    """Zeek's ``NTP::StandardMessage`` (times already converted to epoch seconds)."""

    stratum: int
    poll: float
    precision: float
    root_delay: float
    root_disp: float
    ref_id: str          # kiss code (stratum 0), reference id (1) or IPv4 text (>= 2)
    ref_time: float
    org_time: float
    rec_time: float
    xmt_time: float
    num_exts: int


@dataclass(frozen=True, slots=True)
class NTPMessage:
    version: int
    mode: int
    std_msg: StandardMessage | None = None


def _ntp_time(v: int) -> float:
    if v == 0:
        return 0.0
    return (v >> 32) - NTP_EPOCH_OFFSET + (v & 0xFFFFFFFF) / 4294967296.0


def _short(sec: int, frac: int) -> float:
    """NTP short format: Zeek reads both halves as signed 16-bit numbers (seconds + frac / 2**16)."""
    return sec + frac / 65536.0


def _count_extensions(data: bytes, pos: int) -> int:
    """RFC 7822 extension fields after the 48-byte header (a trailing MAC is not one)."""
    n = 0
    end = len(data)
    while end - pos > MAC_MAX:
        ln = struct.unpack_from("!H", data, pos + 2)[0]
        if ln < 16 or ln % 4 or pos + ln > end:
            break
        pos += ln
        n += 1
    return n


def parse_message(data: bytes) -> NTPMessage | Malformed:
    """Parse one datagram the way Zeek's binpac grammar accepts it (no version check, as Zeek)."""
    n = len(data)
    if n < 1:
        return Malformed("empty NTP message")
    first = data[0]
    version = (first >> 3) & 0x7
    mode = first & 0x7
    if mode == 6:
        if n < 12 or 12 + struct.unpack_from("!H", data, 10)[0] > n:
            return Malformed("NTP control message too short")
        return NTPMessage(version, mode)
    if mode == 7:
        return NTPMessage(version, mode) if n >= 8 else Malformed("NTP mode 7 message too short")
    if mode == 0:
        return NTPMessage(version, mode)        # reserved mode: Zeek keeps the rest as opaque bytes
    if n < 48:
        return Malformed("NTP message too short")
    _, stratum, poll, prec, dsec, dfrac, psec, pfrac, refid, ref, org, rec, xmt = _STD.unpack_from(data, 0)
    if stratum >= 2:
        ref_id = f"{refid[0]}.{refid[1]}.{refid[2]}.{refid[3]}"
    else:
        ref_id = refid.decode("utf-8", "surrogateescape")
    std = StandardMessage(stratum, 2.0 ** poll, 2.0 ** prec, _short(dsec, dfrac), _short(psec, pfrac), ref_id,
                          _ntp_time(ref), _ntp_time(org), _ntp_time(rec), _ntp_time(xmt),
                          _count_extensions(data, 48))
    return NTPMessage(version, mode, std)


@log_stream("ntp")
class NTPInfo(ConnIdRecord, kw_only=True):
    version: Count
    mode: Count
    stratum: Count | None = None
    poll: Interval | None = None
    precision: Interval | None = None
    root_delay: Interval | None = None
    root_disp: Interval | None = None
    ref_id: String | None = None
    ref_time: Time | None = None
    org_time: Time | None = None
    rec_time: Time | None = None
    xmt_time: Time | None = None
    num_exts: Count = 0


class NTPAnalyzer(Analyzer):
    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.confirmed = False
        self.flipped = False

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        msg = parse_message(payload)
        ctx = self.ctx
        if not accept(self, msg):
            return
        if not self.flipped and ((msg.mode == 4 and is_orig) or (msg.mode == 3 and not is_orig)):
            # Zeek flips once: a server-mode message from the originator, or client mode from the responder
            self.flipped = True
            flip = getattr(ctx, "flip_roles", None)
            if flip is not None:
                flip()
                is_orig = not is_orig
        c = ctx.conn
        ctx.event("ntp_message", is_orig, msg)
        s = msg.std_msg
        if s is None or msg.mode > 5:
            return
        ctx.write_log("ntp", NTPInfo(
            ts=ts, uid=c.uid, orig_h=c.orig_h, orig_p=c.orig_p, resp_h=c.resp_h, resp_p=c.resp_p,
            version=msg.version, mode=msg.mode, stratum=s.stratum, poll=s.poll, precision=s.precision,
            root_delay=s.root_delay, root_disp=s.root_disp, ref_id=s.ref_id, ref_time=s.ref_time,
            org_time=s.org_time, rec_time=s.rec_time, xmt_time=s.xmt_time, num_exts=s.num_exts))


SPEC = register(AnalyzerSpec(
    name="ntp",
    factory=NTPAnalyzer,
    transports=frozenset(("udp",)),
    ports=frozenset(((123, "udp"),)),
    zeek_scripts=("base/protocols/ntp",),
    logs=("ntp",),
    events=("ntp_message",),
))

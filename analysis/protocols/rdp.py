"""RDP, as far as the TLS hand-off goes (Zeek's RDP analyzer switching to SSL).

The X.224 connection request/confirm travel in TPKT frames (``03 00 <len16>``).  When the
server's connection confirm carries an RDP_NEG_RSP selecting anything but standard RDP security
(TLS, CredSSP, CredSSP-EX, ...), the rest of the connection is TLS: Zeek hands it to a PIA that
finds SSL; here the stream goes straight to the SSL analyzer (``ctx.hand_off("ssl")``).
rdp.log gets what the negotiation shows (cookie, result ``encrypted``, security protocol); the
fields of the standard-RDP-security path (client core data, server certificates) are not parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from analysis.logs.schema import Bool, ConnIdRecord, Count, String, log_stream, vector_of
from analysis.protocols._starttls import hand_to_ssl
from analysis.protocols.base import Analyzer, AnalyzerContext, AnalyzerSpec, register

__all__ = ["RDPInfo", "RDPAnalyzer", "SPEC"]

#: RDP_NEG_RSP selectedProtocol names (Zeek's RDP::security_protocols)
SECURITY_PROTOCOLS = {0: "RDP", 1: "SSL", 2: "HYBRID", 4: "RDSTLS", 8: "HYBRID_EX"}


@log_stream("rdp")
class RDPInfo(ConnIdRecord, kw_only=True):
    cookie: String | None = None
    result: String | None = None
    security_protocol: String | None = None
    client_channels: vector_of("string") | None = None
    keyboard_layout: String | None = None
    client_build: String | None = None
    client_name: String | None = None
    client_dig_product_id: String | None = None
    desktop_width: Count | None = None
    desktop_height: Count | None = None
    requested_color_depth: String | None = None
    cert_type: String | None = None
    cert_count: Count = 0
    cert_permanent: Bool | None = None
    encryption_level: String | None = None
    encryption_method: String | None = None

_MAX_PDU = 8192     # X.224 negotiation PDUs are tiny; more is not RDP negotiation


@dataclass
class RDPOptions:
    """No options used yet."""


class RDPAnalyzer(Analyzer):
    """One RDP connection until its security layer starts."""

    def __init__(self, ctx: AnalyzerContext) -> None:
        super().__init__(ctx)
        self._buf = [b"", b""]
        self._done = False
        self._info: dict | None = None

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self._done:
            return
        d = 1 if is_orig else 0
        buf = self._buf[d] + bytes(payload) if self._buf[d] else bytes(payload)
        pos = 0
        while len(buf) - pos >= 4:
            if buf[pos] != 3:
                if pos == 0 and not is_orig and buf[:1] == b"\x16":
                    break
                self._done = True
                self.ctx.violation("not a TPKT header")
                return
            ln = int.from_bytes(buf[pos + 2:pos + 4], "big")
            if ln < 7 or ln > _MAX_PDU:
                self._done = True
                self.ctx.violation(f"bad TPKT length {ln}")
                return
            if len(buf) - pos < ln:
                break
            pdu = buf[pos:pos + ln]
            pos += ln
            if is_orig and pdu[5] & 0xF0 == 0xE0:              # X.224 connection request
                info = self._session(ts)
                i = pdu.find(b"Cookie: mstshash=", 11)
                if i >= 0:
                    end = pdu.find(b"\r\n", i)
                    info["cookie"] = pdu[i + 17:end if end >= 0 else len(pdu)].decode("utf-8", "surrogateescape")
                else:
                    info.setdefault("cookie", "")
            if not is_orig and pdu[5] & 0xF0 == 0xD0:          # X.224 connection confirm
                self.ctx.confirm()
                neg = pdu[11:19]
                proto = int.from_bytes(neg[4:8], "little") if len(neg) == 8 and neg[0] == 0x02 else 0
                if len(neg) == 8 and neg[0] == 0x02:
                    self._session(ts)["security_protocol"] = SECURITY_PROTOCOLS.get(proto, f"unknown-{proto}")
                if proto != 0:
                    info = self._session(ts)
                    info.setdefault("result", "encrypted")
                    self.ctx.event("rdp_begin_encryption", proto)
                    self._done = True
                    self._buf = [b"", b""]
                    hand_to_ssl(self.ctx, buf[pos:], False)
                    return
        self._buf[d] = buf[pos:]

    def _session(self, ts: float) -> dict:
        if self._info is None:
            self._info = {"ts": ts}
        return self._info

    def done(self, ts: float) -> None:
        info = self._info
        if info is None:
            return
        c = self.ctx.conn
        self.ctx.write_log("rdp", RDPInfo(
            ts=info["ts"], uid=c.uid, orig_h=c.orig_h, orig_p=c.orig_p, resp_h=c.resp_h, resp_p=c.resp_p,
            cookie=info.get("cookie"), result=info.get("result"), security_protocol=info.get("security_protocol")))


SPEC = register(AnalyzerSpec(
    name="rdp",
    factory=RDPAnalyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset({(3389, "tcp")}),
    # base/protocols/rdp/dpd.sig (client cookie; server X.224 connection confirm)
    dpd_orig=(re.compile(rb"^.*(Cookie: mstshash=|Duca.*(rdpdr|rdpsnd|drdynvc|cliprdr))", re.S),),
    dpd_resp=(re.compile(rb"^(.{5}\xd0|.*McDn)", re.S),),
    zeek_scripts=("base/protocols/rdp",),
    logs=("rdp",),
    options=RDPOptions,
    events=("rdp_begin_encryption",),
))

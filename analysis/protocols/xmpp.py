"""XMPP, as far as Zeek's XMPP analyzer goes: detect STARTTLS and hand the stream to SSL.

Zeek's XMPP analyzer writes no log of its own; it follows the XML stream until the client sends
``<starttls`` and the server answers ``<proceed``, then the rest of the connection (both
directions) is TLS and goes to the SSL analyzer (``ctx.hand_off("ssl")``).  The scanner keeps
only a short tail per direction (a tag split across segments), never the stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from analysis.protocols._starttls import hand_to_ssl
from analysis.protocols.base import Analyzer, AnalyzerContext, AnalyzerSpec, register

__all__ = ["XMPPAnalyzer", "SPEC"]

_TAIL = 64   # longest partial tag kept between deliveries


@dataclass
class XMPPOptions:
    """No Zeek options; present so ``@load``/signature names resolve to this analyzer."""


class XMPPAnalyzer(Analyzer):
    """One XMPP connection until STARTTLS."""

    def __init__(self, ctx: AnalyzerContext) -> None:
        super().__init__(ctx)
        self._tail = [b"", b""]
        self._client_starttls = False
        self._confirmed = False
        self._handed_off = False

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self._handed_off:
            return
        d = 1 if is_orig else 0
        buf = self._tail[d] + bytes(payload) if self._tail[d] else bytes(payload)
        if is_orig:
            if not self._client_starttls and buf.find(b"<starttls") >= 0:
                self._client_starttls = True
                self.ctx.event("xmpp_starttls")
        else:
            if not self._confirmed and buf.find(b"<stream:stream") >= 0:
                self._confirmed = True
                self.ctx.confirm()
            if self._client_starttls:
                i = buf.find(b"<proceed")
                if i >= 0:
                    end = buf.find(b">", i)
                    if end >= 0:
                        rest = buf[end + 1:]
                        self._tail = [b"", b""]
                        self._handed_off = True
                        hand_to_ssl(self.ctx, rest, False)
                        return
        self._tail[d] = buf[-_TAIL:]


SPEC = register(AnalyzerSpec(
    name="xmpp",
    factory=XMPPAnalyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset({(5222, "tcp"), (5269, "tcp")}),
    # base/protocols/xmpp/dpd.sig
    dpd_orig=(re.compile(rb"^(<\?xml[^?>]*\?>)?[\n\r ]*<stream:stream [^>]*xmlns='jabber:"),),
    zeek_scripts=("base/protocols/xmpp", "base/protocols/xmpp/dpd.sig"),
    options=XMPPOptions,
    events=("xmpp_starttls",),
))

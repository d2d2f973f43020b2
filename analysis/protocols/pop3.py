"""POP3: enough of Zeek's POP3 analyzer to confirm the protocol and hand STLS sessions to ssl.

The sans-I/O :class:`POP3Parser` splits both directions into lines and turns them into
:class:`POP3Request` (command upper-cased, argument) and :class:`POP3Reply` (``+OK``/``-ERR``
with the message) events; multi-line responses (after ``LIST``, ``RETR``, ``CAPA``... until the
lone ``.``) are skipped as data.  After ``STLS`` answered by ``+OK`` the rest of the stream
belongs to TLS.  No pop3 log exists in Zeek; the script events are raised for user scripts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from analysis.protocols._lines import LineBuffers
from analysis.protocols._starttls import start_tls
from analysis.protocols.base import Analyzer, AnalyzerSpec, register


class POP3Request(NamedTuple):
    command: str
    arg: str
    ts: float


class POP3Reply(NamedTuple):
    ok: bool
    msg: str
    ts: float


class POP3StartTLS(NamedTuple):
    ts: float


class POP3Violation(NamedTuple):
    reason: str


class POP3Weird(NamedTuple):
    name: str
    addl: str


#: Commands whose positive reply is a multi-line response ended by ".".
_MULTILINE = frozenset({"LIST", "RETR", "TOP", "UIDL", "CAPA"})
_WS = b" \t\r\n\v\f"


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


class POP3Parser:
    __slots__ = ("lines", "pending", "in_multiline", "tls", "max_pending", "seen_reply")

    def __init__(self, max_line_length: int = 65536, max_pending: int = 256) -> None:
        self.lines = LineBuffers(max_line_length)
        self.pending: list[tuple[str, str]] = []
        self.in_multiline = False
        self.tls = False
        self.max_pending = max_pending
        self.seen_reply = False

    def feed(self, is_orig: bool, data: bytes, ts: float) -> list:
        out: list = []
        if self.tls:
            return out
        handle = self._request if is_orig else self._reply
        dropped = self.lines.feed(is_orig, data, lambda line: handle(line, ts, out), lambda: self.tls)
        if dropped:
            out.append(POP3Weird("contentline_size_exceeded", str(dropped)))
        return out

    def _request(self, line: bytes, ts: float, out: list) -> None:
        s = line.strip(_WS)
        if not s:
            return
        cmd, _, arg = s.partition(b" ")
        c = _dec(cmd).upper()
        if len(self.pending) >= self.max_pending:
            out.append(POP3Weird("pop3_too_many_pending_commands", str(len(self.pending))))
            self.pending.pop(0)
        self.pending.append((c, _dec(arg)))
        out.append(POP3Request(c, _dec(arg), ts))

    def _reply(self, line: bytes, ts: float, out: list) -> None:
        if self.in_multiline:
            if line == b".":
                self.in_multiline = False
            return
        if line.startswith(b"+OK") or line.startswith(b"-ERR"):
            ok = line[0] == 0x2B
            msg = line[3 if ok else 4:].lstrip(_WS)
            cmd, arg = self.pending.pop(0) if self.pending else ("", "")
            self.seen_reply = True
            out.append(POP3Reply(ok, _dec(msg), ts))
            if ok and cmd in _MULTILINE and not (cmd in ("LIST", "UIDL") and arg):
                self.in_multiline = True
            if ok and cmd == "STLS":
                self.tls = True
                out.append(POP3StartTLS(ts))
        elif line.startswith(b"+ "):
            return   # SASL continuation
        elif not self.seen_reply:
            out.append(POP3Violation("not a POP3 reply"))


@dataclass
class POP3Options:
    max_line_length: int = 65536


class POP3Analyzer(Analyzer):
    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.parser = POP3Parser()
        self.confirmed = False
        self.stopped = False

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self.stopped:
            return
        for ev in self.parser.feed(is_orig, payload, ts):
            t = type(ev)
            if t is POP3Request:
                self.ctx.event("pop3_request", True, ev.command, ev.arg)
            elif t is POP3Reply:
                if not self.confirmed:
                    self.confirmed = True
                    self.ctx.confirm()
                self.ctx.event("pop3_reply", False, "OK" if ev.ok else "ERR", ev.msg)
            elif t is POP3StartTLS:
                start_tls(self.ctx, "pop3_starttls")
                self.stopped = True
                return
            elif t is POP3Weird:
                self.ctx.weird(ev.name, ev.addl)
            else:
                self.ctx.violation(ev.reason)
                self.stopped = True
                return


POP3_SPEC = register(AnalyzerSpec(
    name="pop3",
    factory=POP3Analyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset({(110, "tcp")}),
    dpd_orig=(re.compile(rb"(?i)[ \t\r\n]*(USER|APOP|CAPA|AUTH|STLS)"),),
    dpd_resp=(re.compile(rb"\+OK"),),
    zeek_scripts=("base/protocols/pop3",),
    options=POP3Options,
    events=("pop3_request", "pop3_reply", "pop3_starttls"),
))

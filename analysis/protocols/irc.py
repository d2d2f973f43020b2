"""IRC: enough of Zeek's IRC analyzer to confirm the protocol, hand STARTTLS sessions to ssl and
track DCC SEND offers as expected connections (with ``IRC::max_dcc_expected_transfers``).

:class:`IRCParser` (sans-I/O) turns lines into :class:`IRCMessage` events (prefix, command
upper-cased, parameters) and recognises ``PRIVMSG target :\\x01DCC SEND file addr port size\\x01``
as :class:`IRCDCC`.  A server reply ``670`` to ``STARTTLS`` switches the stream to TLS.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from analysis.protocols._expect_table import ExpectTable
from analysis.protocols._lines import LineBuffers
from analysis.protocols._starttls import start_tls
from analysis.protocols.base import Analyzer, AnalyzerSpec, register


class IRCMessage(NamedTuple):
    is_orig: bool
    prefix: str
    command: str
    params: str
    ts: float


class IRCDCC(NamedTuple):
    is_orig: bool
    prefix: str
    target: str
    dcc_type: str
    argument: str
    address: str
    port: int
    size: int
    ts: float


class IRCStartTLS(NamedTuple):
    ts: float


class IRCWeird(NamedTuple):
    name: str
    addl: str


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


_DCC = re.compile(rb'\x01DCC (\S+) ("[^"]*"|\S+) (\d{1,40}) (\d{1,20})(?: (\d{1,20}))?')


class IRCParser:
    __slots__ = ("lines", "tls", "starttls_requested", "valid_reply")

    def __init__(self, max_line_length: int = 65536) -> None:
        self.lines = LineBuffers(max_line_length)
        self.tls = False
        self.starttls_requested = False
        self.valid_reply = False

    def feed(self, is_orig: bool, data: bytes, ts: float) -> list:
        out: list = []
        if self.tls:
            return out
        dropped = self.lines.feed(is_orig, data, lambda line: self._line(is_orig, line, ts, out), lambda: self.tls)
        if dropped:
            out.append(IRCWeird("contentline_size_exceeded", str(dropped)))
        return out

    def _line(self, is_orig: bool, line: bytes, ts: float, out: list) -> None:
        s = line.strip()
        if not s:
            return
        prefix = b""
        if s[:1] == b":":
            prefix, _, s = s[1:].partition(b" ")
            s = s.lstrip()
        cmd, _, params = s.partition(b" ")
        command = _dec(cmd).upper()
        out.append(IRCMessage(is_orig, _dec(prefix), command, _dec(params), ts))
        if not is_orig and len(cmd) == 3 and cmd.isdigit():
            self.valid_reply = True
            if command == "670" and self.starttls_requested:
                self.tls = True
                out.append(IRCStartTLS(ts))
        if is_orig and command == "STARTTLS":
            self.starttls_requested = True
        if command == "PRIVMSG":
            target, _, msg = params.partition(b" ")
            m = _DCC.search(msg)
            if m is not None:
                try:
                    n = int(m.group(3))
                    addr = str(ipaddress.IPv4Address(n)) if n < 1 << 32 else str(ipaddress.ip_address(_dec(m.group(3))))
                except ValueError:
                    return
                port = int(m.group(4))
                if port > 65535:
                    return
                size = int(m.group(5)) if m.group(5) else 0
                out.append(IRCDCC(is_orig, _dec(prefix), _dec(target), _dec(m.group(1)).upper(),
                                  _dec(m.group(2).strip(b'"')), addr, port, size, ts))


@dataclass
class IRCOptions:
    max_dcc_expected_transfers: int = field(default=1000, metadata={"zeek": "IRC::max_dcc_expected_transfers"})


#: Zeek's ``dcc_expected_transfers`` table: (addr, port) -> offering connection's uid.
DCC_EXPECTED = ExpectTable()


class IRCAnalyzer(Analyzer):
    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.o = ctx.options if isinstance(ctx.options, IRCOptions) else IRCOptions()
        self.parser = IRCParser()
        self.confirmed = False
        self.stopped = False

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self.stopped:
            return
        for ev in self.parser.feed(is_orig, payload, ts):
            t = type(ev)
            if t is IRCMessage:
                if not self.confirmed and self.parser.valid_reply:
                    self.confirmed = True
                    self.ctx.confirm()
            elif t is IRCDCC:
                self._dcc(ev)
            elif t is IRCStartTLS:
                start_tls(self.ctx, "irc_starttls")
                self.stopped = True
                return
            elif t is IRCWeird:
                self.ctx.weird(ev.name, ev.addl)

    def _dcc(self, ev: IRCDCC) -> None:
        self.ctx.event("irc_dcc_message", ev.is_orig, ev.prefix, ev.target, ev.dcc_type,
                       ev.argument, ev.address, ev.port, ev.size)
        if ev.dcc_type != "SEND":
            return
        DCC_EXPECTED.purge(ev.ts)
        if len(DCC_EXPECTED) >= self.o.max_dcc_expected_transfers:
            self.ctx.weird("irc_max_dcc_expected_transfers_exceeded", "", source="")
            return
        DCC_EXPECTED.add(ev.address, ev.port, self.ctx.conn.uid, ev.ts)
        expect = getattr(self.ctx, "expect_connection", None)
        if expect is not None:
            expect(None, ev.address, ev.port, "irc-dcc-data", timeout=300.0)


IRC_SPEC = register(AnalyzerSpec(
    name="irc",
    factory=IRCAnalyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset({(6666, "tcp"), (6667, "tcp"), (6668, "tcp"), (6669, "tcp")}),
    # Zeek's dpd.sig, looking at the first 16 lines (linear per-packet DPD test).
    dpd_orig=(re.compile(rb"(?i)(?:[^\r\n]*+[\r\n]++){0,16}? *(?:USER|NICK) +[^\r\n]+[\r\n]"),),
    dpd_resp=(re.compile(rb"(?:[^\r\n]*+[\r\n]++){0,16}?(?::[^ \n\r]+ )?[0-9][0-9][0-9] "),),
    zeek_scripts=("base/protocols/irc",),
    options=IRCOptions,
    events=("irc_dcc_message", "irc_starttls"),
))

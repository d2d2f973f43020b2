"""SMTP -> smtp.log (Zeek's ``base/protocols/smtp``), with MIME header parsing and STARTTLS.

* :class:`SMTPParser` (sans-I/O) follows Zeek's SMTP analyzer: lines from both sides, a
  command queue for pipelining (each reply answers the oldest pending command), a small state
  machine driven by (command, reply code) pairs whose only real purpose is knowing when the
  client is inside DATA (or a BDAT chunk), and the MIME parser (:mod:`analysis.protocols.mime`)
  for the message itself.  It emits :class:`SMTPRequest`, :class:`SMTPReply`,
  :class:`SMTPStartTLS`, the MIME events, :class:`SMTPWeird` and :class:`SMTPViolation`.
* :class:`SMTPAnalyzer` is Zeek's ``SMTP::Info`` / ``SMTP::State`` logic: one row per mail
  transaction with helo, mailfrom, rcptto, the top-level headers, the Received path, the last
  reply, fuids of the MIME entities with content, and the ``smtp_mail_transaction_invalid``
  checks.  Each MIME entity with content is a file: its bytes (transfer encoding decoded) feed
  a :class:`~analysis.files.FileState` whose files.log row is written when the entity ends.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from analysis.logs.schema import (
    Addr, Bool, ConnIdRecord, Count, String, field as lfield, log_stream, set_of, vector_of,
)
from analysis.files import FileOptions, FileState, filename_from_disposition, write_file
from analysis.protocols import mime
from analysis.protocols._starttls import hand_to_ssl
from analysis.protocols.base import Analyzer, AnalyzerSpec, register


@log_stream("smtp")
class SMTPInfo(ConnIdRecord, kw_only=True):
    trans_depth: Count
    helo: String | None = None
    mailfrom: String | None = None
    rcptto: set_of("string") | None = None
    date: String | None = None
    from_: String | None = lfield(name="from", default=None)
    to: set_of("string") | None = None
    cc: set_of("string") | None = None
    reply_to: String | None = None
    msg_id: String | None = None
    in_reply_to: String | None = None
    subject: String | None = None
    x_originating_ip: Addr | None = None
    first_received: String | None = None
    second_received: String | None = None
    last_reply: String | None = None
    path: vector_of("addr") | None = None
    user_agent: String | None = None
    tls: Bool = False
    fuids: vector_of("string") | None = None


def _z(name: str, default):
    return field(default=default, metadata={"zeek": name})


@dataclass
class SMTPOptions(FileOptions):
    mail_transaction_validation: bool = _z("SMTP::mail_transaction_validation", True)
    max_invalid_mail_transactions: int = _z("SMTP::max_invalid_mail_transactions", 25)
    max_rcptto_addresses: int = _z("SMTP::max_rcptto_addresses", 1000)
    max_to_addresses: int = _z("SMTP::max_to_addresses", 1000)
    max_cc_addresses: int = _z("SMTP::max_cc_addresses", 1000)
    max_path_length: int = _z("SMTP::max_path_length", 1000)
    max_line_length: int = 65536      # our cap on one buffered line
    max_pending_commands: int = 1000  # our cap on the pipelining queue


# --------------------------------------------------------------------------------------------
# sans-I/O parser


class SMTPRequest(NamedTuple):
    command: str     # upper-cased
    arg: str
    ts: float


class SMTPReply(NamedTuple):
    code: int
    cmd: str         # the command this answers (">" for the greeting, "." for end of data)
    msg: str
    cont: bool
    ts: float


class SMTPStartTLS(NamedTuple):
    ts: float


class SMTPWeird(NamedTuple):
    name: str
    addl: str


class SMTPViolation(NamedTuple):
    reason: str


class MimeEvent(NamedTuple):
    event: object    # one of analysis.protocols.mime's events
    ts: float


COMMANDS = frozenset({
    "EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "SEND", "SOML", "SAML", "VRFY",
    "EXPN", "HELP", "NOOP", "QUIT", "TURN", "STARTTLS", "AUTH", "X-ANONYMOUSTLS", "X-LINK2STATE",
    "XEXCH50", "ETRN", "ATRN", "BURL", "X-EXPS",
})
_CONN, _EOD, _AUTH_ANSWER, _UNKNOWN = ">", ".", "***", "(UNKNOWN)"

(S_CONNECTED, S_INITIATED, S_NOT_AVAILABLE, S_READY, S_MAIL_OK, S_RCPT_OK, S_IN_DATA,
 S_AFTER_DATA, S_IN_AUTH, S_IN_TLS, S_QUIT, S_AFTER_GAP, S_GAP_RECOVERY, S_IN_BDAT) = range(14)

_WS = b" \t\r\n\v\f"
_FILENAME = re.compile(r"[fF][iI][lL][eE][nN][aA][mM][eE]")
_NAME_EQ = re.compile(r"[nN][aA][mM][eE][ \t]*=")


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


class SMTPParser:
    """Both directions of one SMTP session (see the module docstring)."""

    def __init__(self, max_line_length: int = 65536, max_pending: int = 1000) -> None:
        self._buf = [b"", b""]
        self.state = S_CONNECTED
        self.first_cmd: str | None = _CONN
        self.pending: list[str] = []
        self.last_replied: str | None = None
        self.pending_reply = 0
        self.mail: mime.MimeParser | None = None
        self.bdat_remaining = 0
        self.bdat_last = False
        self.bdat_buf = b""
        self.confirmed = False
        self.max_line_length = max_line_length
        self.max_pending = max_pending
        self._update(_CONN, 0, [], 0.0)

    # -- input --------------------------------------------------------------------------------

    def feed(self, is_orig: bool, data: bytes, ts: float) -> list:
        out: list = []
        if self.state == S_IN_TLS:
            return out
        i = 1 if is_orig else 0
        data = bytes(data)
        pos = 0
        if is_orig and self.bdat_remaining:
            pos = self._bdat(data, ts, out)
        buf = self._buf[i] + data[pos:] if self._buf[i] else data[pos:]
        start = 0
        n = len(buf)
        while start < n:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            end = nl
            while end > start and buf[end - 1] == 0x0D:
                end -= 1
            line = buf[start:end]
            start = nl + 1
            if is_orig:
                self._client_line(line, ts, out)
                if self.bdat_remaining and start < n:
                    start += self._bdat(buf[start:], ts, out)
            else:
                self._server_line(line, ts, out)
            if self.state == S_IN_TLS:
                start = n
                break
        rest = buf[start:]
        if len(rest) > self.max_line_length:
            out.append(SMTPWeird("contentline_size_exceeded", str(len(rest))))
            if is_orig:
                self._client_line(rest, ts, out)
            rest = b""
        self._buf[i] = rest
        return out

    def gap(self, ts: float) -> list:
        """Stream bytes are missing: end an open message, forget queued commands and wait for
        a reply to tell where we are (Zeek's SMTP_AFTER_GAP)."""
        out: list = []
        if self.mail is not None:
            self._end_data(out, ts)
        self._buf = [b"", b""]
        self.pending.clear()
        self.first_cmd = self.last_replied = None
        self.bdat_remaining = 0
        self.bdat_buf = b""
        self.state = S_AFTER_GAP
        return out

    def finish(self, ts: float) -> list:
        """The connection ends: an open message is completed."""
        out: list = []
        if self.mail is not None:
            self._end_data(out, ts)
        return out

    # -- client -------------------------------------------------------------------------------

    def _client_line(self, line: bytes, ts: float, out: list) -> None:
        st = self.state
        if st == S_AFTER_GAP:
            return      # command or message text? unknown until the server answers
        if st == S_IN_DATA:
            if line == b".":
                self._new_cmd(_EOD)
                self._update(_EOD, 0, out, ts)
                out.append(SMTPRequest(".", ".", ts))
                return
            if line[:1] == b".":
                line = line[1:]
            if self.mail is None:
                self._begin_data(out, ts)
            mev: list = []
            self.mail.line(line, mev)
            for ev in mev:
                out.append(MimeEvent(ev, ts))
            return
        if st == S_IN_AUTH:
            self._new_cmd(_AUTH_ANSWER)
            self._request("**", line, ts, out)
            self._update(_AUTH_ANSWER, 0, out, ts)
            return
        s = line.lstrip(_WS)
        w = 0
        ln = len(s)
        while w < ln and s[w] not in _WS:
            w += 1
        cmd = _dec(s[:w]).upper()
        arg = s[w:].lstrip(_WS)
        if cmd not in COMMANDS:
            return           # Zeek: "unknown command", no request event
        self._new_cmd(cmd)
        self._request(cmd, arg, ts, out)
        self._update(cmd, 0, out, ts)
        if cmd == "BDAT":
            self._start_bdat(_dec(arg), out, ts)

    def _request(self, cmd: str, arg: bytes, ts: float, out: list) -> None:
        self.confirmed = True
        out.append(SMTPRequest(cmd, _dec(arg), ts))

    def _new_cmd(self, cmd: str) -> None:
        if self.first_cmd is None:
            self.first_cmd = cmd
        elif len(self.pending) < self.max_pending:
            self.pending.append(cmd)

    def _start_bdat(self, arg: str, out: list, ts: float) -> None:
        parts = arg.split()
        if not parts or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 15:
            out.append(SMTPWeird("smtp_invalid_bdat_command", arg[:64]))
            return
        size = int(parts[0])
        self.bdat_last = len(parts) > 1 and parts[1].upper() == "LAST"
        if self.mail is None:
            self._begin_data(out, ts)
        self.state = S_IN_BDAT
        self.bdat_remaining = size
        if size == 0 and self.bdat_last:
            self._end_data(out, ts)

    def _bdat(self, data: bytes, ts: float, out: list) -> int:
        """Consume up to the rest of the current BDAT chunk from ``data``; returns bytes used."""
        take = min(self.bdat_remaining, len(data))
        chunk = self.bdat_buf + data[:take]
        self.bdat_remaining -= take
        lines = chunk.split(b"\n")
        self.bdat_buf = lines.pop()
        if len(self.bdat_buf) > self.max_line_length:
            lines.append(self.bdat_buf)
            self.bdat_buf = b""
        mev: list = []
        if self.mail is not None:
            for ln in lines:
                self.mail.line(ln[:-1] if ln.endswith(b"\r") else ln, mev)
        for ev in mev:
            out.append(MimeEvent(ev, ts))
        if self.bdat_remaining == 0:
            if self.bdat_last:
                if self.bdat_buf and self.mail is not None:
                    mev = []
                    self.mail.line(self.bdat_buf, mev)
                    out.extend(MimeEvent(e, ts) for e in mev)
                self.bdat_buf = b""
                self._end_data(out, ts)
            self.state = S_READY
        return take

    def _begin_data(self, out: list, ts: float) -> None:
        self.state = S_IN_DATA
        if self.mail is not None:
            out.append(SMTPWeird("smtp_nested_mail_transaction", ""))
            self._end_data(out, ts)
            self.state = S_IN_DATA
        self.mail = mime.MimeParser()
        mev: list = []
        self.mail.start(mev)
        for ev in mev:
            out.append(MimeEvent(ev, ts))

    def _end_data(self, out: list, ts: float) -> None:
        if self.mail is None:
            out.append(SMTPWeird("smtp_unmatched_end_of_data", ""))
            return
        mev: list = []
        self.mail.finish(mev)
        self.mail = None
        for ev in mev:
            out.append(MimeEvent(ev, ts))

    # -- server -------------------------------------------------------------------------------

    def _server_line(self, line: bytes, ts: float, out: list) -> None:
        n = len(line)
        code = int(line[:3]) if n >= 3 and line[:3].isdigit() else -1
        if code < 100 or code > 599:
            if not self.confirmed:
                out.append(SMTPViolation(f"reply code {code} out of range"))
            return
        if self.pending_reply and code != self.pending_reply:
            self.pending_reply = 0
        if not self.pending_reply:
            self._new_reply(code, out, ts)
        if n > 3 and line[3] == 0x2D:
            self.pending_reply = code
            msg = line[4:].lstrip(_WS)
        else:
            msg = line[3:].lstrip(_WS)
            self.pending_reply = 0
        cmd = self.last_replied if self.last_replied is not None else _UNKNOWN
        out.append(SMTPReply(code, cmd, _dec(msg), self.pending_reply > 0, ts))
        if self.state == S_IN_TLS:
            out.append(SMTPStartTLS(ts))

    def _new_reply(self, code: int, out: list, ts: float) -> None:
        if self.state == S_AFTER_GAP:
            self.state = S_GAP_RECOVERY
        cmd = self.first_cmd
        self.last_replied = cmd
        self.first_cmd = self.pending.pop(0) if self.pending else None
        if cmd is not None:
            self._update(cmd, code, out, ts)

    # -- Zeek's (command, reply) state machine ------------------------------------------------

    def _update(self, cmd: str, reply: int, out: list, ts: float) -> None:
        st = self.state
        if cmd == _CONN:
            if reply == 0:
                self.state = S_INITIATED
            elif reply in (421, 554):
                self.state = S_NOT_AVAILABLE
        elif cmd in ("EHLO", "HELO"):
            if reply == 0:
                self.state = S_READY
            elif reply in (421, 500, 501, 504, 550):
                self.state = S_INITIATED
        elif cmd in ("MAIL", "SEND", "SOML", "SAML"):
            if reply == 0:
                self.state = S_MAIL_OK
            elif reply in (421, 451, 452, 500, 501, 503, 550, 552, 553) and st != S_IN_DATA:
                self.state = S_READY
        elif cmd == "RCPT":
            if reply == 0:
                self.state = S_RCPT_OK
        elif cmd == "DATA":
            if reply == 0:
                self._begin_data(out, ts)
            elif reply == 354:
                pass
            else:
                if st == S_IN_DATA:
                    # the server refused DATA: close the (empty) message; what follows are commands
                    self._end_data(out, ts)
                self.state = S_QUIT if reply == 421 else S_READY
        elif cmd == _EOD:
            if reply == 0:
                self._end_data(out, ts)
                self.state = S_AFTER_DATA
            else:
                self.state = S_READY
        elif cmd == "BDAT":
            if reply >= 400 and self.state == S_IN_BDAT and self.bdat_remaining == 0:
                self.state = S_READY
        elif cmd == "RSET":
            if reply == 0:
                self.state = S_READY
        elif cmd == "QUIT":
            if reply == 0:
                self.state = S_QUIT
        elif cmd in ("AUTH", _AUTH_ANSWER):
            if reply == 334:
                self.state = S_IN_AUTH
            elif reply != 0:
                self.state = S_INITIATED
        elif cmd == "STARTTLS":
            if reply == 220:
                self.state = S_IN_TLS
        elif st == S_GAP_RECOVERY and reply == 354:
            self._begin_data(out, ts)


# --------------------------------------------------------------------------------------------
# Zeek's base/utils/email and addrs helpers

_EMAIL = re.compile(r"(?:^|[<,:\s])([^<,:\s@]+@[^>,;\s]+)(?=[>,;\s]|$)", re.ASCII)
_MIME_ADDR = re.compile(r'(?:"[^"]*")?[^,]+')
_IP_CANDIDATE = re.compile(
    r"(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})|(?:[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})?)", re.ASCII)


def extract_email_addrs(s: str) -> list[str]:
    return [re.sub(r"[<>,:;\s]", "", m) for m in _EMAIL.findall(s)]


def split_mime_email_addresses(line: str) -> list[str]:
    out: list[str] = []
    for part in _MIME_ADDR.findall(line):
        p = part.strip()
        if p not in out:
            out.append(p)
    return out


def _valid_ip(s: str) -> str | None:
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        return None


def extract_ip_addresses(s: str, check_wrapping: bool = False) -> list[str]:
    out = []
    for m in _IP_CANDIDATE.finditer(s):
        ip = _valid_ip(m.group(0))
        if ip is None:
            continue
        if check_wrapping:
            before = s[m.start() - 1:m.start()]
            after = s[m.end():m.end() + 1]
            if not ((m.start() == 0 and m.end() == len(s)) or (before + after) in ("[]", "()", "{}", "  ")):
                continue
        out.append(m.group(0))
    return out


def find_address_in_smtp_header(header: str) -> str:
    ips = extract_ip_addresses(header, True)
    if len(ips) > 1:
        return ips[1]
    return ips[0] if ips else ""


# --------------------------------------------------------------------------------------------
# analyzer


class _Info:
    """``SMTP::Info`` being filled for the current transaction."""

    __slots__ = ("ts", "trans_depth", "helo", "mailfrom", "rcptto", "date", "from_", "to", "cc",
                 "reply_to", "msg_id", "in_reply_to", "subject", "x_originating_ip",
                 "first_received", "second_received", "last_reply", "path", "user_agent", "tls",
                 "fuids", "process_received_from", "has_client_activity", "process_smtp_headers",
                 "entity_count")

    def __init__(self, ts: float, depth: int, helo: str | None, path: list[str]) -> None:
        self.ts = ts
        self.trans_depth = depth
        self.helo = helo
        self.mailfrom = self.rcptto = self.date = self.from_ = self.to = self.cc = None
        self.reply_to = self.msg_id = self.in_reply_to = self.subject = None
        self.x_originating_ip = self.first_received = self.second_received = None
        self.last_reply = self.user_agent = None
        self.path = path
        self.tls = False
        self.fuids: list[str] = []
        self.process_received_from = True
        self.has_client_activity = False
        self.process_smtp_headers = True
        self.entity_count = 0


class SMTPAnalyzer(Analyzer):
    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        o = ctx.options if isinstance(ctx.options, SMTPOptions) else SMTPOptions()
        self.o = o
        self.parser = SMTPParser(o.max_line_length, o.max_pending_commands)
        self.info: _Info | None = None
        self.helo: str | None = None
        self.messages = 0
        self.mail_from_seen = False
        self.rcpt_to_seen = False
        self.invalid = 0
        self.bdat_last_observed = False
        self.stopped = False
        self.confirmed = False
        self.mime_depth = 0                     # smtp_state$mime_depth: entities so far
        self.file: FileState | None = None      # the current entity's file, once it has data
        self.decoder: mime.BodyDecoder | None = None
        self.entity_depth = 0
        self.entity_cte = ""
        self.entity_filename: str | None = None

    # -- engine interface ---------------------------------------------------------------------

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self.stopped:
            return
        self._handle(self.parser.feed(is_orig, payload, ts))

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        if not self.stopped:
            self._handle(self.parser.gap(ts))

    def done(self, ts: float) -> None:
        if not self.stopped:
            self._handle(self.parser.finish(ts))
        if self.file is not None:        # an entity left open (STARTTLS, violation)
            f, self.file = self.file, None
            write_file(self.ctx, f)
        if self.info is not None:
            self._message(ts)

    # -- events -------------------------------------------------------------------------------

    def _handle(self, events: list) -> None:
        for ev in events:
            t = type(ev)
            if t is MimeEvent:
                self._mime(ev.event, ev.ts)
            elif t is SMTPRequest:
                self._request(ev)
            elif t is SMTPReply:
                self._reply(ev)
            elif t is SMTPStartTLS:
                self.ctx.event("smtp_starttls")
                if self.info is not None:
                    self.info.tls = True
                    self.info.has_client_activity = True
                hand_to_ssl(self.ctx)
                self.stopped = True
                return
            elif t is SMTPWeird:
                self.ctx.weird(ev.name, ev.addl)
            elif t is SMTPViolation:
                self.ctx.violation(ev.reason)
                self.stopped = True
                return

    def _new_info(self, ts: float) -> _Info:
        c = self.ctx.conn
        return _Info(ts, self.messages + 1, self.helo, [c.resp_h, c.orig_h])

    def _session(self, ts: float) -> _Info:
        if self.info is None:
            self.info = self._new_info(ts)
        return self.info

    def _message(self, ts: float) -> None:
        """Zeek's ``smtp_message``: write the row if the client did something, start a new one."""
        i = self.info
        if i is not None and i.has_client_activity:
            self._write(i)
            self.info = self._new_info(ts)

    def _invalid(self, addl: str) -> None:
        self.ctx.weird("smtp_mail_transaction_invalid", addl)
        self.invalid += 1
        m = self.o.max_invalid_mail_transactions
        if m > 0 and self.invalid > m and not self.stopped:
            self.ctx.weird("smtp_excessive_invalid_mail_transactions", f"{self.invalid}/{m}")
            self.ctx.violation("too many invalid mail transactions")
            self.stopped = True

    def _request(self, ev: SMTPRequest) -> None:
        cmd, arg, ts = ev
        if not self.confirmed:
            self.confirmed = True
            self.ctx.confirm()
        self.ctx.event("smtp_request", True, cmd, arg)
        i = self._session(ts)
        o = self.o
        if cmd in ("HELO", "EHLO"):
            self.helo = arg
            i.helo = arg
        elif cmd == "RCPT" and arg[:3].upper() == "TO:":
            if i.rcptto is None:
                i.rcptto = []
            for a in extract_email_addrs(arg):
                if o.max_rcptto_addresses > 0 and len(i.rcptto) >= o.max_rcptto_addresses:
                    self.ctx.weird("smtp_too_many_rcptto_addresses", "")
                    break
                a = re.sub(r"ORCPT=rfc822;?", "", a)
                if a not in i.rcptto:
                    i.rcptto.append(a)
            i.has_client_activity = True
            self.rcpt_to_seen = True
            if o.mail_transaction_validation and not self.mail_from_seen:
                self._invalid("rcpt to missing mail from")
        elif cmd == "MAIL" and arg[:5].upper() == "FROM:":
            self._message(ts)
            i = self.info
            addrs = extract_email_addrs(arg)
            if addrs and addrs[0]:
                i.mailfrom = addrs[0]
            i.has_client_activity = True
            self.mail_from_seen = True
            self.rcpt_to_seen = False
        elif cmd in ("DATA", "BDAT"):
            if o.mail_transaction_validation and not self.rcpt_to_seen:
                self._invalid("data missing rcpt to")
            if cmd == "BDAT" and arg.endswith(" LAST"):
                self.mail_from_seen = self.rcpt_to_seen = False
                self.bdat_last_observed = True
        elif cmd == ".":
            self.mail_from_seen = self.rcpt_to_seen = False

    def _reply(self, ev: SMTPReply) -> None:
        code, cmd, msg, cont, ts = ev
        self.ctx.event("smtp_reply", False, code, cmd, msg, cont)
        i = self._session(ts)
        i.last_reply = f"{code} {msg}"
        if cmd == "." or (not cont and cmd == "BDAT" and self.bdat_last_observed):
            self.messages += 1
            self.bdat_last_observed = False
            self._message(ts)
            self.info = self._new_info(ts)

    def _mime(self, ev, ts: float) -> None:
        t = type(ev)
        i = self.info
        if t is mime.Body:
            d = self.decoder
            if d is None:
                d = self.decoder = mime.BodyDecoder(self.entity_cte, self.entity_depth > 0)
            data = d.line(ev.line)
            if data:
                self._file_data(data, ts)
        elif t is mime.Header:
            name = ev.name
            if name == "CONTENT-TRANSFER-ENCODING":
                self.entity_cte = ev.value
            elif name == "CONTENT-DISPOSITION" or name == "CONTENT-TYPE":
                # smtp/entities.zeek: the entity's file name
                if (_FILENAME.search(ev.value) if name == "CONTENT-DISPOSITION" else _NAME_EQ.search(ev.value)):
                    self.entity_filename = filename_from_disposition(ev.value)
            if i is not None and i.process_smtp_headers:
                self._header(i, name, ev.value)
        elif t is mime.BeginEntity:
            self.mime_depth += 1
            self.entity_depth = ev.depth
            self.entity_cte = ""
            self.entity_filename = None
            self.decoder = None
            self.file = None
            if i is not None:
                i.entity_count += 1
                if i.entity_count > 1:
                    i.process_smtp_headers = False
        elif t is mime.EndEntity:
            d = self.decoder
            if d is not None:
                rest = d.finish()
                if rest:
                    self._file_data(rest, ts)
                self.decoder = None
            f = self.file
            if f is not None:
                self.file = None
                write_file(self.ctx, f)
        elif t is mime.MimeWeird:
            self.ctx.weird(ev.name, ev.addl)

    def _file_data(self, data: bytes, ts: float) -> None:
        """Decoded entity bytes; the first ones make the entity a file (Zeek's file_new)."""
        f = self.file
        if f is None:
            f = self.file = FileState(self.ctx.uid_for("F"), "SMTP", True, ts, self.o,
                                      self.mime_depth, self.entity_filename)
            if self.info is not None:
                self.info.fuids.append(f.fuid)
        f.data(data, ts)

    def _header(self, i: _Info, name: str, value: str) -> None:
        o = self.o
        if name == "MESSAGE-ID":
            i.msg_id = value
        elif name == "RECEIVED":
            if i.first_received is not None:
                i.second_received = i.first_received
            i.first_received = value
            if i.process_received_from:
                text_ip = find_address_in_smtp_header(value)
                if text_ip:
                    ip = _valid_ip(text_ip)
                    if ip is not None and i.path[-1] != ip:
                        if o.max_path_length > 0 and len(i.path) >= o.max_path_length:
                            self.ctx.weird("smtp_max_path_length_exceeded", "")
                        else:
                            i.path.append(ip)
        elif name == "IN-REPLY-TO":
            i.in_reply_to = value
        elif name == "SUBJECT":
            i.subject = value
        elif name == "FROM":
            i.from_ = value
        elif name == "REPLY-TO":
            i.reply_to = value
        elif name == "DATE":
            i.date = value
        elif name == "TO" or name == "CC":
            cur = i.to if name == "TO" else i.cc
            if cur is None:
                cur = []
                if name == "TO":
                    i.to = cur
                else:
                    i.cc = cur
            cap = o.max_to_addresses if name == "TO" else o.max_cc_addresses
            for a in split_mime_email_addresses(value):
                if cap > 0 and len(cur) >= cap:
                    self.ctx.weird(f"smtp_too_many_{name.lower()}_addresses", "")
                    break
                if a not in cur:
                    cur.append(a)
        elif name == "X-ORIGINATING-IP":
            ips = extract_ip_addresses(value)
            if ips:
                i.x_originating_ip = _valid_ip(ips[0])
        elif name in ("X-MAILER", "USER-AGENT", "X-USER-AGENT"):
            i.user_agent = value

    def _write(self, i: _Info) -> None:
        c = self.ctx.conn
        self.ctx.write_log("smtp", SMTPInfo(
            ts=i.ts, uid=c.uid, orig_h=c.orig_h, orig_p=c.orig_p, resp_h=c.resp_h, resp_p=c.resp_p,
            trans_depth=i.trans_depth, helo=i.helo, mailfrom=i.mailfrom, rcptto=i.rcptto, date=i.date,
            from_=i.from_, to=i.to, cc=i.cc, reply_to=i.reply_to, msg_id=i.msg_id,
            in_reply_to=i.in_reply_to, subject=i.subject, x_originating_ip=i.x_originating_ip,
            first_received=i.first_received, second_received=i.second_received,
            last_reply=i.last_reply, path=i.path, user_agent=i.user_agent, tls=i.tls,
            fuids=i.fuids))


SMTP_SPEC = register(AnalyzerSpec(
    name="smtp",
    factory=SMTPAnalyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset({(25, "tcp"), (587, "tcp")}),
    # Zeek's dpd.sig: an EHLO/HELO from the client (on one of the first 16 lines), a 220
    # greeting from the server.
    dpd_orig=(re.compile(rb"(?:[^\r\n]*+[\r\n]++){0,16}?[ \t]*(?:[hH][eE][lL][oO]|[eE][hH][lL][oO])"),),
    dpd_resp=(re.compile(rb"[\n\r ]*220[^0-9]"),),
    zeek_scripts=("base/protocols/smtp", "protocols/smtp/blocklists", "protocols/smtp/detect-suspicious-orig",
                  "protocols/smtp/entities-excerpt", "protocols/smtp/software"),
    logs=("smtp",),
    options=SMTPOptions,
    events=("smtp_request", "smtp_reply", "smtp_starttls"),
))

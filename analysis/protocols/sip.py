"""SIP over UDP: Zeek's datagram parser, its script events, sip.log and the script-level weirds.

Parser (sans-I/O, like Zeek's ``sip-protocol.pac``): one datagram is one message; the originator
sends requests, the responder replies.  A request line is ``[junk] METHOD URI SIP/x.y``, a status
line ``SIP/x.y NNN reason``; header lines follow until an empty line, then a body of the flow's
``Content-Length`` (kept across messages of the flow, parsed like ``atoi``).  Anything that does
not fit is a violation.  A parsed status line confirms the protocol.

Analyzer: replays ``base/protocols/sip/main.zeek`` — pending transactions keyed by counters, one
sip.log row per reply (and the left-overs at the end), and the ``invalid_SIP_request_body_len`` /
``invalid_SIP_response_body_len`` / ``unknown_SIP_method`` weirds, which Zeek raises from script
(so their ``source`` is empty).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field as dc_field

from analysis.logs.schema import ConnIdRecord, Count, String, field, log_stream, vector_of
from analysis.protocols.base import Analyzer, AnalyzerSpec, register

#: Resource caps: header lines per message and pending transactions per flow.
MAX_HEADERS = 256
MAX_PENDING = 64

_REQUEST = re.compile(rb"[^a-zA-Z0-9_.!%*+`'~-]*([a-zA-Z0-9_.!%*+`'~-]+)[ \t]*([A-Za-z0-9@!-/:-@\[-`{-~]+)[ \t]*SIP/([0-9]+\.[0-9]+)")
_REPLY = re.compile(rb"SIP/([0-9]+\.[0-9]+)[ \t]*([0-9]{3})[ \t]*")
_HEADER = re.compile(rb"([^: \t]+)[ \t]*:[ \t]*")
_ATOI = re.compile(rb"[ \t]*([+-]?[0-9]*)")
_SPLIT_TAG = re.compile(r";[ ]?tag=")
_SPLIT_BRANCH = re.compile(r";[ ]?branch")


class SIPError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    uri: str
    version: str


@dataclass(frozen=True, slots=True)
class Reply:
    version: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Message:
    start: Request | Reply
    headers: tuple[tuple[str, str], ...]     # (NAME upper-cased, value)
    body: bytes


def _s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _atoi(v: bytes) -> int:
    m = _ATOI.match(v)
    try:
        return int(m.group(1)) if m and m.group(1) not in (b"", b"+", b"-") else 0
    except ValueError:
        return 0


def parse_datagram(data: bytes, is_orig: bool, content_length: int) -> tuple[Message, int]:
    """Parse one datagram.  Returns the message and the flow's content length after it."""
    lines_end = data.find(b"\n")
    if lines_end < 0:
        raise SIPError("no line end")
    first = data[:lines_end].rstrip(b"\r")
    if is_orig:
        m = _REQUEST.match(first)
        if not m:
            raise SIPError("bad SIP request line")
        start: Request | Reply = Request(_s(m.group(1)), _s(m.group(2)), _s(m.group(3)))
    else:
        m = _REPLY.match(first)
        if not m:
            raise SIPError("bad SIP reply line")
        start = Reply(_s(m.group(1)), int(m.group(2)), _s(first[m.end():]))
    pos = lines_end + 1
    headers = []
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise SIPError("truncated SIP headers")
        line = data[pos:nl].rstrip(b"\r")
        pos = nl + 1
        if not line:
            break
        if len(headers) >= MAX_HEADERS:
            raise SIPError("too many SIP headers")
        h = _HEADER.match(line)
        if not h:
            raise SIPError("bad SIP header")
        name, value = h.group(1), line[h.end():]
        if name == b"Content-Length" or name == b"L":
            content_length = _atoi(value)
        headers.append((_s(name).upper(), _s(value)))
    if content_length < 0 or pos + content_length > len(data):
        raise SIPError("SIP body shorter than Content-Length")
    return Message(start, tuple(headers), data[pos:pos + content_length]), content_length


@log_stream("sip")
class SIPInfo(ConnIdRecord, kw_only=True):
    trans_depth: Count = 0
    method: String | None = None
    uri: String | None = None
    date: String | None = None
    request_from: String | None = None
    request_to: String | None = None
    response_from: String | None = None
    response_to: String | None = None
    reply_to: String | None = None
    call_id: String | None = None
    seq: String | None = None
    subject: String | None = None
    request_path: vector_of("string") | None = None
    response_path: vector_of("string") | None = None
    user_agent: String | None = None
    status_code: Count | None = None
    status_msg: String | None = None
    warning: String | None = None
    request_body_len: Count | None = None
    response_body_len: Count | None = None
    content_type: String | None = None


@dataclass
class SIPOptions:
    sip_methods: frozenset = dc_field(
        default=frozenset({"REGISTER", "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "NOTIFY", "SUBSCRIBE"}),
        metadata={"zeek": "SIP::sip_methods"})


def _as_count(v: str) -> int | None:
    v = v.strip()
    if v.isascii() and v.isdigit() and int(v) < 1 << 64:
        return int(v)
    return None


class SIPAnalyzer(Analyzer):
    """One per UDP flow; keeps main.zeek's ``SIP::State``."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.content_length = {True: 0, False: 0}
        self.pending: dict[int, SIPInfo] = {}
        self.cur_req = 0
        self.cur_resp = 0
        self.confirmed = False
        self.dead = False
        opts = ctx.options
        self.methods = opts.sip_methods if opts is not None else SIPOptions().sip_methods

    # -- main.zeek --------------------------------------------------------------------------
    def _session(self, ts: float) -> SIPInfo:
        c = self.ctx.conn
        return SIPInfo(ts=ts, uid=c.uid, orig_h=c.orig_h, orig_p=c.orig_p, resp_h=c.resp_h, resp_p=c.resp_p,
                       trans_depth=self.cur_req, request_path=[], response_path=[])

    def _state(self, is_request: bool, ts: float) -> SIPInfo:
        key = self.cur_req if is_request else self.cur_resp
        info = self.pending.get(key)
        if info is None:
            if len(self.pending) >= MAX_PENDING:
                self.ctx.weird("SIP_too_many_pending", "", source="SIP")
                self.pending.pop(next(iter(self.pending)))
            info = self.pending[key] = self._session(ts)
        return info

    def _header(self, is_request: bool, name: str, value: str, ts: float) -> None:
        if is_request:
            if self.cur_req not in self.pending:
                self.cur_req += 1
            s = self._state(True, ts)
            if name == "CALL-ID":
                s.call_id = value
            elif name in ("CONTENT-LENGTH", "L"):
                n = _as_count(value)
                if n is None:
                    self.ctx.weird("invalid_SIP_request_body_len", value, source="")
                else:
                    s.request_body_len = n
            elif name == "CSEQ":
                s.seq = value
            elif name == "DATE":
                s.date = value
            elif name in ("FROM", "F"):
                s.request_from = _SPLIT_TAG.split(value, 1)[0]
            elif name == "REPLY-TO":
                s.reply_to = value
            elif name in ("SUBJECT", "S"):
                s.subject = value
            elif name in ("TO", "T"):
                s.request_to = value
            elif name == "USER-AGENT":
                s.user_agent = value
            elif name in ("VIA", "V"):
                s.request_path.append(_SPLIT_BRANCH.split(value, 1)[0])
        else:
            if self.cur_resp not in self.pending:
                self.cur_resp += 1
            s = self._state(False, ts)
            if name in ("CONTENT-LENGTH", "L"):
                n = _as_count(value)
                if n is None:
                    self.ctx.weird("invalid_SIP_response_body_len", value, source="")
                else:
                    s.response_body_len = n
            elif name in ("CONTENT-TYPE", "C"):
                s.content_type = value
            elif name == "WARNING":
                s.warning = value
            elif name in ("FROM", "F"):
                s.response_from = _SPLIT_TAG.split(value, 1)[0]
            elif name in ("TO", "T"):
                s.response_to = value
            elif name in ("VIA", "V"):
                s.response_path.append(_SPLIT_BRANCH.split(value, 1)[0])

    def _end_entity(self, is_request: bool, ts: float) -> None:
        s = self._state(is_request, ts)
        if is_request:
            return
        self.ctx.write_log("sip", s)
        if s.status_code is None or s.status_code < 100 or 200 <= s.status_code:
            self.pending.pop(self.cur_resp, None)
        if s.method is None or (s.method == "BYE" and s.status_code is not None and 200 <= s.status_code < 300):
            for r, info in self.pending.items():
                if r != 0:
                    self.ctx.write_log("sip", info)
            self.pending = {}
            self.cur_req = self.cur_resp = 0

    # -- the analyzer ------------------------------------------------------------------------
    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self.dead:
            return
        ctx = self.ctx
        try:
            msg, self.content_length[is_orig] = parse_datagram(bytes(payload), is_orig, self.content_length[is_orig])
        except SIPError as e:
            ctx.violation(str(e))
            self.dead = True
            return
        st = msg.start
        if isinstance(st, Request):
            ctx.event("sip_request", st.method, st.uri, st.version)
            s = self._state(True, ts)
            s.method = st.method
            s.uri = st.uri
            if st.method not in self.methods:
                ctx.weird("unknown_SIP_method", st.method, source="")
        else:
            if not self.confirmed:
                self.confirmed = True
                ctx.confirm()
            ctx.event("sip_reply", st.version, st.code, st.reason)
            s = self._state(False, ts)
            s.status_code = st.code
            s.status_msg = st.reason
        ctx.event("sip_begin_entity", is_orig)
        for name, value in msg.headers:
            ctx.event("sip_header", is_orig, name, value)
            self._header(is_orig, name, value, ts)
        ctx.event("sip_all_headers", is_orig, msg.headers)
        ctx.event("sip_end_entity", is_orig)
        self._end_entity(is_orig, ts)

    def done(self, ts: float) -> None:
        for info in self.pending.values():
            self.ctx.write_log("sip", info)
        self.pending = {}


SPEC = register(AnalyzerSpec(
    name="sip",
    factory=SIPAnalyzer,
    transports=frozenset({"udp"}),
    ports=frozenset({(5060, "udp")}),
    # Zeek's dpd_sip_udp_req / dpd_sip_udp_resp (either one enables SIP)
    dpd_orig=(re.compile(rb"[^\n]* SIP/[0-9]\.[0-9]\r\n"), re.compile(rb" ?SIP/[0-9]\.[0-9](\r\n| [0-9][0-9][0-9] )")),
    zeek_scripts=("base/protocols/sip",),
    logs=("sip",),
    options=SIPOptions,
    events=("sip_request", "sip_reply", "sip_header", "sip_all_headers", "sip_begin_entity", "sip_end_entity"),
))

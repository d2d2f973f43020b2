"""Sans-I/O HTTP/1.x parser with Zeek's HTTP analyzer semantics.

``HTTPParser.data(is_orig, bytes, ts)`` returns a list of events (``events.py``); ``eof``,
``gap`` and ``done`` likewise.  It reproduces what Zeek's analyzer (src/analyzer/protocol/http
with its ContentLine and MIME support analyzers) decides: where lines end (CRLF, lone CR or lone
LF), request-line and URI parsing with Zeek's unescaping and weirds, status-line parsing,
message bodies (Content-Length, chunked for HTTP/1.1 only, until close, HTTP/0.9 replies),
gzip/deflate decoding (body lengths are decoded lengths), 206 Content-Range, multipart and
message/rfc822 entities (each leaf entity is a file), 101 upgrades and CONNECT tunnels.

Caps: line length, header count, MIME depth, decompressed size; a cap gives a weird and, where
parsing cannot continue, a ``Violation`` after which the parser ignores its input.
"""

from __future__ import annotations

import binascii
import re
import zlib

from analysis.protocols.http.events import (CONFIRM, BeginEntity, ConnectEstablished, EndEntity,
                                            EntityData, Header, MessageDone, Reply, Request,
                                            TunnelData, Upgrade, Violation, Weird)

MAX_LINE = 1 << 20              # ContentLine buffer cap (contentline_size_exceeded)
MAX_HEADERS = 1000              # headers per entity
MAX_PART_HEADER = 1 << 16       # header block of a MIME part
MAX_DELIMITER_LINE = 1024       # what may follow a multipart boundary on its line
MAX_MIME_DEPTH = 100            # Zeek's MIME max depth (exceeded_mime_max_depth)
MAX_DECOMPRESSED = 1 << 28      # decoded bytes per entity before we stop inflating
DECODE_CHUNK = 1 << 20          # inflate at most this much per step
INT64_MAX = (1 << 63) - 1
UNTIL_EOF = 1 << 62

_EOL = re.compile(rb"\r\n|\r|\n")
_TOKEN = re.compile(rb"[^\x00-\x20\x7f-\xff()<>@,;:\\\"/\[\]?={}]*")
_URI = re.compile(rb"[A-Za-z0-9:/?#\[\]@!$&'()*+,;=\-_.~%]*")
_MIME_TOKEN = re.compile(rb"[^\x00-\x20\x7f()<>@,;:\\\"/\[\]?=]*")
_WS = b" \t"
_HEX = b"0123456789abcdefABCDEF"
# headers that change parsing (everything else is only reported)
_SPECIAL_HEADERS = frozenset({b"content-length", b"content-range", b"transfer-encoding",
                              b"content-encoding", b"expect", b"connection", b"upgrade",
                              b"content-type", b"content-transfer-encoding"})
_BOUNDARY = re.compile(rb"""boundary\s*=\s*(?:"([^"]*)"|([^;\s]+))""", re.I)

# Message states (per direction)
_LINE = 0          # expecting a request/status line
_HEADERS = 1       # in the header block of the top-level entity
_BODY_PLAIN = 2    # raw bytes: Content-Length / chunk data / until EOF
_BODY_LINES = 3    # reply body without length: line by line until EOF
_CHUNK_SIZE = 4
_CHUNK_CRLF = 5
_TRAILER = 6
_NOTHING = 7       # stop parsing this direction
_HTTP09 = 8        # responder side after an HTTP/0.9 request: everything is body
_TUNNEL = 9        # after CONNECT / upgrade: forward bytes

NOT_EXPECTED, MAYBE, EXPECTED = 0, 1, 2


def _s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def atoi_n(b: bytes, base: int = 10) -> int | None:
    """Zeek's ``util::atoi_n``: optional '-', digits up to the first non-digit; None when no
    digit or the value does not fit int64."""
    i = 0
    neg = False
    if b[:1] == b"-":
        neg = True
        i = 1
    j = i
    n = len(b)
    digits = _HEX if base == 16 else b"0123456789"
    while j < n and b[j] in digits:
        j += 1
    if j == i:
        return None
    v = int(b[i:j], base)
    if v > INT64_MAX:
        return None
    return -v if neg else v


def unescape_uri(uri: bytes, weird) -> bytes:
    """Zeek's ``unescape_URI``: %XX and %uXXXX decoding with its weirds."""
    if b"%" not in uri:
        return uri
    out = bytearray()
    i = 0
    n = len(uri)
    while i < n:
        j = uri.find(b"%", i)
        if j < 0:
            out += uri[i:]
            break
        out += uri[i:j]
        i = j + 1
        if i == n:
            out += b"%"
            weird("illegal_%_at_end_of_URI")
            break
        if i + 1 == n:
            out += b"%" + uri[i:i + 1]
            weird("partial_escape_at_end_of_URI")
            break
        c0 = uri[i]
        if c0 == 0x25:  # "%%": drop the first one
            weird("double_%_in_URI")
            continue
        c1 = uri[i + 1]
        if c0 in _HEX and c1 in _HEX:
            out.append(int(uri[i:i + 2], 16))
            i += 2
            continue
        if n - i >= 5 and c0 == 0x75 and all(ch in _HEX for ch in uri[i + 1:i + 5]):
            if uri[i + 1:i + 3] != b"00":
                out.append(int(uri[i + 1:i + 3], 16))
            out.append(int(uri[i + 3:i + 5], 16))
            i += 5
            continue
        weird("unescaped_%_in_URI")
        out += b"%" + uri[i:i + 1]
        i += 1
    return bytes(out)


def _skip_ws(b: bytes, i: int) -> int:
    n = len(b)
    while i < n and b[i] in _WS:
        i += 1
    return i


def _value_token(value: bytes) -> tuple[bytes, bytes]:
    """MIME ``get_value_token`` / ``get_value_after_token``."""
    i = _skip_ws(value, 0)
    m = _MIME_TOKEN.match(value, i)
    return value[i:m.end()], value[m.end():]


def _version(b: bytes) -> tuple[int, int] | None:
    if len(b) >= 3 and 48 <= b[0] <= 57 and b[1] == 0x2E and 48 <= b[2] <= 57:
        return (b[0] - 48, b[2] - 48)
    return None


def _vstr(v: tuple[int, int] | None) -> str:
    return "0.0" if v is None else f"{v[0]}.{v[1]}"


class _Decoder:
    """Content-Encoding gzip/deflate with an output cap (Zeek's ZIP analyzer)."""

    __slots__ = ("z", "raw_tried", "total", "dead", "gzip")

    def __init__(self, gzip: bool) -> None:
        self.gzip = gzip
        self.z = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
        self.raw_tried = False
        self.total = 0
        self.dead = False

    def feed(self, data: bytes):
        """Yield the inflated bytes in pieces of at most DECODE_CHUNK (bounded memory)."""
        while data and not self.dead:
            try:
                out = self.z.decompress(data, min(DECODE_CHUNK, MAX_DECOMPRESSED - self.total))
            except zlib.error:
                if not self.gzip and not self.raw_tried and self.total == 0:
                    # "deflate" is often raw deflate without the zlib header.
                    self.raw_tried = True
                    self.z = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                self.dead = True
                return
            data = self.z.unconsumed_tail
            self.total += len(out)
            if self.total >= MAX_DECOMPRESSED:
                self.dead = True
            if out:
                yield out
            if self.z.eof:
                return


class _Entity:
    """One MIME entity: the top level of a message, or a part of a multipart/message body.

    The top-level entity's header block is parsed by the message (line rules of Zeek's
    ContentLine); nested entities are fed their raw bytes and split on CRLF like Zeek does
    inside multipart bodies.
    """

    __slots__ = ("p", "is_orig", "depth", "kind", "boundary", "hbuf", "in_header", "child",
                 "buf", "state", "dead", "partial_offset", "cte_b64", "b64rest", "nheaders")

    def __init__(self, p: HTTPParser, is_orig: bool, depth: int, top: bool) -> None:
        self.p = p
        self.is_orig = is_orig
        self.depth = depth
        self.kind = "leaf"
        self.boundary = b""
        self.hbuf = b""
        self.in_header = not top
        self.child: _Entity | None = None
        self.buf = b""
        self.state = -1           # multipart: -1 not started, 0 preamble, 1 in part, 2 epilogue
        self.dead = False
        self.partial_offset = -1
        self.cte_b64 = False
        self.b64rest = b""
        self.nheaders = 0
        p.want_data[is_orig] = True
        p._emit(BeginEntity(is_orig, depth))

    # -- headers (shared by top level and parts) ---------------------------------------

    def header(self, name: bytes, value: bytes, lname: bytes | None = None) -> None:
        p = self.p
        self.nheaders += 1
        if lname is None:
            lname = name.lower()
        if lname == b"content-type":
            tok, rest = _value_token(value)
            t = tok.lower()
            if t == b"multipart":
                m = _BOUNDARY.search(rest)
                if m:
                    self.kind = "multipart"
                    self.boundary = m.group(1) if m.group(1) is not None else m.group(2)
            elif t == b"message":
                self.kind = "message"
        elif lname == b"content-transfer-encoding" and self.depth > 0:
            tok, _ = _value_token(value)
            self.cte_b64 = tok.lower() == b"base64"
        sname = _s(name)
        p._emit(Header(self.is_orig, sname, sname.upper(), _s(value)))

    # -- body of nested entities -----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Raw bytes of this entity (headers first unless top level)."""
        if self.dead or not data:
            return
        if self.in_header:
            hb = self.hbuf + data
            if hb.startswith(b"\r\n"):
                end, skip = 0, 2
            else:
                end = hb.find(b"\r\n\r\n")
                skip = 4
            if end < 0:
                if len(hb) > MAX_PART_HEADER:
                    self.p._weird("contentline_size_exceeded")
                    self.dead = True
                    self.hbuf = b""
                    return
                self.hbuf = hb
                return
            self.hbuf = b""
            self.in_header = False
            self._parse_part_headers(hb[:end])
            data = hb[end + skip:]
            if not data:
                return
        self.body(data)

    def _parse_part_headers(self, block: bytes) -> None:
        name = None
        value = b""
        for line in block.split(b"\r\n"):
            if line[:1] in (b" ", b"\t") and name is not None:
                value += line
                continue
            if name is not None:
                self.header(name, value)
            k = line.find(b":")
            if k <= 0:
                name = None
                continue
            name = line[:k].rstrip(b" \t")
            value = line[_skip_ws(line, k + 1):]
            if self.nheaders > MAX_HEADERS:
                return
        if name is not None:
            self.header(name, value)

    def body(self, data: bytes) -> None:
        if self.kind == "leaf":
            if self.cte_b64:
                data = self._b64(data)
            if data:
                self.p._emit(EntityData(self.is_orig, data, self.partial_offset))
                if self.partial_offset >= 0:
                    self.partial_offset += len(data)
            return
        if self.kind == "message":
            if self.child is None:
                if not self._may_nest():
                    return
                self.child = _Entity(self.p, self.is_orig, self.depth + 1, False)
            self.child.feed(data)
            return
        self._multipart(data)

    def _may_nest(self) -> bool:
        if self.depth + 1 > MAX_MIME_DEPTH:
            if not self.p._mime_depth_flagged:
                self.p._mime_depth_flagged = True
                self.p._weird("exceeded_mime_max_depth", str(MAX_MIME_DEPTH))
                self.p._history_x = True
            self.dead = True
            return False
        return True

    def _b64(self, data: bytes) -> bytes:
        raw = self.b64rest + data.translate(None, b"\r\n \t")
        cut = len(raw) - len(raw) % 4
        self.b64rest = raw[cut:]
        try:
            return binascii.a2b_base64(raw[:cut], strict_mode=True)
        except (binascii.Error, ValueError):
            self.p._weird("base64_illegal_encoding")
            try:
                return binascii.a2b_base64(raw[:cut])
            except (binascii.Error, ValueError):
                return b""

    def _multipart(self, data: bytes) -> None:
        delim = b"\r\n--" + self.boundary
        if self.state < 0:
            # the first delimiter may open the body: pretend a CRLF precedes it
            self.state = 0
            buf = b"\r\n" + data
        else:
            buf = self.buf + data if self.buf else data
        self.buf = b""
        while buf:
            if self.state == 2:
                return
            i = buf.find(delim)
            if i < 0:
                keep = len(delim) + 1
                if len(buf) > keep:
                    if self.state == 1 and self.child is not None:
                        self.child.feed(buf[:-keep])
                    buf = buf[-keep:]
                self.buf = buf
                return
            after = i + len(delim)
            if len(buf) < after + 2:
                if self.state == 1 and self.child is not None and i:
                    self.child.feed(buf[:i])
                self.buf = buf[i:]
                return
            if self.state == 1 and self.child is not None and i:
                self.child.feed(buf[:i])
            if buf[after:after + 2] == b"--":
                self._close_child()
                self.state = 2
                return
            eol = buf.find(b"\r\n", after)
            if eol < 0:
                if len(buf) - after > MAX_DELIMITER_LINE:
                    self.dead = True
                    return
                self.buf = buf[i:]
                return
            self._close_child()
            if not self._may_nest():
                return
            self.state = 1
            self.child = _Entity(self.p, self.is_orig, self.depth + 1, False)
            buf = buf[eol + 2:]

    def _close_child(self) -> None:
        if self.child is not None:
            self.child.end()
            self.child = None

    def end(self) -> None:
        """End of this entity's data (recursively closes open parts)."""
        if self.kind == "multipart" and self.state == 1 and self.buf and self.child is not None:
            self.child.feed(self.buf)
        self.buf = b""
        if self.child is not None:
            self.child.end()
            self.child = None
        p = self.p
        self.p._emit(EndEntity(self.is_orig, self.is_orig or p.reply_code != 206))


class _Message:
    """One request or reply: the top-level entity plus the transfer framing of its body."""

    __slots__ = ("is_orig", "expect_body", "entity", "content_length", "chunked", "encoding",
                 "decoder", "body_length", "header_length", "gap_length", "start", "remaining",
                 "partial", "range_length", "instance_length", "finished", "hname", "hvalue",
                 "hfold", "delivery", "top_kind_body", "ended_data", "expect_100", "tail")

    def __init__(self, p: HTTPParser, is_orig: bool, expect_body: int, header_length: int,
                 ts: float) -> None:
        self.is_orig = is_orig
        self.expect_body = expect_body
        self.entity = _Entity(p, is_orig, 0, True)
        self.content_length = -1
        self.chunked = 0              # 0 none, 1 seen header, 2 in chunks
        self.encoding = None
        self.decoder: _Decoder | None = None
        self.body_length = 0
        self.header_length = header_length
        self.gap_length = 0
        self.start = ts
        self.remaining = 0
        self.partial = False
        self.range_length = -1
        self.instance_length = -1
        self.finished = False
        self.hname: bytes | None = None
        self.hvalue = b""
        self.hfold = 0
        self.delivery = -1            # SetDeliverySize: CL of a multipart top-level body
        self.top_kind_body = False
        self.ended_data = False
        self.expect_100 = False
        self.tail = b""


class HTTPParser:
    """Both directions of one HTTP connection (Zeek's HTTP_Analyzer + ContentLine + MIME)."""

    def __init__(self) -> None:
        self._out: list = []
        self._buf = {True: b"", False: b""}
        self._last_cr = {True: False, False: False}
        self._skip = {True: False, False: False}
        self.req_state = _LINE
        self.rep_state = _LINE
        self.req_msg: _Message | None = None
        self.rep_msg: _Message | None = None
        self.req_ongoing = False
        self.rep_ongoing = False
        self.req_version: tuple[int, int] | None = None
        self.rep_version: tuple[int, int] | None = None
        self.reply_code = 0
        self.reason: str | None = None
        self.keep_alive = False
        self.connection_close = False
        self.num_requests = 0
        self.num_replies = 0
        self.unanswered: list[str] = []
        self.connect_request = False
        self.upgrade_connection = False
        self.upgrade_protocol = ""
        self.upgraded = False
        self.tunnel = False
        self.stopped = False
        self._mime_depth_flagged = False
        self._history_x = False
        self.now = 0.0
        # Flow control from the consumer: False = it needs no more bytes of the current entity
        # (file analysis has seen its beginning); a new entity sets it back to True.
        self.want_data = {True: True, False: True}

    # -- public API ----------------------------------------------------------------------

    def data(self, is_orig: bool, data: bytes, ts: float) -> list:
        self.now = ts
        out = self._out = []
        if self.stopped or not data or self._skip[is_orig]:
            return out
        if self.upgraded or self.tunnel:
            out.append(TunnelData(is_orig, bytes(data)))
            return out
        if not is_orig and self.rep_state == _HTTP09:
            self._http09_reply(bytes(data))
            return out
        buf = self._buf[is_orig]
        if buf:
            # a partial line is waiting: grow it in place until a line end (or the cap) arrives,
            # so a long line costs linear time however it is segmented
            self._buf[is_orig] = b""
            if b"\n" not in data and b"\r" not in data and len(buf) + len(data) <= MAX_LINE:
                acc = buf if type(buf) is bytearray else bytearray(buf)
                acc += data
                self._buf[is_orig] = acc
                return out
            self._process(is_orig, bytes(buf) + data)
            return out
        # fast path: a segment strictly inside a plain (Content-Length / chunk) body
        msg = self.req_msg if is_orig else self.rep_msg
        if (self.req_state if is_orig else self.rep_state) == _BODY_PLAIN and msg.decoder is None \
                and len(data) < msg.remaining and not msg.top_kind_body:
            ent = msg.entity
            if ent.kind == "leaf" and not ent.cte_b64:
                n = len(data)
                msg.remaining -= n
                msg.body_length += n
                if self.want_data[is_orig]:
                    out.append(EntityData(is_orig, data if type(data) is bytes else bytes(data),
                                          ent.partial_offset))
                if ent.partial_offset >= 0:
                    ent.partial_offset += n
                return out
        self._process(is_orig, bytes(data))
        return out

    def eof(self, is_orig: bool, ts: float) -> list:
        self.now = ts
        out = self._out = []
        if self.stopped:
            return out
        buf = self._buf[is_orig]
        if buf and not self._skip[is_orig] and not self.upgraded and not self.tunnel:
            # ContentLine delivers a trailing partial line at EOF
            self._buf[is_orig] = b""
            self._process(is_orig, bytes(buf) + b"\n")
        if is_orig:
            self._request_made(False, "message ends as connection contents are completely delivered")
        else:
            self._reply_made(False, "message ends as connection contents are completely delivered")
        return out

    def gap(self, is_orig: bool, length: int, ts: float) -> list:
        self.now = ts
        out = self._out = []
        if self.stopped or self.upgraded or self.tunnel:
            return out
        msg = self.req_msg if is_orig else self.rep_msg
        state = self.req_state if is_orig else self.rep_state
        if msg is not None and not msg.finished and state == _BODY_PLAIN and msg.remaining >= length \
                and msg.body_length > 0 and not self._buf[is_orig]:
            msg.body_length += length
            msg.gap_length += length
            msg.remaining -= length
            if msg.remaining <= 0:
                self._body_complete(is_orig, msg)
            return out
        if is_orig:
            self._request_made(True, "message interrupted by a content gap")
            self._reply_made(True, "message interrupted by a content gap")
        else:
            self._reply_made(True, "message interrupted by a content gap")
        self._skip[is_orig] = True
        self._buf[is_orig] = b""
        return out

    def done(self, ts: float) -> list:
        self.now = ts
        out = self._out = []
        self._request_made(True, "message interrupted when connection done")
        self._reply_made(True, "message interrupted when connection done")
        return out

    @property
    def wants_history_x(self) -> bool:
        return self._history_x

    # -- helpers -------------------------------------------------------------------------

    def _emit(self, ev) -> None:
        self._out.append(ev)

    def _weird(self, name: str, addl: str = "", source: str | None = None) -> None:
        self._out.append(Weird(name, addl, source))

    def _violation(self, reason: str) -> None:
        self._out.append(Violation(reason))

    def _set_version(self, is_orig: bool, v: tuple[int, int] | None) -> None:
        """Zeek's SetVersion: a change of an already known version is a weird."""
        cur = self.req_version if is_orig else self.rep_version
        if cur is not None and cur != v:
            self._weird("HTTP_version_mismatch")
        if is_orig:
            self.req_version = v
        else:
            self.rep_version = v
        if v is not None and (v[0] > 1 or (v[0] == 1 and v[1] > 0)):
            self.keep_alive = True

    # -- the stream loop -----------------------------------------------------------------

    def _process(self, is_orig: bool, buf: bytes) -> None:
        pos = 0
        n = len(buf)
        while pos < n:
            if self.stopped or self._skip[is_orig]:
                return
            if self.upgraded or self.tunnel:
                self._emit(TunnelData(is_orig, buf[pos:]))
                return
            state = self.req_state if is_orig else self.rep_state
            if state == _NOTHING:
                return
            if not is_orig and state == _HTTP09:
                self._http09_reply(buf[pos:])
                return
            msg = self.req_msg if is_orig else self.rep_msg
            if state == _BODY_PLAIN:
                take = min(msg.remaining, n - pos)
                chunk = buf[pos:pos + take]
                pos += take
                msg.remaining -= take
                self._body_data(msg, chunk)
                if msg.remaining <= 0:
                    self._body_complete(is_orig, msg)
                continue
            # line mode
            if self._last_cr[is_orig]:
                self._last_cr[is_orig] = False
                if buf[pos] == 0x0A:
                    pos += 1
                    continue
            if state == _HEADERS:
                # fast path: a whole header block with nothing but CRLF line ends
                end = buf.find(b"\r\n\r\n", pos)
                if end > pos and not buf.startswith(b"\r\n", pos):
                    block = buf[pos:end]
                    ncrlf = block.count(b"\r\n")
                    if block.count(b"\r") == ncrlf and block.count(b"\n") == ncrlf:
                        if b"\r\n " in block or b"\r\n\t" in block or msg.hname is not None:
                            for line in block.split(b"\r\n"):
                                self._header_line(is_orig, msg, line)
                        else:
                            self._header_block(is_orig, msg, block)
                        pos = end + 4
                        self._line(is_orig, b"", 0)      # the empty line that ends the block
                        continue
            m = _EOL.search(buf, pos)
            if m is None:
                rest = buf[pos:]
                if len(rest) > MAX_LINE:
                    self._weird("contentline_size_exceeded", source="CONTENTLINE")
                    self._violation("HTTP line too long")
                    self.stopped = True
                    return
                self._buf[is_orig] = rest
                return
            line = buf[pos:m.start()]
            if m.end() - m.start() == 1 and buf[m.start()] == 0x0D and m.end() == n:
                self._last_cr[is_orig] = True
            pos = m.end()
            self._line(is_orig, line, len(line))

    def _line(self, is_orig: bool, line: bytes, length: int) -> None:
        if is_orig:
            st = self.req_state
            if st == _LINE:
                res = self._request_line(line)
                if res > 0:
                    self.num_requests += 1
                    if not self.keep_alive and self.num_requests > 1:
                        self._weird("unexpected_multiple_HTTP_requests")
                    self.req_state = _HEADERS
                    self.req_ongoing = True
                    method = self._method
                    self.unanswered.append(method)
                    self._emit(CONFIRM)
                    if "CONNECT".startswith(method.upper()):
                        self.connect_request = True
                    self._emit(Request(method, _s(self._uri), _s(self._unescaped), _vstr(self.req_version)))
                    self._init_message(True, MAYBE, length)
                    if self.req_version == (0, 9):
                        if method != "GET":
                            self._weird("invalid_http_09_request_method", method)
                        if self.rep_msg is not None:
                            self._weird("http_09_reply_before_request")
                            self._message_done(False, self.rep_msg, False, "message ends normally")
                            self.rep_msg = None
                        self.rep_state = _HTTP09
                        buf = self._buf[False]
                        if buf:
                            self._buf[False] = b""
                            self._http09_reply(bytes(buf))
                elif res == 0:
                    if self.req_ongoing:
                        pass  # crud_trailing_HTTP_request (http_event only)
                    elif length == 0:
                        self._weird("empty_http_request")
                    else:
                        self._violation("not a http request line")
                        self.req_state = _NOTHING
            elif st in (_HEADERS, _TRAILER):
                self._header_line(True, self.req_msg, line)
            elif st == _BODY_LINES:
                self._body_line(True, self.req_msg, line)
            elif st == _CHUNK_SIZE:
                self._chunk_size(True, self.req_msg, line)
            elif st == _CHUNK_CRLF:
                self.req_state = _CHUNK_SIZE
        else:
            st = self.rep_state
            if st == _LINE:
                if self._reply_line(line):
                    self.num_replies += 1
                    if self.unanswered:
                        self._emit(CONFIRM)
                    self.rep_state = _HEADERS
                    self.rep_ongoing = True
                    self._emit(Reply(_vstr(self.rep_version), self.reply_code,
                                     self.reason if self.reason is not None else "<empty>"))
                    if self.connect_request and self.reply_code != 200:
                        self.connect_request = False
                    self._init_message(False, self._expect_reply_body(), length)
                elif length:
                    self._violation("not a http reply line")
                    self.rep_state = _NOTHING
            elif st in (_HEADERS, _TRAILER):
                self._header_line(False, self.rep_msg, line)
                if self.connect_request and length == 0 and st == _HEADERS:
                    self.tunnel = True
                    self._emit(ConnectEstablished())
            elif st == _BODY_LINES:
                self._body_line(False, self.rep_msg, line)
            elif st == _CHUNK_SIZE:
                self._chunk_size(False, self.rep_msg, line)
            elif st == _CHUNK_CRLF:
                self.rep_state = _CHUNK_SIZE

    # -- request / reply lines -----------------------------------------------------------

    def _request_line(self, line: bytes) -> int:
        end_m = _TOKEN.match(line).end()
        if end_m == 0:
            if len(line) >= 9 and line[-9:-3].upper() == b" HTTP/":
                self._weird("bad_HTTP_request_with_version")
            else:
                self._weird("bad_HTTP_request")
            return 0
        rest = _skip_ws(line, end_m)
        if rest == end_m:
            self._weird("bad_HTTP_request")
            return 0
        self._parse_request(line, rest)
        if self.req_version == (0, 9):
            if end_m < 3 or not self._uri:
                self._weird("bad_HTTP_request")
                return 0
        self._method = _s(line[:end_m])
        return 1

    def _parse_request(self, line: bytes, start: int) -> None:
        n = len(line)
        eou = _URI.match(line, start).end()
        match = line.startswith(b"HTTP/", start)
        if not match and line[start:start + 5].upper() == b"HTTP/":
            match = True
            self._weird("lowercase_HTTP_keyword")
        if eou >= n and match:
            self._weird("missing_HTTP_uri")
            eou = start
        vs = -1
        if eou < n:
            i = line.upper().find(b"HTTP/", eou)
            if i >= 0 and line[i:i + 5] != b"HTTP/":
                self._weird("lowercase_HTTP_keyword")
            if i >= 0:
                j = i
                while j > eou and line[j - 1] in _WS:
                    j -= 1
                vs = i
                eou = j
            else:
                eou = n
        if vs < 0:
            self._set_version(True, (0, 9))
        elif vs + 8 <= n:
            v = _version(line[vs + 5:])
            self._set_version(True, v)
        self._uri = line[start:eou]
        self._unescaped = unescape_uri(self._uri, self._weird)

    def _reply_line(self, line: bytes) -> bool:
        if not line.startswith(b"HTTP/"):
            return False
        self._set_version(False, _version(line[5:]))
        n = len(line)
        i = 5
        while i < n and line[i] not in _WS:
            i += 1
        if i >= n:
            return False
        i = _skip_ws(line, i)
        if i + 3 > n:
            return False
        code = line[i:i + 3]
        self.reply_code = int(code) if code.isdigit() else 0
        i += 3
        while i < n and line[i] not in _WS:
            i += 1
        if i >= n:
            self.reason = None
            return True
        i = _skip_ws(line, i)
        self.reason = _s(line[i:])
        return True

    def _expect_reply_body(self) -> int:
        method = self.unanswered[0] if self.unanswered else None
        if method is not None and method and "HEAD".startswith(method.upper()):
            return NOT_EXPECTED
        c = self.reply_code
        if 100 <= c < 200 or c == 204 or c == 304:
            return NOT_EXPECTED
        return EXPECTED

    # -- messages ------------------------------------------------------------------------

    def _init_message(self, is_orig: bool, expect_body: int, header_length: int) -> None:
        old = self.req_msg if is_orig else self.rep_msg
        if old is not None and not old.finished:
            self._weird("HTTP_overlapping_messages")
        msg = _Message(self, is_orig, expect_body, header_length, self.now)
        if is_orig:
            self.req_msg = msg
        else:
            self.rep_msg = msg

    def _header_line(self, is_orig: bool, msg: _Message, line: bytes) -> None:
        msg.header_length += len(line)
        if line[:1] in (b" ", b"\t") and msg.hname is not None:
            msg.hvalue += line
            msg.hfold += 1
            return
        self._flush_header(msg)
        if not line:
            self._all_headers(is_orig, msg)
            return
        k = line.find(b":")
        if k <= 0:
            return  # MIME: not a header line, ignored
        msg.hname = line[:k].rstrip(b" \t")
        msg.hvalue = line[_skip_ws(line, k + 1):]
        msg.hfold = 1

    def _header_block(self, is_orig: bool, msg: _Message, block: bytes) -> None:
        """Header lines without folding or odd line ends: the common case, in one loop."""
        msg.header_length += len(block) - 2 * block.count(b"\r\n")
        ent = msg.entity
        out = self._out
        special = _SPECIAL_HEADERS
        for line in block.split(b"\r\n"):
            k = line.find(b":")
            if k <= 0:
                continue
            name = line[:k].rstrip(b" \t")
            lname = name.lower()
            if lname in special or ent.nheaders >= MAX_HEADERS:
                msg.hname = name
                msg.hvalue = line[k + 1:].lstrip(b" \t")
                msg.hfold = 1
                self._flush_header(msg)
                continue
            ent.nheaders += 1
            sname = name.decode("utf-8", "surrogateescape")
            out.append(Header(is_orig, sname, sname.upper(),
                              line[k + 1:].lstrip(b" \t").decode("utf-8", "surrogateescape")))

    def _flush_header(self, msg: _Message) -> None:
        name = msg.hname
        if name is None:
            return
        msg.hname = None
        value = msg.hvalue
        state = self.req_state if msg.is_orig else self.rep_state
        if state == _TRAILER:
            return
        if msg.entity.nheaders >= MAX_HEADERS:
            if msg.entity.nheaders == MAX_HEADERS:
                self._weird("HTTP_too_many_headers")
                msg.entity.nheaders += 1
            return
        if msg.hfold > 1:
            self._weird("HTTP_obsolete_line_folding", _s(name))
        lname = name.lower()
        if lname == b"content-length":
            if msg.chunked:
                self._weird("HTTP_content_length_and_chunked")
            tok, _ = _value_token(value)
            if tok:
                v = atoi_n(tok)
                if v is not None and v >= 0:
                    if v > 0 and tok[:1] == b"0":
                        self._weird("HTTP_content_length_leading_zeros", _s(tok))
                    msg.content_length = v
                    if msg.partial and msg.range_length != v:
                        self._weird("HTTP_range_not_matching_len")
                        if msg.range_length > v:
                            msg.content_length = msg.range_length
                    if v == 0 and msg.expect_100:
                        self._weird("HTTP_content_length_0_and_expect_100_cont")
                else:
                    self._weird("HTTP_bad_content_length", _s(tok))
                    msg.content_length = 0
        elif lname == b"content-range" and self.reply_code == 206 and not msg.is_orig:
            self._content_range(msg, value)
        elif lname == b"transfer-encoding":
            ver = self.req_version if self.req_ongoing and msg.is_orig else self.rep_version
            tok, rest = _value_token(value)
            if tok.lower() == b"chunked" and ver == (1, 1):
                msg.chunked = 1
                if rest:
                    self._weird("HTTP_chunked_multi", _s(rest))
                if msg.content_length >= 0:
                    self._weird("HTTP_content_length_and_chunked")
        elif lname == b"content-encoding":
            tok, _ = _value_token(value)
            t = tok.lower()
            if t in (b"gzip", b"x-gzip"):
                msg.encoding = "gzip"
            elif t == b"deflate":
                msg.encoding = "deflate"
        elif lname == b"expect":
            tok, _ = _value_token(value)
            if tok.lower() != b"100-continue":
                self._weird("HTTP_expect_not_100_continue", _s(tok))
            msg.expect_100 = True
            if msg.content_length == 0:
                self._weird("HTTP_content_length_0_and_expect_100_cont")
        elif lname == b"connection":
            tok, _ = _value_token(value)
            t = tok.lower()
            if msg.is_orig:
                if t == b"keep-alive":
                    self.keep_alive = True
            else:
                if t == b"close":
                    self.connection_close = True
                elif t == b"upgrade":
                    self.upgrade_connection = True
        elif lname == b"upgrade" and not msg.is_orig:
            tok, _ = _value_token(value)
            self.upgrade_protocol = _s(tok)
        msg.entity.header(name, value, lname)

    def _content_range(self, msg: _Message, value: bytes) -> None:
        if msg.chunked:
            self._weird("HTTP_content_range_and_chunked")
        unit, rest = _value_token(value)
        rng = rest.replace(b" ", b"")
        if unit != b"bytes":
            self._weird("HTTP_content_range_unknown_byte_unit")
            return
        p = rng.find(b"/")
        if p < 0:
            self._weird("HTTP_content_range_cannot_parse")
            return
        spec, inst = rng[:p], rng[p + 1:]
        q = spec.find(b"-")
        if q < 0:
            self._weird("HTTP_content_range_cannot_parse")
            return
        f = atoi_n(spec[:q])
        last = atoi_n(spec[q + 1:])
        if f is None or last is None:
            self._weird("HTTP_content_range_cannot_parse", _s(rng))
            return
        if f < 0 or last < 0:
            self._weird("HTTP_content_range_invalid", _s(rng))
            return
        if last < f:
            self._weird("HTTP_non_positive_content_range", _s(rng))
            return
        if last - f > INT64_MAX - 1:
            self._weird("HTTP_content_range_overflow", _s(rng))
            return
        length = last - f + 1
        if inst != b"*":
            il = atoi_n(inst)
            if il is None:
                self._weird("HTTP_content_range_invalid_instance", _s(rng))
                il = 0
            msg.instance_length = il
        msg.partial = True
        msg.entity.partial_offset = f
        msg.range_length = length
        if msg.content_length > 0:
            if msg.content_length != length:
                self._weird("HTTP_range_not_matching_len")
                if length > msg.content_length:
                    msg.content_length = length
        else:
            msg.content_length = length

    def _all_headers(self, is_orig: bool, msg: _Message) -> None:
        """Zeek's HTTP_Entity::SubmitAllHeaders: decide how the body is framed."""
        state_attr = "req_state" if is_orig else "rep_state"
        if getattr(self, state_attr) == _TRAILER:
            setattr(self, state_attr, _NOTHING)
            self._end_of_data(is_orig, msg)
            return
        if msg.expect_body == NOT_EXPECTED:
            self._end_of_data(is_orig, msg)
            return
        if msg.encoding is not None:
            msg.decoder = _Decoder(msg.encoding == "gzip")
        kind = msg.entity.kind
        if kind in ("multipart", "message"):
            if msg.chunked:
                self._weird("HTTP_chunked_transfer_for_multipart_message")
                msg.chunked = 0
            msg.top_kind_body = True
            if msg.content_length >= 0:
                if msg.content_length > 0:
                    msg.remaining = msg.content_length
                    msg.delivery = msg.content_length
                    setattr(self, state_attr, _BODY_PLAIN)
                else:
                    self._end_of_data(is_orig, msg)
            else:
                msg.remaining = UNTIL_EOF
                setattr(self, state_attr, _BODY_PLAIN)
            return
        if msg.chunked:
            msg.chunked = 2
            setattr(self, state_attr, _CHUNK_SIZE)
        elif msg.content_length >= 0:
            if msg.content_length > 0:
                msg.remaining = msg.content_length
                setattr(self, state_attr, _BODY_PLAIN)
            else:
                self._end_of_data(is_orig, msg)
        elif self.connection_close or msg.encoding is not None:
            msg.remaining = UNTIL_EOF
            setattr(self, state_attr, _BODY_PLAIN)
        elif msg.expect_body != EXPECTED:
            self._end_of_data(is_orig, msg)
        else:
            setattr(self, state_attr, _BODY_LINES)

    def _chunk_size(self, is_orig: bool, msg: _Message, line: bytes) -> None:
        v = atoi_n(line, 16)
        if v is None:
            self._weird("HTTP_bad_chunk_size", _s(line))
            v = 0
        if v > 0:
            msg.remaining = v
            if is_orig:
                self.req_state = _BODY_PLAIN
            else:
                self.rep_state = _BODY_PLAIN
        else:
            if is_orig:
                self.req_state = _TRAILER
            else:
                self.rep_state = _TRAILER

    def _body_line(self, is_orig: bool, msg: _Message, line: bytes) -> None:
        self._deliver_clear(msg, line + b"\r\n")

    def _body_data(self, msg: _Message, data: bytes) -> None:
        if msg.decoder is not None:
            for chunk in msg.decoder.feed(data):
                self._deliver_clear(msg, chunk)
            return
        self._deliver_clear(msg, data)

    def _deliver_clear(self, msg: _Message, data: bytes) -> None:
        msg.body_length += len(data)
        if msg.top_kind_body:
            msg.tail = (msg.tail + data)[-2:]
        msg.entity.body(data)

    def _body_complete(self, is_orig: bool, msg: _Message) -> None:
        """The framed part of the body is all here (CL reached or chunk data done)."""
        if msg.chunked == 2:
            if is_orig:
                self.req_state = _CHUNK_CRLF
            else:
                self.rep_state = _CHUNK_CRLF
            return
        if msg.delivery > 0 and msg.top_kind_body and msg.tail != b"\r\n":
            # ContentLine's delivery size ran out inside a line: Zeek adds the CRLF.
            self._weird("line_terminated_without_CRLF", source="CONTENTLINE")
            msg.body_length += 2
        self._end_of_data(is_orig, msg)

    def _end_of_data(self, is_orig: bool, msg: _Message) -> None:
        if msg.ended_data:
            return
        msg.ended_data = True
        if msg.decoder is not None:
            try:
                tail = msg.decoder.z.flush() if not msg.decoder.dead else b""
            except zlib.error:
                tail = b""
            msg.decoder = None
            if tail:
                self._deliver_clear(msg, tail)
        msg.entity.end()
        if is_orig:
            self.req_state = _LINE
        else:
            self.rep_state = _LINE
        self._message_done(is_orig, msg, False, "message ends normally")

    def _message_done(self, is_orig: bool, msg: _Message, interrupted: bool, reason: str,
                      made: bool = True) -> None:
        if msg.finished:
            return
        msg.finished = True
        if not msg.ended_data:
            msg.ended_data = True
            if msg.decoder is not None:
                msg.decoder = None
            msg.entity.end()
        self._emit(MessageDone(is_orig, interrupted, reason, msg.body_length, msg.header_length,
                               msg.gap_length, msg.start))
        if made and reason:
            if is_orig:
                self._request_made(False, reason)
            else:
                self._reply_made(False, reason)

    def _request_made(self, interrupted: bool, reason: str) -> None:
        if not self.req_ongoing:
            return
        self.req_ongoing = False
        msg = self.req_msg
        if msg is not None and not msg.finished:
            self._message_done(True, msg, interrupted, reason, made=False)
        self.req_state = _NOTHING if interrupted else _LINE

    def _reply_made(self, interrupted: bool, reason: str) -> None:
        if not self.rep_ongoing:
            return
        self.rep_ongoing = False
        msg = self.rep_msg
        if msg is not None and not msg.finished:
            self._message_done(False, msg, interrupted, reason, made=False)
        code = self.reply_code
        if (code < 100 or code >= 200) and self.unanswered:
            self.unanswered.pop(0)
        self.reason = None
        if code == 101 and len(self.unanswered) == 1 and self.upgrade_connection and self.upgrade_protocol:
            self.upgraded = True
            self._emit(Upgrade(self.upgrade_protocol))
        self.reply_code = 0
        self.upgrade_connection = False
        self.upgrade_protocol = ""
        if self.rep_state != _HTTP09:
            self.rep_state = _NOTHING if (interrupted or self.upgraded) else _LINE

    def _http09_reply(self, data: bytes) -> None:
        if self.rep_msg is None or self.rep_msg.finished:
            if self.rep_msg is not None:
                return  # one HTTP/0.9 reply per connection
            self._set_version(False, (0, 9))
            if self.unanswered:
                self._emit(CONFIRM)
                self.unanswered.pop(0)
            self.connection_close = True
            self.rep_ongoing = True
            self.reply_code = 0
            self._emit(Reply("0.9", 0, "<empty>"))
            self._init_message(False, self._expect_reply_body(), 0)
            msg = self.rep_msg
            msg.remaining = UNTIL_EOF
        msg = self.rep_msg
        self._body_data(msg, data)

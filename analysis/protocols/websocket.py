"""WebSocket (RFC 6455) after an HTTP ``101 Switching Protocols`` upgrade: websocket.log and
the unwrapped message payload for the protocol tunnelled inside (Zeek 9's WebSocket analyzer).

The HTTP analyzer saw the handshake, so it builds the log row (:func:`handshake_info`) and
hands the rest of the stream to a :class:`WebSocketAnalyzer`.  The frame parser is sans-I/O:
bytes in, :class:`Frame`/:class:`Payload` events out; payload is unmasked chunk by chunk, never
buffered whole, so a huge frame costs no memory.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from analysis.logs.schema import ConnIdRecord, String, log_stream, vector_of
from analysis.protocols.base import Analyzer, AnalyzerContext, AnalyzerSpec, register

MAX_HEADER = 14


@log_stream("websocket")
class WebSocketInfo(ConnIdRecord, kw_only=True):
    host: String | None = None
    uri: String | None = None
    user_agent: String | None = None
    subprotocol: String | None = None
    client_protocols: vector_of("string") | None = None
    server_extensions: vector_of("string") | None = None
    client_extensions: vector_of("string") | None = None


class Frame(NamedTuple):
    is_orig: bool
    fin: bool
    opcode: int
    length: int
    masked: bool


class Payload(NamedTuple):
    """Unmasked bytes of a data frame (text, binary or continuation)."""

    is_orig: bool
    data: bytes


class Close(NamedTuple):
    is_orig: bool
    code: int | None
    reason: str


def _split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [p.strip() for p in value.split(",")]


def handshake_info(ts: float, conn, host, uri, user_agent, client_headers: dict, server_headers: dict
                   ) -> WebSocketInfo:
    """websocket.log row from the upgrade's headers (upper-case names -> last value)."""
    return WebSocketInfo(
        ts=ts, uid=conn.uid, orig_h=conn.orig_h, orig_p=conn.orig_p, resp_h=conn.resp_h,
        resp_p=conn.resp_p, host=host, uri=uri, user_agent=user_agent,
        subprotocol=server_headers.get("SEC-WEBSOCKET-PROTOCOL"),
        client_protocols=_split_list(client_headers.get("SEC-WEBSOCKET-PROTOCOL")),
        server_extensions=_split_list(server_headers.get("SEC-WEBSOCKET-EXTENSIONS")),
        client_extensions=_split_list(client_headers.get("SEC-WEBSOCKET-EXTENSIONS")))


def _unmask(data: bytes, key: bytes, offset: int) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` starting at key position ``offset`` (no per-byte loop)."""
    n = len(data)
    if not n:
        return b""
    k = key[offset % 4:] + key[:offset % 4]
    stream = (k * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


class _Side:
    __slots__ = ("buf", "remaining", "key", "koff", "opcode", "ctrl")

    def __init__(self) -> None:
        self.buf = b""
        self.remaining = 0
        self.key = b""
        self.koff = 0
        self.opcode = 0
        self.ctrl = b""


class FrameParser:
    """Both directions of a WebSocket stream."""

    def __init__(self) -> None:
        self._sides = {True: _Side(), False: _Side()}

    def data(self, is_orig: bool, data: bytes) -> list:
        out: list = []
        s = self._sides[is_orig]
        buf = s.buf + data if s.buf else bytes(data)
        s.buf = b""
        pos = 0
        n = len(buf)
        while pos < n:
            if s.remaining:
                take = min(s.remaining, n - pos)
                chunk = buf[pos:pos + take]
                if s.key:
                    chunk = _unmask(chunk, s.key, s.koff)
                    s.koff += take
                pos += take
                s.remaining -= take
                if s.opcode >= 8:
                    if len(s.ctrl) < 125:
                        s.ctrl += chunk
                    if not s.remaining:
                        self._control(is_orig, s, out)
                elif chunk:
                    out.append(Payload(is_orig, chunk))
                continue
            if n - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            ln = b1 & 0x7F
            hl = 2
            if ln == 126:
                hl = 4
            elif ln == 127:
                hl = 10
            masked = bool(b1 & 0x80)
            if masked:
                hl += 4
            if n - pos < hl:
                break
            if ln == 126:
                ln = int.from_bytes(buf[pos + 2:pos + 4], "big")
            elif ln == 127:
                ln = int.from_bytes(buf[pos + 2:pos + 10], "big") & 0x7FFFFFFFFFFFFFFF
            s.key = buf[pos + hl - 4:pos + hl] if masked else b""
            s.koff = 0
            opcode = b0 & 0x0F
            if opcode:
                s.opcode = opcode
            s.ctrl = b""
            out.append(Frame(is_orig, bool(b0 & 0x80), opcode, ln, masked))
            pos += hl
            s.remaining = ln
            if ln == 0 and s.opcode >= 8:
                self._control(is_orig, s, out)
        if pos < n:
            s.buf = buf[pos:]
        return out

    @staticmethod
    def _control(is_orig: bool, s: _Side, out: list) -> None:
        if s.opcode == 8:
            code = int.from_bytes(s.ctrl[:2], "big") if len(s.ctrl) >= 2 else None
            out.append(Close(is_orig, code, s.ctrl[2:].decode("utf-8", "surrogateescape")))
        s.opcode = 0


class WebSocketAnalyzer(Analyzer):
    """Frames -> events; data payload -> ``inner(is_orig, bytes, ts)`` (the tunnelled protocol)."""

    def __init__(self, ctx: AnalyzerContext) -> None:
        super().__init__(ctx)
        self.parser = FrameParser()
        self.inner: Callable[[bool, bytes, float], None] | None = None
        self.logged = False

    def established(self, info: WebSocketInfo) -> None:
        if not self.logged:
            self.logged = True
            self.ctx.confirm()
            self.ctx.event("websocket_established", info.subprotocol)
            self.ctx.write_log("websocket", info)

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        for e in self.parser.data(is_orig, payload):
            t = type(e)
            if t is Payload:
                if self.inner is not None:
                    self.inner(is_orig, e.data, ts)
            elif t is Frame:
                self.ctx.event("websocket_frame", e.is_orig, e.fin, e.opcode, e.length)
            elif t is Close:
                self.ctx.event("websocket_close", e.is_orig, e.code, e.reason)


SPEC = register(AnalyzerSpec(
    name="websocket",
    factory=WebSocketAnalyzer,
    transports=frozenset({"tcp"}),
    zeek_scripts=("base/protocols/websocket",),
    logs=("websocket",),
    events=("websocket_established", "websocket_frame", "websocket_close"),
))

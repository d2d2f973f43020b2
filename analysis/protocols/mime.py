"""A streaming MIME (RFC 2045/2046, RFC 822 headers) entity parser, shared by SMTP (and HTTP later).

Sans-I/O: the caller hands it the lines of one message (without their CRLF) and gets small
events back, in the order Zeek's MIME analyzer raises its ``mime_*`` events:

* :class:`BeginEntity` -- a new entity starts (the message itself, then each multipart part);
* :class:`Header` -- one complete header (continuation lines appended as they are, the name
  upper-cased, the value without the blanks after the colon; RFC 2047 encoded words are left
  encoded, as Zeek logs them);
* :class:`EndHeaders` -- the blank line after the headers, with the entity's content type;
* :class:`Body` -- one body line of a leaf entity (multipart preambles/epilogues are dropped);
* :class:`EndEntity` -- the entity is complete; ``body_lines``/``body_bytes`` say whether it
  carried any content (Zeek creates a file only for entities with data);
* :class:`MimeWeird` -- a resource cap was hit (the parser keeps going in a safe mode).

:class:`BodyDecoder` turns an entity's body lines into the bytes Zeek hands to file analysis
(Content-Transfer-Encoding decoded, line ends restored as Zeek's MIME analyzer does).

Caps: header bytes per header (``max_header_len``), headers per entity (``max_headers``) and
multipart nesting (``max_depth``, deeper multiparts are treated as opaque leaves).
"""

from __future__ import annotations

import binascii
from typing import NamedTuple


class BeginEntity(NamedTuple):
    depth: int


class Header(NamedTuple):
    name: str      # upper-cased
    value: str


class EndHeaders(NamedTuple):
    content_type: str     # "text/plain" (lower case); "" when absent
    depth: int


class Body(NamedTuple):
    line: bytes


class EndEntity(NamedTuple):
    depth: int
    body_lines: int
    body_bytes: int


class MimeWeird(NamedTuple):
    name: str
    addl: str


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """``'multipart/mixed; boundary="x"'`` -> ``("multipart/mixed", {"boundary": "x"})``."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    while rest:
        part, rest = _next_param(rest)
        k, eq, v = part.partition("=")
        if eq:
            params[k.strip().lower()] = v
    return main.strip().lower(), params


def _next_param(s: str) -> tuple[str, str]:
    """Split off one ``name=value`` parameter; values may be quoted (and contain ';')."""
    s = s.lstrip(" \t;")
    eq = s.find("=")
    semi = s.find(";")
    if eq < 0 or (0 <= semi < eq):
        return (s, "") if semi < 0 else (s[:semi], s[semi + 1:])
    name = s[:eq]
    v = s[eq + 1:].lstrip(" \t")
    if v.startswith('"'):
        end = v.find('"', 1)
        if end < 0:
            return name + "=" + v[1:], ""
        return name + "=" + v[1:end], v[end + 1:]
    semi = v.find(";")
    if semi < 0:
        return name + "=" + v.strip(), ""
    return name + "=" + v[:semi].strip(), v[semi + 1:]


class _Entity:
    __slots__ = ("depth", "in_headers", "headers", "cur", "cur_len", "ctype", "boundary",
                 "child", "body_lines", "body_bytes", "epilogue", "capped")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.in_headers = True
        self.headers = 0
        self.cur: list[bytes] | None = None   # the header being assembled (line parts)
        self.cur_len = 0
        self.ctype = ""
        self.boundary: bytes | None = None    # b"--" + boundary when multipart
        self.child: _Entity | None = None
        self.body_lines = 0
        self.body_bytes = 0
        self.epilogue = False
        self.capped = False


class MimeParser:
    """One message; feed it lines with :meth:`line`, end it with :meth:`finish`."""

    __slots__ = ("root", "max_depth", "max_headers", "max_header_len", "finished")

    def __init__(self, max_depth: int = 32, max_headers: int = 1024, max_header_len: int = 65536) -> None:
        self.root: _Entity | None = None
        self.max_depth = max_depth
        self.max_headers = max_headers
        self.max_header_len = max_header_len
        self.finished = False

    def start(self, out: list) -> None:
        """Open the message's top-level entity (Zeek raises ``mime_begin_entity`` right away)."""
        if self.root is None:
            self.root = _Entity(0)
            out.append(BeginEntity(0))

    def line(self, line: bytes, out: list) -> None:
        """Process one line (no CRLF); appends events to ``out``."""
        if self.finished:
            return
        e = self.root
        if e is None:
            e = self.root = _Entity(0)
            out.append(BeginEntity(0))
        if line[:2] == b"--" and self._boundary(line, out):
            return
        while e.child is not None:
            e = e.child
        if e.in_headers:
            self._header_line(e, line, out)
        elif e.boundary is None:
            e.body_lines += 1
            e.body_bytes += len(line)
            out.append(Body(line))
        # else: multipart preamble or epilogue, dropped

    def finish(self, out: list) -> None:
        """The message ended ('.' or connection end): close every open entity."""
        if self.finished:
            return
        self.finished = True
        if self.root is not None:
            self._close(self.root, out)

    # -- internals ----------------------------------------------------------------------------

    def _boundary(self, line: bytes, out: list) -> bool:
        # innermost multipart first: collect the chain of open entities
        chain = []
        e = self.root
        while e is not None:
            chain.append(e)
            e = e.child
        for e in reversed(chain):
            b = e.boundary
            if b is None or not line.startswith(b):
                continue
            rest = line[len(b):]
            if e.child is not None:
                self._close(e.child, out)
                e.child = None
            if rest[:2] == b"--":
                e.epilogue = True
            else:
                child = _Entity(e.depth + 1)
                e.child = child
                out.append(BeginEntity(child.depth))
            return True
        return False

    def _close(self, e: _Entity, out: list) -> None:
        if e.child is not None:
            self._close(e.child, out)
            e.child = None
        if e.in_headers:
            self._end_header(e, out)
        out.append(EndEntity(e.depth, e.body_lines, e.body_bytes))

    def _header_line(self, e: _Entity, line: bytes, out: list) -> None:
        if not line:
            self._end_headers(e, out)
            return
        if line[0] in (0x20, 0x09) and e.cur is not None:
            if e.cur_len + len(line) > self.max_header_len:
                if not e.capped:
                    e.capped = True
                    out.append(MimeWeird("MIME_header_too_long", str(e.cur_len + len(line))))
                return
            e.cur.append(line)
            e.cur_len += len(line)
            return
        self._end_header(e, out)
        if e.headers >= self.max_headers:
            if e.headers == self.max_headers:
                out.append(MimeWeird("MIME_too_many_headers", str(self.max_headers)))
                e.headers += 1
            return
        e.capped = False
        if len(line) > self.max_header_len:
            out.append(MimeWeird("MIME_header_too_long", str(len(line))))
            line = line[: self.max_header_len]
        e.cur = [line]
        e.cur_len = len(line)

    def _end_header(self, e: _Entity, out: list) -> None:
        parts = e.cur
        if parts is None:
            return
        e.cur = None
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        name, colon, value = raw.partition(b":")
        if not colon:
            return    # not a header (Zeek ignores it as well)
        e.headers += 1
        uname = _dec(name.strip()).upper()
        sval = _dec(value.lstrip(b" \t"))
        if uname == "CONTENT-TYPE":
            ctype, params = parse_content_type(sval)
            e.ctype = ctype
            if ctype.startswith("multipart/") and params.get("boundary"):
                if e.depth < self.max_depth:
                    e.boundary = b"--" + params["boundary"].encode("utf-8", "surrogateescape")
                else:
                    out.append(MimeWeird("MIME_excessive_nesting", str(e.depth)))
        out.append(Header(uname, sval))

    def _end_headers(self, e: _Entity, out: list) -> None:
        self._end_header(e, out)
        e.in_headers = False
        out.append(EndHeaders(e.ctype, e.depth))


_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}


class BodyDecoder:
    """Zeek's ``MIME_Entity::DecodeDataLine`` for one leaf entity: the decoded bytes of each body
    line.  ``encoding`` is the Content-Transfer-Encoding value (any case; unknown ones are taken
    as binary, like Zeek); ``in_multipart`` says the entity is a part of a multipart body, where
    the line end before the next boundary belongs to the boundary, not to the content."""

    __slots__ = ("kind", "in_multipart", "delayed_crlf", "b64rest", "bad")

    def __init__(self, encoding: str = "", in_multipart: bool = False) -> None:
        enc = encoding.strip().lower()
        self.kind = 2 if enc == "base64" else 1 if enc == "quoted-printable" else 0
        self.in_multipart = in_multipart
        self.delayed_crlf = False
        self.b64rest = b""
        self.bad = False          # an illegal encoding was seen (the caller may report a weird)

    def line(self, line: bytes) -> bytes:
        kind = self.kind
        if kind == 0:
            if self.delayed_crlf:
                self.delayed_crlf = False
                line = b"\r\n" + line
            if self.in_multipart:
                self.delayed_crlf = True
                return line
            return line + b"\r\n"
        if kind == 2:
            raw = self.b64rest + line.translate(None, b" \t\r\n")
            cut = len(raw) - len(raw) % 4
            self.b64rest = raw[cut:]
            return self._b64(raw[:cut]) if cut else b""
        return self._qp(line)

    def finish(self) -> bytes:
        """End of the entity: what a base64 group left open decodes to (zero-padded)."""
        rest = self.b64rest
        self.b64rest = b""
        if not rest or self.kind != 2:
            return b""
        self.bad = True
        return self._b64(rest + b"=" * (-len(rest) % 4))

    def _b64(self, raw: bytes) -> bytes:
        try:
            return binascii.a2b_base64(raw, strict_mode=True)
        except (binascii.Error, ValueError):
            self.bad = True
            try:
                return binascii.a2b_base64(raw)
            except (binascii.Error, ValueError):
                return b""

    def _qp(self, line: bytes) -> bytes:
        end = len(line.rstrip(b" \t"))
        if b"=" not in line:
            return line[:end] + b"\r\n"
        out = bytearray()
        soft = False
        i = 0
        hexd = _HEX
        while i < end:
            c = line[i]
            if c == 0x3D:            # '='
                if i == end - 1:
                    soft = True
                elif i + 2 < len(line) and line[i + 1] in hexd and line[i + 2] in hexd:
                    out.append(hexd[line[i + 1]] * 16 + hexd[line[i + 2]])
                    i += 2
                else:
                    self.bad = True
                    out.append(c)
            else:
                out.append(c)
            i += 1
        if not soft:
            out += b"\r\n"
        return bytes(out)

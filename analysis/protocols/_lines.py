"""Line splitting for the line-oriented text protocols (IRC, POP3), written once.

Each direction keeps its partial line.  Lines end at LF; trailing CRs are dropped.  An
unterminated line longer than ``max_line_length`` is discarded and reported, like Zeek's
ContentLine analyzer (``contentline_size_exceeded``).
"""

from __future__ import annotations

from typing import Callable


class LineBuffers:
    __slots__ = ("_buf", "max_line_length")

    def __init__(self, max_line_length: int = 65536) -> None:
        self._buf = [b"", b""]              # partial line per direction (resp, orig)
        self.max_line_length = max_line_length

    def feed(self, is_orig: bool, data: bytes, on_line: Callable[[bytes], None],
             stopped: Callable[[], bool]) -> int:
        """Call ``on_line`` for every complete line of ``data`` until ``stopped()`` (the stream
        changed hands, e.g. to TLS: then the rest is dropped).  Returns the length of an over-long
        partial line that was discarded, else 0."""
        i = 1 if is_orig else 0
        buf = self._buf[i] + bytes(data) if self._buf[i] else bytes(data)
        start = 0
        while not stopped():
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl].rstrip(b"\r")
            start = nl + 1
            on_line(line)
        rest = b"" if stopped() else buf[start:]
        dropped = 0
        if len(rest) > self.max_line_length:
            dropped, rest = len(rest), b""
        self._buf[i] = rest
        return dropped

"""Chunked binary reading shared by the pcap and pcapng readers.

Both formats are sequences of length-prefixed records.  Reading the file in large chunks and
parsing records out of an in-memory buffer with ``struct.unpack_from`` is several times faster
than one ``read()`` per record, and it works the same on plain and gzip-compressed streams.
"""

from __future__ import annotations

from typing import BinaryIO

CHUNK = 1 << 20


class ChunkReader:
    """A forward-only window over a binary stream.

    ``buf[pos:]`` holds the bytes not yet consumed.  ``need(n)`` makes at least ``n`` bytes
    available (or as many as the stream still has) and returns how many there are.
    """

    __slots__ = ("_f", "buf", "pos", "consumed", "eof")

    def __init__(self, f: BinaryIO, initial: bytes = b"") -> None:
        self._f = f
        self.buf = initial
        self.pos = 0
        self.consumed = 0  # bytes of the stream before buf[0]
        self.eof = False

    def need(self, n: int) -> int:
        avail = len(self.buf) - self.pos
        if avail >= n or self.eof:
            return avail
        parts = [self.buf[self.pos:]]
        self.consumed += self.pos
        self.pos = 0
        while avail < n:
            chunk = self._f.read(max(CHUNK, n - avail))
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            avail += len(chunk)
        self.buf = b"".join(parts)
        return avail

    def offset(self) -> int:
        """Bytes of the (decompressed) stream consumed so far."""
        return self.consumed + self.pos

    def stream_error(self) -> str | None:
        """Why the underlying stream stopped early (e.g. a corrupt gzip member), if it did."""
        return getattr(self._f, "failed", None)

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass


class ChunkedFileSource:
    """What the pcap and pcapng sources share once records are parsed: stream errors become a
    clean stop (``truncated``/``error``), progress in bytes, and closing.  Subclasses set
    ``name``, ``_r`` (a :class:`ChunkReader`), ``_total``, ``truncated`` and ``error``."""

    name: str
    _r: ChunkReader
    _total: int | None
    truncated: bool
    error: str | None

    def _check_stream(self) -> None:
        err = self._r.stream_error()
        if err and not self.error:
            self.truncated = True
            self.error = f"{self.name}: read error at offset {self._r.offset()}: {err}"

    def progress(self) -> tuple[int, int | None]:
        return self._r.offset(), self._total

    def close(self) -> None:
        self._r.close()

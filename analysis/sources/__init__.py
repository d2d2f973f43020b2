"""Packet sources: ``open_source(path)`` picks the reader by the file's magic, not its name.

pcap (either byte order, micro- or nanosecond timestamps) and pcapng, each optionally
gzip-compressed.  Anything that cannot be read at all raises :class:`SourceError` with a
one-line reason; damage later in a file ends iteration cleanly and is reported through the
source's ``truncated``/``error`` attributes (see the readers).
"""

from __future__ import annotations

import gzip
import os
import zlib

from analysis.sources.base import Batch, PacketSource, RawPacket, SourceError
from analysis.sources.pcap import MAGICS as PCAP_MAGICS
from analysis.sources.pcap import PcapSource
from analysis.sources.pcapng import MAGIC as PCAPNG_MAGIC
from analysis.sources.pcapng import PcapngSource

__all__ = ["Batch", "PacketSource", "RawPacket", "SourceError", "open_source"]

GZIP_MAGIC = b"\x1f\x8b"


def _read_head(f, name: str, n: int) -> bytes:
    try:
        return f.read(n)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        f.close()
        raise SourceError(f"{name}: cannot read: {exc}") from None


def open_source(path: str | os.PathLike) -> PacketSource:
    """Open a trace file for reading; raises SourceError when it cannot be used."""
    name = os.fspath(path)
    try:
        if os.path.isdir(name):
            raise SourceError(f"{name}: is a directory")
        f = open(name, "rb")  # noqa: SIM115 - the source owns and closes it
        total: int | None = os.fstat(f.fileno()).st_size
    except SourceError:
        raise
    except OSError as exc:
        raise SourceError(f"{name}: {exc.strerror or exc}") from None
    head = _read_head(f, name, 4)
    if head[:2] == GZIP_MAGIC:
        f.close()
        f = gzip.open(name, "rb")
        total = None
        head = _read_head(f, name, 4)
    if not head:
        f.close()
        raise SourceError(f"{name}: empty file")
    try:
        if head in PCAP_MAGICS:
            return PcapSource(_Guarded(f, name), name, total, initial=head)
        if head == PCAPNG_MAGIC:
            return PcapngSource(_Guarded(f, name), name, total, initial=head)
    except SourceError:
        f.close()
        raise
    f.close()
    if len(head) < 4:
        raise SourceError(f"{name}: file too short for a trace header")
    raise SourceError(f"{name}: unknown file format (magic {head.hex()}); expected pcap or pcapng")


class _Guarded:
    """Turns read errors in the middle of a file (e.g. a corrupt gzip stream) into EOF.

    The reader then reports a truncated trace instead of letting an OSError escape.
    """

    __slots__ = ("_f", "name", "failed")

    def __init__(self, f, name: str) -> None:
        self._f = f
        self.name = name
        self.failed: str | None = None

    def read(self, n: int) -> bytes:
        if self.failed:
            return b""
        try:
            return self._f.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            self.failed = str(exc)
            return b""

    def close(self) -> None:
        self._f.close()

"""Classic libpcap savefiles: both byte orders, microsecond and nanosecond timestamps.

Damaged files never raise out of :meth:`PcapSource.batches`: a record cut short at the end of
the file stops the iteration and sets ``truncated``; a record header that cannot be right (a
capture length above 256 KiB, libpcap's own limit) stops it and sets ``error``.  Everything
read before the damage is delivered.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from analysis.sources.base import Batch, SourceError
from analysis.sources.fileio import ChunkedFileSource, ChunkReader

MAX_CAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN: larger records mean a corrupt file

MAGIC_US_LE = b"\xd4\xc3\xb2\xa1"
MAGIC_US_BE = b"\xa1\xb2\xc3\xd4"
MAGIC_NS_LE = b"\x4d\x3c\xb2\xa1"
MAGIC_NS_BE = b"\xa1\xb2\x3c\x4d"
MAGICS = (MAGIC_US_LE, MAGIC_US_BE, MAGIC_NS_LE, MAGIC_NS_BE)


class PcapSource(ChunkedFileSource):
    """Reads a pcap stream whose first bytes (the magic) have already been checked."""

    def __init__(self, f: BinaryIO, name: str, total: int | None = None, initial: bytes = b"") -> None:
        self.name = name
        self.truncated = False   # the last record was cut short (a partial trailing record)
        self.error: str | None = None  # why reading stopped early, if it did
        self._total = total
        self._r = ChunkReader(f, initial)
        if self._r.need(24) < 24:
            self._r.close()
            raise SourceError(f"{name}: truncated pcap file header")
        hdr = self._r.buf[self._r.pos:self._r.pos + 24]
        magic = hdr[:4]
        if magic not in MAGICS:
            self._r.close()
            raise SourceError(f"{name}: not a pcap file (magic {magic.hex()})")
        self._endian = "<" if magic in (MAGIC_US_LE, MAGIC_NS_LE) else ">"
        self._scale = 1e-9 if magic in (MAGIC_NS_LE, MAGIC_NS_BE) else 1e-6
        _, _, _, _, snaplen, linktype = struct.unpack(self._endian + "HHiIII", hdr[4:24])
        self.snaplen = snaplen
        self.link_type = linktype & 0x0FFFFFFF  # upper bits may carry FCS info
        self._r.pos += 24

    def batches(self, max_batch: int = 1024) -> Iterator[Batch]:
        rec = struct.Struct(self._endian + "IIII")
        unpack_from = rec.unpack_from
        scale = self._scale
        r = self._r
        lt = self.link_type
        clip = self.snaplen if 0 < self.snaplen < MAX_CAPLEN else MAX_CAPLEN
        out: list = []
        while True:
            buf = r.buf
            pos = r.pos
            end = len(buf)
            # Parse every complete record already in the buffer.
            while pos + 16 <= end:
                sec, frac, caplen, wirelen = unpack_from(buf, pos)
                if caplen > MAX_CAPLEN:
                    self.error = (f"{self.name}: corrupt record at offset {r.consumed + pos}: "
                                  f"capture length {caplen} > {MAX_CAPLEN}")
                    r.pos = pos
                    if out:
                        yield lt, out
                    return
                dend = pos + 16 + caplen
                if dend > end:
                    break
                data = buf[pos + 16:dend]
                if caplen > clip:  # libpcap keeps at most snaplen bytes
                    data = data[:clip]
                out.append((sec + frac * scale, wirelen, data))
                pos = dend
                if len(out) >= max_batch:
                    r.pos = pos
                    yield lt, out
                    out = []
            r.pos = pos
            avail = end - pos
            need = 16
            if avail >= 16:
                need = 16 + unpack_from(buf, pos)[2]
            if r.need(need) < need:
                # End of stream: anything left is a partial record.
                if r.need(1) > 0:
                    self.truncated = True
                    self.error = f"{self.name}: truncated record at offset {r.offset()}"
                break
        if out:
            yield lt, out
        self._check_stream()

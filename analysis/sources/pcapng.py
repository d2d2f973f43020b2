"""pcapng files: sections, several interfaces with their own link types and timestamp units.

Handled blocks: Section Header (either byte order; a new section forgets the interfaces of the
previous one), Interface Description (link type, snaplen, ``if_tsresol``, ``if_tsoffset``),
Enhanced Packet, Simple Packet (no timestamp: it gets the last timestamp seen, as it carries
none) and the obsolete Packet block.  Other blocks are skipped.  A batch ends where the link
type changes, so every batch keeps the ``(link_type, packets)`` contract.
Damage stops the iteration cleanly (``truncated`` / ``error``) after delivering what came before.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from analysis.sources.base import Batch, SourceError
from analysis.sources.fileio import ChunkedFileSource, ChunkReader
from analysis.sources.pcap import MAX_CAPLEN

SHB = 0x0A0D0D0A
MAGIC = b"\x0a\x0d\x0d\x0a"
BOM_LE = b"\x4d\x3c\x2b\x1a"
BOM_BE = b"\x1a\x2b\x3c\x4d"
MAX_BLOCK = 16 << 20  # far above any packet block; larger lengths mean corruption

BT_IDB = 1
BT_OPB = 2
BT_SPB = 3
BT_EPB = 6


class _Iface:
    __slots__ = ("link_type", "snaplen", "scale", "offset")

    def __init__(self, link_type: int, snaplen: int, scale: float, offset: int) -> None:
        self.link_type = link_type
        self.snaplen = snaplen
        self.scale = scale      # seconds per timestamp unit
        self.offset = offset    # if_tsoffset, seconds


def _tsresol(v: int) -> float:
    if v & 0x80:
        return 2.0 ** -(v & 0x7F)
    return 10.0 ** -v


class PcapngSource(ChunkedFileSource):
    def __init__(self, f: BinaryIO, name: str, total: int | None = None, initial: bytes = b"") -> None:
        self.name = name
        self.truncated = False
        self.error: str | None = None
        self._total = total
        self._r = ChunkReader(f, initial)
        if self._r.need(12) < 12:
            self._r.close()
            raise SourceError(f"{name}: truncated pcapng section header")
        head = self._r.buf[self._r.pos:self._r.pos + 12]
        if head[:4] != MAGIC or head[8:12] not in (BOM_LE, BOM_BE):
            self._r.close()
            raise SourceError(f"{name}: not a pcapng file")
        self._e = "<" if head[8:12] == BOM_LE else ">"
        self._ifaces: list[_Iface] = []

    def _fail(self, msg: str) -> None:
        self.error = f"{self.name}: {msg} at offset {self._r.offset()}"

    def batches(self, max_batch: int = 1024) -> Iterator[Batch]:
        r = self._r
        out: list = []
        cur_lt = -1
        last_ts = 0.0
        while True:
            avail = r.need(12)
            if avail == 0:
                break
            if avail < 12:
                self.truncated = True
                self._fail("truncated block header")
                break
            buf, pos = r.buf, r.pos
            btype_raw = buf[pos:pos + 4]
            if btype_raw == MAGIC:
                bom = buf[pos + 8:pos + 12]
                if bom == BOM_LE:
                    self._e = "<"
                elif bom == BOM_BE:
                    self._e = ">"
                else:
                    self._fail("bad byte-order magic in section header")
                    break
                self._ifaces = []
            e = self._e
            btype, blen = struct.unpack_from(e + "II", buf, pos)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                self._fail(f"bad block length {blen}")
                break
            if r.need(blen) < blen:
                self.truncated = True
                self._fail("truncated block")
                break
            buf, pos = r.buf, r.pos
            body = pos + 8
            bend = pos + blen - 4
            r.pos = pos + blen
            pkt = None
            iface = None
            if btype == BT_EPB or btype == BT_OPB:   # enhanced / obsolete packet block: same tail
                if bend - body < 20:
                    self._fail("short enhanced packet block" if btype == BT_EPB else "short packet block")
                    break
                if btype == BT_EPB:
                    ifid, hi, lo, caplen, wirelen = struct.unpack_from(e + "IIIII", buf, body)
                else:
                    ifid, _drops, hi, lo, caplen, wirelen = struct.unpack_from(e + "HHIIII", buf, body)
                if ifid >= len(self._ifaces):
                    self._fail(f"packet for unknown interface {ifid}")
                    break
                iface = self._ifaces[ifid]
                if caplen > MAX_CAPLEN or body + 20 + caplen > bend:
                    self._fail(f"bad capture length {caplen}")
                    break
                last_ts = ((hi << 32) | lo) * iface.scale + iface.offset
                pkt = (last_ts, wirelen, buf[body + 20:body + 20 + caplen])
            elif btype == BT_SPB:
                if not self._ifaces or bend - body < 4:
                    self._fail("simple packet block without interface")
                    break
                iface = self._ifaces[0]
                (wirelen,) = struct.unpack_from(e + "I", buf, body)
                caplen = min(wirelen, bend - body - 4)
                if iface.snaplen:
                    caplen = min(caplen, iface.snaplen)
                pkt = (last_ts, wirelen, buf[body + 4:body + 4 + caplen])
            elif btype == BT_IDB:
                if bend - body < 8:
                    self._fail("short interface description block")
                    break
                lt, _res, snap = struct.unpack_from(e + "HHI", buf, body)
                scale, offset = 1e-6, 0
                o = body + 8
                while o + 4 <= bend:
                    code, olen = struct.unpack_from(e + "HH", buf, o)
                    if code == 0:
                        break
                    if o + 4 + olen > bend:
                        break
                    if code == 9 and olen >= 1:
                        scale = _tsresol(buf[o + 4])
                    elif code == 14 and olen >= 8:
                        (offset,) = struct.unpack_from(e + "q", buf, o + 4)
                    o += 4 + ((olen + 3) & ~3)
                self._ifaces.append(_Iface(lt, snap, scale, offset))
            if pkt is None:
                continue
            lt = iface.link_type
            if lt != cur_lt:
                if out:
                    yield cur_lt, out
                    out = []
                cur_lt = lt
            out.append(pkt)
            if len(out) >= max_batch:
                yield cur_lt, out
                out = []
        if out:
            yield cur_lt, out
        self._check_stream()

"""Write classic pcap files (microsecond resolution).

Kept apart from the readers in ``analysis/sources`` because writing is a different job: the
traffic generator, tests and tools produce traces with it, the engine never needs it.
Timestamps are rounded to whole microseconds once, here, so every producer agrees on them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

LINKTYPE_ETHERNET = 1

_GLOBAL_HDR = struct.Struct("<IHHiIII")
_REC_HDR = struct.Struct("<IIII")
PCAP_MAGIC_USEC = 0xA1B2C3D4


def pcap_header(linktype: int = LINKTYPE_ETHERNET, snaplen: int = 65535) -> bytes:
    """The 24-byte global header (little-endian, version 2.4, microsecond timestamps)."""
    return _GLOBAL_HDR.pack(PCAP_MAGIC_USEC, 2, 4, 0, 0, snaplen, linktype)


def pcap_records(packets: Iterable[tuple[float, bytes]], snaplen: int = 65535) -> Iterable[bytes]:
    """Record header + data per ``(ts, frame)``; frames longer than ``snaplen`` are cut, keeping the wire length."""
    pack = _REC_HDR.pack
    for ts, frame in packets:
        usec = round(ts * 1_000_000)
        sec, usec = divmod(usec, 1_000_000)
        n = len(frame)
        if n > snaplen:
            yield pack(sec, usec, snaplen, n) + frame[:snaplen]
        else:
            yield pack(sec, usec, n, n) + frame


def write_pcap(dest: str | BinaryIO, packets: Iterable[tuple[float, bytes]],
               linktype: int = LINKTYPE_ETHERNET, snaplen: int = 65535) -> int:
    """Write ``(ts, frame)`` pairs (in the order given) to a path or binary file; returns bytes written."""
    if isinstance(dest, str):
        with open(dest, "wb") as fh:
            return write_pcap(fh, packets, linktype, snaplen)
    total = dest.write(pcap_header(linktype, snaplen))
    buf: list[bytes] = []
    size = 0
    for rec in pcap_records(packets, snaplen):
        buf.append(rec)
        size += len(rec)
        if size >= 1 << 20:  # write in ~1 MiB chunks: few syscalls, bounded memory
            total += dest.write(b"".join(buf))
            buf.clear()
            size = 0
    if buf:
        total += dest.write(b"".join(buf))
    return total

"""The packet-source contract shared by file readers and live capture.

A source yields *batches*, never single packets: ``(link_type, [(ts, wire_len, data), ...])``
where ``link_type`` is the pcap LINKTYPE number of every packet in the batch (a pcapng file
whose interfaces differ simply ends a batch where the link type changes), ``ts`` is float
seconds, ``wire_len`` the original length and ``data`` the captured bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

RawPacket = tuple[float, int, bytes]
Batch = tuple[int, list[RawPacket]]


class SourceError(Exception):
    """A source that cannot be read at all (missing file, bad magic, ...): a clear message, no traceback."""


class PacketSource(Protocol):
    def batches(self, max_batch: int = 1024) -> Iterator[Batch]: ...

    def progress(self) -> tuple[int, int | None]:
        """(bytes consumed, total bytes or None when unknown, e.g. live or gzip)."""

    def close(self) -> None: ...

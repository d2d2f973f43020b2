"""On-disk state of the reliable batch channel: the sender's spill journal and the receiver's
acknowledgement store.  Both are append-only files of length+CRC framed records, so a process
killed mid-write leaves at most a torn last record, which is detected and ignored.

Spill journal (sender): ``<dir>/<stream>-<first_seq:020d>.jnl`` segments, each a contiguous
run of ``(seq, data)`` records.  Reading back in name order and skipping any seq not above the
last one yielded reconstructs the queue even when a segment written at close overlaps an older
one; anything replayed twice is removed by the receiver's de-duplication.

Ack store (receiver): ``<dir>/acks.log``, one record per group commit:
``msgpack([checkpoint, [[stream, last_seq], ...]])``.  ``checkpoint`` is whatever the
application's handler returned for the last batch of the group (e.g. its output file offset),
so after a crash the application can cut its output back to exactly what was acknowledged.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from typing import Any, Iterator

import structlog

from broker import wire

log = structlog.get_logger(__name__)

_JREC = struct.Struct("<QII")  # seq, data length, crc32(data)
_SREC = wire.REC_HEADER  # length, crc32
_SEG_RE = re.compile(r"([0-9a-f]{16})-(\d{20})\.jnl\Z")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_segment(path: str) -> Iterator[tuple[int, bytes]]:
    """Yield the valid records of one segment; stop quietly at a torn or corrupt tail."""
    with open(path, "rb") as f:
        while True:
            head = f.read(_JREC.size)
            if len(head) < _JREC.size:
                return
            seq, n, crc = _JREC.unpack(head)
            if n > wire.MAX_PAYLOAD:
                log.warning("journal_corrupt", path=path, reason="length")
                return
            data = f.read(n)
            if len(data) < n or zlib.crc32(data) != crc:
                log.warning("journal_corrupt", path=path, reason="torn record")
                return
            yield seq, data


class Journal:
    """Spill queue on disk for one sender stream: append at the tail, read from the head."""

    def __init__(self, directory: str, *, segment_bytes: int = 64 * 1024 * 1024, fsync: bool = False) -> None:
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.stream: str | None = None
        self.max_seq = 0
        self.pending = 0  # records written and not yet read back
        self.pending_bytes = 0
        self._segments: list[str] = []  # paths, oldest first
        self._writer = None
        self._writer_path: str | None = None
        self._writer_size = 0
        self._reader: Iterator[tuple[int, bytes]] | None = None
        self._reader_path: str | None = None
        self._last_read = 0
        self._recover()

    def _recover(self) -> None:
        found: dict[str, list[tuple[int, str]]] = {}
        for fn in os.listdir(self.dir):
            m = _SEG_RE.match(fn)
            if m:
                found.setdefault(m.group(1), []).append((int(m.group(2)), os.path.join(self.dir, fn)))
        if not found:
            return
        # One stream per directory is the design; older leftovers of other streams are kept.
        stream = max(found, key=lambda s: max(first for first, _ in found[s]))
        if len(found) > 1:
            log.warning("journal_multiple_streams", dir=self.dir, using=stream, ignored=sorted(set(found) - {stream}))
        self.stream = stream
        self._segments = [p for _, p in sorted(found[stream])]
        last = 0
        for p in self._segments:
            for seq, data in _read_segment(p):
                if seq > last:
                    self.pending += 1
                    self.pending_bytes += len(data)
                    last = seq
        self.max_seq = last
        log.info("journal_recovered", dir=self.dir, stream=stream, records=self.pending, max_seq=last)

    def _open_writer(self, stream: str, first_seq: int) -> None:
        path = os.path.join(self.dir, f"{stream}-{first_seq:020d}.jnl")
        self._writer = open(path, "ab")
        self._writer_path = path
        self._writer_size = 0
        self._segments.append(path)
        self._segments.sort()

    def append(self, stream: str, seq: int, data: bytes) -> None:
        self.stream = stream
        if self._writer is None or self._writer_size >= self.segment_bytes:
            self._close_writer()
            self._open_writer(stream, seq)
        self._writer.write(_JREC.pack(seq, len(data), zlib.crc32(data)))
        self._writer.write(data)
        self._writer_size += _JREC.size + len(data)
        self.pending += 1
        self.pending_bytes += len(data)
        self.max_seq = max(self.max_seq, seq)

    def sync(self) -> None:
        """Make appended records visible to the reader (and durable if ``fsync``)."""
        if self._writer is not None:
            self._writer.flush()
            if self.fsync:
                os.fsync(self._writer.fileno())

    def _close_writer(self) -> None:
        if self._writer is not None:
            self.sync()
            self._writer.close()
            self._writer = None
            self._writer_path = None

    def read(self, max_items: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Take up to ``max_items``/``max_bytes`` records from the head (at least one if any)."""
        out: list[tuple[int, bytes]] = []
        size = 0
        self.sync()
        while self.pending and len(out) < max_items and (size < max_bytes or not out):
            if self._reader is None:
                if not self._segments:
                    self.pending = self.pending_bytes = 0  # counts drifted (torn tail): reset
                    break
                self._reader_path = self._segments[0]
                self._reader = _read_segment(self._reader_path)
            rec = next(self._reader, None)
            if rec is None:
                self._finish_segment()
                continue
            seq, data = rec
            if seq <= self._last_read:
                continue  # overlap with a segment written at close: already yielded
            self._last_read = seq
            self.pending -= 1
            self.pending_bytes -= len(data)
            size += len(data)
            out.append((seq, data))
        if not self.pending and self._segments:
            self._drop_all()  # everything has been read back: the files are no longer needed
        return out

    def _drop_all(self) -> None:
        self._reader = None
        self._reader_path = None
        self._close_writer()
        for path in self._segments:
            os.unlink(path)
        self._segments = []
        self.pending = self.pending_bytes = 0

    def _finish_segment(self) -> None:
        path = self._reader_path
        self._reader = None
        self._reader_path = None
        if path == self._writer_path:
            self._close_writer()  # read() synced first, so everything written has been read
        self._segments.remove(path)
        os.unlink(path)

    def write_segment(self, stream: str, items: list[tuple[int, bytes]]) -> None:
        """Persist in-memory items at close, in a segment of their own (see module doc)."""
        if not items:
            return
        self._close_writer()
        path = os.path.join(self.dir, f"{stream}-{items[0][0]:020d}.jnl")
        with open(path, "ab") as f:
            for seq, data in items:
                f.write(_JREC.pack(seq, len(data), zlib.crc32(data)))
                f.write(data)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def close(self) -> None:
        self._close_writer()
        self._reader = None
        if self.fsync:
            _fsync_dir(self.dir)


class AckStore:
    """What the receiver has handled durably: last seq per sender stream plus a checkpoint."""

    def __init__(self, directory: str, *, fsync: bool = True, compact_bytes: int = 4 * 1024 * 1024) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "acks.log")
        self.fsync = fsync
        self.compact_bytes = compact_bytes
        self.last_seq: dict[str, int] = {}
        self.checkpoint: Any = None
        self._load()
        self._compact()

    def _load(self) -> None:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        with f:
            while True:
                head = f.read(_SREC.size)
                if len(head) < _SREC.size:
                    break
                n, crc = _SREC.unpack(head)
                body = f.read(n)
                if len(body) < n or zlib.crc32(body) != crc:
                    log.warning("ack_store_torn_tail", path=self.path)
                    break
                try:
                    checkpoint, entries = wire.decode(body)
                    for stream, seq in entries:
                        self.last_seq[stream] = seq
                except (wire.WireError, TypeError, ValueError):
                    log.warning("ack_store_corrupt", path=self.path)
                    break
                self.checkpoint = checkpoint

    def _compact(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            self._write(f, self.checkpoint, self.last_seq.items())
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self.fsync:
            _fsync_dir(os.path.dirname(self.path))
        self._f = open(self.path, "ab")
        self._size = self._f.tell()

    @staticmethod
    def _write(f, checkpoint: Any, entries) -> int:
        body = wire.encode((checkpoint, [[s, q] for s, q in entries]))
        f.write(_SREC.pack(len(body), zlib.crc32(body)))
        f.write(body)
        return _SREC.size + len(body)

    def commit(self, updates: dict[str, int], checkpoint: Any) -> None:
        """Record ``updates`` (stream -> last seq handled) durably before they are acknowledged."""
        self._size += self._write(self._f, checkpoint, updates.items())
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())
        self.last_seq.update(updates)
        self.checkpoint = checkpoint
        if self._size > self.compact_bytes:
            self._f.close()
            self._compact()

    def close(self) -> None:
        self._f.close()

"""The logger side of logging: decode batches, write one file per stream, rotate, resume.

:class:`LogWriterService` is handed every batch by the reliable channel's receiver
(:class:`broker.reliable.BatchReceiver`) and returns a *checkpoint* that the receiver commits
together with the sequence numbers, before it acknowledges anything.  The checkpoint holds, for
every open file, ``[inode, byte offset, open time]`` after the batch was written and flushed.
After a crash (kill -9) the new process calls :meth:`LogWriterService.resume` with the last
committed checkpoint: each file is cut back to its committed offset (rows written but never
acknowledged are removed; their senders resend them) and appended to from there, without a
second header.  A file the checkpoint does not know (wrong inode, or none) was created after the
last commit, so all of it will be resent: it is started afresh.  Nothing is lost, nothing doubles.

Layout on disk, as zeekctl arranges it:

* no rotation (``rotation_interval = 0``, e.g. ``starling run``): ``<logdir>/<path>.log``;
* rotation: open files in ``<logdir>/current/<path>.log``; at each interval boundary (aligned to
  local midnight, like Zeek's ``calc_next_rotate``) and at shutdown a file is closed (``#close``)
  and moved to ``<logdir>/<YYYY-MM-DD>/<path>.<HH:MM:SS>-<HH:MM:SS>.log`` (open and close time,
  local), gzip-compressed to ``.log.gz`` when ``gzip_archives`` is set.

Rotation happens between batches (the receiver's handler is synchronous), so an archived file
only ever contains committed rows.  The writers are analysis/logs' own (TSV or JSON lines).
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import structlog

from analysis.logs.base import LogHeaderMismatch, LogWriteError, LogWriter
from analysis.logs.files import WRITERS
from cluster.logging.codec import BatchError, LogDecoder

log = structlog.get_logger(__name__)

__all__ = ["LogWriterService", "next_rotation", "archive_name"]


def next_rotation(now: float, interval: float) -> float:
    """The next multiple of ``interval`` counted from local midnight after ``now``."""
    lt = time.localtime(now)
    midnight = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))
    n = int((now - midnight) // interval) + 1
    return midnight + n * interval


def archive_name(path: str, open_time: float, close_time: float, ext: str = "log") -> tuple[str, str]:
    """(``YYYY-MM-DD``, ``<path>.<HH:MM:SS>-<HH:MM:SS>.<ext>``) as zeekctl archives a log."""
    o, c = time.localtime(open_time), time.localtime(close_time)
    return (time.strftime("%Y-%m-%d", o),
            f"{path}.{time.strftime('%H:%M:%S', o)}-{time.strftime('%H:%M:%S', c)}.{ext}")


@dataclass(slots=True)
class _Open:
    writer: LogWriter
    file: BinaryIO
    filename: str
    inode: int
    open_time: float


class LogWriterService:
    def __init__(self, logdir: str | os.PathLike[str], fmt: str = "tsv", *, rotation_interval: float = 0.0,
                 gzip_archives: bool = False, clock: Callable[[], float] = time.time,
                 buffer_size: int = 1 << 18) -> None:
        if fmt not in WRITERS:
            raise ValueError(f"unknown log format {fmt!r}; choose one of {sorted(WRITERS)}")
        self.logdir = Path(logdir)
        self.fmt = fmt
        self.ext = "log"
        self._writer_class = WRITERS[fmt]
        self.rotation_interval = float(rotation_interval or 0.0)
        self.gzip_archives = gzip_archives
        self.current_dir = self.logdir / "current" if self.rotation_interval > 0 else self.logdir
        self.current_dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._buffer_size = buffer_size
        self._decoder = LogDecoder()
        self._files: dict[str, _Open] = {}
        self._ckpt: dict[str, list] = {}
        self._resume: dict[str, list] = {}
        self.rows: dict[str, int] = {}
        self.batches = 0
        self.malformed = 0
        self.write_errors = 0
        self.archived: list[str] = []
        # Zeek reopens a rotated log at once; we open on the next record but keep Zeek's #open.
        self._reopened: dict[str, float] = {}
        self.next_rotation = (next_rotation(clock(), self.rotation_interval)
                              if self.rotation_interval > 0 else None)

    # ---- recovery -------------------------------------------------------------------------

    def resume(self, checkpoint: Any) -> None:
        """Adopt the last committed checkpoint (from ``BatchReceiver.checkpoint``) after a restart."""
        if not isinstance(checkpoint, dict):
            return
        for path, entry in checkpoint.items():
            if (isinstance(path, str) and isinstance(entry, list) and len(entry) == 3
                    and all(isinstance(x, (int, float)) for x in entry)):
                self._resume[path] = entry
                self._ckpt[path] = list(entry)
        # Open the known files now so that uncommitted tails are cut at once.
        for path in list(self._resume):
            fn = self.filename(path)
            try:
                st = os.stat(fn)
            except OSError:
                self._resume.pop(path)
                self._ckpt.pop(path, None)
                continue
            ino, off, _ = self._resume[path]
            if st.st_ino != ino or st.st_size < off:
                self._resume.pop(path)
                self._ckpt.pop(path, None)
                continue
            if st.st_size > off:
                with open(fn, "r+b") as f:
                    f.truncate(off)
                log.info("log_resume_truncated", path=path, file=fn, cut_bytes=st.st_size - off)

    # ---- writing ---------------------------------------------------------------------------

    def filename(self, path: str) -> str:
        return str(self.current_dir / f"{path}.{self.ext}")

    def _open(self, path: str, record_type: type) -> _Open:
        fn = self.filename(path)
        entry = self._resume.pop(path, None)
        if entry is not None:
            ino, off, open_time = entry
            f = open(fn, "r+b")  # noqa: SIM115 - closed in _close
            st = os.fstat(f.fileno())
            if st.st_ino == ino and st.st_size >= off:
                f.truncate(off)
                f.seek(off)
                try:   # continue the file under its own header, without writing a second one
                    w = self._writer_class(f, path, record_type, open_time=open_time,
                                           buffer_size=self._buffer_size, append=True)
                except LogHeaderMismatch as e:
                    f.close()
                    self._set_aside(fn, str(e))
                else:
                    o = _Open(w, f, fn, ino, open_time)
                    self._files[path] = o
                    return o
            else:
                f.close()
        open_time = self._reopened.pop(path, None) or self._clock()
        f = open(fn, "wb")  # noqa: SIM115 - closed in _close
        try:
            w = self._writer_class(f, path, record_type, open_time=open_time, buffer_size=self._buffer_size)
        except Exception:
            f.close()
            raise
        o = _Open(w, f, fn, os.fstat(f.fileno()).st_ino, open_time)
        self._files[path] = o
        return o

    @staticmethod
    def _set_aside(fn: str, why: str) -> None:
        """Keep a committed file that cannot be continued (its rows were acknowledged) under a
        new name instead of overwriting it; a fresh file with a fresh header takes its place."""
        n = 1
        while os.path.exists(f"{fn}.{n}"):
            n += 1
        os.replace(fn, f"{fn}.{n}")
        log.warning("log_resume_header_mismatch", file=fn, kept_as=f"{fn}.{n}", error=why)

    def handle(self, batch: Any) -> dict[str, list]:
        """BatchReceiver handler: write one batch, flush it, return the checkpoint."""
        self.write(batch.data)
        return self._ckpt

    def write(self, data: bytes) -> None:
        """Decode and write one batch; a malformed batch is counted and skipped (never raised)."""
        try:
            path, record_type, records = self._decoder.decode(data)
        except BatchError as e:
            self.malformed += 1
            log.warning("log_batch_malformed", error=str(e))
            return
        if not records:
            return
        o = self._files.get(path) or self._open(path, record_type)
        before = o.file.tell()
        try:
            try:
                o.writer.write_many(records)
            except LogWriteError as e:
                self.write_errors += 1
                log.warning("log_records_not_written", path=path, error=str(e))
            o.writer.flush()
        except OSError:
            # Cut the partial write so the resent batch starts on a clean row boundary.
            o.writer.discard()
            o.file.truncate(before)
            o.file.seek(before)
            raise
        self._ckpt[path] = [o.inode, o.file.tell(), o.open_time]
        self.rows[path] = self.rows.get(path, 0) + len(records)
        self.batches += 1

    # ---- rotation and shutdown ---------------------------------------------------------------

    def rotation_due(self, now: float | None = None) -> bool:
        return self.next_rotation is not None and (now if now is not None else self._clock()) >= self.next_rotation

    def rotate(self, now: float | None = None) -> list[str]:
        """Archive every open file; returns the archive paths that still need compressing."""
        now = self._clock() if now is None else now
        todo = []
        self._reopened = {}
        for path in list(self._files):
            todo.append(self._archive(path, now))
            self._reopened[path] = now
        if self.rotation_interval > 0:
            self.next_rotation = next_rotation(now, self.rotation_interval)
        return [t for t in todo if t]

    def _close(self, path: str, close_time: float) -> _Open:
        o = self._files.pop(path)
        try:
            o.writer.close(close_time)
        finally:
            o.file.close()
        self._ckpt.pop(path, None)
        return o

    def _archive(self, path: str, now: float) -> str | None:
        o = self._close(path, now)
        day, name = archive_name(path, o.open_time, now, self.ext)
        dest_dir = self.logdir / day
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / name
        n = 1
        while dest.exists() or Path(str(dest) + ".gz").exists():
            n += 1
            dest = dest_dir / f"{name[:-len(self.ext) - 1]}-{n}.{self.ext}"
        os.replace(o.filename, dest)
        self.archived.append(str(dest))
        log.info("log_rotated", path=path, archive=str(dest))
        return str(dest) if self.gzip_archives else None

    @staticmethod
    def compress(filename: str) -> str:
        """Gzip an archived log in place (``.log`` -> ``.log.gz``); run it off the event loop."""
        gz = filename + ".gz"
        with open(filename, "rb") as src, gzip.open(gz + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(gz + ".tmp", gz)
        os.unlink(filename)
        return gz

    def close(self) -> list[str]:
        """Close every file (``#close`` footer); with rotation on, archive them as zeekctl does.
        Returns archives that still need compressing."""
        now = self._clock()
        if self.rotation_interval > 0:
            return self.rotate(now)
        for path in list(self._files):
            # The committed checkpoint still points before the footer: a later restart of this
            # logger cuts the footer and continues the file.
            self._close(path, now)
        return []

    def stats(self) -> dict[str, Any]:
        return {"rows": dict(self.rows), "batches": self.batches, "malformed": self.malformed,
                "write_errors": self.write_errors, "open_files": len(self._files),
                "archived": len(self.archived)}

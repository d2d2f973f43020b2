"""What every log writer shares: file ownership, buffering, batching, per-type formatters.

A writer is bound to one output file and one header record type.  Rotation (cluster loggers) is
``close()`` on the current writer and a new writer on a new file: nothing here keeps state that
would survive a file.  Subclasses say how a header/footer looks and how to compile a row function.
"""

from __future__ import annotations

import os
import time
from typing import BinaryIO, Callable, Iterable

from analysis.logs.schema import Column, LogRecord, columns

__all__ = ["LogHeaderMismatch", "LogWriteError", "LogWriter"]

RowFunction = Callable[[LogRecord], str]


class LogWriteError(ValueError):
    """Records that could not be formatted (wrong value types); the other records were written."""


class LogHeaderMismatch(LogWriteError):
    """An existing file cannot be continued: its header is not the one this writer would write."""


class LogWriter:
    """Base class; use :class:`~analysis.logs.tsv.TsvWriter` or :class:`~analysis.logs.jsonl.JsonWriter`."""

    def _compile(self, record_type: type[LogRecord]) -> RowFunction:
        """The row function for ``record_type`` under this writer's header (subclasses)."""
        raise NotImplementedError

    def _header(self) -> str:
        return ""

    def _footer(self, close_time: float) -> str:
        return ""

    def __init__(self, out: BinaryIO | str | os.PathLike, path: str, record_type: type[LogRecord], *,
                 open_time: float | None = None, buffer_size: int = 1 << 16, append: bool = False) -> None:
        """``out``: an open binary file (the caller keeps ownership) or a file name (opened here,
        closed by :meth:`close`).  ``open_time`` defaults to the wall clock.

        ``append=False`` starts a new file (a named file is truncated) with a header.
        ``append=True`` continues an existing file without a second header: it must already start
        with exactly the header this writer would write (same columns, types and ``open_time``),
        else :class:`LogHeaderMismatch`.  Rows go to the end of a named file, or to the current
        position of an open one (a caller that cut an uncommitted tail has positioned it there).
        """
        self.path = path
        self.record_type = record_type
        self.columns: tuple[Column, ...] = columns(record_type)
        self.open_time = time.time() if open_time is None else open_time
        self.records_written = 0
        self.closed = False
        self._buffer_size = buffer_size
        self._pending: list[str] = []
        self._pending_chars = 0
        self._pending_records = 0
        self._head_pending = False  # the header is queued but not yet handed to the file
        self._row_functions: dict[type, RowFunction] = {}
        self._row = self._row_function(record_type)  # fail before creating any file
        head = self._header()
        if isinstance(out, (str, os.PathLike)):
            self._file: BinaryIO = open(out, "r+b" if append else "wb")  # noqa: SIM115 - closed in close()
            self._owns_file = True
            self.filename: str | None = os.fspath(out)
            if append:
                self._file.seek(0, os.SEEK_END)
        else:
            self._file = out
            self._owns_file = False
            self.filename = getattr(out, "name", None)
        if append:
            try:
                self._check_header(head)
            except BaseException:
                if self._owns_file:
                    self._file.close()
                raise
        elif head:
            self._queue_header(head)

    def _queue_header(self, head: str) -> None:
        self._pending.append(head.rstrip("\n"))
        self._pending_chars += len(head)
        self._head_pending = True

    def _check_header(self, head: str) -> None:
        """Compare the start of the file with ``head``, keeping the file position."""
        want = head.encode("utf-8")
        if not want:
            return
        f = self._file
        pos = f.tell()
        try:
            f.seek(0)
            have = f.read(len(want))
        finally:
            f.seek(pos)
        if have != want:
            raise LogHeaderMismatch(f"{self.path}: {self.filename or 'file'} does not start with this "
                                    "writer's header (other columns, types or open time); not appending")

    def discard(self) -> int:
        """Drop the rows buffered since the last successful hand-over to the file, e.g. after a
        failed write whose partial output the caller cut off; returns how many were dropped.  A
        header that never reached the file stays queued, so a new file still gets one."""
        n = self._pending_records
        head = self._header() if self._head_pending else ""
        self._pending.clear()
        self._pending_chars = 0
        self._pending_records = 0
        self.records_written -= n
        self._head_pending = False
        if head:
            self._queue_header(head)
        return n

    def _row_function(self, record_type: type) -> RowFunction:
        fn = self._row_functions.get(record_type)
        if fn is None:
            if not (isinstance(record_type, type) and issubclass(record_type, LogRecord)):
                raise LogWriteError(f"{self.path}: {record_type.__name__} is not a LogRecord")
            fn = self._row_functions[record_type] = self._compile(record_type)
        return fn

    def write(self, record: LogRecord) -> None:
        """One record (the engine's per-record path; loggers should prefer :meth:`write_many`)."""
        if self.closed:
            raise LogWriteError(f"{self.path}: write after close")
        try:
            line = (self._row if type(record) is self.record_type
                    else self._row_function(type(record)))(record)
        except LogWriteError:
            raise
        except Exception as e:  # noqa: BLE001
            raise LogWriteError(f"{self.path}: record not written: {type(record).__name__}: {e!r}") from None
        self._pending.append(line)
        self.records_written += 1
        self._pending_records += 1
        self._pending_chars += len(line) + 1
        if self._pending_chars >= self._buffer_size:
            self._drain()

    def write_many(self, records: Iterable[LogRecord]) -> None:
        """Format a batch of records; records of another type than the header's are projected
        onto the header's columns by attribute name."""
        if self.closed:
            raise LogWriteError(f"{self.path}: write after close")
        records = records if isinstance(records, (list, tuple)) else list(records)
        t0, row = self.record_type, self._row
        try:
            lines = [row(r) if type(r) is t0 else self._row_function(type(r))(r) for r in records]
        except Exception:  # noqa: BLE001 - isolate the bad records, keep the good ones
            lines, bad = [], []
            for r in records:
                try:
                    lines.append(self._row_function(type(r))(r))
                except Exception as e:  # noqa: BLE001
                    bad.append(f"{type(r).__name__}: {e!r}")
            self._append(lines)
            raise LogWriteError(f"{self.path}: {len(bad)} record(s) not written, first: {bad[0]}") from None
        self._append(lines)

    def _append(self, lines: list[str]) -> None:
        if not lines:
            return
        chunk = "\n".join(lines)
        self._pending.append(chunk)
        self.records_written += len(lines)
        self._pending_records += len(lines)
        self._pending_chars += len(chunk) + 1
        if self._pending_chars >= self._buffer_size:
            self._drain()

    def _drain(self) -> None:
        if self._pending:
            self._pending.append("")  # the last line's newline
            try:
                self._file.write("\n".join(self._pending).encode("utf-8"))
            finally:
                self._pending.pop()  # the newline marker; the rows stay until written or discarded
            self._pending.clear()
            self._pending_chars = 0
            self._pending_records = 0
            self._head_pending = False

    def flush(self) -> None:
        """Hand everything buffered to the OS."""
        if not self.closed:
            self._drain()
            self._file.flush()

    def close(self, close_time: float | None = None) -> None:
        """Write the footer (``#close`` for TSV), flush, and close the file if we opened it."""
        if self.closed:
            return
        foot = self._footer(time.time() if close_time is None else close_time)
        if foot:
            self._pending.append(foot.rstrip("\n"))
        self._drain()
        self._file.flush()
        self.closed = True
        if self._owns_file:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

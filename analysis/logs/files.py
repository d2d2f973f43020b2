"""Standalone mode's log sink: one Zeek-format file per stream in a directory.

The writer for a stream is opened on its first record, so streams that never log leave no file
(as with Zeek).  The first record's type fixes the stream's header; later records of another
type (e.g. an extended ``Info``) are written under that header, matched by attribute name.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable

from analysis.logs.base import LogWriter
from analysis.logs.jsonl import JsonWriter
from analysis.logs.schema import LogRecord
from analysis.logs.tsv import TsvWriter

__all__ = ["DirectoryLogSink", "WRITERS"]

WRITERS: dict[str, type[LogWriter]] = {"tsv": TsvWriter, "json": JsonWriter}


class DirectoryLogSink:
    """Implements :class:`analysis.sinks.LogSink`: writes ``<logdir>/<path>.log``.

    ``clock`` gives the ``#open``/``#close`` times; pass the engine's network-time clock to get
    Zeek's behaviour when reading traces (wall clock by default).
    """

    def __init__(self, logdir: str | os.PathLike, fmt: str = "tsv", *,
                 clock: Callable[[], float] = time.time, buffer_size: int = 1 << 16) -> None:
        if fmt not in WRITERS:
            raise ValueError(f"unknown log format {fmt!r}; choose one of {sorted(WRITERS)}")
        self.logdir = os.fspath(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        self.fmt = fmt
        self._writer_class = WRITERS[fmt]
        self._clock = clock
        self._buffer_size = buffer_size
        self.writers: dict[str, LogWriter] = {}
        self._closed = False

    def filename(self, path: str) -> str:
        if not path or "/" in path or path in (".", "..") or "\0" in path:
            raise ValueError(f"bad log stream path {path!r}")
        return os.path.join(self.logdir, path + ".log")

    def _open(self, path: str, record: LogRecord) -> LogWriter:
        if self._closed:
            raise ValueError("write to a closed DirectoryLogSink")
        w = self._writer_class(self.filename(path), path, type(record), open_time=self._clock(),
                               buffer_size=self._buffer_size)
        self.writers[path] = w
        return w

    def write(self, path: str, record: LogRecord) -> None:
        w = self.writers.get(path) or self._open(path, record)
        w.write(record)

    def write_many(self, path: str, records: Iterable[LogRecord]) -> None:
        """Batch form of :meth:`write` for one stream (what a logger receives off the wire)."""
        records = records if isinstance(records, (list, tuple)) else list(records)
        if not records:
            return
        w = self.writers.get(path) or self._open(path, records[0])
        w.write_many(records)

    def flush(self) -> None:
        for w in self.writers.values():
            w.flush()

    def close(self) -> None:
        if self._closed:
            return
        now = self._clock()
        for w in self.writers.values():
            w.close(now)
        self._closed = True

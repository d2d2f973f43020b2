"""File extraction (Zeek's ``Files::ANALYZER_EXTRACT``, ``base/files/extract``), sans-I/O.

:class:`Extractor` is the engine side: one per file, fed the file's bytes at their offsets, it
decides what is written where, applies ``FileExtract::default_limit`` and knows the files.log
columns (``extracted``, ``extracted_cutoff``, ``extracted_size``).  The bytes go to an
:class:`ExtractSink` the runner gives the engine (through the analyzers' options, see
:func:`install`); :class:`DirectoryExtractSink` is the one that writes files.  The engine never
builds a path itself, so it stays testable with any sink.

Zeek's semantics kept here:

* name ``extract-<ts>-<source>-<fuid>`` (``%.6f`` time of the file's first data), written into
  ``FileExtract::prefix`` (default ``./extract_files/``; a relative prefix is taken against the
  sink's base directory: the log directory standalone, the node's directory on a worker).
* bytes are written at their file offset; what never arrived stays a hole (sparse file).
* ``default_limit`` (0 = none) caps the file: with ``default_limit_includes_missing=T`` (Zeek's
  default) the cap is a file offset, holes count; with ``F`` only written bytes count.  Reaching
  it sets ``extracted_cutoff=T`` and ``extracted_size`` to the limit (the ``file_extraction_limit``
  handler); otherwise ``extracted_cutoff=F`` and ``extracted_size`` unset.
* a file that cannot be opened or written gives a reporter error with Zeek's message
  (``cannot open <path>: <error>``, ``failed to write to extracted file <path>: <error>``) and
  extraction of that file stops.  Unlike Zeek (whose script sets ``extracted`` before the file
  is opened), ``extracted`` is then left unset, so the column never names a file that is not there.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["DEFAULT_PREFIX", "DirectoryExtractSink", "ExtractSink", "Extractor", "extract_name", "install"]

DEFAULT_PREFIX = "./extract_files/"


def extract_name(ts: float, source: str, fuid: str) -> str:
    """base/files/extract's default file name (``cat`` renders a time with six decimals)."""
    return f"extract-{ts:.6f}-{source}-{fuid}"


class ExtractSink(Protocol):
    """Where extracted bytes go; every call may raise OSError."""

    def path(self, prefix: str, name: str) -> str:
        """The file's path as reported in messages."""

    def open(self, prefix: str, name: str) -> Any:
        """Create (truncate) file ``name`` under ``prefix``; returns a handle."""

    def pwrite(self, handle: Any, data: bytes, offset: int) -> None:
        """Write all of ``data`` at file offset ``offset``."""

    def close(self, handle: Any) -> None:
        """Release the handle."""

    def error(self, ts: float, message: str) -> None:
        """A reporter error (never raises)."""


class DirectoryExtractSink:
    """Extracted files as real files under ``base_dir``; ``report(ts, message)`` takes the errors."""

    def __init__(self, base_dir: str | os.PathLike[str], report: Callable[[float, str], None] | None = None) -> None:
        self.base_dir = os.fspath(base_dir)
        self._report = report
        self.errors = 0

    def path(self, prefix: str, name: str) -> str:
        # build_path_compressed: prefix + "/" + name, repeated slashes folded
        return os.path.normpath(os.path.join(self.base_dir, prefix or ".", name))

    def open(self, prefix: str, name: str) -> int:
        p = self.path(prefix, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)      # base/files/extract's mkdir(prefix)
        return os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)

    def pwrite(self, handle: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(handle, view, offset)
            if n <= 0:
                raise OSError(28, os.strerror(28))   # nothing written: treat as a full disk
            view = view[n:]
            offset += n

    def close(self, handle: int) -> None:
        os.close(handle)

    def error(self, ts: float, message: str) -> None:
        self.errors += 1
        if self._report is not None:
            try:
                self._report(ts, message)
            except Exception:  # noqa: BLE001 - a reporting failure must not stop the engine
                pass


class Extractor:
    """One file's extraction analyzer; ``data``/``gap`` in any order, ``close`` at the end."""

    __slots__ = ("sink", "handle", "prefix", "name", "limit", "includes_missing", "written",
                 "cutoff", "failed")

    def __init__(self, sink: ExtractSink, prefix: str, name: str, ts: float, limit: int = 0,
                 includes_missing: bool = True) -> None:
        self.sink = sink
        self.prefix = prefix
        self.name = name
        self.limit = limit if limit > 0 else 0
        self.includes_missing = includes_missing
        self.written = 0             # data bytes written (the limit's measure without holes)
        self.cutoff = False
        self.failed = False
        try:
            self.handle = sink.open(prefix, name)
        except OSError as e:
            self.handle = None
            self._fail(ts, f"cannot open {sink.path(prefix, name)}: {e.strerror or e}")

    def _fail(self, ts: float, message: str) -> None:
        self.failed = True
        self.sink.error(ts, message)

    def data(self, chunk: bytes, offset: int, ts: float) -> None:
        h = self.handle
        if h is None:
            return
        n = len(chunk)
        lim = self.limit
        if lim:
            room = lim - (offset if self.includes_missing else self.written)
            if n > room:
                self.cutoff = True
                if room <= 0:
                    return
                chunk = memoryview(chunk)[:room]
                n = room
        self.written += n
        try:
            self.sink.pwrite(h, chunk, offset)
        except OSError as e:
            self.close()
            self._fail(ts, f"failed to write to extracted file {self.sink.path(self.prefix, self.name)}: "
                           f"{e.strerror or e}")

    def gap(self, offset: int, length: int) -> None:
        """Missing bytes: a hole in the file; counts against the limit unless told otherwise."""
        if self.handle is not None and self.limit and self.includes_missing and offset + length > self.limit:
            self.cutoff = True

    def close(self) -> None:
        h = self.handle
        if h is not None:
            self.handle = None
            try:
                self.sink.close(h)
            except OSError:
                pass

    def columns(self) -> dict:
        """files.log's extract columns for this file."""
        if self.failed:
            return {}
        if self.cutoff:
            return {"extracted": self.name, "extracted_cutoff": True, "extracted_size": self.limit}
        return {"extracted": self.name, "extracted_cutoff": False}


def install(config, base_dir: str | os.PathLike[str], log_sink=None) -> DirectoryExtractSink | None:
    """Give the analyzers that extract files (their options have ``files_extract_all``) a
    :class:`DirectoryExtractSink` rooted at ``base_dir``; None when nothing extracts.

    Call before the engine is built.  Errors go to reporter.log through ``log_sink`` when the
    configuration has that stream (Zeek's default mode), else to stderr as Zeek's bare mode
    prints them."""
    from analysis.files.state import FileOptions

    extracting = {name: o for name, o in config.analyzer_options.items()
                  if isinstance(o, FileOptions) and o.files_extract_all}
    if not extracting:
        return None

    def report(ts: float, message: str) -> None:
        if log_sink is not None and config.log_enabled("reporter"):
            from analysis.reporter import ERROR, ReporterInfo
            log_sink.write("reporter", ReporterInfo(ts=ts, level=ERROR, message=message))
        else:
            print(f"error: {message}", file=sys.stderr)

    sink = DirectoryExtractSink(base_dir, report)
    for name, o in extracting.items():
        config.analyzer_options[name] = dataclasses.replace(o, extract_sink=sink)
    return sink

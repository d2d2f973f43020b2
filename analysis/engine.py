"""The Engine: decoder + connection table behind one small API, and ``analyze_file``.

Workers and the standalone runner use exactly this: hand it batches from a packet source,
call ``finish`` at the end.  Network time is the packets' time; timers are checked lazily per
connection and swept once per batch, never per packet.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import time
from collections.abc import Callable

from analysis.config import AnalysisConfig
from analysis.conn.table import ConnTable
from analysis.sinks import EventSink, LogSink
from analysis.weird import WeirdReporter


class _FilteredSink:
    """Drops streams the configuration does not enable (Zeek's bare mode)."""

    __slots__ = ("_sink", "_logs")

    def __init__(self, sink: LogSink, logs: frozenset[str]) -> None:
        self._sink = sink
        self._logs = logs

    def write(self, path, record) -> None:
        if path in self._logs:
            self._sink.write(path, record)

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:
        self._sink.close()


class Engine:
    def __init__(self, config: AnalysisConfig, log_sink: LogSink, event_sink: EventSink | None = None,
                 analyzer_specs: dict | None = None) -> None:
        """``analyzer_specs`` replaces the protocol registry (tests, embedding); None: every
        registered analyzer the configuration enables."""
        from analysis.decode import Decoder

        self.config = config
        self.log_sink = log_sink
        sink = log_sink if config.logs is None else _FilteredSink(log_sink, config.logs)
        self.weirds = WeirdReporter(sink, peer=config.peer, enabled=config.log_enabled("weird"),
                                    do_not_ignore_repeats=config.weird_do_not_ignore_repeats)
        self.table = ConnTable(config, sink, event_sink, self.weirds)
        from analysis.dpd import AnalyzerManager

        self.analyzers = AnalyzerManager(config, self.table, sink, event_sink, analyzer_specs)
        if self.analyzers.specs:
            self.table.analyzer_factory = self.analyzers.attach
        self.decoder = Decoder(config.decoder_options(), self.weirds)
        self._emit = self.table.process
        self.batches = 0
        self._finished = False

    @property
    def network_time(self) -> float:
        return self.table.now

    def process_batch(self, batch) -> None:
        """Decode one source batch and account its packets; then run due timers."""
        self.decoder.decode_batch(batch, self._emit)
        self.batches += 1
        self.table.sweep()
        self.log_sink.flush()     # the LogSink contract: flushed at batch ends

    def finish(self) -> None:
        """Expire every open connection (their rows are written) and flush the sinks."""
        if self._finished:
            return
        self._finished = True
        flush = getattr(self.decoder, "flush", None)
        if flush is not None:
            flush()
        self.table.finish()
        self.log_sink.flush()

    def stats(self) -> dict:
        t = self.table
        dstats = getattr(self.decoder, "stats", None)
        return {
            "packets": t.packets,
            "bytes": t.bytes,
            "decoder": dict(dstats) if isinstance(dstats, dict) else {},
            "connections": t.connections,
            "active_connections": len(t),
            "removed_connections": t.removed,
            "weirds": self.weirds.count,
            "analyzers": sorted(self.analyzers.specs),
            "analyzer_errors": self.analyzers.errors,
            "weirds_logged": self.weirds.logged,
            "batches": self.batches,
            "network_time": t.now,
        }


def _is_gzip(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def analyze_file(trace, logdir, config: AnalysisConfig | None = None, fmt: str = "tsv",
                 shard: tuple[int, int] | None = None,
                 progress: Callable[[int, int | None], None] | None = None) -> dict:
    """Analyse a pcap/pcapng (optionally gzip-compressed) file into Zeek logs in ``logdir``.

    ``shard=(index, count)`` keeps only the packets :func:`analysis.sharding.shard_of` assigns to
    ``index``, so ``count`` runs over the same file split the work like cluster workers do.
    Raises :class:`analysis.sources.base.SourceError` for an unreadable trace.
    """
    from analysis.files.extract import install as install_extraction
    from analysis.logs.files import DirectoryLogSink
    from analysis.sources import open_source

    config = config if config is not None else AnalysisConfig()
    tmp = None
    path = os.fspath(trace)
    if _is_gzip(path):
        tmp = tempfile.NamedTemporaryFile(suffix=".pcap", delete=False)
        try:
            with gzip.open(path, "rb") as g:
                shutil.copyfileobj(g, tmp)
        except (OSError, EOFError) as e:
            tmp.close()
            os.unlink(tmp.name)
            from analysis.sources.base import SourceError
            raise SourceError(f"{path}: cannot decompress: {e}") from None
        tmp.close()
        path = tmp.name
    engine = None
    sink = None
    started = time.perf_counter()
    try:
        source = open_source(path)
        engine_box: list[Engine] = []
        sink = DirectoryLogSink(logdir, fmt, clock=lambda: engine_box[0].network_time if engine_box else time.time())
        install_extraction(config, logdir, sink)    # extract-all-files: <logdir>/<FileExtract::prefix>
        engine = Engine(config, sink)
        engine_box.append(engine)
        keep = None
        if shard is not None:
            from analysis.sharding import shard_filter
            keep = shard_filter(shard[0], shard[1])
        try:
            for batch in source.batches():
                if keep is not None:
                    batch = keep(batch)
                engine.process_batch(batch)
                if progress is not None:
                    done, total = source.progress()
                    progress(done, total)
        finally:
            source.close()
        engine.finish()
    finally:
        if sink is not None:
            sink.close()
        if tmp is not None:
            os.unlink(tmp.name)
    out = engine.stats()
    out["seconds"] = time.perf_counter() - started
    out["notes"] = list(config.notes)
    return out

"""A worker: reads packets (its share of a trace, or its fanout share of an interface), runs the
engine, and hands log records to the cluster's log shipper and engine events to users' scripts.

Intake starts only after ``cluster_started``.  At the end of a trace, or on SIGTERM/SIGINT, the
worker stops reading, finishes the engine (open connections expire and their conn.log rows are
written), and the runtime then ships every pending batch until the loggers acknowledged it.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from typing import Any

import structlog

from analysis.config import AnalysisConfig
from analysis.engine import Engine
from analysis.files.extract import install as install_extraction
from analysis.sources.base import SourceError
from analysis.standalone import analysis_config
from cluster import api
from cluster.frameworks import analysis_loads, logevents
from cluster.frameworks import host as frameworks_host
from cluster.layout import Role
from cluster.runtime import PROGRESS_TOPIC, Node

log = structlog.get_logger(__name__)

PROGRESS_INTERVAL = 0.2


class ScriptEvents:
    """The engine's EventSink inside a node: engine events go to the scripts' handlers."""

    __slots__ = ("_dispatch",)

    def __init__(self, registry: api.Registry) -> None:
        self._dispatch = registry.dispatch

    def event(self, name: str, args: tuple[Any, ...]) -> None:
        self._dispatch(name, args)


class WorkerNode(Node):
    role = Role.WORKER

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.engine: Engine | None = None
        self.source = None
        self.bytes_done = 0
        self.bytes_total: int | None = None
        self.packets_read = 0
        self.end_of_trace = False
        self.source_error: str | None = None

    def shard(self) -> tuple[int, int]:
        """(index, count) among the workers that read the same trace, on whichever host: the
        layout names one trace for the cluster, so workers on several hosts split it too."""
        same = [n.name for n in self.layout.workers if n.source == self.spec.source]
        return same.index(self.name), len(same)

    def analysis_config(self) -> AnalysisConfig:
        """Built exactly as ``starling analyze`` builds its own, from the layout's options."""
        lay = self.layout
        # framework policy loads (scan, brute forcing, ...) stand for the base scripts they load
        cfg = analysis_config(loads=analysis_loads(lay.zeek_loads), redefs=lay.zeek_redefs, bare=lay.bare,
                              ignore_checksums=lay.ignore_checksums, local_nets=lay.local_nets)
        cfg.peer = self.name
        for note in cfg.notes:
            log.info("analysis_note", node=self.name, note=note)
        return cfg

    async def setup(self) -> None:
        reg = api.current().registry
        events = ScriptEvents(reg) if reg.handlers else None
        # scripts that handle Zeek's per-stream log events (SSL::log_ssl, ...) see the records
        sink = logevents.tap(self.shipper, reg)
        cfg = self.analysis_config()
        # extract-all-files: as in Zeek, the worker writes extracted files below its own cwd (the
        # node directory the supervisor starts it in), i.e. <node dir>/extract_files/
        install_extraction(cfg, os.getcwd(), sink)
        self.engine = Engine(cfg, sink, events)
        # [frameworks] notice/SumStats read network time from this engine (cluster/frameworks/host.py)
        frameworks_host.set_clock(lambda: self.engine.network_time)

    async def main(self) -> None:
        try:
            if self.spec.trace is not None:
                await self._read_trace()
            else:
                await self._read_live()
        except SourceError as e:
            self.source_error = str(e)
            self.exit_code = 2
            log.error("source_failed", node=self.name, error=str(e))

    def _progress(self, final: bool = False) -> None:
        self.endpoint.publish(PROGRESS_TOPIC + self.name, "progress", self.name, self.bytes_done,
                              self.bytes_total, self.packets_read, final)

    async def _read_trace(self) -> None:
        from analysis.sharding import shard_filter
        from analysis.sources import open_source

        index, count = self.shard()
        keep = shard_filter(index, count) if count > 1 else None
        src = self.source = open_source(self.spec.trace)
        process = self.engine.process_batch
        stop = self.stop_event
        last = time.monotonic()
        log.info("intake_started", node=self.name, trace=str(self.spec.trace), shard=f"{index}/{count}")
        try:
            for batch in src.batches():
                if keep is not None:
                    batch = keep(batch)
                self.packets_read += len(batch[1])
                process(batch)
                now = time.monotonic()
                if now - last >= PROGRESS_INTERVAL:
                    self.bytes_done, self.bytes_total = src.progress()
                    self._progress()
                    last = now
                await asyncio.sleep(0)   # let shipping, heartbeats and signals run
                if stop.is_set():
                    log.info("intake_stopped", node=self.name, reason="signal",
                             active_connections=len(self.engine.table))
                    return
            self.end_of_trace = True
            log.info("intake_finished", node=self.name, reason="end of trace")
        finally:
            self.bytes_done, self.bytes_total = src.progress()
            src.close()

    async def _read_live(self) -> None:
        from analysis.sources.live import LiveSource

        iface = self.spec.interface
        group = zlib.crc32(f"starling:{self.spec.host}:{iface}".encode()) & 0xFFFF
        src = self.source = LiveSource(iface, fanout_group=group)
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(src.fileno(), ready.set)
        last = time.monotonic()
        log.info("intake_started", node=self.name, interface=iface, fanout_group=group)
        try:
            while not self.stop_event.is_set():
                pkts = src.read_batch()
                if pkts:
                    self.packets_read += len(pkts)
                    self.engine.process_batch((src.link_type, pkts))
                    await asyncio.sleep(0)
                else:
                    ready.clear()
                    try:
                        await asyncio.wait_for(ready.wait(), 0.1)
                    except asyncio.TimeoutError:
                        pass
                now = time.monotonic()
                if now - last >= PROGRESS_INTERVAL:
                    self.bytes_done = src.progress()[0]
                    self._progress()
                    last = now
        finally:
            loop.remove_reader(src.fileno())
            src.close()

    async def teardown(self) -> None:
        if self.engine is not None:
            self.engine.finish()   # expire open connections: their rows go to the shipper
            # [frameworks] Zeek's zeek_done: SumStats sends its last batch to the manager
            api.current().registry.dispatch(frameworks_host.DONE, ())
            await frameworks_host.drain()   # [frameworks] the manager acted on what we sent
            # Known hosts/services (cluster/frameworks/known.py, when loaded): their rows wait
            # on store replies; let them arrive before the runtime drains the log shipper.
            from cluster.frameworks import known
            await known.drain()
        if self.endpoint is not None:
            self._progress(final=True)

    def stats(self) -> dict[str, Any]:
        st: dict[str, Any] = {"packets_read": self.packets_read, "end_of_trace": self.end_of_trace,
                              "source_error": self.source_error}
        if self.engine is not None:
            st["engine"] = self.engine.stats()
        return st

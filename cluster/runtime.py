"""The node lifecycle shared by every role: one asyncio program, its tasks in one TaskGroup.

    start     host the hub (if the layout puts it here), connect the bus endpoint, install the
              cluster API, load the user's scripts, open the log shipper, role setup
    barrier   wait for ``cluster_started``: the manager declares it once every node of the
              layout is up, and answers ``starling/cluster/barrier`` requests with it
    run       the role's main (a worker reads packets; the others wait for a stop signal)
    stop      on SIGTERM/SIGINT or when the role's main returns: role teardown (a worker
              finishes its engine so open connections are logged), ship every pending log
              batch until acknowledged, say goodbye, close

Roles (``nodes/``) subclass :class:`Node` and override :meth:`setup`, :meth:`main` and
:meth:`teardown`.  Progress and final statistics go out on ``starling/progress/`` and
``starling/stats/`` for whoever listens (``starling run``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import structlog

from broker.endpoint import Endpoint, RequestTimeout, RemoteError
from broker.hub import Hub
from broker.reliable import BatchSender
from cluster import api
from cluster.layout import Layout, Role
from cluster.logging.shipper import LogShipper
from cluster.frameworks import scripts_for_loads
from cluster.frameworks.host import TICK as FRAMEWORK_TICK  # [frameworks] see _tick_loop

log = structlog.get_logger(__name__)

__all__ = ["Node", "BARRIER_TOPIC", "PROGRESS_TOPIC", "STATS_TOPIC", "load_script"]

BARRIER_TOPIC = "starling/cluster/barrier"
PROGRESS_TOPIC = "starling/progress/"
STATS_TOPIC = "starling/stats/"


class ScriptError(RuntimeError):
    """A user's script could not be loaded (the message says which and why)."""


def load_script(path: str | os.PathLike[str]) -> Any:
    """Import a user's Python script as a module so its ``@cluster.on`` handlers register."""
    p = Path(path)
    if not p.is_file():
        raise ScriptError(f"{p}: no such script")
    name = f"starling_script_{len(sys.modules)}_{''.join(c if c.isalnum() else '_' for c in p.stem)}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise ScriptError(f"{p}: cannot be loaded as a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # a user's script: report, do not crash with a traceback
        sys.modules.pop(name, None)
        raise ScriptError(f"{p}: {type(e).__name__}: {e}") from e
    return mod


class Node:
    """One cluster node; ``run()`` is the whole program and returns its exit status."""

    role: Role = Role.PROXY
    # How long a stopping node waits for its log batches to be acknowledged before it writes the
    # rest to its spill journal (resent after a restart): below the supervisor's default grace.
    drain_timeout = 8.0

    def __init__(self, layout: Layout, name: str, *, scripts: Iterable[str] = (),
                 heartbeat_file: str | None = None) -> None:
        self.layout = layout
        self.spec = layout.node(name)
        self.name = name
        self.endpoints = layout.endpoints(name)
        # The layout's scripts (cluster-wide, then this node's), then any given on the command line.
        # Zeek policy scripts among the layout's loads (e.g. policy/misc/scan) come as framework scripts.
        self.scripts = list(dict.fromkeys([*map(str, layout.scripts_for(name)),
                                           *scripts_for_loads(layout.zeek_loads), *map(str, scripts)]))
        self.heartbeat_file = heartbeat_file
        self.state_dir = Path(layout.state_dir)
        self.hub: Hub | None = None
        self.endpoint: Endpoint | None = None
        self.cluster: api.Cluster | None = None
        self.shipper: LogShipper | None = None
        self.stop_event: asyncio.Event | None = None
        self.started_at = time.time()
        self._cluster_started = False
        self.exit_code = 0
        self._bg: list[asyncio.Task] = []
        self.tg: asyncio.TaskGroup | None = None

    # ---- hooks for the roles --------------------------------------------------------------

    async def setup(self) -> None:
        """Role start-up before the barrier (a logger binds its receiver here)."""

    async def main(self) -> None:
        """The role's work; by default wait for a stop signal."""
        await self.stop_event.wait()

    async def teardown(self) -> None:
        """Role shutdown, before this node's log batches are drained (stop intake here)."""

    async def finish(self) -> None:
        """Role shutdown after the drain (a log writer closes its files here)."""

    def stats(self) -> dict[str, Any]:
        return {}

    # ---- lifecycle ------------------------------------------------------------------------

    def request_stop(self) -> None:
        if self.stop_event is not None and not self.stop_event.is_set():
            log.info("node_stop_requested", node=self.name)
            self.stop_event.set()

    def spawn(self, coro, name: str) -> asyncio.Task:
        """A background task that lives until the node stops."""
        t = self.tg.create_task(coro, name=name)
        self._bg.append(t)
        return t

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                await self._start()
                self.spawn(self._heartbeat_loop(), "heartbeat")
                self.spawn(self._tick_loop(), "log-tick")
                if await self._barrier():
                    self.dispatch_cluster_started()
                    await self.main()
                await self._stop()
                for t in self._bg:
                    t.cancel()
        finally:
            self._arm_exit_watchdog()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self._close_sockets()     # after a failure too: open sockets would hang exit
            if self.hub is not None:
                await asyncio.sleep(0.2)   # let the hub forward what is in flight (final stats, byes)
                await loop.run_in_executor(None, self.hub.stop)
            api.install(None)
        return self.exit_code

    async def _start(self) -> None:
        for s in self.scripts:       # before joining the bus: a broken script fails fast
            load_script(s)
            log.info("script_loaded", node=self.name, script=str(s))
        ep_cfg = self.endpoints
        if ep_cfg.hub_bind is not None:
            self.hub = Hub(ep_cfg.hub_bind)
            await asyncio.get_running_loop().run_in_executor(None, self.hub.start)
        self.endpoint = Endpoint(self.name, ep_cfg.hub, policy="drop")
        await self.endpoint.start()
        self.shipper = LogShipper(await self._log_senders())
        self.cluster = api.Cluster(self.name, self.role.value, self.layout, self.endpoint, log_sink=self.shipper)
        api.install(self.cluster)
        self.cluster.attach()
        await self.setup()
        log.info("node_started", node=self.name, role=self.role.value, pid=os.getpid())

    def log_destinations(self) -> dict[str, str]:
        """Logger name -> batch channel address; the manager when the layout has no logger."""
        loggers = self.layout.loggers
        if loggers:
            return {n.name: n.endpoint for n in loggers}
        m = self.layout.manager
        return {m.name: m.endpoint}

    async def _log_senders(self) -> dict[str, BatchSender]:
        out = {}
        for lname, addr in self.log_destinations().items():
            jdir = self.state_dir / "journal" / self.name / lname
            # Window and ack timeout measured with bench/logs.py: 16 batches in flight keep a
            # logger busy; a resend only after 3 s of no progress spares a busy logger from
            # receiving whole windows twice (go-back-N resends everything in flight).
            out[lname] = await BatchSender(self.name, addr, journal_dir=str(jdir), channel="starling/logs",
                                           window=16, ack_timeout=3.0).start()
        return out

    def dispatch_cluster_started(self) -> None:
        """Run the scripts' ``cluster_started`` handlers, once.  The manager calls it the moment
        it declares the start, before any node can learn of it: what its handlers set up (a
        SumStat, say) must exist before the first worker's data can arrive."""
        if self._cluster_started:
            return
        self._cluster_started = True
        api.current().registry.dispatch(api.CLUSTER_STARTED, ())
        log.info("cluster_started", node=self.name)

    async def _barrier(self) -> bool:
        """Wait for ``cluster_started`` (or a stop request); True when the cluster started."""
        stop = asyncio.ensure_future(self.stop_event.wait())
        try:
            waited = time.monotonic()
            while not self.stop_event.is_set():
                if await self._barrier_passed():
                    return True
                if time.monotonic() - waited > 5.0:
                    log.warning("waiting_for_cluster", node=self.name,
                                up=sorted(self.endpoint.peers()))
                    waited = time.monotonic()
                await asyncio.wait([stop], timeout=0.05)
            return False
        finally:
            stop.cancel()

    async def _barrier_passed(self) -> bool:
        try:
            return bool(await self.endpoint.request(BARRIER_TOPIC, "started?", timeout=0.3))
        except (RequestTimeout, RemoteError, ConnectionError):
            return False

    async def _stop(self) -> None:
        try:
            await self.teardown()
        finally:
            await self._leave()

    async def _leave(self) -> None:
        ok = True
        if self.shipper is not None:
            ok = await self.shipper.drain(self.drain_timeout)
            if not ok:
                log.error("log_drain_incomplete", node=self.name, **self.shipper.stats())
                self.exit_code = self.exit_code or 3
        try:
            await self.finish()
        finally:
            self.publish_stats(final=True)
            log.info("node_final_stats", node=self.name, stats=self._stats_dict(True))
        if self.endpoint is not None:
            try:
                await self.endpoint.drain(1.0)
            except asyncio.TimeoutError:
                pass
        if self.shipper is not None:
            for s in self.shipper.senders.values():
                # Bounded by its own drain timeout; what is still unacked goes to the spill journal.
                await s.close(drain_timeout=0.1)
        if self.endpoint is not None:
            await self.endpoint.close()
        log.info("node_stopped", node=self.name, exit_code=self.exit_code, logs_ok=ok)

    def _arm_exit_watchdog(self, seconds: float = 5.0) -> None:
        """A safety bound only: once the node is leaving, a hang in closing sockets or tasks (a
        bug in some library) must not keep the process alive.  A normal stop is done in well
        under a second and never reaches it; every record is already acknowledged or in the
        spill journal when this is armed."""
        if getattr(self, "_watchdog", None) is not None:
            return
        import threading

        def fire() -> None:
            log.error("node_exit_forced", node=self.name, after_s=seconds)
            for h in (sys.stdout, sys.stderr):
                try:
                    h.flush()
                except Exception:  # noqa: BLE001
                    pass
            os._exit(self.exit_code or 4)

        self._watchdog = threading.Timer(seconds, fire)
        self._watchdog.daemon = True
        self._watchdog.start()

    async def _close_sockets(self) -> None:
        if self.shipper is not None:
            for s in self.shipper.senders.values():
                await s.close(drain_timeout=0)   # a no-op after a normal stop
        if self.endpoint is not None:
            await self.endpoint.close()

    def _stats_dict(self, final: bool) -> dict[str, Any]:
        return {"node": self.name, "role": self.role.value, "final": final, "pid": os.getpid(),
                "bus": _bus_stats(self.endpoint.stats()) if self.endpoint else {},
                "logs": self.shipper.stats() if self.shipper else {}, **self.stats()}

    def publish_stats(self, final: bool = False) -> None:
        st = self._stats_dict(final)
        try:
            self.endpoint.publish(STATS_TOPIC + self.name, "node_stats", st)
        except Exception:
            log.exception("stats_not_published", node=self.name)

    async def _heartbeat_loop(self) -> None:
        if not self.heartbeat_file:
            return
        p = Path(self.heartbeat_file)
        while True:
            try:
                p.touch()
            except OSError:
                pass
            await asyncio.sleep(1.0)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.shipper.tick()
            # [frameworks] a wall-clock tick for notice/SumStats (batch flushes, idle sources)
            self.cluster.registry.dispatch(FRAMEWORK_TICK, ())


def _bus_stats(st: dict[str, Any]) -> dict[str, int]:
    return {k: st[k] for k in ("published", "dropped_out", "dropped_in", "gaps", "malformed",
                               "handler_errors") if k in st}

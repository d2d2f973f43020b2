"""Where a framework runs: the one seam between the framework logic and its transport.

The notice and SumStats frameworks are written once.  They ask :func:`current` for the
:class:`Host` they run on and only look at its ``mode``:

* ``standalone`` -- one process, no bus (``starling analyze --script``): everything is local;
* ``manager``    -- the cluster's central view: decides, merges, writes notice.log;
* ``worker`` / ``proxy`` / ``logger`` -- forward to the manager and keep local caches.

In a cluster node the host wraps the node's :class:`cluster.api.Cluster`; the standalone runner
(:mod:`cluster.frameworks.local`) installs a :class:`LocalHost` instead.  Network time comes from
a clock the packet-reading code registers (:func:`set_clock`); nodes without packets (manager,
proxies) follow the newest network time they were told about (:meth:`Host.saw_time`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import structlog

from cluster import api

__all__ = ["Host", "LocalHost", "ClusterHost", "current", "drain", "install", "mark_used", "set_clock",
           "TICK", "DONE"]

log = structlog.get_logger(__name__)

# Node-runtime events the frameworks listen to (dispatched through the api registry):
TICK = "starling_tick"   # about every 50 ms of wall time, on every node (flush batches, idle checks)
DONE = "zeek_done"       # a worker's engine has finished: no more packets, events or observations
DRAIN_TOPIC = "starling/frameworks/drain"


class Host:
    mode = "standalone"
    name = ""
    local_nets: tuple[str, ...] = ()      # Site::local_nets, from the layout or the analysis config

    def __init__(self) -> None:
        self._clock: Callable[[], float] | None = None
        self._seen = 0.0
        self.at: float | None = None     # set while a framework replays an event of that time

    def network_time(self) -> float:
        """The packets' time where there are packets, else the newest time reported to us;
        while SumStats runs a callback, the time of the observation that caused it."""
        if self.at is not None:
            return self.at
        if self._clock is not None:
            t = self._clock()
            if t:
                return max(t, self._seen)
        return self._seen

    def saw_time(self, t: float) -> None:
        if t > self._seen:
            self._seen = t

    def log_write(self, path: str, record: Any) -> None:
        raise NotImplementedError

    def publish(self, topic: str, event: str, *args: Any) -> bool:
        return False

    @property
    def is_central(self) -> bool:
        """True where decisions are made: the manager, or the one standalone process."""
        return self.mode in ("standalone", "manager")


class LocalHost(Host):
    """Standalone mode: logs go straight to the given LogSink."""

    def __init__(self, log_sink: Any, clock: Callable[[], float] | None = None,
                 local_nets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.sink = log_sink
        self._clock = clock
        self.local_nets = tuple(local_nets)

    def log_write(self, path: str, record: Any) -> None:
        self.sink.write(path, record)


class ClusterHost(Host):
    """A cluster node: logs through the node's log shipper, events over the bus."""

    def __init__(self, c: api.Cluster) -> None:
        super().__init__()
        self.cluster = c
        self.mode = c.role
        self.name = c.name
        self.local_nets = tuple(getattr(c.layout, "local_nets", ()) or ())

    def log_write(self, path: str, record: Any) -> None:
        self.cluster.log_write(path, record)

    def publish(self, topic: str, event: str, *args: Any) -> bool:
        return self.cluster.publish(topic, event, *args)

    def workers(self) -> list[str]:
        return [n for n, r in self.cluster.roles.items() if r == "worker"]

    def is_up(self, name: str) -> bool:
        return self.cluster.state.get(name) == "up"


_installed: Host | None = None
_for_cluster: tuple[Any, ClusterHost] | None = None
_pending_clock: Callable[[], float] | None = None


def install(h: Host | None) -> None:
    """Make ``h`` the host of this process (the standalone runner does this; None to undo)."""
    global _installed
    _installed = h


def current() -> Host:
    """This process's host; in a cluster node one :class:`ClusterHost` per installed Cluster."""
    global _for_cluster
    if _installed is not None:
        return _installed
    c = api.current()    # raises RuntimeError outside a node: a clear message
    if _for_cluster is None or _for_cluster[0] is not c:
        h = ClusterHost(c)
        h._clock = _pending_clock
        _for_cluster = (c, h)
    return _for_cluster[1]


def set_clock(clock: Callable[[], float] | None) -> None:
    """Register the packets' clock (a worker's engine network time)."""
    global _pending_clock
    _pending_clock = clock
    if _installed is not None:
        _installed._clock = clock
    if _for_cluster is not None:
        _for_cluster[1]._clock = clock


def wall() -> float:
    return time.monotonic()


# ---- the end of a worker's run -----------------------------------------------------------------
#
# The loggers stop right after the last worker, and the manager writes what the frameworks raise
# (notices, SumStats results).  So a worker that sent anything to the frameworks on the manager
# asks, before it leaves, for the manager to have acted on it and to have had its log batches
# acknowledged: the request travels behind the worker's own events on the same path.

_used = False


def mark_used() -> None:
    """This node sent framework traffic to the manager (so :func:`drain` must wait for it)."""
    global _used
    _used = True


async def drain(timeout: float = 5.0) -> bool:
    """A worker's last step for the frameworks; True when the manager confirmed."""
    if not _used or _installed is not None:
        return True
    try:
        c = api.current()
    except RuntimeError:
        return True
    if c.role == "manager" or c.endpoint is None:
        return True
    try:
        return bool(await c.endpoint.request(DRAIN_TOPIC, "drain", c.name, timeout=timeout))
    except Exception as e:   # noqa: BLE001 - a missing manager must not fail the worker's stop
        log.warning("frameworks_drain_failed", node=c.name, error=f"{type(e).__name__}: {e}")
        return False


async def _drain_request(_name: str, _args: list, _meta: Any) -> bool:
    sink = api.current().log_sink
    if sink is not None and hasattr(sink, "drain"):
        return bool(await sink.drain(3.0))
    return True


@api.on(api.CLUSTER_STARTED)
def _serve_drain() -> None:
    if _installed is not None:
        return                       # standalone: nothing to serve
    c = api.current()
    if c.role == "manager" and c.endpoint is not None:
        c.endpoint.serve(DRAIN_TOPIC, _drain_request)

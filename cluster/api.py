"""The cluster API for frameworks and users' Python scripts (Zeek's ``Cluster::`` namespace).

A script loaded into a node (``--script my.py``) uses it like this::

    from cluster import api as cluster

    @cluster.on("connection_state_remove")        # an engine event, raised locally
    def done(c):
        if c.orig_bytes and c.orig_bytes > 1_000_000:
            cluster.publish_hrw(cluster.proxy_pool(), c.orig_h, "big_sender", c.orig_h)

    @cluster.on("big_sender")                      # an event published by another node
    def big(host): ...

    @cluster.node_up
    def up(name, node_id): ...

Handlers are registered at import time, before the node runs, in a per-process registry; the node
runtime then installs its :class:`Cluster` (:func:`install`).  Events from the bus and from the
engine reach the same handlers.  Topics are Zeek's: ``zeek/cluster/<role>/`` per role,
``zeek/cluster/node/<name>/`` per node, ``zeek/cluster/nodeid/<id>/`` per node process;
``publish_hrw``/``publish_rr`` send to the node topic of the pool member they pick, and pools
only pick nodes that are up.  A handler that raises is logged and counted, never fatal.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import structlog

from analysis.logs.schema import LogRecord, log_stream  # re-exported for users' scripts
from cluster.pools import Pool

log = structlog.get_logger(__name__)

__all__ = [
    "Cluster", "LogRecord", "Registry", "current", "install", "log_stream", "log_write", "logger_pool",
    "manager_topic", "node_down", "node_topic", "node_up", "nodeid_topic", "nodes", "on", "proxy_pool",
    "publish", "publish_hrw", "publish_rr", "role_topic", "subscribe", "worker_pool",
]

NODE_UP = "Cluster::node_up"
NODE_DOWN = "Cluster::node_down"
CLUSTER_STARTED = "cluster_started"


def role_topic(role: str) -> str:
    """``Cluster::worker_topic`` and friends: every node of ``role`` receives it."""
    return f"zeek/cluster/{role}/"


manager_topic = role_topic("manager")
logger_topic = role_topic("logger")
proxy_topic = role_topic("proxy")
worker_topic = role_topic("worker")


def node_topic(name: str) -> str:
    """``Cluster::node_topic(name)``."""
    return f"zeek/cluster/node/{name}/"


def nodeid_topic(node_id: str) -> str:
    """``Cluster::nodeid_topic(id)``: one process instance of a node."""
    return f"zeek/cluster/nodeid/{node_id}/"


class Registry:
    """Event name -> handlers.  ``dispatch`` never lets a handler's exception escape."""

    def __init__(self) -> None:
        self.handlers: dict[str, list[Callable[..., Any]]] = {}
        self.errors = 0

    def on(self, event: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.handlers.setdefault(event, []).append(fn)
            return fn
        return register

    def wants(self, event: str) -> bool:
        return event in self.handlers

    def dispatch(self, event: str, args: Iterable[Any]) -> None:
        hs = self.handlers.get(event)
        if not hs:
            return
        for h in hs:
            try:
                h(*args)
            except Exception:
                self.errors += 1
                log.exception("script_handler_failed", event=event, handler=getattr(h, "__qualname__", repr(h)))


_registry = Registry()


class Cluster:
    """One node's view of the cluster.  ``endpoint`` is a :class:`broker.endpoint.Endpoint`;
    ``layout`` a :class:`cluster.layout.Layout`; ``log_sink`` receives ``log_write`` records."""

    def __init__(self, name: str, role: str, layout: Any, endpoint: Any = None, *,
                 log_sink: Any = None, registry: Registry | None = None) -> None:
        self.name = name
        self.role = role
        self.layout = layout
        self.endpoint = endpoint
        self.log_sink = log_sink
        self.registry = registry or _registry
        self.node_id = endpoint.instance if endpoint is not None else ""
        self.roles = {n.name: n.role.value for n in layout.nodes}
        self.state: dict[str, str] = {n: ("up" if n == name else "down") for n in self.roles}
        self.pools: dict[str, Pool] = {
            r: Pool(r, [n.name for n in layout.nodes if n.role.value == r], alive=[name])
            for r in ("worker", "proxy", "logger")
        }

    # ---- wiring (done by the node runtime) ------------------------------------------------

    def attach(self) -> None:
        """Subscribe to this node's topics and follow peers' up/down."""
        ep = self.endpoint
        for prefix in (role_topic(self.role), node_topic(self.name), nodeid_topic(self.node_id)):
            ep.subscribe(prefix, self._on_bus)
        ep.on_peer(self._on_peer)

    def subscribe(self, prefix: str) -> None:
        """``Cluster::subscribe``: deliver events published under ``prefix`` to the handlers."""
        self.endpoint.subscribe(prefix, self._on_bus)

    def _on_bus(self, name: str, args: list, meta: Any) -> None:
        self.registry.dispatch(name, args)

    def _on_peer(self, ev: Any) -> None:
        if ev.name not in self.roles or ev.name == self.name:
            return
        pool = self.pools.get(self.roles[ev.name])
        if ev.kind == "up":
            self.state[ev.name] = "up"
            if pool is not None:
                pool.up(ev.name)
            self.registry.dispatch(NODE_UP, (ev.name, ev.instance))
        else:
            self.state[ev.name] = "down"
            if pool is not None:
                pool.down(ev.name)
            self.registry.dispatch(NODE_DOWN, (ev.name, ev.instance))

    # ---- the API --------------------------------------------------------------------------

    def nodes(self) -> dict[str, dict[str, str]]:
        """Every node of the layout: role and ``up``/``down`` as this node sees it."""
        return {n: {"role": self.roles[n], "state": self.state[n]} for n in self.roles}

    def publish(self, topic: str, event: str, *args: Any) -> bool:
        return self.endpoint.publish(topic, event, *args)

    def publish_hrw(self, pool: Pool | str, key: Any, event: str, *args: Any) -> bool:
        """Send to the live member of ``pool`` that owns ``key``; False if none is up."""
        p = self.pools[pool] if isinstance(pool, str) else pool
        target = p.hrw(key)
        return target is not None and self.endpoint.publish(node_topic(target), event, *args)

    def publish_rr(self, pool: Pool | str, key: str, event: str, *args: Any) -> bool:
        """Send to the next live member of ``pool`` in the round-robin sequence ``key``."""
        p = self.pools[pool] if isinstance(pool, str) else pool
        target = p.rr(key)
        return target is not None and self.endpoint.publish(node_topic(target), event, *args)

    def log_write(self, path: str, record: LogRecord) -> None:
        """Write a record to log stream ``path``; it lands in the stream's one file on a logger."""
        if self.log_sink is None:
            raise RuntimeError(f"node {self.name} has no log sink")
        self.log_sink.write(path, record)


_current: Cluster | None = None


def install(c: Cluster | None) -> None:
    global _current
    _current = c


def current() -> Cluster:
    if _current is None:
        raise RuntimeError("no cluster node is running in this process")
    return _current


# ---- module-level API for scripts ------------------------------------------------------------

def on(event: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: handle ``event`` (an engine event or one published on the bus)."""
    return _registry.on(event)


def node_up(fn: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    """Decorator: ``fn(name, node_id)`` when another node of the layout comes up."""
    return _registry.on(NODE_UP)(fn)


def node_down(fn: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    """Decorator: ``fn(name, node_id)`` when another node of the layout goes down."""
    return _registry.on(NODE_DOWN)(fn)


def registry() -> Registry:
    return _registry


def publish(topic: str, event: str, *args: Any) -> bool:
    return current().publish(topic, event, *args)


def publish_hrw(pool: Pool | str, key: Any, event: str, *args: Any) -> bool:
    return current().publish_hrw(pool, key, event, *args)


def publish_rr(pool: Pool | str, key: str, event: str, *args: Any) -> bool:
    return current().publish_rr(pool, key, event, *args)


def subscribe(prefix: str) -> None:
    current().subscribe(prefix)


def nodes() -> dict[str, dict[str, str]]:
    return current().nodes()


def log_write(path: str, record: LogRecord) -> None:
    current().log_write(path, record)


def proxy_pool() -> Pool:
    return current().pools["proxy"]


def worker_pool() -> Pool:
    return current().pools["worker"]


def logger_pool() -> Pool:
    return current().pools["logger"]

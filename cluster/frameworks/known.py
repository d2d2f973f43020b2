"""Known hosts and services: Zeek's ``policy/protocols/conn/known-{hosts,services}.zeek``.

known_hosts.log (ts, host) names each local address that completed a TCP handshake, once per
``host_expiry`` (Zeek's ``Known::host_store_expiry``, 1 day); known_services.log (ts, host,
port_num, port_proto, service) names each local server port with an active service, once per
``service_expiry`` for each protocol seen on it (Zeek's ``Known::services`` table semantics:
a later row lists only protocols not logged before for that host and port).

De-duplication goes through the partitioned store, as Zeek's ``Known::use_host_store``: a
host is logged by whichever worker's ``put_unique`` created the key; a service row carries the
members its ``sadd`` added to the ``(host, port, proto)`` key (created with the expiry, like
``&create_expire``).  No reply within ``timeout``: the row is written anyway (Zeek's ``timeout``
branch).  Standalone mode runs the same :class:`Known` over a :class:`~cluster.store.LocalStore`.

Hosts are decided at ``connection_established`` (Zeek's timing).  Services, and hosts of a
connection that never raised that event, are decided when the connection is removed
(``connection_state_remove``): a host
counts when the history shows the originator's SYN and the responder's SYN-ACK (``S`` and
``h``), and ``ts`` is the network time at that moment (see docs/store.md for the deviation).

Enable it with the node script ``cluster/frameworks/known_script.py`` (``starling run TRACE
--script ...`` or ``starling analyze TRACE --logdir DIR --script ...``); embedded, with
:func:`standalone` as the engine's event sink.  See docs/store.md.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import structlog

from analysis.config import AnalysisConfig, NetSet
from analysis.logs.schema import Addr, Enum, LogRecord, Port, Time, log_stream, set_of

log = structlog.get_logger(__name__)

__all__ = ["HostsInfo", "Known", "ServicesInfo", "drain", "load", "standalone", "unload"]

HOST_EXPIRY = 86400.0          # Known::host_store_expiry
SERVICE_EXPIRY = 86400.0       # Known::service_store_expiry
STORE_TIMEOUT = 15.0           # Known::host_store_timeout / service_store_timeout
EMPTY_SERVICE_DELAY = 300.0    # a port without a detected protocol is committed 5 min later
# Names Zeek's scripts add to c$service themselves (everything else is an analyzer name,
# upper case in c$service, lower-cased only for conn.log).
_SCRIPT_SERVICES = frozenset({"ftp-data", "irc-dcc-data"})
# Responder history letters that mean "the server sent something" (TCP_PARTIAL/ESTABLISHED/CLOSED).
_RESP_ACTIVE = frozenset("hadft")


@log_stream("known_hosts")
class HostsInfo(LogRecord, kw_only=True):
    ts: Time
    host: Addr


@log_stream("known_services")
class ServicesInfo(LogRecord, kw_only=True):
    ts: Time
    host: Addr
    port_num: Port
    port_proto: Enum
    service: set_of("string")


def zeek_services(service: str | None) -> list[str]:
    """conn.log's service text -> the names in Zeek's ``c$service`` (confirmation order);
    names starting with ``-`` (confirmed, then violated) are dropped as Zeek's script does."""
    if not service:
        return []
    out = []
    for s in service.split(","):
        if not s or s.startswith("-"):
            continue
        name = s if s in _SCRIPT_SERVICES else s.upper()
        if name not in out:
            out.append(name)
    return out


def has_active_service(c: Any) -> bool:
    """Zeek's ``has_active_service``: the server did a handshake or spoke (TCP), or sent a
    datagram (UDP, ``Known::service_udp_requires_response``); ICMP and others are no service."""
    if c.proto == "tcp":
        hist = c.history or ""
        return any(ch in _RESP_ACTIVE for ch in hist)
    if c.proto == "udp":
        return bool(c.resp_pkts)
    return False


def handshake_seen(c: Any) -> bool:
    """Both endpoints ESTABLISHED at the SYN-ACK: originator SYN and responder SYN-ACK seen."""
    hist = c.history or ""
    return c.proto == "tcp" and "S" in hist and "h" in hist


class Known:
    """The logic for one engine.  ``store`` has ``submit(ops, callback)`` (a StoreClient or a
    LocalStore); ``log_write(path, record)`` writes a row; ``local`` is Site::local_nets."""

    def __init__(self, store: Any, log_write: Callable[[str, LogRecord], None], local: NetSet, *,
                 hosts: bool = True, services: bool = True, host_expiry: float = HOST_EXPIRY,
                 service_expiry: float = SERVICE_EXPIRY, clock: Callable[[], float] | None = None) -> None:
        self.store = store
        self.log_write = log_write
        self.local = local
        self.hosts = hosts
        self.services = services
        self.host_expiry = host_expiry
        self.service_expiry = service_expiry
        self.now = 0.0               # network time: the engine's clock if given, else as events show it
        self._clock = clock
        self._known_hosts: dict[str, float] = {}      # created by us in the store, until
        self._pending_hosts: set[str] = set()
        self._svc_unstored: dict[tuple, tuple[set, float]] = {}   # logged while the store failed
        self._delayed: deque[tuple[float, ServicesInfo]] = deque()
        self._established: set[str] = set()
        self.counts = dict.fromkeys(("hosts_logged", "services_logged", "store_timeouts"), 0)

    # ---- engine events (the EventSink protocol, and cluster script handlers) ---------------

    def event(self, name: str, args: tuple) -> None:
        if name == "new_connection":
            self._tick(args[0].ts)
        elif name == "connection_established":
            self.connection_established(args[0])
        elif name == "connection_state_remove":
            self.connection_state_remove(args[0])

    def _tick(self, t: float | None) -> None:
        if self._clock is not None:
            c = self._clock()
            if c and (t is None or c > t):
                t = c
        if t is not None and t > self.now:
            self.now = t
            d = self._delayed
            while d and d[0][0] <= t:
                self._commit_service(d.popleft()[1])

    def connection_established(self, c: Any) -> None:
        self._tick(c.ts)
        if self.hosts and handshake_seen(c):
            self._established.add(c.uid)
            for h in {c.orig_h, c.resp_h}:
                if h in self.local:
                    self.host_found(h)

    def connection_state_remove(self, c: Any) -> None:
        self._tick(c.ts + (c.duration or 0.0))
        if self.hosts and c.uid not in self._established and handshake_seen(c):
            for h in (c.orig_h, c.resp_h) if c.orig_h != c.resp_h else (c.orig_h,):
                if h in self.local:
                    self.host_found(h, c.ts)     # the handshake began the connection
        self._established.discard(c.uid)
        if self.services:
            self.known_services_done(c)

    # ---- hosts -----------------------------------------------------------------------------

    def host_found(self, host: str, ts: float | None = None) -> None:
        now = self.now
        until = self._known_hosts.get(host)
        if (until is not None and until > now) or host in self._pending_hosts:
            return
        self._pending_hosts.add(host)
        info = HostsInfo(ts=now if ts is None else ts, host=host)

        def done(res: list | None) -> None:
            self._pending_hosts.discard(host)
            if res is not None and res[0] is not True:
                return     # known already (its expiry is the creator's to know) or a store error
            if res is None:
                self._store_failed()
            # We created the store entry (or logged without the store): skip it until expiry.
            self._known_hosts[host] = info.ts + self.host_expiry
            self.counts["hosts_logged"] += 1
            self.log_write("known_hosts", info)

        self.store.submit([("put_unique", host, True, self.host_expiry)], done)

    # ---- services --------------------------------------------------------------------------

    def known_services_done(self, c: Any) -> None:
        if c.resp_h not in self.local:
            return
        svc = zeek_services(c.service)
        if len(svc) == 1:
            if svc[0] == "ftp-data":
                return
            if svc[0] == "DNS" and not c.resp_bytes:
                return
        if not has_active_service(c):
            return
        # With a protocol, Zeek decides at the analyzer confirmation, early in the connection:
        # its start is the closest time we know; without one, at the removal (now).
        ts = c.ts if svc else self.now
        info = ServicesInfo(ts=ts, host=c.resp_h, port_num=c.resp_p, port_proto=c.proto,
                            service=svc or [""])
        if not svc:
            # No protocol yet: wait in case one is found on another connection to this port.
            self._delayed.append((self.now + EMPTY_SERVICE_DELAY, info))
        else:
            self._commit_service(info)

    def _commit_service(self, info: ServicesInfo) -> None:
        key = (info.host, info.port_num, info.port_proto)
        mine = self._svc_unstored.get(key)
        if mine is not None and mine[1] > self.now and all(x in mine[0] for x in info.service):
            return

        def done(res: list | None) -> None:
            if res is None:
                # Logged without the store: remember it here so we do not repeat it per connection.
                self._store_failed()
                entry = self._svc_unstored.get(key)
                if entry is None or entry[1] <= self.now:
                    entry = self._svc_unstored[key] = (set(), info.ts + self.service_expiry)
                new = [x for x in info.service if x not in entry[0]]
                entry[0].update(new)
            else:
                new = res[0] if isinstance(res[0], list) else []
            if new:
                self.counts["services_logged"] += 1
                self.log_write("known_services", ServicesInfo(
                    ts=info.ts, host=info.host, port_num=info.port_num, port_proto=info.port_proto,
                    service=list(new)))

        self.store.submit([("sadd", list(key), list(info.service), self.service_expiry)], done)

    # ---- lifecycle -------------------------------------------------------------------------

    def _store_failed(self) -> None:
        if not self.counts["store_timeouts"]:
            log.warning("known_store_unavailable", note="rows are written without cluster-wide "
                        "de-duplication (Zeek's timeout branch) until the store answers again")
        self.counts["store_timeouts"] += 1

    def forget(self) -> None:
        """Drop the local suppression caches (a proxy came or went: ownership moved)."""
        self._known_hosts.clear()

    def finish(self) -> None:
        """End of input: scheduled commits run now, as Zeek runs pending timers at exit."""
        while self._delayed:
            self._commit_service(self._delayed.popleft()[1])


def standalone(config: AnalysisConfig, log_sink: Any) -> Known:
    """A Known over an in-memory store, writing to ``log_sink``: give it to ``Engine`` as the
    event sink, and call :meth:`Known.finish` after ``engine.finish()``."""
    from cluster.store import LocalStore

    k: Known
    k = Known(LocalStore(clock=lambda: k.now), log_sink.write, config.local_netset())
    return k


# ---- cluster wiring ------------------------------------------------------------------------

_active: Known | None = None
_client: Any = None
_handlers: list[tuple[str, Callable[..., Any]]] = []


def load() -> None:
    """Register the handlers with this node's script registry (idempotent)."""
    from cluster import api

    reg = api.registry()
    if _handlers:
        return

    def on(event: str, fn: Callable[..., Any]) -> None:
        reg.on(event)(fn)
        _handlers.append((event, fn))

    def _started() -> None:
        global _active, _client
        from cluster.frameworks import host as fhost
        from cluster.store import LocalStore, StoreClient

        h = fhost.current()      # where we run, and the engine's network time (host.py)
        if h.mode not in ("worker", "standalone"):
            return
        local = AnalysisConfig(local_nets=tuple(h.local_nets)).local_netset()
        k: Known
        if h.mode == "standalone":     # starling analyze --script: the in-memory store
            _client = LocalStore(clock=lambda: k.now)
        else:
            cl = api.current()
            _client = StoreClient(cl.endpoint, cl.pools["proxy"], timeout=STORE_TIMEOUT, clock=lambda: k.now)
        k = _active = Known(_client, h.log_write, local, clock=h.network_time)

    def _done() -> None:              # cluster/frameworks/host.py's DONE: the engine finished
        if _active is not None:
            _active.finish()

    def _membership(name: str, _id: str) -> None:
        if _active is not None and api.current().roles.get(name) == "proxy":
            _active.forget()

    on(api.CLUSTER_STARTED, _started)
    on("zeek_done", _done)
    for name in ("new_connection", "connection_established", "connection_state_remove"):
        on(name, lambda *a, _n=name: _active is not None and _active.event(_n, a))
    on(api.NODE_UP, _membership)
    on(api.NODE_DOWN, _membership)


def unload() -> None:
    """Remove the handlers again (a process that runs several analyses, e.g. tests)."""
    global _active, _client
    from cluster import api

    hs = api.registry().handlers
    for event, fn in _handlers:
        if fn in hs.get(event, ()):
            hs[event].remove(fn)
            if not hs[event]:
                del hs[event]
    _handlers.clear()
    _active = _client = None


async def drain(timeout: float = STORE_TIMEOUT + 1.0) -> None:
    """At a worker's stop, after the engine finished: commit what is scheduled and wait for the
    store's answers so the rows are shipped before the log drain."""
    if _active is None:
        return
    _active.finish()
    ok = await _client.drain(timeout)
    log.info("known_drained", ok=ok, **_active.counts)

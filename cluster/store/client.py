"""The store's client side: the same API over the bus (:class:`StoreClient`) or in memory
(:class:`LocalStore`, standalone mode), so a framework's logic never knows which it has.

::

    store = StoreClient(endpoint, ["proxy-1", "proxy-2"])        # or LocalStore()
    await store.put("10.0.0.1", True, ttl=86400)
    if await store.put_unique(("10.0.0.1", 80, "tcp"), True, ttl=86400): ...
    n = await store.incr("scans/10.0.0.9", 1)
    res = await store.batch([("get", "a"), ("incr", "b", 5, None), ("delete", "c")])

A batch is split by owner (HRW over the live proxies) into one request per proxy, sent
concurrently.  A request is not repeated after a timeout unless ``retries`` says so (only
safe for ``get``/``put``: the first attempt may have been applied).  ``ttl`` is relative, in the client's clock (``clock``: a worker passes its
network time so expiry follows the trace as Zeek's stores do when reading one; the default
is wall time); it becomes an absolute expiry before it leaves.  Synchronous callers (engine
event handlers) use :meth:`submit`: operations are queued and sent as one batch per event-loop
turn, and the callback gets the results (None on timeout).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterable, Sequence

from broker.endpoint import RemoteError, RequestTimeout
from cluster.pools import Pool
from cluster.store.core import OPS, KeyStore, StoreError, is_error
from cluster.store.server import CLIENTS_TOPIC, store_topic

__all__ = ["LocalStore", "StoreClient", "StoreError", "StoreUnavailable", "StoreTimeout"]


class StoreUnavailable(ConnectionError):
    """No proxy is up to own the key."""


class StoreTimeout(TimeoutError):
    """The owning proxy did not answer in time."""


def _wire_op(op: Sequence[Any], now: float) -> list:
    """Client form ``(name, key, *args, ttl)`` -> wire form with an absolute expiry."""
    name = op[0]
    if name not in OPS:
        raise StoreError(f"unknown store operation {name!r}")
    if name in ("get", "delete"):
        if len(op) != 2:
            raise StoreError(f"{name} takes a key")
        return [name, op[1]]
    if len(op) not in (3, 4):
        raise StoreError(f"{name} takes a key, a value and an optional ttl")
    ttl = op[3] if len(op) == 4 else None
    return [name, op[1], op[2], None if ttl is None else now + ttl]


def _unwrap(r: Any) -> Any:
    if isinstance(r, StoreError):
        raise r
    return r


class _Api:
    """The single-operation methods, all in terms of :meth:`batch`."""

    async def batch(self, ops: Iterable[Sequence[Any]]) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _one(self, op: tuple) -> Any:
        return _unwrap((await self.batch([op]))[0])

    async def put(self, key: Any, value: Any, ttl: float | None = None) -> None:
        await self._one(("put", key, value, ttl))

    async def put_unique(self, key: Any, value: Any = True, ttl: float | None = None) -> bool:
        return await self._one(("put_unique", key, value, ttl))

    async def get(self, key: Any) -> Any:
        return await self._one(("get", key))

    async def incr(self, key: Any, by: int | float = 1, ttl: float | None = None) -> int | float:
        return await self._one(("incr", key, by, ttl))

    async def delete(self, key: Any) -> bool:
        return await self._one(("delete", key))

    async def sadd(self, key: Any, members: Sequence[Any], ttl: float | None = None) -> list:
        return await self._one(("sadd", key, list(members), ttl))


class LocalStore(_Api):
    """The store in this process (standalone mode): same operations, same rules."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.store = KeyStore()
        self.clock = clock

    def apply(self, ops: Iterable[Sequence[Any]]) -> list:
        now = self.clock()
        wire = [_wire_op(op, now) for op in ops]      # a malformed request raises, as over the bus
        self.store.sweep(now)
        out = []
        for op in wire:
            try:
                out.append(self.store.apply(op, now))
            except StoreError as e:
                out.append(StoreError(str(e)))
        return out

    async def batch(self, ops: Iterable[Sequence[Any]]) -> list:
        """Results in order; a malformed operation's slot holds a :class:`StoreError`."""
        return self.apply(ops)

    async def _one(self, op: tuple) -> Any:
        return _unwrap(self.apply([op])[0])

    def submit(self, ops: list, callback: Callable[[list | None], Any]) -> None:
        callback(self.apply(ops))

    async def drain(self, timeout: float | None = None) -> bool:
        return True


class StoreClient(_Api):
    """The partitioned store seen from any node.  ``proxies``: a :class:`Pool` kept current by
    someone else (the node's ``Cluster``), or proxy names (then this client follows the
    endpoint's peer events itself)."""

    def __init__(self, endpoint: Any, proxies: Pool | Iterable[str], *, timeout: float = 5.0,
                 clock: Callable[[], float] = time.time, retries: int = 0) -> None:
        self.ep = endpoint
        if isinstance(proxies, Pool):
            self.pool = proxies
        else:
            names = list(proxies)
            self.pool = Pool("proxy", names, alive=[n for n in endpoint.peers() if n in names])
            endpoint.on_peer(self._on_peer)
        self.timeout = timeout
        self.clock = clock
        self.retries = retries
        self._queue: list[tuple[list, Callable]] = []
        self._flushing: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self._serving: set[str] = set()     # proxies seen serving their topic (until down)
        self.stats = dict.fromkeys(("requests", "ops", "timeouts", "unavailable", "retries"), 0)
        endpoint.subscribe(CLIENTS_TOPIC, self._on_announcement)
        endpoint.on_peer(self._forget_serving)

    def _forget_serving(self, ev: Any) -> None:
        if ev.kind != "up":
            self._serving.discard(ev.name)

    def _on_announcement(self, name: str, args: list, _meta: Any) -> None:
        """A proxy stopping gracefully: route its keys to their next owners right away (it
        forwards what still reaches it, and they ask it for keys it has not pushed yet)."""
        if name == "store_leaving" and args and isinstance(args[0], str):
            self.pool.down(args[0])

    def _on_peer(self, ev: Any) -> None:
        if ev.kind == "up":
            self.pool.up(ev.name)
        else:
            self.pool.down(ev.name)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Until at least one proxy is up and serving."""
        deadline = time.monotonic() + timeout
        while not self.pool.alive:
            if time.monotonic() > deadline:
                raise StoreUnavailable("no proxy came up")
            await asyncio.sleep(0.02)
        for p in list(self.pool.alive):
            await self.ep.wait_subscribed(store_topic(p), timeout=max(0.1, deadline - time.monotonic()))

    async def batch(self, ops: Iterable[Sequence[Any]]) -> list:
        """Results in order; a failed operation's slot holds a :class:`StoreError`.  Raises
        :class:`StoreUnavailable` (no proxy up) or :class:`StoreTimeout`."""
        now = self.clock()
        wire = [_wire_op(op, now) for op in ops]
        out: list = [None] * len(wire)
        todo = list(range(len(wire)))
        for attempt in range(self.retries + 1):
            groups: dict[str, list[int]] = {}
            for i in todo:
                owner = self.pool.hrw(wire[i][1])
                if owner is None:
                    self.stats["unavailable"] += 1
                    raise StoreUnavailable("no proxy is up")
                groups.setdefault(owner, []).append(i)
            failed: list[int] = []

            async def send(owner: str, idx: list[int]) -> None:
                await self._until_serving(owner)
                self.stats["requests"] += 1
                self.stats["ops"] += len(idx)
                try:
                    res = await self.ep.request(store_topic(owner), "store", 0, now,
                                                [wire[i] for i in idx], False, timeout=self.timeout)
                except RequestTimeout:
                    self.stats["timeouts"] += 1
                    failed.extend(idx)
                    return
                except RemoteError as e:
                    for i in idx:
                        out[i] = StoreError(str(e))
                    return
                for i, r in zip(idx, res):
                    out[i] = StoreError(r[1]) if is_error(r) else r

            if len(groups) == 1:
                await send(*next(iter(groups.items())))
            else:
                await asyncio.gather(*(send(o, idx) for o, idx in groups.items()))
            if not failed:
                return out
            todo = failed
            if attempt < self.retries:
                self.stats["retries"] += 1
        raise StoreTimeout(f"store: no reply for {len(todo)} operations within {self.timeout}s")

    async def _one(self, op: tuple) -> Any:
        """One operation: the batch path without its bookkeeping (single ops are the common
        case for scripts)."""
        now = self.clock()
        w = _wire_op(op, now)
        owner = self.pool.hrw(w[1])
        if owner is None:
            self.stats["unavailable"] += 1
            raise StoreUnavailable("no proxy is up")
        if self.retries or owner not in self._serving:
            return _unwrap((await self.batch([op]))[0])
        self.stats["requests"] += 1
        self.stats["ops"] += 1
        try:
            r = (await self.ep.request(store_topic(owner), "store", 0, now, [w], False, timeout=self.timeout))[0]
        except RequestTimeout:
            self.stats["timeouts"] += 1
            raise StoreTimeout(f"store: no reply from {owner} within {self.timeout}s") from None
        except RemoteError as e:
            raise StoreError(str(e)) from None
        if is_error(r):
            raise StoreError(r[1])
        return r

    async def _until_serving(self, proxy: str) -> None:
        """A proxy is 'up' as soon as its endpoint connects, a moment before it serves its
        store topic; a request sent in between would be filtered out unseen (ZeroMQ's
        subscription rule) and time out.  Checked once per proxy instance."""
        if proxy in self._serving:
            return
        try:
            await self.ep.wait_subscribed(store_topic(proxy), timeout=min(1.0, self.timeout))
        except (asyncio.TimeoutError, TimeoutError):
            # Our view of subscriptions can lag libzmq's own filter (docs/store.md): send anyway.
            pass
        self._serving.add(proxy)

    # ---- for synchronous callers -------------------------------------------------------------

    def submit(self, ops: list, callback: Callable[[list | None], Any]) -> None:
        """Queue ``ops``; ``callback(results)`` later (``None`` if the store did not answer)."""
        self._queue.append((ops, callback))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)         # gather what the rest of this batch submits
        while self._queue:
            q, self._queue = self._queue, []
            t = asyncio.get_running_loop().create_task(self._send_queued(q))
            self._inflight.add(t)
            t.add_done_callback(self._inflight.discard)
            await asyncio.sleep(0)

    async def _send_queued(self, q: list) -> None:
        ops = [op for o, _cb in q for op in o]
        try:
            res: list | None = await self.batch(ops)
        except (StoreTimeout, StoreUnavailable, StoreError):
            res = None
        i = 0
        for o, cb in q:
            cb(None if res is None else res[i:i + len(o)])
            i += len(o)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted operation was answered (or timed out)."""
        async def _wait() -> None:
            while self._queue or self._inflight or (self._flushing and not self._flushing.done()):
                if self._flushing and not self._flushing.done():
                    await self._flushing
                if self._inflight:
                    await asyncio.gather(*list(self._inflight), return_exceptions=True)
                await asyncio.sleep(0)
        try:
            await asyncio.wait_for(_wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

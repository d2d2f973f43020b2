"""A proxy's share of the partitioned store: answers requests, forwards strays, hands keys off.

Every key has one owner: the rendezvous (HRW) choice among the live proxies
(:func:`cluster.pools.hrw_pick`), the same answer in every process.  A proxy serves
``starling/store/<its name>`` with these request names:

``store [hops, now, ops, ask]``
    Apply ``ops`` (see :mod:`cluster.store.core`) and return their results.  Per key: a key
    held here is answered here (its holder is authoritative until it hands it off); a key this
    proxy does not own is forwarded once to its owner; a key it owns but does not hold, while a
    proxy that owned it before may still be handing keys over (a *join* in progress), is first
    asked of that previous owner (``ask``: answered there only if held there) so a read during
    the move is never a false miss.
``handoff [sender, items]``
    Take over ``[key, value, exp]`` entries from a proxy whose keys now hash here.
``handoff_done [sender]``
    ``sender`` has pushed everything it holds for us: stop asking it.
``leaving [sender]``
    ``sender`` is stopping: it owns nothing from now on, so never hand it keys.  (When all
    proxies stop together, as at a cluster shutdown, nobody is left to take keys: none move.)

Membership: when a proxy comes up every other proxy pushes it the keys that now hash to it
(popping them first, so later requests for them are forwarded after the data); when a proxy
is stopped gracefully (:meth:`StoreServer.leave`, from the proxy's SIGTERM teardown) it pushes
all of its keys to their new owners while still serving, then leaves.  A proxy killed with
SIGKILL loses the keys it held (Zeek's stores lose them too; see docs/store.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterable

import structlog

from broker.endpoint import RemoteError, RequestTimeout
from cluster.pools import hrw_pick
from cluster.store.core import KeyStore, StoreError, hkey

log = structlog.get_logger(__name__)

__all__ = ["StoreServer", "store_topic", "ABSENT"]

STORE_TOPIC = "starling/store"
CLIENTS_TOPIC = "starling/store-clients"   # announcements to every StoreClient
ABSENT = "\x00absent"   # an ``ask`` reply slot: "not held here"
MAX_HOPS = 1      # a forwarded request is applied where it lands (a leaving proxy forwards on)


def store_topic(proxy: str) -> str:
    return f"{STORE_TOPIC}/{proxy}"


class StoreServer:
    """The store on one proxy.  ``proxies``: every proxy name of the layout."""

    def __init__(self, endpoint: Any, name: str, proxies: Iterable[str], *, timeout: float = 5.0,
                 handoff_chunk: int = 2000, join_window: float = 15.0, sweep_interval: float = 1.0,
                 linger: float = 0.2, startup_grace: float = 1.0) -> None:
        self.ep = endpoint
        self.name = name
        self.proxies = frozenset(proxies) | {name}
        self.store = KeyStore()
        self.timeout = timeout
        self.handoff_chunk = handoff_chunk
        self.join_window = join_window
        self.sweep_interval = sweep_interval
        self.linger = linger
        self.startup_grace = startup_grace
        # Each requester's clock (network time in a worker, wall time elsewhere), for sweeping:
        # entries expire by the clock of whoever uses them, never by another requester's.
        self._clocks: dict[str, tuple[float, float]] = {}
        self.now = 0.0                     # the clock of the latest requester
        self.live: set[str] = {name} | {p for p in endpoint.peers() if p in self.proxies}
        self.joining: dict[str, float] = {}   # proxy that may still hand us keys -> give-up time
        self._greet: set[str] = set()         # proxies that came up: send them handoff_done
        self.leaving = False
        self.departing: set[str] = set()      # other proxies that announced their leave ...
        self.draining: set[str] = set()       # ... and may still hold keys that are ours now
        self._lock = asyncio.Lock()
        self._kick = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._ready = asyncio.Event()
        self._senders: set[bytes] = set()    # requesters whose inbox our replies can reach
        self.stats_ = dict.fromkeys(("requests", "ops", "forwarded", "asked", "handoff_sent",
                                     "handoff_received", "handoff_failed", "errors"), 0)

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.ep.serve(store_topic(self.name), self._on_request)
        self.ep.on_peer(self._on_peer)
        for p in self.live - {self.name}:
            self._peer_up(p)
        self._spawn(self._startup(self.startup_grace))
        self._spawn(self._maintain())

    async def _startup(self, grace: float) -> None:
        """Answer nothing until we know which proxies are up (or ``grace`` passed): a fresh
        proxy that thought itself alone would answer misses for keys others still hold."""
        deadline = time.monotonic() + grace
        while not self.proxies <= self.live and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._ready.set()

    def _spawn(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def leave(self, timeout: float = 6.0) -> None:
        """Graceful stop: announce it, then push every key to its owner among the proxies
        that stay (within ``timeout``: a node's stop must stay below the supervisor's grace)."""
        self.leaving = True
        others = sorted(self.live - {self.name})
        try:
            await asyncio.wait_for(self._leave(others), timeout)
        except asyncio.TimeoutError:
            log.error("store_leave_timeout", node=self.name, keys_left=len(self.store))
        log.info("store_left", node=self.name, keys_left=len(self.store), **self.stats_)

    async def _leave(self, others: list[str]) -> None:
        async def tell(p: str, what: str) -> None:
            try:
                await self.ep.request(store_topic(p), what, self.name, timeout=1.0)
            except (RequestTimeout, RemoteError, ConnectionError):
                pass
        # Proxies stop counting us as an owner and ask us for keys they own but do not hold
        # yet, until our handoff_done; then (never before) clients route around us.
        await asyncio.gather(*(tell(p, "leaving") for p in others))
        self.ep.publish(CLIENTS_TOPIC, "store_leaving", self.name)
        if not self.owners():
            log.info("store_leave_no_successor", node=self.name, keys=len(self.store))
            return
        await self._rebalance()
        await asyncio.gather(*(tell(p, "handoff_done") for p in self.owners()))
        await asyncio.sleep(self.linger)     # forward what is still in flight to us

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            # bounded: asyncio.wait_for in 3.11 can swallow a cancellation that races a result
            await asyncio.wait(tasks, timeout=1.0)

    def stats(self) -> dict[str, Any]:
        return {"keys": len(self.store), "expired": self.store.expired, "live": sorted(self.live),
                **self.stats_}

    # ---- membership ------------------------------------------------------------------------

    def _on_peer(self, ev: Any) -> None:
        if ev.name not in self.proxies or ev.name == self.name:
            return
        if ev.kind == "up":
            self._peer_up(ev.name)
        else:
            self.live.discard(ev.name)
            self.departing.discard(ev.name)
            self.draining.discard(ev.name)
            self.joining.pop(ev.name, None)
            self._greet.discard(ev.name)
        self._kick.set()

    def _peer_up(self, p: str) -> None:
        self.live.add(p)
        self.departing.discard(p)
        self.draining.discard(p)
        self.joining[p] = time.monotonic() + self.join_window
        self._greet.add(p)
        self._kick.set()

    def owners(self) -> set[str]:
        own = self.live - self.departing
        return own - {self.name} if self.leaving else own

    async def _maintain(self) -> None:
        """Rebalance after membership changes; sweep expired keys."""
        while not self._closed:
            try:
                await asyncio.wait_for(self._kick.wait(), self.sweep_interval)
            except asyncio.TimeoutError:
                pass
            if self._kick.is_set():
                self._kick.clear()
                try:
                    await self._rebalance()
                except Exception:    # never let the maintenance task die
                    self.stats_["errors"] += 1
                    log.exception("store_rebalance_failed", node=self.name)
            t = self._sweep_time()
            if t is not None:
                self.store.sweep(t)
            t = time.monotonic()
            for p, until in list(self.joining.items()):
                if until <= t:
                    del self.joining[p]

    async def _rebalance(self) -> None:
        async with self._lock:
            owners = self.owners()
            greet, self._greet = self._greet, set()
            moving: dict[str, list] = {}
            for k, _e in self.store.items():
                o = hrw_pick(k, owners)
                if o is not None and o != self.name:
                    moving.setdefault(o, []).append(k)
            for owner, keys in moving.items():
                await self._push(owner, keys)
            for p in greet & self.live:
                if p not in moving:
                    await self._wait_serving(p)
                try:
                    await self.ep.request(store_topic(p), "handoff_done", self.name, timeout=self.timeout)
                except (RequestTimeout, RemoteError, ConnectionError):
                    pass   # it stops asking us when its join window ends

    async def _wait_serving(self, p: str) -> bool:
        try:
            await self.ep.wait_subscribed(store_topic(p), timeout=min(1.0, self.timeout))
            return True
        except (asyncio.TimeoutError, TimeoutError):
            return False

    async def _push(self, owner: str, keys: list) -> None:
        await self._wait_serving(owner)
        for i in range(0, len(keys), self.handoff_chunk):
            items = []
            for k in keys[i:i + self.handoff_chunk]:
                e = self.store.pop(k)          # popped first: requests for it now go to owner
                if e is not None:
                    items.append([k, e[0], e[1]])
            if not items:
                continue
            try:
                await self.ep.request(store_topic(owner), "handoff", self.name, items, self.now,
                                      timeout=self.timeout)
                self.stats_["handoff_sent"] += len(items)
            except (RequestTimeout, RemoteError, ConnectionError) as e:
                # Keep them: a later membership change (or our leave) tries again.
                for k, v, exp in items:
                    self.store.install(k, v, exp, self.now)
                self.stats_["handoff_failed"] += len(items)
                log.warning("store_handoff_failed", node=self.name, to=owner, keys=len(items), error=str(e))
                return

    # ---- requests ---------------------------------------------------------------------------

    def _on_request(self, name: str, args: list, meta: Any) -> Any:
        # State changes happen here, in arrival order (a hand-off must be installed before a
        # later forward or "absent" from the same proxy is looked at); only replies may wait.
        if name == "store" and not self._ready.is_set():
            return self._after_ready(args, meta)
        r = self._handle(name, args, meta)
        if meta.sender_bytes in self._senders:
            return r
        return self._reply_later(r, meta)

    async def _verify(self, meta: Any) -> None:
        """Before the first reply to a requester, make sure our socket has seen its inbox
        subscription (ZeroMQ drops what nobody is known to want: the reply would be lost)."""
        try:
            await self.ep.wait_subscribed(f"starling/node/{meta.sender}", timeout=1.0)
        except (asyncio.TimeoutError, TimeoutError):
            pass      # our view may lag libzmq's filter: reply anyway
        if len(self._senders) > 10_000:
            self._senders.clear()
        self._senders.add(meta.sender_bytes)

    async def _reply_later(self, r: Any, meta: Any) -> Any:
        await self._verify(meta)
        return await r if asyncio.iscoroutine(r) else r

    async def _after_ready(self, args: list, meta: Any) -> Any:
        try:
            await asyncio.wait_for(self._ready.wait(), 5.0)
        except asyncio.TimeoutError:
            pass
        r = self._handle("store", args, meta)
        await self._verify(meta)
        return await r if asyncio.iscoroutine(r) else r

    def _handle(self, name: str, args: list, meta: Any) -> Any:
        if name == "store":
            return self._store(args, meta)
        if name == "handoff":
            _sender, items, now = args
            now = self._saw(now, meta)
            n = 0
            for it in items:
                if self.store.install(it[0], it[1], it[2], now):
                    n += 1
            self.stats_["handoff_received"] += len(items)
            return n
        if name == "handoff_done":
            self.joining.pop(args[0], None)
            self.draining.discard(args[0])
            return True
        if name == "leaving":
            self.departing.add(args[0])
            self.draining.add(args[0])
            self.joining.pop(args[0], None)
            return True
        raise StoreError(f"unknown store request {name!r}")

    def _saw(self, now: Any, meta: Any) -> float:
        if not isinstance(now, (int, float)) or isinstance(now, bool):
            raise StoreError("a store request needs the requester's time")
        self.now = now = float(now)
        if len(self._clocks) > 10_000:
            self._clocks.clear()
        self._clocks[meta.sender_name] = (now, time.monotonic())
        return now

    def _sweep_time(self, fresh: float = 60.0) -> float | None:
        """The slowest clock among requesters heard from lately: nothing is swept before
        every active requester would see it expired."""
        t = time.monotonic()
        recent = [c for c, seen in self._clocks.values() if t - seen < fresh]
        return min(recent) if recent else None

    def _store(self, args: list, meta: Any) -> Any:
        hops, now, ops, ask = args
        now = self._saw(now, meta)
        self.stats_["requests"] += 1
        self.stats_["ops"] += len(ops)
        store = self.store
        owners = self.owners()
        if ask:
            return [store.apply_all([op], now)[0] if _held(store, op, now) else ABSENT for op in ops]
        # Decide per key: here, forward to its owner, or ask its previous owner first.
        plan: dict[Any, tuple[str, str | None]] = {}
        remote = False
        for op in ops:
            try:
                k = hkey(op[1])
                hash(k)
            except (IndexError, TypeError, StoreError):
                continue
            if k in plan:
                continue
            if store.has(k, now):
                plan[k] = ("here", None)
                continue
            owner = hrw_pick(k, owners)
            if owner is not None and owner != self.name and (hops < MAX_HOPS or (self.leaving and hops < 4)):
                plan[k] = ("fwd", owner)
                remote = True
                continue
            prev = self._previous_owner(k, owners)
            if prev is not None:
                plan[k] = ("ask", prev)
                remote = True
            else:
                plan[k] = ("here", None)
        if not remote:
            return store.apply_all(ops, now)
        return self._store_remote(ops, plan, hops, now)

    def _previous_owner(self, k: Any, owners: set[str]) -> str | None:
        """A proxy that may still hold ``k`` although it is ours: a leaving one it hashed to,
        or, while proxies are still handing keys to us after we came up, its owner before us."""
        for d in self.draining:
            if hrw_pick(k, owners | {d}) == d:
                return d
        if self.joining:
            prev = hrw_pick(k, owners - {self.name})
            if prev is not None and prev in self.joining:
                return prev
        return None

    async def _store_remote(self, ops: list, plan: dict, hops: int, now: float) -> list:
        out: list = [None] * len(ops)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, op in enumerate(ops):
            try:
                how = plan.get(hkey(op[1]), ("here", None))
            except (IndexError, TypeError, StoreError):
                how = ("here", None)
            if how[0] != "here":
                groups.setdefault(how, []).append(i)
        remote_idx = {i for g in groups.values() for i in g}
        here = [i for i in range(len(ops)) if i not in remote_idx]

        async def one(how: tuple[str, str], idx: list[int]) -> None:
            kind, target = how
            sub = [ops[i] for i in idx]
            await self._wait_serving(target)
            if kind == "fwd":
                self.stats_["forwarded"] += len(sub)
                res = await self.ep.request(store_topic(target), "store", hops + 1, now, sub, False,
                                            timeout=self.timeout)
                for i, r in zip(idx, res):
                    out[i] = r
                return
            self.stats_["asked"] += len(sub)
            try:
                res = await self.ep.request(store_topic(target), "store", hops + 1, now, sub, True,
                                            timeout=self.timeout)
            except (RequestTimeout, RemoteError, ConnectionError):
                res = [ABSENT] * len(sub)
                self.joining.pop(target, None)
            # The previous owner's hand-off reaches us before its reply: re-check here.
            for i, r in zip(idx, res):
                out[i] = self.store.apply_all([ops[i]], now)[0] if r == ABSENT else r

        for r, i in zip(self.store.apply_all([ops[i] for i in here], now), here):
            out[i] = r
        await asyncio.gather(*(one(how, idx) for how, idx in groups.items()))
        return out


def _held(store: KeyStore, op: list, now: float) -> bool:
    try:
        return store.has(hkey(op[1]), now)
    except (IndexError, TypeError, StoreError):
        return True   # let apply report the malformed op

"""The store's rules (sans-I/O table, local backend) and its bus client against in-process proxies."""

from __future__ import annotations

import asyncio

import pytest

from broker import Endpoint, Hub
from cluster.pools import hrw_pick
from cluster.store import KeyStore, LocalStore, StoreClient, StoreError, StoreServer, StoreUnavailable
from cluster.store.core import ERROR, is_error
from tests.waiting import until

pytestmark = pytest.mark.timeout(30)


# ---- the table ----------------------------------------------------------------------------------

def test_operations_and_results() -> None:
    s = KeyStore()
    assert s.apply(["put", "a", 1, None], 0) is None
    assert s.apply(["get", "a"], 0) == 1
    assert s.apply(["get", "zz"], 0) is None
    assert s.apply(["put_unique", "a", 2, None], 0) is False
    assert s.apply(["get", "a"], 0) == 1
    assert s.apply(["put_unique", "b", 2, None], 0) is True
    assert s.apply(["incr", "n", 5, None], 0) == 5
    assert s.apply(["incr", "n", -2, None], 0) == 3
    assert s.apply(["delete", "n"], 0) is True
    assert s.apply(["delete", "n"], 0) is False
    assert s.apply(["sadd", ["h", 80, "tcp"], ["HTTP"], None], 0) == ["HTTP"]
    # msgpack turns the tuple key into a list: both name the same entry
    assert s.apply(["sadd", ("h", 80, "tcp"), ["HTTP", "SSL"], None], 0) == ["SSL"]
    assert s.apply(["get", ("h", 80, "tcp")], 0) == ["HTTP", "SSL"]


@pytest.mark.parametrize("op", [[], ["get"], ["nope", "k"], ["put", "k"], ["incr", "a", "x", None],
                                ["get", {"a": 1}], ["sadd", "k", "notalist", None], ["get", [[1], {}]]])
def test_malformed_operations_are_errors_not_exceptions(op: list) -> None:
    s = KeyStore()
    s.apply(["put", "a", "text", None], 0)
    [r] = s.apply_all([op], 0)
    assert is_error(r) and r[0] == ERROR
    assert s.apply_all([["incr", "a", 1, None]], 0)[0][0] == ERROR     # not a number


def test_expiry_is_absolute_in_the_callers_clock() -> None:
    s = KeyStore()
    s.apply(["put", "a", 1, 100.0], 50.0)
    s.apply(["put_unique", "b", 1, 200.0], 50.0)
    s.apply(["incr", "c", 1, 150.0], 50.0)
    s.apply(["incr", "c", 1, 999.0], 60.0)          # expiry set on creation only
    assert s.apply(["get", "a"], 99.9) == 1
    assert s.apply(["get", "a"], 100.0) is None      # gone exactly at its expiry
    assert s.apply(["put_unique", "b", 2, 300.0], 199.0) is False
    assert s.apply(["put_unique", "b", 2, 300.0], 200.0) is True   # expired: unique again
    assert s.apply(["get", "c"], 149.0) == 2
    assert s.sweep(160.0) == 1 and "c" not in s.data
    assert len(s) == 1


def test_sweep_costs_follow_expiring_entries() -> None:
    s = KeyStore()
    for i in range(10_000):
        s.apply(["put", i, i, float(i)], 0)
    s.apply(["put", 5, "again", None], 0)      # overwritten without expiry: survives
    assert s.sweep(5000.5) == 5000
    assert len(s) == 5000 and s.data[5][0] == "again"


async def test_local_store_uses_network_time() -> None:
    now = [1_700_000_000.0]
    st = LocalStore(clock=lambda: now[0])
    assert await st.put_unique("10.0.0.1", True, ttl=86400) is True
    now[0] += 86399
    assert await st.put_unique("10.0.0.1", True, ttl=86400) is False
    now[0] += 1
    assert await st.put_unique("10.0.0.1", True, ttl=86400) is True
    assert await st.incr("x") == 1 and await st.incr("x", 2) == 3
    assert await st.sadd(("h", 1), ["A", "B"]) == ["A", "B"]
    res = await st.batch([("get", "x"), ("incr", "10.0.0.1", 1), ("delete", "x")])
    assert res[0] == 3 and isinstance(res[1], StoreError) and res[2] is True
    with pytest.raises(StoreError):
        await st.incr("10.0.0.1")
    with pytest.raises(StoreError):
        await st.batch([("frobnicate", "k")])


# ---- over the bus -------------------------------------------------------------------------------

PROXIES = ["proxy-1", "proxy-2", "proxy-3"]


class Bus:
    """A hub, proxies with store servers and a client endpoint, all in this process."""

    def __init__(self) -> None:
        self.eps: dict[str, Endpoint] = {}
        self.servers: dict[str, StoreServer] = {}

    async def __aenter__(self) -> "Bus":
        self.hub = Hub("tcp://127.0.0.1:*")
        await self.hub.__aenter__()
        self.client_ep = await Endpoint("client", self.hub.addresses).start()
        return self

    async def add(self, name: str, **kw) -> StoreServer:
        ep = self.eps[name] = await Endpoint(name, self.hub.addresses).start()
        kw.setdefault("startup_grace", 0.2)
        srv = self.servers[name] = StoreServer(ep, name, PROXIES, **kw)
        srv.start()
        await self.client_ep.wait_for_peers([name])
        await self.client_ep.wait_subscribed(f"starling/store/{name}")
        return srv

    async def remove(self, name: str) -> None:
        await self.servers[name].leave()
        await self.servers.pop(name).close()
        await self.eps.pop(name).close()

    async def __aexit__(self, *exc) -> None:
        for s in self.servers.values():
            await s.close()
        for ep in [*self.eps.values(), self.client_ep]:
            await ep.close()
        await self.hub.__aexit__(*exc)


async def test_client_spreads_keys_by_hrw_and_batches() -> None:
    async with Bus() as bus:
        await bus.add("proxy-1")
        await bus.add("proxy-2")
        c = StoreClient(bus.client_ep, PROXIES, timeout=2.0)
        await c.wait_ready()
        keys = [f"k{i}" for i in range(400)]
        assert await c.batch([("put", k, i) for i, k in enumerate(keys)]) == [None] * 400
        assert c.stats["requests"] == 2          # one request per owning proxy
        for name, srv in bus.servers.items():
            assert set(srv.store.data) == {k for k in keys if hrw_pick(k, ["proxy-1", "proxy-2"]) == name}
        assert await c.batch([("get", k) for k in keys]) == list(range(400))
        assert await c.get("k7") == 7 and await c.get("nope") is None
        assert await c.put_unique("u") is True and await c.put_unique("u") is False
        assert [await c.incr("n"), await c.incr("n", 10)] == [1, 11]
        assert await c.delete("n") is True and await c.get("n") is None
        assert await c.sadd(["10.0.0.1", 80, "tcp"], ["HTTP"]) == ["HTTP"]
        assert await c.sadd(("10.0.0.1", 80, "tcp"), ["HTTP", "SSL"]) == ["SSL"]
        with pytest.raises(StoreError):
            await c.incr("k1", "x")
        res = await c.batch([("incr", "k1", 1), ("get", "k2")])
        assert res == [2, 2]


async def test_expiry_over_the_bus_follows_the_client_clock() -> None:
    async with Bus() as bus:
        await bus.add("proxy-1")
        now = [1000.0]
        c = StoreClient(bus.client_ep, PROXIES, clock=lambda: now[0])
        await c.wait_ready()
        await c.put("a", 1, ttl=10)
        assert await c.get("a") == 1
        now[0] = 1010.0
        assert await c.get("a") is None
        await c.put("b", 1, ttl=5)
        now[0] = 1020.0
        await c.get("zzz")                          # tells the proxy the time
        # its sweep runs once a second; a loaded machine may run it late, never not at all
        await until(lambda: len(bus.servers["proxy-1"].store) == 0, timeout=10, what="the sweep")


async def test_no_proxy_is_a_clear_error() -> None:
    async with Bus() as bus:
        c = StoreClient(bus.client_ep, PROXIES, timeout=0.3)
        with pytest.raises(StoreUnavailable):
            await c.get("a")


async def test_join_and_leave_move_keys_and_reads_stay_correct() -> None:
    async with Bus() as bus:
        await bus.add("proxy-1")
        await bus.add("proxy-2")
        c = StoreClient(bus.client_ep, PROXIES, timeout=3.0)
        await c.wait_ready()
        keys = [f"key{i}" for i in range(3000)]
        await c.batch([("put", k, i) for i, k in enumerate(keys)])
        bad: list = []
        stop = asyncio.Event()

        async def reader() -> None:
            while not stop.is_set():
                res = await c.batch([("get", k) for k in keys[::7]])
                bad.extend(r for r, i in zip(res, range(0, 3000, 7)) if r != i)

        t = asyncio.ensure_future(reader())
        await asyncio.sleep(0.05)
        s3 = await bus.add("proxy-3")
        live = PROXIES
        await until(lambda: set(s3.store.data) == {k for k in keys if hrw_pick(k, live) == "proxy-3"},
                    what="proxy-3 to receive the keys that now hash to it")
        assert sum(len(s.store) for s in bus.servers.values()) == 3000     # moved, not copied
        assert s3.stats_["handoff_received"] == len(s3.store) > 500
        await bus.remove("proxy-1")
        live = ["proxy-2", "proxy-3"]
        await until(lambda: all(set(bus.servers[name].store.data)
                                == {k for k in keys if hrw_pick(k, live) == name} for name in live),
                    what="proxy-1's keys to reach their new owners")
        stop.set()
        await t
        assert bad == []
        assert await c.batch([("get", k) for k in keys]) == list(range(3000))


async def test_a_joining_proxy_asks_the_previous_owner_on_a_miss() -> None:
    """A read that reaches the new owner before the old owner pushed the key is not a miss."""
    async with Bus() as bus:
        s1 = await bus.add("proxy-1")
        c = StoreClient(bus.client_ep, PROXIES, timeout=3.0)
        await c.wait_ready()
        keys = [f"k{i}" for i in range(300)]
        await c.batch([("put", k, i) for i, k in enumerate(keys)])
        gate = asyncio.Event()
        real = s1._rebalance

        async def held_back() -> None:      # proxy-1 sees proxy-2 but does not hand off yet
            await gate.wait()
            await real()
        s1._rebalance = held_back
        s2 = await bus.add("proxy-2")
        mine = [k for k in keys if hrw_pick(k, ["proxy-1", "proxy-2"]) == "proxy-2"]
        assert mine and not s2.store.data
        assert await c.batch([("get", k) for k in mine]) == [int(k[1:]) for k in mine]
        assert await c.incr(mine[0], 1000) == int(mine[0][1:]) + 1000    # applied at the holder
        assert s2.stats_["asked"] >= len(mine)
        gate.set()
        s1._kick.set()
        await until(lambda: set(s2.store.data) == set(mine), what="the held-back handoff")
        assert await c.get(mine[0]) == int(mine[0][1:]) + 1000


async def test_clients_on_different_clocks_do_not_expire_each_others_keys() -> None:
    """A worker on a 2009 trace (network time) and a script on wall time share the proxies."""
    async with Bus() as bus:
        await bus.add("proxy-1")
        net = StoreClient(bus.client_ep, PROXIES, clock=lambda: 1_234_567_890.0)
        other_ep = await Endpoint("script", bus.hub.addresses).start()
        try:
            wall = StoreClient(other_ep, PROXIES)
            await net.wait_ready()
            await wall.wait_ready()
            await net.put_unique("10.0.0.1", True, ttl=86400)
            await wall.put("w", 1, ttl=3600)
            await asyncio.sleep(1.2)                   # a sweep ran
            assert await net.put_unique("10.0.0.1", True, ttl=86400) is False
            assert await wall.get("w") == 1
        finally:
            await other_ep.close()


async def test_malformed_requests_get_an_error_reply_and_the_proxy_keeps_serving() -> None:
    from broker.endpoint import RemoteError

    async with Bus() as bus:
        await bus.add("proxy-1")
        ep = bus.client_ep
        for args in ([], [0, "yesterday", [], False], [0, 1.0, "notalist", False], [0, 1.0, [[1, 2]], False]):
            with pytest.raises(RemoteError):
                res = await ep.request("starling/store/proxy-1", "store", *args, timeout=2.0)
                if args and isinstance(res, list) and res and is_error(res[0]):
                    raise RemoteError(res[0][1])       # a malformed op: an error in its slot
        with pytest.raises(RemoteError):
            await ep.request("starling/store/proxy-1", "frobnicate", timeout=2.0)
        c = StoreClient(ep, PROXIES)
        await c.wait_ready()
        await c.put("ok", 1)
        assert await c.get("ok") == 1

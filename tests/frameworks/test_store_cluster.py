"""The partitioned store across real proxy processes: keys move when a proxy joins or leaves.

A test endpoint joins the cluster's bus as a client while one reader keeps checking every key
and a writer keeps incrementing counters.  After each move, every key must be held by exactly
one proxy -- its rendezvous owner among the live proxies -- with its latest value: nothing lost,
nothing stale left behind.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import pytest

from broker.endpoint import Endpoint
from cluster.layout import Layout
from cluster.pools import hrw_pick
from cluster.store import StoreClient, store_topic
from cluster.store.server import ABSENT
from tests.cluster_procs import ProcCluster
from tests.waiting import until

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "sample.pcap"
PROXIES = ["proxy-1", "proxy-2", "proxy-3"]
N_KEYS = 1500
N_COUNTERS = 40

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(not SAMPLE.is_file(), reason="samples/sample.pcap not present")]


async def holders(ep: Endpoint, live: list[str], keys: list[str]) -> dict[str, list[str]]:
    """key -> proxies holding it, asked of each proxy directly (held-only requests)."""
    out: dict[str, list[str]] = {k: [] for k in keys}
    for p in live:
        res = await ep.request(store_topic(p), "store", 1, time.time(), [["get", k] for k in keys], True,
                               timeout=5.0)
        for k, r in zip(keys, res):
            if r != ABSENT:
                out[k].append(p)
    return out


async def check_placement(ep: Endpoint, live: list[str], keys: list[str], timeout: float = 15.0) -> None:
    """Every key ends up on exactly its HRW owner among `live` (handoff may still be moving)."""
    wrong: dict = {}

    async def placed() -> bool:
        where = await holders(ep, live, keys)
        wrong.clear()
        wrong.update({k: v for k, v in where.items() if v != [hrw_pick(k, live)]})
        return not wrong
    try:
        await until(placed, timeout=timeout, step=0.1, what="keys on their owners")
    except AssertionError:
        raise AssertionError(f"{len(wrong)} keys misplaced, e.g. {list(wrong.items())[:3]}") from None


async def scenario(cl: ProcCluster, layout: Layout) -> dict:
    ep = Endpoint("store-test", (layout.hub_xsub, layout.hub_xpub))
    await ep.start()
    try:
        client = StoreClient(ep, PROXIES, timeout=5.0)
        await ep.wait_for_peers(["proxy-1", "proxy-2"], timeout=20)
        await client.wait_ready()
        keys = [f"key-{i}" for i in range(N_KEYS)]
        counters = [f"count-{i}" for i in range(N_COUNTERS)]
        await client.batch([("put", k, {"v": i, "name": k}) for i, k in enumerate(keys)]
                           + [("put", c, 0) for c in counters])
        expect = dict.fromkeys(counters, 0)
        bad: list = []
        reads = 0
        stop = asyncio.Event()

        async def reader() -> None:
            nonlocal reads
            rnd = random.Random(1)
            while not stop.is_set():
                sample = rnd.sample(range(N_KEYS), 200)
                res = await client.batch([("get", keys[i]) for i in sample])
                reads += len(res)
                bad.extend((keys[i], r) for i, r in zip(sample, res) if r != {"v": i, "name": keys[i]})

        async def writer() -> None:
            rnd = random.Random(2)
            while not stop.is_set():
                c = rnd.choice(counters)
                got = await client.incr(c, 1)
                expect[c] += 1
                if got != expect[c]:
                    bad.append((c, got, expect[c]))

        tasks = [asyncio.ensure_future(reader()), asyncio.ensure_future(writer())]
        await asyncio.sleep(0.3)
        await check_placement(ep, ["proxy-1", "proxy-2"], keys + counters)

        # A proxy is added: the others push it what now hashes to it.
        t0 = time.monotonic()
        cl.start("proxy-3")
        await ep.wait_for_peers(PROXIES, timeout=20)
        await check_placement(ep, PROXIES, keys + counters)
        join_s = time.monotonic() - t0
        on3 = sum(1 for k in keys if hrw_pick(k, PROXIES) == "proxy-3")

        # A proxy is stopped (SIGTERM): it pushes its keys to their new owners, then leaves.
        cl.signal("proxy-1", signal.SIGTERM)
        assert await asyncio.get_running_loop().run_in_executor(None, cl.wait, "proxy-1", 30) == 0
        deadline = time.monotonic() + 10
        while "proxy-1" in client.pool.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
        await check_placement(ep, ["proxy-2", "proxy-3"], keys + counters)
        final = await client.batch([("get", k) for k in keys + counters])
        return {"bad": bad, "reads": reads, "final": final, "keys": keys, "counters": counters,
                "expect": expect, "on3": on3, "join_s": join_s, "stats": client.stats}
    finally:
        await ep.close()


def test_keys_move_on_join_and_leave(tmp_path: Path) -> None:
    layout = Layout.local(SAMPLE, workers=1, proxies=3, log_dir=tmp_path / "logs")
    cl = ProcCluster(layout, tmp_path)
    try:
        cl.start("manager")
        cl.start("proxy-1")
        cl.start("proxy-2")
        r = asyncio.run(scenario(cl, layout))
    finally:
        cl.kill_all()
    assert r["reads"] > 1000, r["reads"]
    assert r["bad"] == [], r["bad"][:5]
    assert 300 < r["on3"] < 700          # about a third of the keys moved to the new proxy
    n = len(r["keys"])
    assert r["final"][:n] == [{"v": i, "name": k} for i, k in enumerate(r["keys"])]
    assert r["final"][n:] == [r["expect"][c] for c in r["counters"]]
    assert sum(r["expect"].values()) > 20
    left = cl.final_stats("proxy-1")["store"]
    assert left["keys"] == 0 and left["handoff_sent"] > 0 and left["handoff_failed"] == 0


async def after_kill(cl: ProcCluster, layout: Layout) -> dict:
    ep = Endpoint("store-test", (layout.hub_xsub, layout.hub_xpub))
    await ep.start()
    try:
        client = StoreClient(ep, PROXIES, timeout=3.0)
        await ep.wait_for_peers(["proxy-1", "proxy-2"], timeout=20)
        await client.wait_ready()
        keys = [f"key-{i}" for i in range(600)]
        await client.batch([("put", k, i) for i, k in enumerate(keys)])
        cl.procs["proxy-2"].kill()                  # SIGKILL: no hand-off is possible
        deadline = time.monotonic() + 10
        while "proxy-2" in client.pool.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        after = await client.batch([("get", k) for k in keys])
        await client.put("new", 1)
        return {"keys": keys, "after": after, "new": await client.get("new")}
    finally:
        await ep.close()


def test_a_killed_proxy_loses_only_its_own_keys(tmp_path: Path) -> None:
    """Documented limit (docs/store.md): kill -9 loses the keys that proxy held, nothing else,
    and the store keeps working on the survivors."""
    layout = Layout.local(SAMPLE, workers=1, proxies=3, log_dir=tmp_path / "logs")
    cl = ProcCluster(layout, tmp_path)
    try:
        cl.start("manager")
        cl.start("proxy-1")
        cl.start("proxy-2")
        r = asyncio.run(after_kill(cl, layout))
    finally:
        cl.kill_all()
    owner = {k: hrw_pick(k, ["proxy-1", "proxy-2"]) for k in r["keys"]}
    lost = [k for k, v in zip(r["keys"], r["after"]) if v is None]
    assert lost and set(lost) == {k for k in r["keys"] if owner[k] == "proxy-2"}
    assert all(v == i for i, (k, v) in enumerate(zip(r["keys"], r["after"])) if owner[k] == "proxy-1")
    assert r["new"] == 1

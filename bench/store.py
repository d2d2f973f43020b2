"""Partitioned-store operations per second through the bus, against 1 and 2 proxies.

    python bench/store.py --json

Processes: ``python -m broker.hub``, one or two store proxies (``--serve``: an Endpoint with a
:class:`~cluster.store.StoreServer`, on uvloop) and this client (uvloop).  Figures, each the
median of ``--runs`` runs:

* ``single``: one operation per request, one request at a time (latency bound);
* ``pipelined``: one operation per request, ``--inflight`` requests outstanding;
* ``batched``: ``--batch`` operations per ``StoreClient.batch`` (one request per owning proxy).

Baselines in the same run: ``rpc_single``/``rpc_pipelined`` are bare bus request/replies to the same proxy
process (an echo handler, no store), so ``single_vs_rpc``/``pipelined_vs_rpc`` show what the
store adds to the bus's own round trip;
``local`` is the in-memory :class:`~cluster.store.LocalStore` (standalone mode), batched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

OPS = ("get", "put", "incr")


def op(kind: str, i: int) -> tuple:
    k = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    if kind == "get":
        return ("get", k)
    if kind == "put":
        return ("put", k, True, 3600.0)
    return ("incr", "n/" + k, 1, None)


# ---- child: one proxy --------------------------------------------------------------------------

async def serve(a) -> None:
    from broker.endpoint import Endpoint
    from cluster.store import StoreServer

    ep = await Endpoint(a.serve, tuple(json.loads(a.hub))).start()
    srv = StoreServer(ep, a.serve, a.proxies.split(","))
    srv.start()
    ep.serve(f"bench/echo/{a.serve}", lambda _n, args, _m: args[0])
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)   # until EOF
    await srv.close()
    await ep.close()


# ---- client --------------------------------------------------------------------------------------

async def measure(hub: list, proxies: list[str], a) -> dict:
    from broker.endpoint import Endpoint
    from cluster.store import StoreClient

    ep = await Endpoint(f"bench-client-{os.getpid()}", tuple(hub)).start()
    try:
        await ep.wait_for_peers(proxies, timeout=20)
        c = StoreClient(ep, proxies, timeout=10.0)
        await c.wait_ready()
        for p in proxies:
            await ep.wait_subscribed(f"bench/echo/{p}")
        await asyncio.sleep(0.3)
        out: dict[str, float] = {}
        n = a.ops
        t = time.perf_counter()
        for i in range(n // 2):
            await ep.request(f"bench/echo/{proxies[0]}", "echo", i, timeout=10)
        out["rpc_single"] = (n // 2) / (time.perf_counter() - t)
        rsem = asyncio.Semaphore(a.inflight)

        async def rpc(i: int) -> None:
            async with rsem:
                await ep.request(f"bench/echo/{proxies[0]}", "echo", i, timeout=10)
        t = time.perf_counter()
        await asyncio.gather(*(rpc(i) for i in range(n)))
        out["rpc_pipelined"] = n / (time.perf_counter() - t)
        for kind in ("put", "get", "incr"):       # put first: gets find their keys
            t = time.perf_counter()
            for i in range(n // 2):
                await c._one(op(kind, i))
            out[f"{kind}_single"] = (n // 2) / (time.perf_counter() - t)

            sem = asyncio.Semaphore(a.inflight)

            async def one(i: int) -> None:
                async with sem:
                    await c._one(op(kind, i))
            t = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            out[f"{kind}_pipelined"] = n / (time.perf_counter() - t)

            total = n * 10
            t = time.perf_counter()
            for s in range(0, total, a.batch):
                await c.batch([op(kind, i) for i in range(s, s + a.batch)])
            out[f"{kind}_batched"] = total / (time.perf_counter() - t)
        return out
    finally:
        await ep.close()


def local_batched(a) -> dict:
    from cluster.store import LocalStore

    st = LocalStore()
    out = {}
    for kind in ("put", "get", "incr"):
        total = a.ops * 10
        t = time.perf_counter()
        for s in range(0, total, a.batch):
            st.apply([op(kind, i) for i in range(s, s + a.batch)])
        out[f"local_{kind}_batched"] = total / (time.perf_counter() - t)
    return out


def run_once(a, nproxies: int) -> dict:
    import uvloop

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    hub = subprocess.Popen([sys.executable, "-m", "broker.hub", "--bind", "tcp://127.0.0.1:*"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    procs = []
    try:
        addr = json.loads(hub.stdout.readline())
        hubaddr = [addr["in"], addr["out"]]
        names = [f"proxy-{i + 1}" for i in range(nproxies)]
        for nm in names:
            p = subprocess.Popen([sys.executable, __file__, "--serve", nm, "--hub", json.dumps(hubaddr),
                                  "--proxies", ",".join(names)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            procs.append(p)
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{nm} did not start")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            return r.run(measure(hubaddr, names, a))
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        hub.terminate()
        hub.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ops", type=int, default=2000, help="operations per single/pipelined figure")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--proxies", default="1,2", help="proxy counts to measure (comma list)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--hub", help=argparse.SUPPRESS)
    a = ap.parse_args()
    import structlog
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(30))
    if a.serve:
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            r.run(serve(a))
        return 0
    result: dict = {"runs": a.runs, "ops": a.ops, "batch": a.batch, "inflight": a.inflight,
                    "load_avg": os.getloadavg()[0]}
    for np_ in [int(x) for x in a.proxies.split(",")]:
        samples = [run_once(a, np_) for _ in range(a.runs)]
        med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        med["single_vs_rpc"] = med["get_single"] / med["rpc_single"]
        med["pipelined_vs_rpc"] = med["get_pipelined"] / med["rpc_pipelined"]
        result[f"proxies_{np_}"] = {k: round(v, 3 if k.endswith("_vs_rpc") else 0) for k, v in med.items()}
    loc = [local_batched(a) for _ in range(a.runs)]
    result["local"] = {k: round(statistics.median(s[k] for s in loc)) for k in loc[0]}
    if a.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

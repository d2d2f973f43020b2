"""Bus throughput and latency against a raw pyzmq baseline measured in the same run.

    python bench/bus.py --json

Baseline: plain PUB -> ``zmq.proxy`` forwarder process -> plain SUB that msgpack-decodes every
payload; no Starling code.  Ours: Endpoint -> ``python -m broker.hub`` process -> Endpoint with a
handler.  Both sides are separate processes; each figure is the median of ``--runs`` runs and is
computed at the receiver (events received / time from first to last).  Payload per event:
name plus six typical arguments (int, address string, port, float, bool, uid string).
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

TOPIC = "bench/events"
NAME = "conn_seen"


def ev_args(i: int) -> list:
    return [i, "10.0.0.1", 443, 1.5, True, "C8vxyz123"]


# ----------------------------------------------------------------------------- child roles


def child_raw_forwarder(a) -> None:
    import zmq

    ctx = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    for s in (xsub, xpub):
        s.rcvhwm = s.sndhwm = 2_000_000
    xsub.bind("tcp://127.0.0.1:*")
    xpub.bind("tcp://127.0.0.1:*")
    print(json.dumps({"in": xsub.last_endpoint.decode(), "out": xpub.last_endpoint.decode()}), flush=True)
    zmq.proxy(xsub, xpub)


def child_raw_pub(a) -> None:
    import msgpack
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PUB)
    s.sndhwm = 2_000_000
    s.connect(a.addr)
    time.sleep(0.5)  # plain PUB cannot see subscriptions: give them time to arrive
    topic = TOPIC.encode() + b"/"
    pack = msgpack.packb
    send = s.send_multipart
    if a.rate:  # paced like the Endpoint latency run
        n, t0 = 0, time.monotonic()
        while n < a.n:
            due = min(a.n, int((time.monotonic() - t0) * a.rate))
            while n < due:
                send((topic, pack([NAME, [time.monotonic(), *ev_args(n)[1:]]])))
                n += 1
            time.sleep(0.001)  # same 1 ms pacing as the Endpoint run
    elif a.batch == 1:
        for i in range(a.n):
            send((topic, pack([NAME, ev_args(i)])))
    else:
        for start in range(0, a.n, a.batch):
            send((topic, pack([[NAME, ev_args(i)] for i in range(start, start + a.batch)])))
    time.sleep(1.0)
    s.close(linger=5000)


def child_raw_sub(a) -> None:
    import msgpack
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.rcvhwm = 2_000_000
    s.connect(a.addr)
    s.subscribe(TOPIC.encode() + b"/")
    print("ready", flush=True)
    unpack = msgpack.unpackb
    recv = s.recv_multipart
    count = 0
    first = last = 0.0
    lat = []
    s.rcvtimeo = 3000
    try:
        while count < a.n:
            _topic, payload = recv()
            if not count:
                first = time.perf_counter()
            obj = unpack(payload)
            if a.rate:
                lat.append(time.monotonic() - obj[1][0])
            count += 1 if a.batch == 1 else len(obj)
            last = time.perf_counter()
    except zmq.Again:
        pass
    out = {"count": count, "elapsed": last - first}
    if lat:
        lat.sort()
        out["p50_ms"] = lat[len(lat) // 2] * 1e3
        out["p99_ms"] = lat[int(len(lat) * 0.99)] * 1e3
    print(json.dumps(out), flush=True)


async def _ep_pub(a) -> None:
    from broker.endpoint import Endpoint

    async with Endpoint("bench-pub", json.loads(a.addr), hwm=2_000_000, backlog=1_000_000) as ep:
        await ep.wait_subscribed(TOPIC, 10)
        if a.rate:  # paced for latency: send what is due every millisecond (both runs)
            n, t0 = 0, time.monotonic()
            while n < a.n:
                due = min(a.n, int((time.monotonic() - t0) * a.rate))
                while n < due:
                    ep.publish(TOPIC, NAME, time.monotonic(), *ev_args(n)[1:])
                    n += 1
                await asyncio.sleep(0.001)  # uvloop timers have 1 ms resolution: 0.5 ms would spin
        elif a.batch == 1:
            pub = ep.publish
            for start in range(0, a.n, 1000):
                for i in range(start, min(a.n, start + 1000)):
                    pub(TOPIC, NAME, *ev_args(i))
                await asyncio.sleep(0)
        else:
            for start in range(0, a.n, a.batch):
                ep.publish_batch(TOPIC, [(NAME, ev_args(i)) for i in range(start, start + a.batch)])
                await asyncio.sleep(0)
        await ep.drain(30)
        await asyncio.sleep(1.0)


async def _ep_sub(a) -> None:
    import itertools

    from broker.endpoint import Endpoint

    counter = itertools.count(1)
    tick = counter.__next__  # the handler does the least a real one would: count the event
    lat: list[float] = []
    mono = time.monotonic

    def on_event(name, args, meta):
        tick()

    def on_timed(name, args, meta):
        lat.append(mono() - args[0])

    frames: list[float] = []
    stamp = frames.append

    async with Endpoint("bench-sub", json.loads(a.addr), hwm=2_000_000) as ep:
        ep.subscribe(TOPIC, on_timed if a.rate else on_event)
        if a.batch > 1:  # per-frame clock: exact first/last arrival at no per-event cost
            ep.subscribe(TOPIC, lambda evs, meta: stamp(time.perf_counter()), batch=True)
        print("ready", flush=True)
        seen = lambda: len(lat) if a.rate else ep.stats()["received_events"]  # noqa: E731
        first = last = 0.0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # 1 ms resolution on runs of ~1 s
            c = seen()
            if c and not first:
                first = time.perf_counter()
            if c >= a.n:
                break
            await asyncio.sleep(0.001)
        last = time.perf_counter()
        count = seen()
        if frames:
            first, last = frames[0], frames[-1]
        if not a.rate:
            assert next(counter) - 1 == count  # every received event reached the handler
        out = {"count": count, "elapsed": last - first, "gaps": ep.stats()["gaps"]}
        if frames:  # the clock started after the first frame had been handled
            out["timed"] = count - a.batch
        if lat:
            lat.sort()
            out["p50_ms"] = lat[len(lat) // 2] * 1e3
            out["p99_ms"] = lat[int(len(lat) * 0.99)] * 1e3
        print(json.dumps(out), flush=True)


def child_ep_pub(a) -> None:
    _run(_ep_pub(a))


def child_ep_sub(a) -> None:
    _run(_ep_sub(a))


def _run(coro) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


def codec_figures(reps: int = 5) -> dict:
    """ns per single event / us per 1000-event batch, encode and decode, medians of ``reps``."""
    import msgpack
    import msgspec

    single = [1.7e9, 17, [[NAME, ev_args(1)]]]
    batch = [1.7e9, 17, [[NAME, ev_args(i)] for i in range(1000)]]
    enc_a, dec_a = msgpack.Packer().pack, msgpack.unpackb
    enc_b, dec_b = msgspec.msgpack.Encoder().encode, msgspec.msgpack.Decoder().decode
    b1, bb = enc_a(single), enc_a(batch)
    assert enc_b(single) == b1 and enc_b(batch) == bb  # same bytes on the wire

    def t(f, n: int) -> float:
        runs = []
        for _ in range(reps):
            s = time.perf_counter()
            for _ in range(n):
                f()
            runs.append((time.perf_counter() - s) / n)
        return statistics.median(runs)

    return {
        "single_encode_ns": {"msgpack": round(t(lambda: enc_a(single), 100_000) * 1e9), "msgspec": round(t(lambda: enc_b(single), 100_000) * 1e9)},
        "single_decode_ns": {"msgpack": round(t(lambda: dec_a(b1), 100_000) * 1e9), "msgspec": round(t(lambda: dec_b(b1), 100_000) * 1e9)},
        "batch1000_encode_us": {"msgpack": round(t(lambda: enc_a(batch), 200) * 1e6), "msgspec": round(t(lambda: enc_b(batch), 200) * 1e6)},
        "batch1000_decode_us": {"msgpack": round(t(lambda: dec_a(bb), 200) * 1e6), "msgspec": round(t(lambda: dec_b(bb), 200) * 1e6)},
    }


# ----------------------------------------------------------------------------- parent


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )


def one_run(kind: str, fwd: dict, n: int, batch: int = 1, rate: int = 0) -> dict:
    if kind == "raw":
        sub = spawn("--child", "raw_sub", "--addr", fwd["out"], "--n", str(n), "--batch", str(batch), "--rate", str(rate))
    else:
        addr = json.dumps([fwd["in"], fwd["out"]])
        sub = spawn("--child", "ep_sub", "--addr", addr, "--n", str(n), "--rate", str(rate), "--batch", str(batch))
    assert sub.stdout.readline().strip() == "ready"
    if kind == "raw":
        pub = spawn("--child", "raw_pub", "--addr", fwd["in"], "--n", str(n), "--batch", str(batch), "--rate", str(rate))
    else:
        pub = spawn("--child", "ep_pub", "--addr", addr, "--n", str(n), "--batch", str(batch), "--rate", str(rate))
    out = json.loads(sub.stdout.readline())
    sub.wait(30)
    pub.kill()
    pub.wait()
    out["eps"] = out.get("timed", out["count"]) / out["elapsed"] if out["elapsed"] > 0 else 0.0
    out["lost"] = n - out["count"]
    return out


def start_forwarder(kind: str) -> tuple[subprocess.Popen, dict]:
    if kind == "raw":
        p = spawn("--child", "raw_forwarder")
    else:
        p = subprocess.Popen(
            [sys.executable, "-m", "broker.hub", "--bind", "tcp://127.0.0.1:*", "--hwm", "2000000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
    return p, json.loads(p.stdout.readline())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--single-n", type=int, default=200_000)
    ap.add_argument("--batched-n", type=int, default=2_000_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--latency-n", type=int, default=20_000)
    ap.add_argument("--codec", action="store_true", help="only compare msgpack codecs (docs/bus.md)")
    ap.add_argument("--child")
    ap.add_argument("--addr")
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rate", type=int, default=0)
    a = ap.parse_args()
    import logging

    import structlog

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    if a.child:
        globals()["child_" + a.child](a)
        return
    if a.codec:
        print(json.dumps(codec_figures()))
        return

    t_start = time.perf_counter()
    runs: dict[str, list[dict]] = {
        k: [] for k in ("raw_single", "raw_batched", "single", "batched", "raw_latency", "latency")
    }
    procs = {}
    try:
        for kind in ("raw", "ep"):
            procs[kind] = start_forwarder(kind)
        for _ in range(a.runs):  # interleave kinds so background noise hits both alike
            runs["raw_single"].append(one_run("raw", procs["raw"][1], a.single_n))
            runs["single"].append(one_run("ep", procs["ep"][1], a.single_n))
            runs["raw_batched"].append(one_run("raw", procs["raw"][1], a.batched_n, a.batch_size))
            runs["batched"].append(one_run("ep", procs["ep"][1], a.batched_n, a.batch_size))
            runs["raw_latency"].append(one_run("raw", procs["raw"][1], a.latency_n, rate=10_000))
            runs["latency"].append(one_run("ep", procs["ep"][1], a.latency_n, rate=10_000))
    finally:
        for p, _ in procs.values():
            p.terminate()
            p.wait(5)

    med = lambda k, f: statistics.median(r[f] for r in runs[k])  # noqa: E731
    res = {
        "raw_single_eps": round(med("raw_single", "eps")),
        "single_eps": round(med("single", "eps")),
        "raw_batched_eps": round(med("raw_batched", "eps")),
        "batched_eps": round(med("batched", "eps")),
        "p50_ms_at_10k": round(med("latency", "p50_ms"), 3),
        "p99_ms_at_10k": round(med("latency", "p99_ms"), 3),
        "raw_p50_ms_at_10k": round(med("raw_latency", "p50_ms"), 3),
        "raw_p99_ms_at_10k": round(med("raw_latency", "p99_ms"), 3),
    }
    res["single_ratio"] = round(res["single_eps"] / res["raw_single_eps"], 3)
    res["batched_ratio"] = round(res["batched_eps"] / res["raw_batched_eps"], 3)
    res["runs"] = a.runs
    res["medians_of"] = {k: [round(r["eps"]) for r in v] for k, v in runs.items()}
    res["lost"] = {k: sum(r["lost"] for r in v) for k, v in runs.items()}
    res["p99_ms_runs"] = [round(r["p99_ms"], 3) for r in runs["latency"]]
    res["raw_p99_ms_runs"] = [round(r["p99_ms"], 3) for r in runs["raw_latency"]]
    res["load_avg_1m"] = round(os.getloadavg()[0], 2)
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:18} {v}")


if __name__ == "__main__":
    main()

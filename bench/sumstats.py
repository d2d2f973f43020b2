"""SumStats and scan detection costs, each against its baseline in the same run.

    python bench/sumstats.py [--observations 200000] [--runs 5] [--json]

* ``core``: observations/s through :class:`~cluster.frameworks.sumstats.Core` (scan's shape:
  UNIQUE with a cap and a threshold) against a plain dict-of-sets count of the same rows.
* ``merger``: the same rows from 2 sources through :class:`~cluster.frameworks.sumstats.Merger`
  (heap + watermarks) in worker-sized batches, relative to ``core``.
* ``wire``: bytes per observation of a ``SumStats::batch`` of 2000 rows (msgpack, as the bus).
* ``scan``: standalone analysis of a generated trace with ``scan`` loaded, against the same
  analysis with no script (``analyze_file``): the frameworks' whole overhead.

Figures are medians of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack  # noqa: E402

from cluster.frameworks import sumstats as ss  # noqa: E402


def rows(n: int) -> list[list]:
    r = random.Random(5)
    t = 1_700_000_000.0
    out = []
    for _ in range(n):
        t += r.expovariate(2000)
        out.append([t, "s", f"10.0.{r.randrange(4)}.{r.randrange(250)}", None, f"{r.randrange(1024)}/tcp"])
    return out


def make_core() -> ss.Core:
    c = ss.Core()
    c.add(ss.SumStat("b", 300.0, [ss.Reducer("s", {ss.UNIQUE}, unique_max=17)],
                     threshold_val=lambda k, r: r["s"].unique + 0.0, threshold=15.0,
                     threshold_crossed=lambda k, r: None))
    return c


def bench_core(data) -> float:
    c = make_core()
    Key = ss.Key
    t0 = time.perf_counter()
    for ts, stream, h, s, v in data:
        c.process(ts, stream, Key(h, s), v)
    c.finish_all()
    return len(data) / (time.perf_counter() - t0)


def bench_dict(data) -> float:
    d: dict = {}
    t0 = time.perf_counter()
    for ts, stream, h, s, v in data:
        u = d.get((h, s))
        if u is None:
            u = d[(h, s)] = set()
        if len(u) <= 17:
            u.add(v)
    return len(data) / (time.perf_counter() - t0)


def bench_merger(data) -> float:
    m = ss.Merger(make_core())
    m.expected = lambda: ["w1", "w2"]
    a, b = data[0::2], data[1::2]
    t0 = time.perf_counter()
    for i in range(0, len(a), 2000):
        for name, part in (("w1", a[i:i + 2000]), ("w2", b[i:i + 2000])):
            m.add(name, part[-1][0] - 1.0 if part else 0.0, False, part)
        m.release()
    m.add("w1", float("inf"), True, ())
    m.add("w2", float("inf"), True, ())
    m.release()
    return len(data) / (time.perf_counter() - t0)


def bench_scan(tmp: Path) -> tuple[float, float]:
    from analysis.engine import analyze_file
    from analysis.trafficgen import GenConfig, write_trace
    from cluster.frameworks.local import analyze_with_scripts

    trace = tmp / "t.pcap"
    if not trace.exists():
        write_trace(str(trace), 60_000, seed=2, config=GenConfig(scans=4))
        (tmp / "scan.py").write_text("from cluster.frameworks import scan\n")
    t0 = time.perf_counter()
    analyze_file(trace, tmp / "plain")
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    analyze_with_scripts(trace, tmp / "scan", [str(tmp / "scan.py")])
    return plain, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--observations", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    data = rows(a.observations)
    med = statistics.median
    core = med(bench_core(data) for _ in range(a.runs))
    base = med(bench_dict(data) for _ in range(a.runs))
    merger = med(bench_merger(data) for _ in range(a.runs))
    wire = len(msgpack.packb(["worker-1", 1.0, False, data[:2000]])) / 2000
    with tempfile.TemporaryDirectory() as d:
        bench_scan(Path(d))                       # warm-up: trace generation, page cache, imports
        runs = [bench_scan(Path(d)) for _ in range(max(1, a.runs // 2 + 1))]
    plain, scan = med(r[0] for r in runs), med(r[1] for r in runs)
    out = {"core_obs_per_s": round(core), "dict_baseline_obs_per_s": round(base),
           "core_vs_dict": round(core / base, 3), "merger_obs_per_s": round(merger),
           "merger_vs_core": round(merger / core, 3), "wire_bytes_per_obs": round(wire, 1),
           "analyze_plain_s": round(plain, 3), "analyze_with_scan_s": round(scan, 3),
           "scan_overhead": round(scan / plain - 1, 3)}
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28} {v}")


if __name__ == "__main__":
    main()

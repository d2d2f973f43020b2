"""Connection-table benchmark: the table alone on pre-decoded packets, against a minimal flow counter.

    python bench/conn_table.py [--packets N] [--conns N] [--reps R] [--json]

The decoder's cost is excluded on purpose (``bench/engine.py`` measures the whole engine):
a synthetic mixed trace (``analysis.trafficgen``) is decoded once, then each rep feeds the
same Packet objects to a fresh ConnTable.  Baseline in the same run: a loop doing the least a
flow table can do on the same Packet objects (direction-free key, dict counter).  Memory:
tracemalloc peak (and retained) memory with N, 2N, 3N, 4N concurrently open TCP connections,
the slope of a line fitted through them = bytes per extra connection, counting only the table
(the packets are decoded before tracing starts).
Figures are medians of the reps.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.config import AnalysisConfig  # noqa: E402
from analysis.conn import ConnTable  # noqa: E402
from analysis.decode import Decoder, DecoderOptions  # noqa: E402
from analysis.pcapwriter import LINKTYPE_ETHERNET  # noqa: E402
from analysis.sinks import ListLogSink  # noqa: E402
from analysis.trafficgen import concurrent_connections, generate  # noqa: E402
from analysis.weird import WeirdReporter  # noqa: E402


def decode(frames):
    out = []
    dec = Decoder(DecoderOptions(), WeirdReporter(ListLogSink()))
    for i in range(0, len(frames), 1024):
        dec.decode_batch((LINKTYPE_ETHERNET, [(ts, len(f), f) for ts, f in frames[i:i + 1024]]), out.append)
    return out


def new_table():
    sink = ListLogSink()
    return ConnTable(AnalysisConfig(uid_seed=1), sink, None, WeirdReporter(sink))


def run_table(packets) -> float:
    t = new_table()
    proc = t.process
    t0 = time.perf_counter()
    for p in packets:
        proc(p)
    t.sweep()
    t.finish()
    return time.perf_counter() - t0


def run_counter(packets) -> float:
    flows: dict = {}
    t0 = time.perf_counter()
    for p in packets:
        s, d, sp, dp = p.src, p.dst, p.sport, p.dport
        k = (s, d, sp, dp, p.proto) if (s, sp) <= (d, dp) else (d, s, dp, sp, p.proto)
        flows[k] = flows.get(k, 0) + 1
    return time.perf_counter() - t0


def bytes_per_conn(n: int) -> tuple[float, float]:
    """Marginal bytes per open connection: slopes of (peak, current) traced memory over 1..4 x n
    connections.  A fit over four sizes smooths out where dict/list resizes happen to fall."""
    xs, peaks, currents = [], [], []
    for k in (1, 2, 3, 4):
        count = k * n
        packets = decode(concurrent_connections(count))
        gc.collect()
        t = new_table()
        tracemalloc.start()
        for p in packets:
            t.process(p)
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(t) == count, (len(t), count)
        xs.append(count)
        peaks.append(peak)
        currents.append(cur)
        del t, packets

    def slope(ys):
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)

    return slope(peaks), slope(currents)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--conns", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    packets = decode(generate(a.packets, seed=1))
    tt = [run_table(packets) for _ in range(a.reps)]
    tc = [run_counter(packets) for _ in range(a.reps)]
    mt, mc = statistics.median(tt), statistics.median(tc)
    res = {"packets": len(packets), "table_pps": round(len(packets) / mt), "counter_pps": round(len(packets) / mc),
           "table_vs_counter": round(mc / mt, 3), "table_us_per_packet": round(mt / len(packets) * 1e6, 2),
           "samples": {"table": tt, "counter": tc}}
    peak, cur = bytes_per_conn(a.conns)
    res["bytes_per_conn_peak"] = round(peak, 1)
    res["bytes_per_conn_retained"] = round(cur, 1)
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            if k != "samples":
                print(f"{k:22} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

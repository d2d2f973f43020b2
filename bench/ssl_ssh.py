"""SSL/TLS and SSH analyzer cost: the engine over a mixed trace with no analyzers vs ssl+ssh on.

    python bench/ssl_ssh.py [--trace T.pcap] [--packets 200000] [--reps 3] [--json]

Without ``--trace`` a mixed DNS/HTTP/TLS/SSH trace is generated with ``analysis.trafficgen``.
Prints the median packets/s of each configuration and their ratio (measured in the same run), and
the median time the two analyzers themselves spend per delivered chunk (their ``data`` calls,
timed by wrapping the factories).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time

from _common import report, temp_trace


def _run(trace: str, analyzers: frozenset[str]) -> tuple[int, float, dict]:
    from analysis.config import AnalysisConfig
    from analysis.engine import analyze_file

    cfg = AnalysisConfig(ignore_checksums=True)
    cfg.analyzers = analyzers
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        st = analyze_file(trace, d, cfg)
        return st["packets"], time.perf_counter() - t0, st


def _timed_factories():
    """Wrap the ssl/ssh analyzers' ``data`` to accumulate their own time and call count."""
    from analysis.protocols import REGISTRY

    acc = {"ssl": [0.0, 0], "ssh": [0.0, 0]}
    for name in acc:
        cls = REGISTRY[name].factory
        orig = cls.data

        def data(self, is_orig, payload, ts, _orig=orig, _a=acc[name]):
            t0 = time.perf_counter()
            _orig(self, is_orig, payload, ts)
            _a[0] += time.perf_counter() - t0
            _a[1] += 1

        cls.data = data
    return acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trace")
    p.add_argument("--packets", type=int, default=200000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    with contextlib.nullcontext(a.trace) if a.trace else temp_trace(a.packets) as trace:
        base = [_run(trace, frozenset()) for _ in range(a.reps)]
        acc = _timed_factories()
        full = [_run(trace, frozenset({"ssl", "ssh"})) for _ in range(a.reps)]
    pk = base[0][0]
    b = statistics.median(r[1] for r in base)
    f = statistics.median(r[1] for r in full)
    res = {
        "packets": pk,
        "no_analyzers_pps": round(pk / b),
        "ssl_ssh_pps": round(pk / f),
        "ratio": round(b / f, 3),
        "ssl_us_per_delivery": round(acc["ssl"][0] / max(1, acc["ssl"][1]) * 1e6, 2),
        "ssh_us_per_delivery": round(acc["ssh"][0] / max(1, acc["ssh"][1]) * 1e6, 2),
        "ssl_deliveries": acc["ssl"][1] // a.reps,
        "ssh_deliveries": acc["ssh"][1] // a.reps,
    }
    report(res, a.json, 22)


if __name__ == "__main__":
    main()

"""What the analyzer benchmarks share: a context that keeps nothing, the mixed test trace, its
decoded packets, median timing and the printed report.  (Bench scripts import it as ``_common``:
their own folder is first on ``sys.path`` when run as ``python bench/<name>.py``.)"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class BenchConn:
    """The ConnView an analyzer reads."""

    orig_h: str = "10.0.0.1"
    orig_p: int = 40000
    resp_h: str = "10.0.0.2"
    resp_p: int = 80
    proto: str = "tcp"
    uid: str = "Cbench"
    start_time: float = 0.0


class NullContext:
    """An AnalyzerContext that keeps nothing but a row count (measures the analyzer, not a sink)."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.options = None
        self.rows = 0

    def write_log(self, path, record) -> None:
        self.rows += 1

    def event(self, name, *args) -> None:
        pass

    def weird(self, name, addl="", source=None) -> None:
        pass

    def confirm(self) -> None:
        pass

    def violation(self, reason) -> None:
        pass

    def add_history(self, letter) -> None:
        pass

    def uid_for(self, kind) -> str:
        return f"{kind}bench"

    def hand_off(self, name, pending=b"", is_orig=True) -> bool:
        return True

    def expect_connection(self, *args, **kw) -> None:
        pass


def generate_trace(path, packets: int, seed: int | None = None) -> str:
    """Write an ``analysis.trafficgen`` mixed trace (DNS/HTTP/TLS/SSH) of ``packets`` packets."""
    cmd = [sys.executable, "-m", "analysis.trafficgen", "--out", str(path), "--packets", str(packets)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    return str(path)


@contextlib.contextmanager
def temp_trace(packets: int, seed: int | None = None) -> Iterator[str]:
    """A generated mixed trace that is removed afterwards."""
    with tempfile.TemporaryDirectory() as d:
        yield generate_trace(os.path.join(d, "mix.pcap"), packets, seed)


def decode_trace(path, keep: Callable) -> None:
    """Call ``keep(packet)`` for every packet of ``path``, read with our own source and decoder."""
    from analysis.decode import Decoder, DecoderOptions
    from analysis.sources import open_source

    dec = Decoder(DecoderOptions(ignore_checksums=True))
    src = open_source(str(path))
    try:
        for batch in src.batches():
            dec.decode_batch(batch, keep)
    finally:
        src.close()


def median_time(fn: Callable[[], object], reps: int, clock=time.perf_counter) -> tuple[float, list[float]]:
    """Run ``fn`` ``reps`` times; (median seconds, all samples).  ``clock=time.process_time``
    counts CPU time only, which a shared machine disturbs less."""
    samples = []
    for _ in range(reps):
        t = clock()
        fn()
        samples.append(clock() - t)
    return statistics.median(samples), samples


def report(res: dict, as_json: bool, width: int = 24, float_format: str = "") -> None:
    """Print the figures as one JSON line or as aligned ``name value`` lines (samples left out)."""
    if as_json:
        print(json.dumps(res))
        return
    for k, v in res.items():
        if "samples" not in k:
            print(f"{k:{width}s} {v:{float_format}}" if isinstance(v, float) else f"{k:{width}s} {v}")

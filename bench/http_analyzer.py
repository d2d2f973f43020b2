"""HTTP analyzer benchmark: our analyzer against dpkt's HTTP parser on the same streams, in one run.

Streams are the HTTP connections (ports 80/8080) of a synthetic mixed trace
(``analysis.trafficgen``), read with our own source and decoder and put in sequence order
beforehand (so reassembly is not measured).  Figures (medians of ``--reps``, process CPU time),
as payload packets per second and MB/s of HTTP payload:

* ``analyzer``: the whole per-connection HTTP analyzer (parser, transactions, file sniffing,
  http.log records built) with a context that drops rows and events;
* ``parser``: the sans-I/O parser alone;
* ``dpkt``: ``dpkt.http.Request``/``Response`` over each direction's concatenated stream
  (baseline: header and body parsing, pipelined messages one after another).

    python bench/http_analyzer.py [--packets 100000] [--reps 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Conn:
    def __init__(self, key):
        self.uid = "Cbench"
        self.orig_h, self.orig_p, self.resp_h, self.resp_p = key
        self.proto, self.start_time = "tcp", 0.0


class _NullCtx:
    """An AnalyzerContext that keeps nothing (measures the analyzer, not a sink)."""

    def __init__(self, conn):
        self.conn = conn
        self.options = None
        self.rows = 0

    def write_log(self, path, record):
        self.rows += 1

    def event(self, name, *args):
        pass

    def weird(self, name, addl="", source=None):
        pass

    def confirm(self):
        pass

    def violation(self, reason):
        pass

    def add_history(self, letter):
        pass

    def uid_for(self, kind):
        return "Fbench"


def _streams(path):
    """[(key, [(is_orig, bytes, ts) | (is_orig, None, ts) for FIN])] of the HTTP connections."""
    from analysis.decode import Decoder
    from analysis.decode.options import DecoderOptions
    from analysis.sources import open_source

    dec = Decoder(DecoderOptions(ignore_checksums=True))
    pkts = []
    src = open_source(path)
    for b in src.batches():
        dec.decode_batch(b, pkts.append)
    src.close()
    conns: dict = {}
    for p in pkts:
        if p.proto != 6 or (p.dport not in (80, 8080) and p.sport not in (80, 8080)):
            continue
        k = (p.src, p.sport, p.dst, p.dport) if p.dport in (80, 8080) else (p.dst, p.dport, p.src, p.sport)
        is_orig = p.dport in (80, 8080)
        st = conns.setdefault(k, {"ev": [], True: {}, False: {}})
        if p.payload_len and p.payload:
            seen = st[is_orig]
            if p.seq not in seen:
                seen[p.seq] = True
                st["ev"].append((is_orig, bytes(p.payload), p.ts))
        if p.tcp_flags & 0x01:
            st["ev"].append((is_orig, None, p.ts))
    return [(k, v["ev"]) for k, v in conns.items()]


def run_analyzer(streams):
    from analysis.protocols.http import HTTPAnalyzer

    rows = 0
    for key, evs in streams:
        ctx = _NullCtx(_Conn(key))
        a = HTTPAnalyzer(ctx)
        ts = 0.0
        for is_orig, data, ts in evs:
            if data is None:
                a.eof(is_orig, ts)
            else:
                a.data(is_orig, data, ts)
        a.done(ts)
        rows += ctx.rows
    return rows


def run_parser(streams):
    from analysis.protocols.http.parser import HTTPParser

    n = 0
    for _key, evs in streams:
        p = HTTPParser()
        for is_orig, data, ts in evs:
            n += len(p.eof(is_orig, ts) if data is None else p.data(is_orig, data, ts))
    return n


def run_dpkt(streams):
    import dpkt

    n = 0
    for _key, evs in streams:
        for side, cls in ((True, dpkt.http.Request), (False, dpkt.http.Response)):
            buf = b"".join(d for o, d, _ in evs if o is side and d is not None)
            while buf:
                try:
                    m = cls(buf)
                except (dpkt.UnpackError, dpkt.NeedData, ValueError):
                    break
                n += 1
                rest = m.data if isinstance(m.data, bytes) else b""
                if len(rest) >= len(buf):
                    break
                buf = rest
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=100000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mix.pcap")
        import subprocess
        subprocess.run([sys.executable, "-m", "analysis.trafficgen", "--out", path, "--packets",
                        str(args.packets)], check=True, capture_output=True)
        streams = _streams(path)
    npk = sum(1 for _, evs in streams for _o, d, _t in evs if d is not None)
    nbytes = sum(len(d) for _, evs in streams for _o, d, _t in evs if d is not None)
    out = {"connections": len(streams), "payload_packets": npk, "payload_bytes": nbytes}
    for name, fn in (("analyzer", run_analyzer), ("parser", run_parser), ("dpkt", run_dpkt)):
        times = []
        for _ in range(args.reps):
            t0 = time.process_time()      # CPU time: the machine is shared
            fn(streams)
            times.append(time.process_time() - t0)
        med = statistics.median(times)
        out[name] = {"seconds": round(med, 4), "packets_per_s": round(npk / med),
                     "MB_per_s": round(nbytes / med / 1e6, 1)}
    out["analyzer_vs_dpkt"] = round(out["dpkt"]["seconds"] / out["analyzer"]["seconds"], 2)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:18} {v}")


if __name__ == "__main__":
    main()

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
import time

from _common import BenchConn, NullContext, decode_trace, median_time, report, temp_trace


def _streams(path):
    """[(key, [(is_orig, bytes, ts) | (is_orig, None, ts) for FIN])] of the HTTP connections."""
    pkts = []
    decode_trace(path, pkts.append)
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
        ctx = NullContext(BenchConn(*key))
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

    with temp_trace(args.packets) as path:
        streams = _streams(path)
    npk = sum(1 for _, evs in streams for _o, d, _t in evs if d is not None)
    nbytes = sum(len(d) for _, evs in streams for _o, d, _t in evs if d is not None)
    out = {"connections": len(streams), "payload_packets": npk, "payload_bytes": nbytes}
    for name, fn in (("analyzer", run_analyzer), ("parser", run_parser), ("dpkt", run_dpkt)):
        med = median_time(lambda: fn(streams), args.reps, time.process_time)[0]   # CPU time: the machine is shared
        out[name] = {"seconds": round(med, 4), "packets_per_s": round(npk / med),
                     "MB_per_s": round(nbytes / med / 1e6, 1)}
    out["analyzer_vs_dpkt"] = round(out["dpkt"]["seconds"] / out["analyzer"]["seconds"], 2)
    report(out, args.json, 18)


if __name__ == "__main__":
    main()

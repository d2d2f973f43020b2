"""DNS analyzer benchmark: our parser and analyzer against dpkt's DNS parser, in one run.

Payloads are the DNS datagrams of a synthetic mixed trace (``analysis.trafficgen``), read with
our own source and decoder.  Figures (medians of ``--reps``):

* ``parse``: :func:`analysis.protocols.dns.parse_message` per message (header, questions,
  answer records with names decompressed);
* ``dpkt``: ``dpkt.dns.DNS(payload)`` (baseline: full unpack of all sections);
* ``analyzer``: the whole per-connection analyzer (parse + pairing + log records built) with a
  context that drops rows and events.

    python bench/dns_analyzer.py [--packets 100000] [--reps 5] [--json]
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
    def __init__(self, orig_h, orig_p, resp_h, resp_p):
        self.uid, self.orig_h, self.orig_p, self.resp_h, self.resp_p = "Cbench", orig_h, orig_p, resp_h, resp_p
        self.proto, self.start_time = "udp", 0.0


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
        return "X"


def dns_payloads(packets: int, seed: int) -> list[tuple]:
    from analysis.decode import Decoder, DecoderOptions
    from analysis.sources import open_source

    path = os.path.join(tempfile.mkdtemp(), "mix.pcap")
    import subprocess

    subprocess.run([sys.executable, "-m", "analysis.trafficgen", "--out", path, "--packets", str(packets),
                    "--seed", str(seed)], check=True, capture_output=True)
    out = []
    src = open_source(path)
    dec = Decoder(DecoderOptions(ignore_checksums=True))

    def keep(p):
        if p.proto == 17 and (p.dport == 53 or p.sport == 53) and p.payload:
            out.append((p.src, p.sport, p.dst, p.dport, bytes(p.payload), p.ts))
    try:
        for batch in src.batches():
            dec.decode_batch(batch, keep)
    finally:
        src.close()
        os.unlink(path)
    return out


def bench(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=100000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    import dpkt

    from analysis.protocols.dns import DNSAnalyzer, parse_message

    msgs = dns_payloads(a.packets, a.seed)
    if not msgs:
        print("no DNS in the generated trace", file=sys.stderr)
        return 1
    datas = [m[4] for m in msgs]

    def ours():
        for d in datas:
            parse_message(d)

    def theirs():
        for d in datas:
            try:
                dpkt.dns.DNS(d)
            except (dpkt.UnpackError, IndexError, ValueError):
                pass

    def analyzer():
        by_flow = {}
        for sh, sp, dh, dp, d, ts in msgs:
            key = (sh, sp, dh, dp) if dp == 53 else (dh, dp, sh, sp)
            an = by_flow.get(key)
            if an is None:
                an = by_flow[key] = DNSAnalyzer(_NullCtx(_Conn(*key)))
            an.data(dp == 53, d, ts)
        for an in by_flow.values():
            an.done(0.0)

    t_ours = bench(ours, a.reps)
    t_dpkt = bench(theirs, a.reps)
    t_an = bench(analyzer, a.reps)
    n = len(datas)
    res = {
        "messages": n,
        "parse_msgs_per_s": round(n / t_ours),
        "dpkt_msgs_per_s": round(n / t_dpkt),
        "parse_vs_dpkt": round(t_dpkt / t_ours, 2),
        "analyzer_msgs_per_s": round(n / t_an),
        "analyzer_us_per_msg": round(t_an / n * 1e6, 2),
    }
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:24s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
import sys

from _common import BenchConn, NullContext, decode_trace, median_time, report, temp_trace


def dns_payloads(packets: int, seed: int) -> list[tuple]:
    out = []

    def keep(p):
        if p.proto == 17 and (p.dport == 53 or p.sport == 53) and p.payload:
            out.append((p.src, p.sport, p.dst, p.dport, bytes(p.payload), p.ts))

    with temp_trace(packets, seed) as path:
        decode_trace(path, keep)
    return out


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
                an = by_flow[key] = DNSAnalyzer(NullContext(BenchConn(*key, proto="udp")))
            an.data(dp == 53, d, ts)
        for an in by_flow.values():
            an.done(0.0)

    t_ours = median_time(ours, a.reps)[0]
    t_dpkt = median_time(theirs, a.reps)[0]
    t_an = median_time(analyzer, a.reps)[0]
    n = len(datas)
    res = {
        "messages": n,
        "parse_msgs_per_s": round(n / t_ours),
        "dpkt_msgs_per_s": round(n / t_dpkt),
        "parse_vs_dpkt": round(t_dpkt / t_ours, 2),
        "analyzer_msgs_per_s": round(n / t_an),
        "analyzer_us_per_msg": round(t_an / n * 1e6, 2),
    }
    report(res, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""FTP/SMTP/POP3/IRC analyzer benchmark: parser throughput and their cost on the mixed trace.

    python bench/ftp_smtp_analyzers.py [--json] [--reps R] [--packets N]

* ``ftp_lines_per_s`` / ``smtp_mb_per_s``: a synthetic FTP control session (commands + replies)
  and an SMTP session carrying a 64 KiB MIME message, replayed through the analyzers with a
  context that drops everything (parse + Zeek state logic + log record construction).
* ``engine_pps_with`` / ``engine_pps_without``: ``Engine`` over an ``analysis.trafficgen`` mixed
  trace (DNS/HTTP/TLS/SSH, so for these analyzers only the DPD pattern tests run) with every
  analyzer enabled, and with ftp/ftp-data/smtp/pop3/irc disabled (runs alternate); the ratio is
  their overhead on traffic that is not theirs -- on a shared 2-core machine the samples are
  noisy, so also:
* ``dpd_seconds`` / ``dpd_share``: one more engine run in which these analyzers' DPD patterns
  are timed directly (all they cost on foreign traffic) and their share of that run.

Medians of ``--reps`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from _common import BenchConn, NullContext, generate_trace, median_time, report


def ftp_session(n_cmds: int) -> list[tuple[bool, bytes]]:
    out = [(False, b"220 FTP server ready\r\n"), (True, b"USER anonymous\r\n"), (False, b"331 pw\r\n"),
           (True, b"PASS a@b\r\n"), (False, b"230 ok\r\n")]
    for i in range(n_cmds // 4):
        out += [(True, b"CWD /pub/dir%d\r\n" % i), (False, b"250 ok\r\n"), (True, b"PASV\r\n"),
                (False, b"227 Entering Passive Mode (10,0,0,2,%d,%d)\r\n" % (i % 200 + 4, i % 256)),
                (True, b"RETR file%d.bin\r\n" % i), (False, b"150 Opening (1234 bytes)\r\n226 done\r\n"),
                (True, b"SIZE x\r\n"), (False, b"213 77\r\n")]
    return out


def smtp_session() -> list[tuple[bool, bytes]]:
    body = b"".join(b"line %05d of the message body, some text to fill it up nicely.\r\n" % i for i in range(1000))
    msg = (b"From: a@example.org\r\nTo: b@example.net\r\nSubject: bench\r\nContent-Type: multipart/mixed; "
           b"boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n" + body + b"--B--\r\n.\r\n")
    return [(False, b"220 mx\r\n"), (True, b"EHLO c\r\n"), (False, b"250 ok\r\n"), (True, b"MAIL FROM:<a@example.org>\r\n"),
            (False, b"250 ok\r\n"), (True, b"RCPT TO:<b@example.net>\r\n"), (False, b"250 ok\r\n"),
            (True, b"DATA\r\n"), (False, b"354 go\r\n")] + \
           [(True, msg[i:i + 1460]) for i in range(0, len(msg), 1460)] + [(False, b"250 queued\r\n")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--packets", type=int, default=200000)
    ap.add_argument("--parsers-only", action="store_true", help="skip the engine figures")
    a = ap.parse_args(argv)
    from analysis.protocols.ftp import FTPAnalyzer
    from analysis.protocols.smtp import SMTPAnalyzer

    res: dict = {}
    sess = ftp_session(20000)
    lines = sum(d.count(b"\n") for _, d in sess)

    def run_ftp():
        an = FTPAnalyzer(NullContext(BenchConn(resp_p=21)))
        for is_orig, d in sess:
            an.data(is_orig, d, 1.0)
        an.done(2.0)

    med, s = median_time(run_ftp, a.reps)
    res["ftp_lines_per_s"] = lines / med
    res["ftp_samples_s"] = s
    sm = smtp_session()
    size = sum(len(d) for _, d in sm)

    def run_smtp():
        for _ in range(20):
            an = SMTPAnalyzer(NullContext(BenchConn(resp_p=21)))
            for is_orig, d in sm:
                an.data(is_orig, d, 1.0)
            an.done(2.0)

    med, s = median_time(run_smtp, a.reps)
    res["smtp_mb_per_s"] = 20 * size / med / 1e6
    res["smtp_samples_s"] = s

    if a.parsers_only:
        return _report(res, a.json)
    # engine over the mixed trace, with and without these analyzers
    from analysis.config import AnalysisConfig
    from analysis.engine import Engine
    from analysis.sources import open_source
    trace = os.path.join(tempfile.gettempdir(), f"starling-mix-{a.packets}.pcap")
    if not os.path.exists(trace):
        generate_trace(trace, a.packets)
    src = open_source(trace)
    batches = list(src.batches())
    src.close()
    npk = sum(len(b[1]) for b in batches)

    class Sink:
        def write(self, path, record): pass
        def flush(self): pass
        def close(self): pass

    def engine(disabled):
        cfg = AnalysisConfig()
        cfg.disabled_analyzers = frozenset(disabled)
        eng = Engine(cfg, Sink())
        for b in batches:
            eng.process_batch(b)
        eng.finish()

    mine = ("ftp", "ftp-data", "smtp", "pop3", "irc")
    s_w, s_wo = [], []
    for _ in range(max(1, a.reps)):        # alternate, so that machine noise hits both alike
        for disabled, samples in (((), s_w), (mine, s_wo)):
            t = time.perf_counter()
            engine(disabled)
            samples.append(time.perf_counter() - t)
    med_w, med_wo = statistics.median(s_w), statistics.median(s_wo)
    res.update(packets=npk, engine_pps_with=npk / med_w, engine_pps_without=npk / med_wo,
               overhead_ratio=med_w / med_wo, engine_samples_with=s_w, engine_samples_without=s_wo)
    res.update(_dpd_cost(engine, mine))
    return _report(res, a.json)


class _TimedPattern:
    """Wraps a compiled DPD pattern and adds the time spent in ``match`` to ``box[0]``."""

    __slots__ = ("p", "box")

    def __init__(self, p, box) -> None:
        self.p = p
        self.box = box

    def match(self, data):
        t = time.perf_counter()
        r = self.p.match(data)
        self.box[0] += time.perf_counter() - t
        return r


def _dpd_cost(engine, names) -> dict:
    import dataclasses

    from analysis.protocols import REGISTRY
    box = [0.0]
    saved = {n: REGISTRY[n] for n in names if n in REGISTRY}
    try:
        for n, sp in saved.items():
            REGISTRY[n] = dataclasses.replace(sp, dpd_orig=tuple(_TimedPattern(p, box) for p in sp.dpd_orig),
                                              dpd_resp=tuple(_TimedPattern(p, box) for p in sp.dpd_resp))
        t = time.perf_counter()
        engine(())
        total = time.perf_counter() - t
    finally:
        REGISTRY.update(saved)
    return {"dpd_seconds": box[0], "dpd_share": box[0] / total}


def _report(res: dict, as_json: bool) -> int:
    report(res, as_json, float_format=",.2f")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

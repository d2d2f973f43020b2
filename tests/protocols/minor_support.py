"""Test support for the long-tail analyzers (Modbus, DCE-RPC, SMB, SIP, SNMP).

A real :class:`analysis.protocols.base.AnalyzerContext` implementation that records every call
and routes weirds through the real :class:`analysis.weird.WeirdReporter` into a real log
directory, plus a small trace driver: it reads a corpus trace with our own source and decoder,
splits it into connections, puts TCP payloads in sequence order per direction (dropping
retransmissions) and feeds one analyzer per connection, detaching it after a violation as the
engine does.  This lets the analyzers be checked against Zeek's weird.log baselines on their
own, independently of the engine's reassembly and DPD.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.config import AnalysisConfig
from analysis.decode import Decoder
from analysis.logs.files import DirectoryLogSink
from analysis.sinks import ListLogSink
from analysis.sources import open_source
from analysis.weird import WeirdReporter

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("STARLING_CONFORMANCE", REPO.parent / "shared" / "conformance"))
ZEEK = CORPUS / "zeek"


def case(name: str) -> dict:
    """One conformance case by name (``pytest.skip`` when the corpus is absent)."""
    import pytest

    f = ZEEK / "cases.json"
    if not f.is_file():
        pytest.skip("conformance corpus not available (STARLING_CONFORMANCE)")
    for c in json.loads(f.read_text())["cases"]:
        if c["test"] == name:
            return c
    pytest.skip(f"case {name} not in corpus")


@dataclass
class Conn:
    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str
    start_time: float


@dataclass
class Ctx:
    """Records what an analyzer does; weirds also go to ``reporter`` when one is given."""

    conn: Conn
    options: Any = None
    reporter: WeirdReporter | None = None
    now: float = 0.0
    logs: list = field(default_factory=list)
    events: list = field(default_factory=list)
    weirds: list = field(default_factory=list)
    confirmed: int = 0
    violations: list = field(default_factory=list)
    history: list = field(default_factory=list)
    _ids: int = 0

    def write_log(self, path, record):
        self.logs.append((path, record))

    def event(self, name, *args):
        self.events.append((name, args))

    def weird(self, name, addl="", source=""):
        self.weirds.append((name, addl, source))
        if self.reporter is not None:
            c = self.conn
            self.reporter.conn(name, self.now, c.uid, c.orig_h, c.orig_p, c.resp_h, c.resp_p, addl, source)

    def net_weird(self, name, addl="", source=""):
        self.weirds.append((name, addl, source))
        if self.reporter is not None:
            self.reporter.net(name, self.now, addl, source)

    def confirm(self):
        self.confirmed += 1

    def violation(self, reason):
        self.violations.append(reason)

    def add_history(self, letter):
        self.history.append(letter)

    def uid_for(self, kind):
        self._ids += 1
        return f"{kind}test{self._ids}"


def make_ctx(options=None, proto="tcp", resp_p=445, reporter=None) -> Ctx:
    return Ctx(Conn("CTEST", "10.0.0.1", 40000, "10.0.0.2", resp_p, proto, 0.0), options, reporter)


@dataclass
class Flow:
    conn: Conn
    items: list  # (is_orig, payload bytes, ts)


def read_flows(trace: Path) -> list[Flow]:
    """Connections of a trace, payloads in delivery order (TCP: by sequence number)."""
    cfg = AnalysisConfig()
    cfg.ignore_checksums = True
    dec = Decoder(cfg.decoder_options(), WeirdReporter(ListLogSink(), enabled=False))
    pkts = []
    src = open_source(str(trace))
    try:
        for batch in src.batches():
            dec.decode_batch(batch, pkts.append)
    finally:
        src.close()
    flows: dict[tuple, dict] = {}
    for p in pkts:
        if p.proto not in (6, 17):
            continue
        key = (p.src, p.sport, p.dst, p.dport, p.proto)
        rkey = (p.dst, p.dport, p.src, p.sport, p.proto)
        if key in flows:
            f, is_orig = flows[key], True
        elif rkey in flows:
            f, is_orig = flows[rkey], False
        else:
            # a SYN+ACK first means the other side opened it
            flip = p.proto == 6 and (p.tcp_flags & 0x12) == 0x12
            k = rkey if flip else key
            f = flows[k] = {"key": k, "ts": p.ts, "segs": [], "seen": {True: set(), False: set()}}
            is_orig = not flip
        data = bytes(p.payload)
        if not data:
            continue
        if p.proto == 6:
            if p.seq in f["seen"][is_orig]:
                continue    # retransmission
            f["seen"][is_orig].add(p.seq)
        f["segs"].append((is_orig, p.seq, data, p.ts))
    out = []
    for n, f in enumerate(flows.values()):
        oh, op, rh, rp, proto = f["key"]
        segs = f["segs"]
        if proto == 6:
            # in order per direction, keeping the interleaving of the two directions by time
            by_dir = {d: sorted((s for s in segs if s[0] == d), key=lambda s: s[1]) for d in (True, False)}
            merged, i = [], {True: 0, False: 0}
            for is_orig, _seq, _d, _ts in sorted(segs, key=lambda s: s[3]):
                merged.append(by_dir[is_orig][i[is_orig]])
                i[is_orig] += 1
            segs = merged
        conn = Conn(f"C{n:04d}", oh, op, rh, rp, "tcp" if proto == 6 else "udp", f["ts"])
        out.append(Flow(conn, [(s[0], s[2], s[3]) for s in segs]))
    return out


def run_trace(trace: Path, factory, options=None, logdir: Path | None = None,
              do_not_ignore_repeats=(), want=lambda conn: True) -> list[Ctx]:
    """Feed every wanted connection of ``trace`` to a fresh ``factory(ctx)`` analyzer.

    With ``logdir``, weirds are written to ``logdir/weird.log`` through the real reporter.
    """
    sink = DirectoryLogSink(logdir) if logdir is not None else ListLogSink()
    from analysis.weird import DO_NOT_IGNORE_REPEATS
    reporter = WeirdReporter(sink, do_not_ignore_repeats=DO_NOT_IGNORE_REPEATS | set(do_not_ignore_repeats))
    ctxs = []
    for flow in read_flows(trace):
        if not want(flow.conn):
            continue
        ctx = Ctx(flow.conn, options, reporter)
        ctx.now = flow.conn.start_time
        a = factory(ctx)
        for is_orig, data, ts in flow.items:
            ctx.now = ts
            a.data(is_orig, data, ts)
            if ctx.violations:
                break
        a.done(ctx.now)
        ctxs.append(ctx)
    sink.flush()
    sink.close()
    return ctxs


def compare(baseline: Path, ours: Path) -> dict:
    """Run the corpus comparator; returns its report dict."""
    sys.path.insert(0, str(CORPUS))
    try:
        from compare_logs import compare_logs
    finally:
        sys.path.pop(0)
    return compare_logs(baseline, ours).to_dict()


def mutations(items: list, rng, rounds: int):
    """Seeded mutations of one connection's payload sequence: byte flips, truncation,
    duplication, random splits and random garbage, so parsers meet every kind of damage."""
    for _ in range(rounds):
        out = []
        for is_orig, data, ts in items:
            d = bytearray(data)
            op = rng.random()
            if d and op < 0.4:
                for _ in range(rng.randint(1, 4)):
                    d[rng.randrange(len(d))] = rng.randrange(256)
            elif d and op < 0.55:
                del d[rng.randrange(len(d)):]
            elif op < 0.65:
                d += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
            elif op < 0.75:
                d = bytearray(rng.randbytes(rng.randint(0, 200)))
            if d and rng.random() < 0.3:          # split one delivery into two
                k = rng.randrange(len(d))
                out.append((is_orig, bytes(d[:k]), ts))
                d = d[k:]
            out.append((is_orig, bytes(d), ts))
        if rng.random() < 0.2:
            out = out + out                       # replays
        yield out


def fuzz(trace: Path, factory, options=None, rounds: int = 60, seed: int = 1, check=None) -> int:
    """Replay seeded mutations of every connection of ``trace``; no exception may escape the
    analyzer.  ``check(analyzer)`` asserts bounded state after each round.  Returns the number
    of deliveries made (so a test can assert the fuzzer really ran)."""
    import random

    rng = random.Random(seed)
    n = 0
    for flow in read_flows(trace):
        for items in mutations(flow.items, rng, rounds):
            ctx = Ctx(flow.conn, options)
            a = factory(ctx)
            for is_orig, data, ts in items:
                if ctx.violations:
                    break
                a.data(is_orig, data, ts)
                n += 1
            a.done(ts if items else 0.0)
            if check is not None:
                check(a)
    return n

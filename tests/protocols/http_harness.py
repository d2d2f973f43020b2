"""Test-side harness for the HTTP analyzer: a real AnalyzerContext that records what the
analyzer does, and a small in-order TCP stream extractor over corpus traces (read with the
project's own source and decoder) so analyzers can be driven before/without the engine."""

from __future__ import annotations

import itertools
import os
import pathlib

from analysis.decode import Decoder
from analysis.decode.options import DecoderOptions
from analysis.packet import TH_ACK, TH_FIN, TH_RST, TH_SYN
from analysis.sources import open_source

REPO = pathlib.Path(__file__).resolve().parents[2]
CORPUS = pathlib.Path(os.environ.get("STARLING_CONFORMANCE", REPO.parent / "shared" / "conformance"))


class Conn:
    def __init__(self, uid, orig_h, orig_p, resp_h, resp_p, start):
        self.uid, self.orig_h, self.orig_p, self.resp_h, self.resp_p = uid, orig_h, orig_p, resp_h, resp_p
        self.proto = "tcp"
        self.start_time = start


class RecordingContext:
    """Implements AnalyzerContext by recording every call."""

    _ids = itertools.count(1)

    def __init__(self, conn: Conn, options=None) -> None:
        self.conn = conn
        self.options = options
        self.logs: list[tuple[str, object]] = []
        self.events: list[tuple] = []
        self.weirds: list[tuple[str, str]] = []
        self.weird_sources: list[str | None] = []
        self.confirmed = 0
        self.violations: list[str] = []
        self.history: list[str] = []

    def write_log(self, path, record):
        self.logs.append((path, record))

    def event(self, name, *args):
        self.events.append((name, *args))

    def weird(self, name, addl="", source=None):
        self.weirds.append((name, addl))
        self.weird_sources.append(source)

    def confirm(self):
        self.confirmed += 1

    def violation(self, reason):
        self.violations.append(reason)

    def add_history(self, letter):
        self.history.append(letter)

    def uid_for(self, kind):
        return f"{kind}test{next(self._ids)}"

    def rows(self, path="http"):
        return [r for p, r in self.logs if p == path]


def tcp_streams(path, ignore_checksums=True):
    """{(orig_h, orig_p, resp_h, resp_p): [(ts, is_orig, bytes | "FIN")]} with each direction's
    payload in sequence order, retransmissions trimmed; connections in first-seen order."""
    dec = Decoder(DecoderOptions(ignore_checksums=ignore_checksums))
    pkts = []
    src = open_source(path)
    try:
        for b in src.batches():
            dec.decode_batch(b, pkts.append)
    finally:
        src.close()
    conns: dict = {}
    for p in pkts:
        if p.proto != 6:
            continue
        k1 = (p.src, p.sport, p.dst, p.dport)
        k2 = (p.dst, p.dport, p.src, p.sport)
        if k1 in conns:
            key, is_orig = k1, True
        elif k2 in conns:
            key, is_orig = k2, False
        else:
            if p.tcp_flags & TH_SYN and p.tcp_flags & TH_ACK:
                key, is_orig = k2, False
            else:
                key, is_orig = k1, True
            conns[key] = {"ev": [], "next": {True: None, False: None}, "pend": {True: {}, False: {}},
                          "start": p.ts}
        c = conns[key]
        if p.tcp_flags & TH_SYN:
            c["next"][is_orig] = (p.seq + 1) & 0xFFFFFFFF
        data = bytes(p.payload)
        if c["next"][is_orig] is None:
            c["next"][is_orig] = p.seq
        if data:
            c["pend"][is_orig][p.seq] = data
        nxt = c["next"][is_orig]
        pend = c["pend"][is_orig]
        moved = True
        while moved:
            moved = False
            for s in list(pend):
                d = pend[s]
                off = (nxt - s) & 0xFFFFFFFF
                if off >= 0x7FFFFFFF:
                    continue                 # still in the future
                del pend[s]
                if off < len(d):
                    c["ev"].append((p.ts, is_orig, d[off:]))
                    nxt = (nxt + len(d) - off) & 0xFFFFFFFF
                    moved = True
        c["next"][is_orig] = nxt
        if p.tcp_flags & (TH_FIN | TH_RST):
            c["ev"].append((p.ts, is_orig, "FIN"))
    for c in conns.values():
        for is_orig in (True, False):
            pend = c["pend"][is_orig]
            if not pend:
                continue
            # bytes never seen: report a content gap, deliver what follows, then the FIN
            fins = [e for e in c["ev"] if e[1] is is_orig and e[2] == "FIN"]
            c["ev"] = [e for e in c["ev"] if not (e[1] is is_orig and e[2] == "FIN")]
            nxt = c["next"][is_orig]
            ts = c["ev"][-1][0] if c["ev"] else c["start"]
            for s in sorted(pend, key=lambda s: (s - nxt) & 0xFFFFFFFF):
                d = pend[s]
                off = (s - nxt) & 0xFFFFFFFF
                if off >= 0x7FFFFFFF:
                    continue
                if off:
                    c["ev"].append((ts, is_orig, ("GAP", off)))
                c["ev"].append((ts, is_orig, d))
                nxt = (s + len(d)) & 0xFFFFFFFF
            c["ev"].extend(fins[:1])
    return {k: (v["start"], v["ev"]) for k, v in conns.items()}


def run_analyzer(factory, trace, options=None, ports=None, ignore_checksums=True):
    """Feed every TCP connection of ``trace`` (optionally only those to ``ports``) through a
    fresh analyzer; returns the list of RecordingContexts."""
    out = []
    for n, (key, (start, evs)) in enumerate(tcp_streams(trace, ignore_checksums).items()):
        if ports is not None and key[3] not in ports:
            continue
        ctx = RecordingContext(Conn(f"C{n}", *key, start), options)
        a = factory(ctx)
        closed = set()
        ts = start
        for ts, is_orig, d in evs:
            if d == "FIN":
                if is_orig not in closed:
                    closed.add(is_orig)
                    a.eof(is_orig, ts)
            elif isinstance(d, tuple):
                a.gap(is_orig, d[1], ts)
            elif is_orig not in closed:
                a.data(is_orig, d, ts)
        a.done(ts)
        out.append(ctx)
    return out

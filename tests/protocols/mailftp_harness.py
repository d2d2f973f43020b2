"""Test support for the FTP/SMTP/POP3/IRC analyzer tests: trace streams and a recording context.

``tcp_conversations(trace)`` reassembles the TCP payloads of a corpus trace per connection
(ordered by sequence number, retransmissions dropped) into an interleaved list of
``(is_orig, payload, ts)`` segments in capture order, which is what the engine hands an
analyzer.  ``RecordingContext`` is a real AnalyzerContext that records every call.
"""

from __future__ import annotations

import itertools
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]


def corpus_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("STARLING_CONFORMANCE", REPO.parent / "shared" / "conformance"))


def corpus_trace(rel: str) -> pathlib.Path | None:
    p = corpus_root() / "zeek" / "traces" / rel
    return p if p.exists() else None


@dataclass
class Conn:
    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str = "tcp"
    start_time: float = 0.0


@dataclass
class Conversation:
    conn: Conn
    segments: list = field(default_factory=list)   # (is_orig, payload, ts)
    fins: list = field(default_factory=list)       # (is_orig, ts)


def tcp_conversations(trace) -> list[Conversation]:
    """Every TCP connection of ``trace`` (SYN decides the originator) with in-order payloads."""
    from analysis.config import AnalysisConfig
    from analysis.decode import Decoder
    from analysis.sources import open_source
    from analysis.weird import WeirdReporter

    class _Null:
        def write(self, path, record): pass
        def flush(self): pass
        def close(self): pass

    cfg = AnalysisConfig(ignore_checksums=True)
    dec = Decoder(cfg.decoder_options(), WeirdReporter(_Null()))
    pkts = []

    def emit(p):
        if p.proto == 6:
            pkts.append((p.ts, p.src, p.sport, p.dst, p.dport, p.tcp_flags, p.seq, bytes(p.payload)))

    src = open_source(str(trace))
    try:
        for batch in src.batches():
            dec.decode_batch(batch, emit)
    finally:
        src.close()
    convs: dict[tuple, Conversation] = {}
    nexts: dict[tuple, int] = {}
    counter = itertools.count(1)
    for ts, sh, sp, dh, dp, flags, seq, data in pkts:
        key = (sh, sp, dh, dp)
        rkey = (dh, dp, sh, sp)
        if key in convs:
            conv, is_orig = convs[key], True
        elif rkey in convs:
            conv, is_orig = convs[rkey], False
        else:
            if flags & 0x12 == 0x12:      # SYN-ACK first: the sender is the responder
                conv = Conversation(Conn(f"C{next(counter)}", dh, dp, sh, sp, start_time=ts))
                convs[rkey] = conv
                is_orig = False
            else:
                conv = Conversation(Conn(f"C{next(counter)}", sh, sp, dh, dp, start_time=ts))
                convs[key] = conv
                is_orig = True
        if flags & 0x02:
            nexts[key] = (seq + 1) & 0xFFFFFFFF
        if data:
            exp = nexts.get(key)
            if exp is None:
                exp = seq
            delta = (seq - exp) & 0xFFFFFFFF
            if delta >= 0x80000000:          # (partly) old data: keep only the new tail
                overlap = (exp - seq) & 0xFFFFFFFF
                if overlap >= len(data):
                    continue
                data = data[overlap:]
                seq = exp
            conv.segments.append((is_orig, data, ts))
            nexts[key] = (seq + len(data)) & 0xFFFFFFFF
        if flags & 0x01:
            conv.fins.append((is_orig, ts))
    return list(convs.values())


class RecordingContext:
    """An AnalyzerContext that records what the analyzer does (a real object, not a mock)."""

    def __init__(self, conn: Conn, options: Any = None) -> None:
        self.conn = conn
        self.options = options
        self.logs: list[tuple[str, Any]] = []
        self.events: list[tuple] = []
        self.weirds: list[tuple[str, str]] = []
        self.confirmed = False
        self.violations: list[str] = []
        self.history: list[str] = []
        self.expected: list[tuple] = []
        self.handoffs: list[str] = []
        self._ids = itertools.count(1)

    def write_log(self, path, record):
        self.logs.append((path, record))

    def event(self, name, *args):
        self.events.append((name, *args))

    def weird(self, name, addl="", source=None):
        self.weirds.append((name, addl))

    def confirm(self):
        self.confirmed = True

    def violation(self, reason):
        self.violations.append(reason)

    def add_history(self, letter):
        self.history.append(letter)

    def uid_for(self, kind):
        return f"{kind}test{next(self._ids)}"

    def expect_connection(self, orig_h, resp_h, resp_p, service, timeout=300.0, **kw):
        self.expected.append((orig_h, resp_h, resp_p, service))

    def hand_off(self, name, pending=b"", is_orig=True):
        self.handoffs.append(name)
        return True

    def rows(self, path):
        return [r for p, r in self.logs if p == path]


def feed(analyzer, conv: Conversation, done=True) -> None:
    last = conv.conn.start_time
    for is_orig, data, ts in conv.segments:
        analyzer.data(is_orig, data, ts)
        last = ts
    for is_orig, ts in conv.fins:
        analyzer.eof(is_orig, ts)
        last = max(last, ts)
    if done:
        analyzer.done(last)


def run_interleaved(convs, make_ctx, factories) -> list:
    """Feed every conversation's segments in timestamp order, like the engine would.

    ``factories(conv) -> Analyzer | None`` picks the analyzer per connection (called lazily at
    its first segment, so expectations registered earlier are visible).  Connections end
    (``done``) after the last segment of the whole trace, in start order.
    """
    items = []
    for n, conv in enumerate(convs):
        for k, (is_orig, data, ts) in enumerate(conv.segments):
            items.append((ts, n, k, is_orig, data))
    items.sort(key=lambda x: (x[0], x[1], x[2]))
    analyzers: dict[int, object] = {}
    ctxs = []
    last = 0.0
    for ts, n, _k, is_orig, data in items:
        if n not in analyzers:
            ctx = make_ctx(convs[n].conn)
            ctxs.append(ctx)
            analyzers[n] = factories(convs[n], ctx)
        a = analyzers[n]
        if a is not None:
            a.data(is_orig, data, ts)
        last = ts
    for n in sorted(analyzers):
        if analyzers[n] is not None:
            analyzers[n].done(last)
    return ctxs


def load_case(name: str) -> dict | None:
    import json
    f = corpus_root() / "zeek" / "cases.json"
    if not f.exists():
        return None
    for c in json.loads(f.read_text())["cases"]:
        if c["test"] == name:
            return c
    return None


def comparator():
    import importlib.util
    import sys
    if "compare_logs" in sys.modules:
        return sys.modules["compare_logs"]
    spec = importlib.util.spec_from_file_location("compare_logs", corpus_root() / "compare_logs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["compare_logs"] = mod
    spec.loader.exec_module(mod)
    return mod


def run_case_with(case: dict, factory, outdir, weird_source: str) -> None:
    """Run the case's trace through ``factory`` analyzers (interleaved by time), writing Zeek
    logs into ``outdir``; weirds are written once per (connection, name) like Zeek's default
    weird policy."""
    from analysis.logs.files import DirectoryLogSink
    from analysis.weird import WeirdInfo

    sink = DirectoryLogSink(outdir, "tsv", clock=lambda: 0.0)
    seen: set = set()

    class Ctx(RecordingContext):
        def write_log(self, path, record):
            super().write_log(path, record)
            sink.write(path, record)

        def weird(self, name, addl="", source=None):
            super().weird(name, addl, source)
            c = self.conn
            if (c.uid, name) in seen:
                return
            seen.add((c.uid, name))
            sink.write("weird", WeirdInfo(ts=0.0, uid=c.uid, orig_h=c.orig_h, orig_p=c.orig_p,
                                          resp_h=c.resp_h, resp_p=c.resp_p, name=name, addl=addl or None,
                                          source=(weird_source if source is None else source) or None))

    convs = tcp_conversations(corpus_root() / "zeek" / case["trace"])
    try:
        return run_interleaved(convs, Ctx, factory)
    finally:
        sink.close()

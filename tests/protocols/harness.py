"""One test harness for every protocol analyzer: corpus paths, stream extraction, a recording context.

Analyzers are sans-I/O, so their tests drive them without the engine.  This module gives them:

* the conformance corpus (``STARLING_CONFORMANCE``) and its cases, and the corpus comparator;
* :func:`streams`: the connections of a trace read with the project's own ``analysis.sources`` and
  ``analysis.decode`` -- UDP datagrams, and per TCP direction the payload in sequence order
  (retransmissions trimmed, out-of-order segments held back until the hole fills), which is what the
  engine's reassembly hands an analyzer;
* :class:`Recorder`: a real :class:`analysis.protocols.base.AnalyzerContext` (no mock library) that
  records every call and can route weirds through the real :class:`analysis.weird.WeirdReporter`;
* drivers: :func:`feed` / :func:`run` for one connection, :func:`run_trace` for a whole trace
  (connection after connection, or interleaved in time order as the engine would), and a seeded
  payload mutator for fuzz tests.

Where the analyzer tests needed different behaviour, it is a parameter, never a second copy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from analysis.packet import PROTO_TCP, PROTO_UDP, TH_ACK, TH_FIN, TH_RST, TH_SYN

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("STARLING_CONFORMANCE", REPO.parent / "shared" / "conformance"))
ZEEK = CORPUS / "zeek"

FIN = None                  # a stream mark: the side closed (``marks=True`` only)
_SEQ_MASK = 0xFFFFFFFF


# -- the corpus -----------------------------------------------------------------------------------

def corpus_dir() -> Path:
    return CORPUS


def trace_path(rel: str) -> Path:
    """A corpus path below ``zeek/`` (a case's ``trace`` value is relative to it)."""
    return ZEEK / rel


def corpus_trace(rel: str) -> Path | None:
    """A trace below ``zeek/traces/``, or None when the corpus is absent."""
    p = ZEEK / "traces" / rel
    return p if p.exists() else None


def load_case(name: str) -> dict | None:
    """One conformance case by name; None when the corpus (or the case) is absent."""
    f = ZEEK / "cases.json"
    if not f.is_file():
        return None
    return next((c for c in json.loads(f.read_text())["cases"] if c["test"] == name), None)


def case(name: str) -> dict:
    """One conformance case by name, ``pytest.skip`` when it is absent."""
    import pytest

    c = load_case(name)
    if c is None:
        pytest.skip(f"conformance case {name} not available under {CORPUS} (STARLING_CONFORMANCE)")
    return c


def comparator():
    """The corpus's ``compare_logs`` module (loaded once)."""
    if "compare_logs" in sys.modules:
        return sys.modules["compare_logs"]
    spec = importlib.util.spec_from_file_location("compare_logs", CORPUS / "compare_logs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["compare_logs"] = mod
    spec.loader.exec_module(mod)
    return mod


def compare(baseline: Path, ours: Path) -> dict:
    """Run the corpus comparator on one log; returns its report dict."""
    return comparator().compare_logs(baseline, ours).to_dict()


# -- connections and their payloads ---------------------------------------------------------------

@dataclass
class Conn:
    """A ConnView plus what the trace delivered on it.

    ``chunks``: ``(is_orig, payload, ts)`` in delivery order.  With ``streams(marks=True)`` it also
    holds the marks the engine would call ``gap``/``eof`` for: an ``int`` payload is a content gap
    of that many bytes, :data:`FIN` a closed side (then the bytes after a hole follow the gap).
    """

    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str = "tcp"
    start_time: float = 0.0
    chunks: list = field(default_factory=list)
    fins: list = field(default_factory=list)       # (is_orig, ts) of every FIN/RST seen


class _Direction:
    """One TCP direction: the next expected sequence number and segments waiting for a hole."""

    __slots__ = ("next", "pending")

    def __init__(self) -> None:
        self.next: int | None = None
        self.pending: dict[int, bytes] = {}

    def deliver(self, seq: int, data: bytes) -> list[bytes]:
        """Add a segment; return the bytes now in order (old bytes trimmed)."""
        if self.next is None:
            self.next = seq
        if data:
            self.pending[seq] = data
        out = []
        moved = True
        while moved:
            moved = False
            for s in list(self.pending):
                off = (self.next - s) & _SEQ_MASK
                if off >= 0x7FFFFFFF:
                    continue                   # still in the future
                d = self.pending.pop(s)
                if off < len(d):
                    out.append(d[off:])
                    self.next = (self.next + len(d) - off) & _SEQ_MASK
                    moved = True
        return out

    def tail(self) -> list[tuple[int, bytes]]:
        """What never became in order: (gap length, bytes after it), in sequence order."""
        out, nxt = [], self.next
        for s in sorted(self.pending, key=lambda s: (s - nxt) & _SEQ_MASK):
            off = (s - nxt) & _SEQ_MASK
            if off >= 0x7FFFFFFF:
                continue
            d = self.pending[s]
            out.append((off, d))
            nxt = (s + len(d)) & _SEQ_MASK
        return out


def _flips(p, server_ports) -> bool:
    """Does the first packet seen come from the responder?  A SYN-ACK does; with ``server_ports``
    (Zeek's likely_server_ports) so does a packet from only a server port, except towards a
    broadcast/multicast address, where Zeek never flips."""
    if p.proto == PROTO_TCP and p.tcp_flags & TH_SYN and p.tcp_flags & TH_ACK:
        return True
    if p.sport in server_ports and p.dport not in server_ports:
        return not (p.dst == "255.255.255.255" or p.dst.startswith(("224.", "239.", "ff")))
    return False


def read_packets(trace, ignore_checksums: bool = True, protos=(PROTO_TCP, PROTO_UDP)) -> list:
    """Every decoded TCP/UDP packet of ``trace``, with our own source and decoder."""
    from analysis.decode import Decoder, DecoderOptions
    from analysis.sources import open_source

    pkts: list = []
    dec = Decoder(DecoderOptions(ignore_checksums=ignore_checksums))
    src = open_source(str(trace))
    try:
        for batch in src.batches():
            dec.decode_batch(batch, lambda p: pkts.append(p) if p.proto in protos else None)
    finally:
        src.close()
    return pkts


def streams(trace, *, udp: bool = False, server_ports: Iterable[int] = (), ignore_checksums: bool = True,
            marks: bool = False) -> list[Conn]:
    """The TCP (and with ``udp``, UDP) connections of ``trace`` in first-seen order.

    ``marks`` adds FIN and gap marks and the bytes after a hole that never filled (what the
    HTTP tests drive ``eof``/``gap`` with); without it a direction stops at its first hole.
    """
    server_ports = frozenset(server_ports)
    protos = (PROTO_TCP, PROTO_UDP) if udp else (PROTO_TCP,)
    conns: dict[tuple, Conn] = {}
    dirs: dict[tuple, _Direction] = {}
    order: list[Conn] = []
    for p in read_packets(trace, ignore_checksums, protos):
        k = (p.src, p.sport, p.dst, p.dport, p.proto)
        rk = (p.dst, p.dport, p.src, p.sport, p.proto)
        if k in conns:
            c, is_orig = conns[k], True
        elif rk in conns:
            c, is_orig = conns[rk], False
        else:
            is_orig = not _flips(p, server_ports)
            oh, op, rh, rp = (p.src, p.sport, p.dst, p.dport) if is_orig else (p.dst, p.dport, p.src, p.sport)
            c = Conn(f"C{len(order)}", oh, op, rh, rp, "tcp" if p.proto == PROTO_TCP else "udp", p.ts)
            conns[k if is_orig else rk] = c
            order.append(c)
        data = bytes(p.payload)
        if p.proto == PROTO_UDP:
            if data:
                c.chunks.append((is_orig, data, p.ts))
            continue
        d = dirs.setdefault((id(c), is_orig), _Direction())
        seq = (p.seq + 1) & _SEQ_MASK if p.tcp_flags & TH_SYN else p.seq
        if p.tcp_flags & TH_SYN:
            d.next = seq
        for piece in d.deliver(seq, data):
            c.chunks.append((is_orig, piece, p.ts))
        if p.tcp_flags & (TH_FIN | TH_RST):
            c.fins.append((is_orig, p.ts))
            if marks:
                c.chunks.append((is_orig, FIN, p.ts))
    if marks:
        for c in order:
            for is_orig in (True, False):
                d = dirs.get((id(c), is_orig))
                tail = d.tail() if d is not None else []
                if not tail:
                    continue
                fins = [x for x in c.chunks if x[0] is is_orig and x[1] is FIN]
                c.chunks = [x for x in c.chunks if not (x[0] is is_orig and x[1] is FIN)]
                ts = c.chunks[-1][2] if c.chunks else c.start_time
                for off, data in tail:
                    if off:
                        c.chunks.append((is_orig, off, ts))
                    c.chunks.append((is_orig, data, ts))
                c.chunks.extend(fins[:1])
    return order


# -- the recording context ------------------------------------------------------------------------

class Recorder:
    """A real AnalyzerContext that records every call.

    ``events`` holds ``(name, c, *args)``, or ``(name, (c, *args))`` with ``pack_args``: ``c`` is
    ``conn``, put first as the engine's context does (Zeek's ``c: connection``); ``weirds`` holds
    ``(name, addl)``, or ``(name, addl, source)`` with ``with_source``.  With a ``reporter`` every
    weird also goes through Zeek's weird policy into its sink (at ``now``, the last delivery's
    time); with a ``sink`` every log row is also written there.  ``default_source`` is the weird
    source used when the analyzer gives none (the engine's analyzer name, upper-cased).
    """

    def __init__(self, conn: Any, options: Any = None, reporter=None, *, sink=None,
                 default_source: str | None = None, pack_args: bool = False, with_source: bool = False) -> None:
        self.conn = conn
        self.options = options
        self.reporter = reporter
        self.sink = sink
        self.default_source = default_source
        self.pack_args = pack_args
        self.with_source = with_source
        self.now = getattr(conn, "start_time", 0.0)
        self.logs: list[tuple[str, Any]] = []
        self.events: list[tuple] = []
        self.weirds: list[tuple] = []
        self.weird_sources: list[str | None] = []
        self.confirmed = 0
        self.violations: list[str] = []
        self.history: list[str] = []
        self.hand_offs: list[tuple[str, bytes, bool]] = []
        self.expected: list[tuple] = []
        self.disabled = 0
        self.flipped = 0
        self._n = 0

    def write_log(self, path, record) -> None:
        self.logs.append((path, record))
        if self.sink is not None:
            self.sink.write(path, record)

    def event(self, name, *args) -> None:
        args = (self.conn, *args)       # as the engine's context does: the connection first
        self.events.append((name, args) if self.pack_args else (name, *args))

    def weird(self, name, addl="", source=None) -> None:
        if source is None:
            source = self.default_source
        self.weirds.append((name, addl, source or "") if self.with_source else (name, addl))
        self.weird_sources.append(source)
        if self.reporter is not None:
            c = self.conn
            self.reporter.conn(name, self.now, c.uid, c.orig_h, c.orig_p, c.resp_h, c.resp_p, addl, source or "")

    def net_weird(self, name, addl="", source="") -> None:
        self.weirds.append((name, addl, source) if self.with_source else (name, addl))
        if self.reporter is not None:
            self.reporter.net(name, self.now, addl, source)

    def confirm(self) -> None:
        self.confirmed += 1

    def violation(self, reason) -> None:
        self.violations.append(reason)

    def add_history(self, letter) -> None:
        self.history.append(letter)

    def uid_for(self, kind) -> str:
        self._n += 1
        return f"{kind}test{self._n}"

    def hand_off(self, name, pending=b"", is_orig=True) -> bool:
        self.hand_offs.append((name, bytes(pending), is_orig))
        return True

    def expect_connection(self, orig_h, resp_h, resp_p, service, proto="tcp", timeout=300.0) -> None:
        self.expected.append((orig_h, resp_h, resp_p, service))

    def disable(self) -> None:
        self.disabled += 1

    def flip_roles(self) -> None:
        c = self.conn
        c.orig_h, c.resp_h = c.resp_h, c.orig_h
        c.orig_p, c.resp_p = c.resp_p, c.orig_p
        self.flipped += 1

    # -- reading back ---------------------------------------------------------------------------
    def rows(self, path: str) -> list:
        return [r for p, r in self.logs if p == path]

    @property
    def handoffs(self) -> list[str]:
        return [h[0] for h in self.hand_offs]

    def event_names(self) -> list[str]:
        return [e[0] for e in self.events]


def make_ctx(options=None, proto="tcp", resp_p=445, reporter=None, **kw) -> Recorder:
    """A recorder on a made-up connection 10.0.0.1:40000 -> 10.0.0.2:``resp_p``."""
    return Recorder(Conn("CTEST", "10.0.0.1", 40000, "10.0.0.2", resp_p, proto, 0.0), options, reporter, **kw)


# -- drivers ----------------------------------------------------------------------------------------

def feed(analyzer, conn: Conn, ctx: Recorder | None = None, *, chunks=None, done: bool = True,
         detach: bool = True, eofs: bool = False) -> float:
    """Deliver a connection's chunks (and marks) to one analyzer; returns the last time.

    ``detach`` stops delivery after a violation, as the engine does (``ctx`` defaults to the
    analyzer's); ``eofs`` ends with an ``eof`` for every FIN of ``conn.fins``.
    """
    ctx = ctx if ctx is not None else getattr(analyzer, "ctx", None)
    closed: set[bool] = set()
    last = conn.start_time
    for is_orig, data, ts in (conn.chunks if chunks is None else chunks):
        if detach and ctx is not None and ctx.violations:
            break
        last = ts
        if ctx is not None:
            ctx.now = ts
        if data is FIN:
            if is_orig not in closed:
                closed.add(is_orig)
                analyzer.eof(is_orig, ts)
        elif isinstance(data, int):
            analyzer.gap(is_orig, data, ts)
        elif is_orig not in closed:
            analyzer.data(is_orig, data, ts)
    if eofs:
        for is_orig, ts in conn.fins:
            analyzer.eof(is_orig, ts)
            last = max(last, ts)
    if done:
        analyzer.done(last)
    return last


def run(factory, conn: Conn, options=None, *, done: bool = True, **ctx_kw) -> tuple[Any, Recorder]:
    """A fresh ``factory(ctx)`` analyzer fed one connection; returns (analyzer, recorder)."""
    ctx = Recorder(conn, options, **ctx_kw)
    a = factory(ctx)
    feed(a, conn, ctx, done=done)
    return a, ctx


def run_trace(factory, trace, options=None, *, udp: bool = True, server_ports=(), ports=None,
              want: Callable[[Conn], bool] = lambda c: True, interleave: bool = False, detach: bool = True,
              shared=None, ignore_checksums: bool = True, marks: bool = False, logdir: Path | None = None,
              log_rows: bool = False, do_not_ignore_repeats=(), **ctx_kw) -> list[Recorder]:
    """Drive one analyzer per wanted connection of ``trace``; returns their recorders.

    ``factory(ctx)`` (``factory(ctx, shared)`` when ``shared`` is given, for analyzers that keep
    cross-connection state) may return None to leave a connection alone.  ``ports``
    ({(port, proto)}) keeps only connections the engine would attach to by port.  Connection after
    connection by default; ``interleave`` feeds all of them in time order as the engine does
    (analyzers are made at a connection's first delivery and end together after the last one).
    With ``logdir``, weirds are written to ``logdir/weird.log`` through the real reporter (and with
    ``log_rows`` every log row too).
    """
    from analysis.logs.files import DirectoryLogSink
    from analysis.sinks import ListLogSink
    from analysis.weird import DO_NOT_IGNORE_REPEATS, WeirdReporter

    sink = DirectoryLogSink(logdir, "tsv", clock=lambda: 0.0) if logdir is not None else ListLogSink()
    reporter = WeirdReporter(sink, do_not_ignore_repeats=DO_NOT_IGNORE_REPEATS | set(do_not_ignore_repeats))
    conns = [c for c in streams(trace, udp=udp, server_ports=server_ports, ignore_checksums=ignore_checksums,
                                marks=marks)
             if want(c) and (ports is None or (c.resp_p, c.proto) in ports or (c.orig_p, c.proto) in ports)]

    def make(c: Conn):
        ctx = Recorder(c, options, reporter, sink=sink if log_rows else None, **ctx_kw)
        return ctx, (factory(ctx) if shared is None else factory(ctx, shared))

    ctxs: list[Recorder] = []
    try:
        if not interleave:
            for c in conns:
                ctx, a = make(c)
                ctxs.append(ctx)
                if a is not None:
                    feed(a, c, ctx, detach=detach)
            return ctxs
        items = sorted(((ts, n, k) for n, c in enumerate(conns) for k, (_o, _d, ts) in enumerate(c.chunks)))
        made: dict[int, tuple] = {}
        last = 0.0
        for ts, n, k in items:
            if n not in made:
                made[n] = make(conns[n])
                ctxs.append(made[n][0])
            ctx, a = made[n]
            last = ts
            if a is None or (detach and ctx.violations):
                continue
            is_orig, data, _ = conns[n].chunks[k]
            if ctx.flipped % 2:       # the analyzer flipped roles: directions swap for later packets
                is_orig = not is_orig
            ctx.now = ts
            feed(a, conns[n], ctx, chunks=[(is_orig, data, ts)], done=False, detach=detach)
        for n in sorted(made):
            if made[n][1] is not None:
                made[n][1].done(last)
        return ctxs
    finally:
        sink.flush()
        sink.close()


def check_case(case: dict, factory, logs, outdir: Path, **run_kw) -> None:
    """The corpus-case driver: run the case's trace through ``factory`` analyzers interleaved as the
    engine would (every row and weird written to ``outdir``) and assert that each of ``logs``
    matches Zeek's baseline."""
    run_trace(factory, trace_path(case["trace"]), udp=False, interleave=True, detach=False, logdir=outdir,
              log_rows=True, **run_kw)
    cmp = comparator()
    for log in logs:
        res = cmp.compare_logs(ZEEK / case["baselines"][log], outdir / log)
        assert res.passed, res.to_dict(max_details=3)


def write_logs(ctxs, logdir, extra=()) -> None:
    """Write every recorded row (plus ``extra`` (path, record) pairs) as Zeek TSV logs."""
    from analysis.logs.files import DirectoryLogSink

    sink = DirectoryLogSink(logdir, "tsv", clock=lambda: 0.0)
    try:
        for ctx in ctxs:
            for path, rec in ctx.logs:
                sink.write(path, rec)
        for path, rec in extra:
            sink.write(path, rec)
    finally:
        sink.close()


def recording(**ctx_kw):
    """``make_ctx``, ``run_trace`` and ``fuzz`` whose recorders all take ``ctx_kw`` (e.g. the
    ``pack_args``/``with_source`` record shapes a test file reads)."""
    from functools import partial

    return partial(make_ctx, **ctx_kw), partial(run_trace, **ctx_kw), partial(fuzz, **ctx_kw)


# -- fuzzing ----------------------------------------------------------------------------------------

def mutations(items: list, rng: random.Random, rounds: int):
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


def fuzz(trace: Path, factory, options=None, rounds: int = 60, seed: int = 1, check=None, **ctx_kw) -> int:
    """Replay seeded mutations of every connection of ``trace``; no exception may escape the
    analyzer.  ``check(analyzer)`` asserts bounded state after each round.  Returns the number
    of deliveries made (so a test can assert the fuzzer really ran)."""
    rng = random.Random(seed)
    n = 0
    for conn in streams(trace, udp=True):
        for items in mutations(conn.chunks, rng, rounds):
            ctx = Recorder(conn, options, **ctx_kw)
            a = factory(ctx)
            ts = 0.0
            for is_orig, data, ts in items:
                if ctx.violations:
                    break
                a.data(is_orig, data, ts)
                n += 1
            a.done(ts if items else 0.0)
            if check is not None:
                check(a)
    return n

"""Test harness for the SSL/TLS and SSH analyzers: real trace payloads, a recording context.

``tcp_streams`` reads a corpus trace with the project's own source and decoder and returns,
per TCP connection, the in-order payload chunks of both directions (retransmissions trimmed,
ordered by sequence number), which is what the engine's reassembly hands an analyzer.
``Recorder`` is a real :class:`analysis.protocols.base.AnalyzerContext` that records calls.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.packet import PROTO_TCP, TH_SYN, TH_ACK

REPO = Path(__file__).resolve().parents[2]


def corpus_dir() -> Path:
    return Path(os.environ.get("STARLING_CONFORMANCE", REPO.parent / "shared" / "conformance"))


def trace_path(name: str) -> Path:
    return corpus_dir() / "zeek" / "traces" / name


@dataclass
class Conn:
    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str = "tcp"
    start_time: float = 0.0
    chunks: list = field(default_factory=list)   # (is_orig, bytes, ts) in arrival order


def tcp_streams(path, ignore_checksums: bool = True) -> list[Conn]:
    """In-order TCP payload chunks per connection (orig = sender of the first SYN or packet)."""
    from analysis.decode import Decoder, DecoderOptions
    from analysis.sources import open_source

    pkts = []
    src = open_source(path)
    dec = Decoder(DecoderOptions(ignore_checksums=ignore_checksums))
    try:
        for batch in src.batches():
            dec.decode_batch(batch, lambda p: pkts.append(p) if p.proto == PROTO_TCP else None)
    finally:
        src.close()
    conns: dict[tuple, Conn] = {}
    nxt: dict[tuple, int] = {}
    pending: dict[tuple, dict[int, tuple]] = {}
    for p in pkts:
        k = (p.src, p.sport, p.dst, p.dport)
        rk = (p.dst, p.dport, p.src, p.sport)
        if k in conns:
            c, is_orig = conns[k], True
        elif rk in conns:
            c, is_orig = conns[rk], False
        else:
            if p.tcp_flags & TH_SYN and p.tcp_flags & TH_ACK:
                c = Conn(f"C{len(conns)}", p.dst, p.dport, p.src, p.sport, start_time=p.ts)
                conns[rk] = c
                is_orig = False
            else:
                c = Conn(f"C{len(conns)}", p.src, p.sport, p.dst, p.dport, start_time=p.ts)
                conns[k] = c
                is_orig = True
        data = bytes(p.payload)
        seq = p.seq + (1 if p.tcp_flags & TH_SYN else 0)
        if k not in nxt:
            nxt[k] = seq
            pending[k] = {}
        if not data:
            continue
        pending[k][seq] = (data, p.ts)
        # deliver whatever is now in order
        progressed = True
        while progressed:
            progressed = False
            for s in sorted(pending[k]):
                d, ts = pending[k][s]
                end = s + len(d)
                if end <= nxt[k]:
                    del pending[k][s]
                    progressed = True
                elif s <= nxt[k]:
                    c.chunks.append((is_orig, d[nxt[k] - s:], ts))
                    nxt[k] = end
                    del pending[k][s]
                    progressed = True
                break
    return _unique(conns.values())


def _unique(values) -> list[Conn]:
    seen, out = set(), []
    for v in values:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


class Recorder:
    """A real AnalyzerContext that records every call (no mock library)."""

    def __init__(self, conn: Any, options: Any = None) -> None:
        self.conn = conn
        self.options = options
        self.logs: list[tuple[str, Any]] = []
        self.events: list[tuple] = []
        self.weirds: list[tuple[str, str]] = []
        self.confirmed = 0
        self.violations: list[str] = []
        self.history: list[str] = []
        self.hand_offs: list[tuple[str, bytes, bool]] = []
        self.disabled = 0
        self._n = 0

    def write_log(self, path, record) -> None:
        self.logs.append((path, record))

    def event(self, name, *args) -> None:
        self.events.append((name, *args))

    def weird(self, name, addl="") -> None:
        self.weirds.append((name, addl))

    def confirm(self) -> None:
        self.confirmed += 1

    def violation(self, reason) -> None:
        self.violations.append(reason)

    def add_history(self, letter) -> None:
        self.history.append(letter)

    def hand_off(self, name, pending=b"", is_orig=True) -> bool:
        self.hand_offs.append((name, bytes(pending), is_orig))
        return True

    def disable(self) -> None:
        self.disabled += 1

    def uid_for(self, kind) -> str:
        self._n += 1
        return f"{kind}test{self._n}"

    def event_names(self) -> list[str]:
        return [e[0] for e in self.events]


def run(factory, conn: Conn, options=None, *, done=True) -> tuple[Any, Recorder]:
    """Feed a connection's chunks to a fresh analyzer (detaching it on a violation, as the engine does)."""
    ctx = Recorder(conn, options)
    a = factory(ctx)
    ts = conn.start_time
    for is_orig, data, ts in conn.chunks:
        if ctx.violations:
            break
        a.data(is_orig, data, ts)
    if done:
        a.done(ts)
    return a, ctx

"""Test harness for the DNS, DHCP and NTP analyzers: corpus trace payloads and a recording context.

``flows`` reads a trace with the project's own source and decoder and groups UDP datagrams and
in-order TCP payloads per connection, with Zeek's orig/resp choice (the first packet's sender,
flipped when only its source port is a likely server port).  ``Ctx`` is a real
:class:`analysis.protocols.base.AnalyzerContext` that records every call and implements
``flip_roles``.  ``run_trace`` drives one analyzer class over a whole trace in time order and
``write_logs`` writes the rows with the project's TSV writer, for ``compare_logs.py``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.packet import PROTO_TCP, PROTO_UDP, TH_SYN

REPO = Path(__file__).resolve().parents[2]


def corpus_dir() -> Path:
    return Path(os.environ.get("STARLING_CONFORMANCE", REPO.parent / "shared" / "conformance"))


def trace_path(name: str) -> Path:
    return corpus_dir() / "zeek" / name


def compare_logs():
    sys.path.insert(0, str(corpus_dir()))
    import compare_logs as cl  # type: ignore

    return cl


@dataclass
class Conn:
    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str
    start_time: float
    pkts: list = field(default_factory=list)    # (is_orig relative to the first orientation, bytes, ts)


def read_packets(path, ignore_checksums: bool = True) -> list:
    from analysis.decode import Decoder, DecoderOptions
    from analysis.sources import open_source

    pkts = []
    src = open_source(path)
    dec = Decoder(DecoderOptions(ignore_checksums=ignore_checksums))
    try:
        for batch in src.batches():
            dec.decode_batch(batch, lambda p: pkts.append(p) if p.proto in (PROTO_TCP, PROTO_UDP) else None)
    finally:
        src.close()
    return pkts


def flows(path, server_ports=frozenset(), ignore_checksums: bool = True) -> list[Conn]:
    """Per connection, its payloads in time order (TCP: in sequence order, duplicates dropped)."""
    conns: dict[tuple, Conn] = {}
    order: list[Conn] = []
    nxt: dict[tuple, int] = {}
    for p in read_packets(path, ignore_checksums):
        proto = "tcp" if p.proto == PROTO_TCP else "udp"
        k = (p.src, p.sport, p.dst, p.dport, proto)
        rk = (p.dst, p.dport, p.src, p.sport, proto)
        if k in conns:
            c, is_orig = conns[k], True
        elif rk in conns:
            c, is_orig = conns[rk], False
        else:
            flip = p.sport in server_ports and p.dport not in server_ports
            if p.dst == "255.255.255.255" or p.dst.startswith(("224.", "239.", "ff")):
                flip = False    # Zeek never flips towards a broadcast/multicast address
            if flip:
                c = Conn(f"C{len(order)}", p.dst, p.dport, p.src, p.sport, proto, p.ts)
                conns[rk] = c
                is_orig = False
            else:
                c = Conn(f"C{len(order)}", p.src, p.sport, p.dst, p.dport, proto, p.ts)
                conns[k] = c
                is_orig = True
            order.append(c)
        data = bytes(p.payload)
        if proto == "tcp":
            seq = p.seq + (1 if p.tcp_flags & TH_SYN else 0)
            key = (k, is_orig)
            if key not in nxt:
                nxt[key] = seq
            if not data:
                continue
            start = nxt[key]
            if seq + len(data) <= start:
                continue        # retransmission
            if seq > start:
                continue        # out of order: the corpus DNS traces have none
            data = data[start - seq:]
            nxt[key] = start + len(data)
        elif not data:
            continue
        c.pkts.append((is_orig, data, p.ts))
    return order


class Ctx:
    """A real AnalyzerContext recording every call (no mock library)."""

    def __init__(self, conn: Any, options: Any = None) -> None:
        self.conn = conn
        self.options = options
        self.logs: list[tuple[str, Any]] = []
        self.events: list[tuple] = []
        self.weirds: list[tuple[str, str]] = []
        self.confirmed = 0
        self.violations: list[str] = []
        self.history: list[str] = []
        self.flipped = 0
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

    def uid_for(self, kind) -> str:
        self._n += 1
        return f"{kind}test{self._n}"

    def flip_roles(self) -> None:
        c = self.conn
        c.orig_h, c.resp_h = c.resp_h, c.orig_h
        c.orig_p, c.resp_p = c.resp_p, c.orig_p
        self.flipped += 1

    def records(self, path: str) -> list:
        return [r for p, r in self.logs if p == path]


def run_trace(factory, path, options=None, server_ports=frozenset(), shared=None, ignore_checksums=True,
              ports=None) -> list[Ctx]:
    """Feed every connection of a trace, interleaved in time order as the engine would, then done().

    ``ports`` ({(port, proto)}) attaches the analyzer only where the engine would by port.
    ``shared`` lets analyzers that keep cross-connection state (DHCP) share one object: it is
    handed to the factory as ``factory(ctx, shared)`` when given.
    """
    conns = flows(path, server_ports, ignore_checksums)
    items = []
    ctxs = []
    for c in conns:
        if ports is not None and (c.resp_p, c.proto) not in ports and (c.orig_p, c.proto) not in ports:
            continue
        ctx = Ctx(c, options)
        a = factory(ctx) if shared is None else factory(ctx, shared)
        ctxs.append(ctx)
        orig_side = (c.orig_h, c.orig_p)
        for is_orig, data, ts in c.pkts:
            items.append((ts, len(items), a, ctx, is_orig, data, orig_side))
    items.sort(key=lambda x: (x[0], x[1]))
    dead = set()
    last_ts = 0.0
    analyzers = {}
    for ts, _, a, ctx, is_orig, data, orig_side in items:
        analyzers[id(a)] = (a, ctx)
        last_ts = ts
        if id(a) in dead:
            continue
        if ctx.flipped % 2:       # the context flipped roles: directions swap for later packets
            is_orig = not is_orig
        a.data(is_orig, data, ts)
        if ctx.violations:
            dead.add(id(a))
    for a, ctx in analyzers.values():
        a.done(last_ts)
    return ctxs


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


def case(name: str) -> dict | None:
    import json

    f = corpus_dir() / "zeek" / "cases.json"
    if not f.exists():
        return None
    for c in json.loads(f.read_text())["cases"]:
        if c["test"] == name:
            return c
    return None

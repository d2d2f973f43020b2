"""Bounded fuzzing of the DHCP analyzer: seeded mutations of corpus datagrams plus hypothesis bytes."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from analysis.protocols import dhcp
from analysis.protocols.dhcp import DHCPAnalyzer, DHCPOptions, parse_message

from harness import Conn, Recorder, corpus_dir, streams, trace_path


def seeds() -> list[bytes]:
    out = []
    if (corpus_dir() / "zeek").exists():
        for t in ("traces/dhcp/dhcp.pcap", "traces/dhcp/dhcp_discover_param_req_and_client_id.pcap"):
            for c in streams(trace_path(t), udp=True, server_ports={67}):
                out.extend(d for _, d, _ in c.chunks)
    if not out:
        out = [bytes(236) + dhcp.MAGIC_COOKIE + b"\x35\x01\x01\xff"]
    return out


def test_mutated_corpus():
    rng = random.Random(67)
    base = seeds()
    opts = DHCPOptions()
    ctx = Recorder(Conn("Cfuzz", "0.0.0.0", 68, "255.255.255.255", 67, "udp", 0.0), opts)
    a = DHCPAnalyzer(ctx)
    for i in range(3000):
        b = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 6)):
            if rng.random() < 0.7:
                pos = rng.randrange(236, len(b)) if len(b) > 236 and rng.random() < 0.7 else rng.randrange(len(b))
                b[pos] = rng.randrange(256)
            else:
                del b[rng.randrange(len(b)):]
            if not b:
                break
        a.data(rng.random() < 0.5, bytes(b), i * 0.5)
        assert len(a.agg.join) <= dhcp.MAX_JOIN_ENTRIES
    a.done(2000.0)
    assert not a.agg.join


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_random_bytes_never_raise(data):
    parse_message(data)
    parse_message(bytes(236) + dhcp.MAGIC_COOKIE + data)
    ctx = Recorder(Conn("Cfuzz", "10.0.0.1", 68, "10.0.0.2", 67, "udp", 0.0), DHCPOptions())
    a = DHCPAnalyzer(ctx)
    a.data(True, bytes(236) + dhcp.MAGIC_COOKIE + data, 1.0)
    a.done(1.0)

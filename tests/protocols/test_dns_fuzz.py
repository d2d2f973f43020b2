"""Bounded fuzzing of the DNS analyzer: seeded mutations of corpus payloads plus hypothesis bytes.

No exception may escape the analyzer (UDP and TCP framing), and its pending state stays within
Zeek's caps whatever arrives.
"""

from __future__ import annotations

import random
import struct
import tracemalloc

from hypothesis import HealthCheck, given, settings, strategies as st

from analysis.protocols import dns
from analysis.protocols.dns import DNSAnalyzer, DNSOptions, parse_message

from harness import Conn, Recorder, corpus_dir, streams, trace_path

TRACES = ["traces/dnssec/dnskey2.pcap", "traces/dns53.pcap", "traces/dns/mdns-no-assoc.pcap",
          "traces/dns/dns_notify2.pcap", "traces/dns-spf.pcap", "traces/dns-zero-RRs.pcap",
          "traces/dns_original_case.pcap"]


def seeds() -> list[bytes]:
    out = []
    if (corpus_dir() / "zeek").exists():
        ports = {p for p, _ in dns.SPEC.ports}
        for t in TRACES:
            for c in streams(trace_path(t), udp=True, server_ports=ports):
                out.extend(d for _, d, _ in c.chunks)
    if not out:     # no corpus: a hand-built query and reply
        q = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
        out = [q, q[:2] + b"\x81\x80\x00\x01\x00\x01" + q[6:] + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04"]
    return out


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if op < 0.5 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.65 and b:
            del b[rng.randrange(len(b)):]
        elif op < 0.8:
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif b:
            i = rng.randrange(len(b))       # plant a compression pointer
            b[i:i + 2] = bytes([0xC0 | rng.randrange(64), rng.randrange(256)])
    return bytes(b)


def check_bounded(a: DNSAnalyzer, opts: DNSOptions) -> None:
    for table in (a.pending_queries, a.pending_replies):
        if table:
            assert len(table) <= opts.max_pending_query_ids + 1
            assert all(len(q) <= opts.max_pending_msgs + 1 for q in table.values())


def test_mutated_corpus_udp_and_tcp():
    rng = random.Random(5353)
    base = seeds()
    opts = DNSOptions(max_pending_msgs=5, max_pending_query_ids=5)
    tracemalloc.start()
    try:
        for proto in ("udp", "tcp"):
            ctx = Recorder(Conn("Cfuzz", "10.0.0.1", 1234, "10.0.0.2", 53, proto, 0.0), opts)
            a = DNSAnalyzer(ctx)
            for i in range(3000):
                data = mutate(rng, rng.choice(base))
                if proto == "tcp" and rng.random() < 0.8:
                    data = struct.pack("!H", len(data)) + data
                a.data(rng.random() < 0.5, data, float(i))
                if a.dead:      # the engine detaches the analyzer: start a fresh one
                    a.done(float(i))
                    ctx = Recorder(Conn("Cfuzz", "10.0.0.1", 1234, "10.0.0.2", 53, proto, 0.0), opts)
                    a = DNSAnalyzer(ctx)
                check_bounded(a, opts)
                ctx.logs.clear()
                ctx.events.clear()
                ctx.weirds.clear()
            a.eof(True, 1.0)
            a.done(1.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=600), st.integers(0, 65535))
def test_random_bytes_never_raise(data, port):
    m = parse_message(data, resp_port=port)
    assert m is None or m.header is not None
    ctx = Recorder(Conn("Cfuzz", "10.0.0.1", 1234, "10.0.0.2", port, "udp", 0.0))
    a = DNSAnalyzer(ctx)
    a.data(True, data, 1.0)
    a.data(False, data, 2.0)
    a.done(3.0)

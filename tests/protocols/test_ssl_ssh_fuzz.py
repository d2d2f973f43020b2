"""Bounded fuzzing of the SSL and SSH analyzers: no exception escapes, buffers stay bounded.

Seeded mutations of real corpus payloads (bit flips, truncation, splicing, length-field
corruption) plus hypothesis-generated chunks; a few seconds in total.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from harness import Conn, Recorder, corpus_dir, corpus_trace, streams  # noqa: E402

import analysis.protocols  # noqa: E402,F401
from analysis.protocols.ssh import SSHAnalyzer  # noqa: E402
from analysis.protocols.ssl import SSLAnalyzer  # noqa: E402

SSL_TRACES = ["tls/ecdsa-cert.pcap", "tls/certificate-request-failed.pcap", "tls/tls13draft23-chrome67.0.3368.0-canary.pcap",
              "tls/tls-1.2-handshake-failure.pcap"]
SSH_TRACES = ["ssh/ssh_version_199.pcap", "tunnels/gre-sample.pcap"]
BUF_LIMIT = 5 + 65535 + 4096          # one maximal record (or SSH line) plus a delivery


def _bounded(a) -> None:
    p = a.parser
    held = sum(len(b) for b in p._buf) + sum(len(b) for b in getattr(p, "_hs", (b"", b"")))
    assert held <= BUF_LIMIT + getattr(p, "max_handshake", 0) + getattr(p, "max_packet", 0)


def _drive(factory, chunks, bound=True) -> Recorder:
    c = Conn("Cfuzz", "10.1.1.1", 1234, "10.2.2.2", 443)
    ctx = Recorder(c)
    a = factory(ctx)
    for o, d, ts in chunks:
        if ctx.violations:
            break
        a.data(o, d, ts)
        if bound:
            _bounded(a)
    a.done(9.0)
    return ctx


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    op = rng.randrange(5)
    if not b:
        return bytes(rng.randbytes(rng.randrange(1, 64)))
    if op == 0:
        for _ in range(rng.randrange(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1:
        del b[rng.randrange(len(b)):]
    elif op == 2:
        i = rng.randrange(len(b))
        b[i:i] = rng.randbytes(rng.randrange(1, 300))
    elif op == 3:     # corrupt something that looks like a length field
        i = rng.randrange(max(1, len(b) - 3))
        b[i:i + 3] = rng.choice([b"\xff\xff\xff", b"\x00\x00\x00", b"\x7f\xff\xff", rng.randbytes(3)])
    else:
        j = rng.randrange(len(b))
        b = b[j:] + b[:j]
    return bytes(b)


def _corpus_chunks(traces):
    if not (corpus_dir() / "zeek" / "traces").is_dir():
        pytest.skip("conformance corpus not available")
    out = []
    for t in traces:
        for c in streams(corpus_trace(t)):
            if c.chunks:
                out.append(c.chunks)
    return out


@pytest.mark.parametrize("factory,traces", [(SSLAnalyzer, SSL_TRACES), (SSHAnalyzer, SSH_TRACES)],
                         ids=["ssl", "ssh"])
def test_seeded_mutations(factory, traces):
    streams = _corpus_chunks(traces)
    rng = random.Random(20261127)
    for _ in range(300):
        chunks = list(rng.choice(streams))
        for _ in range(rng.randrange(1, 4)):
            k = rng.randrange(len(chunks))
            o, d, ts = chunks[k]
            chunks[k] = (o, _mutate(rng, d), ts)
        if rng.random() < 0.3:        # re-segment
            flat = []
            for o, d, ts in chunks:
                step = rng.randrange(1, 200)
                flat.extend((o, d[i:i + step], ts) for i in range(0, len(d), step))
            chunks = flat
        ctx = _drive(factory, chunks)
        assert len([1 for p, _ in ctx.logs if p != "x509"]) <= 1


chunk = st.tuples(st.booleans(), st.binary(min_size=0, max_size=600))
tls_prefix = st.sampled_from([b"", b"\x16\x03\x01", b"\x16\x03\x03\x00\x30\x01", b"\x80\x2e\x01\x00\x02",
                              b"\x15\x03\x03\x00\x02", b"\x14\x03\x03\x00\x01\x01", b"\x17\x03\x03\xff\xff"])
ssh_prefix = st.sampled_from([b"", b"SSH-2.0-x\r\n", b"SSH-1.99-y\n", b"SSH-1.5-z\r\n\x00\x00\x00\x10",
                              b"\x00\x00\x01\x00\x05\x14"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(chunk, tls_prefix), min_size=1, max_size=12))
def test_hypothesis_ssl(items):
    _drive(SSLAnalyzer, [(o, p + d, 1.0) for (o, d), p in items])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(chunk, ssh_prefix), min_size=1, max_size=12))
def test_hypothesis_ssh(items):
    _drive(SSHAnalyzer, [(o, p + d, 1.0) for (o, d), p in items])


dtls_prefix = st.sampled_from([b"", b"\x16\xfe\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x40\x01\x00\x00\x40\x00\x00",
                               b"\x16\xfe\xff\x00\x00\x00\x00\x00\x00\x00\x01\x00\x20\x0b\x00\x10\x00\x00\x01",
                               b"\x14\xfe\xfd\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01\x01"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(chunk, dtls_prefix), min_size=1, max_size=12))
def test_hypothesis_dtls(items):
    from analysis.protocols.ssl import DTLSAnalyzer

    ctx = _drive(DTLSAnalyzer, [(o, p + d, 1.0) for (o, d), p in items], bound=False)
    assert len([1 for p, _ in ctx.logs if p == "ssl"]) <= 1

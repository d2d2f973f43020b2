"""TLS behind other protocols: XMPP STARTTLS and RDP hand the stream to SSL; engine end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import Conn, corpus_dir, corpus_trace, run  # noqa: E402

import analysis.protocols  # noqa: E402,F401
from analysis.protocols.base import REGISTRY  # noqa: E402
from analysis.protocols.rdp import RDPAnalyzer  # noqa: E402
from analysis.protocols.xmpp import XMPPAnalyzer  # noqa: E402

needs_corpus = pytest.mark.skipif(not (corpus_dir() / "zeek" / "traces").is_dir(),
                                  reason="conformance corpus not available")


def _conn(chunks, port) -> Conn:
    c = Conn("Ctest", "10.0.0.1", 40000, "10.0.0.2", port)
    c.chunks = [(o, d, 1.0 + i) for i, (o, d) in enumerate(chunks)]
    return c


def test_xmpp_starttls_hands_off_after_proceed_split_across_segments():
    chunks = [(True, b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' to='x'>"),
              (False, b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' from='x'>"),
              (True, b"<start"), (True, b"tls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
              (False, b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\x16\x03\x03")]
    _, ctx = run(XMPPAnalyzer, _conn(chunks, 5222))
    assert ctx.confirmed == 1
    assert ctx.hand_offs == [("ssl", b"\x16\x03\x03", False)]
    assert REGISTRY["xmpp"].dpd_orig[0].match(chunks[0][1])


def test_xmpp_without_starttls_never_hands_off():
    chunks = [(True, b"<stream:stream xmlns='jabber:server'>"), (False, b"<stream:stream><proceed/>")]
    _, ctx = run(XMPPAnalyzer, _conn(chunks, 5269))
    assert ctx.hand_offs == []


def test_rdp_negotiation_response_selects_tls():
    cr = b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00"
    cc = b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x02\x00\x00\x00"
    _, ctx = run(RDPAnalyzer, _conn([(True, cr), (False, cc)], 3389))
    assert ctx.confirmed and ctx.hand_offs == [("ssl", b"", False)]
    (path, rec), = ctx.logs
    assert path == "rdp" and (rec.cookie, rec.result, rec.security_protocol, rec.cert_count) == (
        "", "encrypted", "HYBRID", 0)
    cookie_cr = cr[:4] + b"\x2a" + cr[5:11] + b"Cookie: mstshash=alice\r\n"
    cookie_cr = cookie_cr[:2] + len(cookie_cr).to_bytes(2, "big") + cookie_cr[4:]
    _, ctx = run(RDPAnalyzer, _conn([(True, cookie_cr), (False, cc)], 3389))
    assert ctx.logs[0][1].cookie == "alice"
    assert REGISTRY["rdp"].dpd_orig[0].match(cookie_cr)
    plain = cc[:15] + b"\x00\x00\x00\x00"          # standard RDP security: no TLS
    _, ctx = run(RDPAnalyzer, _conn([(True, cr), (False, plain)], 3389))
    assert ctx.confirmed and ctx.hand_offs == []
    _, ctx = run(RDPAnalyzer, _conn([(True, b"GET / HTTP/1.1\r\n")], 3389))
    assert ctx.violations


@needs_corpus
@pytest.mark.parametrize("trace,loads,history", [
    ("tls/xmpp-dialback-starttls.pcap", ["base/protocols/ssl", "base/protocols/conn", "base/protocols/xmpp/dpd.sig"],
     "CsxkrnXGYIi"),
    ("rdp/rdp-no-cookie-mstshash.pcap", ["base/protocols/rdp", "base/protocols/ssl"], "CsxnGIi"),
    ("tls/ecdsa-cert.pcap", ["base/protocols/ssl"], "CsxknGIti"),
])
def test_engine_end_to_end(tmp_path, trace, loads, history):
    from analysis.engine import analyze_file
    from analysis.logs.reader import read_tsv
    from analysis.zeek_scripts import configure

    cfg = configure(loads, [], bare=True)
    cfg.ignore_checksums = True
    analyze_file(corpus_trace(trace), tmp_path, cfg)
    rows = list(read_tsv((tmp_path / "ssl.log").read_bytes()).rows())
    assert [r["ssl_history"] for r in rows] == [history]
    assert rows[0]["established"] is True


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_chunks = st.lists(st.tuples(st.booleans(), st.sampled_from([b"", b"\x03\x00\x00\x13\x0e\xd0", b"<proceed/>",
                                                               b"<starttls/>", b"\x03\x00\xff\xff"]),
                             st.binary(max_size=300)), min_size=1, max_size=10)


@settings(max_examples=100, deadline=None)
@given(_chunks)
def test_rdp_xmpp_fuzz(items):
    for factory in (RDPAnalyzer, XMPPAnalyzer):
        c = _conn([(o, p + d) for o, p, d in items], 3389)
        a, ctx = run(factory, c)
        assert len(ctx.hand_offs) <= 1 and len(ctx.logs) <= 1
        assert sum(len(b) for b in getattr(a, "_buf", getattr(a, "_tail", []))) <= 9000

"""SIP analyzer: datagram parser, main.zeek's transaction bookkeeping (sip.log), the
script-level Content-Length weirds, confirmation/violation, corpus case and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from analysis.logs.schema import columns
from analysis.protocols.sip import SIPAnalyzer, SIPError, SIPInfo, SIPOptions, Reply, Request, parse_datagram
from harness import ZEEK, case, compare, recording

make_ctx, run_trace, fuzz = recording(pack_args=True, with_source=True)   # events (name, args), weirds with source

CASE = "scripts.base.protocols.sip.invalid-content-length"

INVITE = (b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
          b"From: Alice <sip:alice@example.com>;tag=42\r\nTo: <sip:bob@example.com>\r\n"
          b"Call-ID: abc@10.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 4\r\n\r\nv=0\n")
OK = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
      b"To: <sip:bob@example.com>;tag=7\r\nContent-Type: application/sdp\r\nl: 0\r\n\r\n")


def test_parse_request_and_reply():
    m, cl = parse_datagram(INVITE, True, 0)
    assert m.start == Request("INVITE", "sip:bob@example.com", "2.0") and cl == 4 and m.body == b"v=0\n"
    assert ("CALL-ID", "abc@10.0.0.1") in m.headers
    r, cl = parse_datagram(OK, False, 0)
    assert r.start == Reply("2.0", 200, "OK") and cl == 0 and ("L", "0") in r.headers


@pytest.mark.parametrize("data, is_orig", [
    (b"HTTP/1.1 200 OK\r\n\r\n", False),
    (b"INVITE\r\n\r\n", True),
    (b"INVITE sip:x SIP/2.0\r\nbad header line\r\n\r\n", True),
    (b"INVITE sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\nshort", True),
    (b"INVITE sip:x SIP/2.0\r\nVia: x\r\n", True),       # no end of headers
])
def test_parse_errors(data, is_orig):
    with pytest.raises(SIPError):
        parse_datagram(data, is_orig, 0)


def test_transaction_logged_on_reply_with_zeek_fields():
    ctx = make_ctx(proto="udp", resp_p=5060)
    a = SIPAnalyzer(ctx)
    a.data(True, INVITE, 1.0)
    assert ctx.confirmed == 0 and ctx.logs == []
    a.data(False, OK, 1.5)
    assert ctx.confirmed == 1
    [(path, rec)] = ctx.logs
    assert path == "sip" and isinstance(rec, SIPInfo)
    assert (rec.method, rec.uri, rec.status_code, rec.status_msg) == ("INVITE", "sip:bob@example.com", 200, "OK")
    assert rec.request_from == "Alice <sip:alice@example.com>"       # ;tag= stripped
    assert rec.request_path == ["SIP/2.0/UDP 10.0.0.1:5060"]          # ;branch stripped
    assert (rec.request_body_len, rec.response_body_len, rec.content_type) == (4, 0, "application/sdp")
    assert rec.ts == 1.0 and rec.trans_depth == 0
    a.done(2.0)
    assert len(ctx.logs) == 1       # nothing left pending


def test_unanswered_request_logged_at_done_and_unknown_method_weird():
    ctx = make_ctx(proto="udp", resp_p=5060)
    a = SIPAnalyzer(ctx)
    a.data(True, INVITE.replace(b"INVITE sip", b"FROB sip"), 1.0)
    assert ("unknown_SIP_method", "FROB", "") in ctx.weirds
    a.done(5.0)
    assert [r.method for _, r in ctx.logs] == ["FROB"]


def test_methods_option_is_honoured():
    ctx = make_ctx(SIPOptions(sip_methods=frozenset({"FROB"})), proto="udp", resp_p=5060)
    SIPAnalyzer(ctx).data(True, INVITE.replace(b"INVITE sip", b"FROB sip"), 1.0)
    assert ctx.weirds == []


def test_violation_stops_analyzer():
    ctx = make_ctx(proto="udp", resp_p=5060)
    a = SIPAnalyzer(ctx)
    a.data(True, b"\x00\x01binary junk", 1.0)
    a.data(True, INVITE, 1.1)
    assert len(ctx.violations) == 1 and ctx.events == []


def test_sip_log_columns_match_zeek():
    names = [c.name for c in columns(SIPInfo)]
    assert names[:7] == ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "trans_depth"]
    assert names[-4:] == ["warning", "request_body_len", "response_body_len", "content_type"]


def test_corpus_weird_and_sip_logs(tmp_path):
    from analysis.logs.files import DirectoryLogSink

    c = case(CASE)
    ctxs = run_trace(SIPAnalyzer, ZEEK / c["trace"], logdir=tmp_path)
    sink = DirectoryLogSink(tmp_path)
    for ctx in ctxs:
        for path, rec in ctx.logs:
            sink.write(path, rec)
    sink.close()
    for log in ("weird.log", "sip.log"):
        report = compare(ZEEK / c["baselines"][log], tmp_path / log)
        assert report["passed"], (log, report)


def test_fuzz():
    c = case(CASE)

    def bounded(a):
        assert len(a.pending) <= 64

    assert fuzz(ZEEK / c["trace"], SIPAnalyzer, rounds=2000, check=bounded) >= 2000


def test_dpd_patterns():
    from analysis.protocols.base import REGISTRY

    pats = REGISTRY["sip"].dpd_orig
    assert any(p.match(INVITE) for p in pats) and any(p.match(OK) for p in pats)
    assert not any(p.match(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") for p in pats)



@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_parse_only_raises_sip_error(data, is_orig):
    try:
        parse_datagram(b"INVITE sip:x SIP/2.0\r\n" + data if is_orig else data, is_orig, 0)
    except SIPError:
        pass

"""HTTP parser and analyzer: Zeek's semantics on hand-made exchanges, and the corpus cases.

The hand-made exchanges check one rule each (the weird names, lengths and columns are Zeek's);
``test_conformance_case`` runs every corpus case with an http.log baseline through the analyzer
(driven by the in-test harness, no engine) and compares with Zeek's log, and
``test_engine_end_to_end`` runs one trace through the real engine.
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib

import pytest
from harness import CORPUS, Conn, Recorder, run_trace

from analysis.protocols.http import SPEC, HTTPAnalyzer, HTTPOptions
from analysis.protocols.http import events as ev
from analysis.protocols.http.mime import sniff
from analysis.protocols.http.parser import HTTPParser, atoi_n, unescape_uri


def exchange(*chunks, options=None, close=True):
    """Run (is_orig, bytes) chunks through a fresh analyzer; returns its context."""
    ctx = Recorder(Conn("Ctest", "10.0.0.1", 40000, "10.0.0.2", 80, start_time=1.0), options)
    a = HTTPAnalyzer(ctx)
    ts = 1.0
    for is_orig, data in chunks:
        ts += 0.1
        a.data(is_orig, data, ts)
    if close:            # the server closes first, as in the corpus traces
        a.eof(False, ts)
        a.eof(True, ts)
    a.done(ts + 1)
    return ctx


def weird_names(ctx):
    return [w for w, _ in ctx.weirds]


# -- request line and URI ------------------------------------------------------------------

def test_simple_get_row_and_events():
    ctx = exchange((True, b"GET /a%20b?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: ua/1\r\n"
                          b"Referer: http://r/\r\nOrigin: http://o\r\n\r\n"),
                   (False, b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello world!"))
    [row] = ctx.rows("http")
    assert (row.method, row.host, row.uri, row.version) == ("GET", "example.com", "/a b?x=1", "1.1")
    assert (row.user_agent, row.referrer, row.origin) == ("ua/1", "http://r/", "http://o")
    assert (row.status_code, row.status_msg, row.response_body_len) == (200, "OK", 12)
    assert row.resp_mime_types == ["text/plain"] and len(row.resp_fuids) == 1
    assert ctx.confirmed == 1
    names = [e[0] for e in ctx.events]
    assert names.count("http_request") == 1 and names.count("http_reply") == 1
    assert ("http_request", ctx.conn, "GET", "/a%20b?x=1", "/a b?x=1", "1.1") in ctx.events
    assert names.count("http_message_done") == 2 and names.count("http_header") == 5


@pytest.mark.parametrize("line,method,uri,version,weirds", [
    (b"GET /x HTTP/1.0", "GET", "/x", "1.0", []),
    (b"OPTIONS HTTP/1.0", "OPTIONS", "", "1.0", ["missing_HTTP_uri"]),
    (b"GET /HTTP/1.1", "GET", "/HTTP/1.1", "0.9", []),
    (b"GET /dir/some file.pdf HTTP/1.1", "GET", "/dir/some file.pdf", "1.1", []),
    (b"GET /% HTTP/1.1", "GET", "/%", "1.1", ["illegal_%_at_end_of_URI"]),
    (b"GET /%5 HTTP/1.1", "GET", "/%5", "1.1", ["partial_escape_at_end_of_URI"]),
    (b"GET /%u0041%zz HTTP/1.1", "GET", "/A%zz", "1.1", ["unescaped_%_in_URI"]),
    (b"FOO /x HTTP/1.1", "FOO", "/x", "1.1", ["unknown_HTTP_method"]),
])
def test_request_lines(line, method, uri, version, weirds):
    ctx = exchange((True, line + b"\r\n\r\n"), close=False)
    [row] = ctx.rows("http")
    assert (row.method, row.uri) == (method, uri)
    [req] = [e for e in ctx.events if e[0] == "http_request"]
    assert req[1] is ctx.conn and req[5] == version
    assert weird_names(ctx) == weirds


@pytest.mark.parametrize("line,weird", [
    (b"/x HTTP/1.1", "bad_HTTP_request_with_version"),
    (b"\x01\x02garbage", "bad_HTTP_request"),
    (b"G /x", "bad_HTTP_request"),          # HTTP/0.9 needs a 3+ letter method
])
def test_bad_request_lines(line, weird):
    ctx = exchange((True, line + b"\r\n"))
    assert weird in weird_names(ctx)
    assert ctx.rows("http") == []


def test_unescape_rules():
    seen = []
    assert unescape_uri(b"/a%41%%42", seen.append) == b"/aAB"
    assert seen == ["double_%_in_URI"]
    assert unescape_uri(b"/%u00e9", seen.append) == b"/\xe9"


def test_atoi_n_like_zeek():
    assert atoi_n(b"12abc") == 12 and atoi_n(b"-1") == -1 and atoi_n(b"ff", 16) == 255
    assert atoi_n(b"x1") is None and atoi_n(b"18446744073709551615") is None


# -- bodies ----------------------------------------------------------------------------

def test_chunked_body_and_pipelining():
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    ctx = exchange((True, b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"),
                   (False, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
                    + b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
    rows = sorted(ctx.rows("http"), key=lambda r: r.trans_depth)
    assert [(r.trans_depth, r.uri, r.status_code, r.response_body_len) for r in rows] == [
        (1, "/1", 200, 11), (2, "/2", 404, 0)]
    assert not ctx.weirds


def test_chunked_only_for_http11():
    ctx = exchange((True, b"GET / HTTP/1.1\r\n\r\n"),
                   (False, b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
    [row] = ctx.rows("http")
    assert row.response_body_len == len(b"5\r\nhello\r\n0\r\n\r\n")   # read until close, raw


@pytest.mark.parametrize("encoding,compress", [
    (b"gzip", gzip.compress),
    (b"x-gzip", gzip.compress),
    (b"deflate", zlib.compress),
    (b"deflate", lambda d: zlib.compress(d)[2:-4]),     # raw deflate, as some servers send
])
def test_compressed_body_counts_decoded_bytes(encoding, compress):
    plain = b"<html><body>" + b"x" * 5000 + b"</body></html>"
    z = compress(plain)
    ctx = exchange((True, b"GET / HTTP/1.1\r\n\r\n"),
                   (False, b"HTTP/1.1 200 OK\r\nContent-Encoding: " + encoding
                    + b"\r\nContent-Length: %d\r\n\r\n" % len(z) + z))
    [row] = ctx.rows("http")
    assert row.response_body_len == len(plain)
    assert row.resp_mime_types == ["text/html"]


def test_head_1xx_and_204_have_no_body():
    ctx = exchange((True, b"HEAD / HTTP/1.1\r\n\r\nPOST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /n HTTP/1.1\r\n\r\n"),
                   (False, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
                    b"HTTP/1.1 204 No Content\r\n\r\n"))
    rows = sorted(ctx.rows("http"), key=lambda r: r.trans_depth)
    got = [(r.method, r.status_code, r.info_code, r.request_body_len, r.response_body_len) for r in rows]
    assert got == [("HEAD", 200, None, 0, 0), ("POST", 201, 100, 3, 2), ("GET", 204, None, 0, 0)]


@pytest.mark.parametrize("value,weird,addl", [
    (b"-1", "HTTP_bad_content_length", "-1"),
    (b"18446744073709551615", "HTTP_bad_content_length", "18446744073709551615"),
    (b"007", "HTTP_content_length_leading_zeros", "007"),
])
def test_content_length_weirds(value, weird, addl):
    ctx = exchange((True, b"POST / HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n" + b"x" * 7
                    + b"GET /next HTTP/1.1\r\n\r\n"))
    assert (weird, addl) in ctx.weirds


def test_request_smuggling_cases_zeek_261():
    ctx = exchange((True, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"
                          b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"))
    assert ("HTTP_obsolete_line_folding", "Transfer-Encoding") in ctx.weirds
    assert sorted(r.uri for r in ctx.rows("http")) == ["/", "/smuggled"]
    ctx = exchange((True, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"))
    assert ("HTTP_chunked_multi", ", identity") in ctx.weirds


@pytest.mark.parametrize("rng,weird", [
    (b"bytes foo-bar/baz", ("HTTP_content_range_cannot_parse", "foo-bar/baz")),
    (b"bytes 0--5/*", ("HTTP_content_range_invalid", "0--5/*")),
    (b"bytes 10-5/*", ("HTTP_non_positive_content_range", "10-5/*")),
    (b"bytes 0-9223372036854775807/9223372036854775808",
     ("HTTP_content_range_overflow", "0-9223372036854775807/9223372036854775808")),
    (b"items 0-1/2", ("HTTP_content_range_unknown_byte_unit", "")),
])
def test_content_range_weirds(rng, weird):
    ctx = exchange((True, b"GET / HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n"),
                   (False, b"HTTP/1.1 206 Partial Content\r\nContent-Range: " + rng + b"\r\n\r\nab"))
    assert weird in ctx.weirds
    assert ctx.rows("http")[0].status_code == 206


def test_partial_content_uses_range_length_and_no_mime():
    ctx = exchange((True, b"GET / HTTP/1.1\r\n\r\n"),
                   (False, b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-19/100\r\n\r\n"
                    b"0123456789HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    [row] = [r for r in ctx.rows("http") if r.status_code == 206]
    assert row.response_body_len == 10
    assert row.resp_fuids and row.resp_mime_types is None      # 206 files stay open: no sniff


# -- HTTP/0.9 and odd orders -----------------------------------------------------------------

def test_http09_request_and_reply():
    ctx = exchange((True, b"POST /zeek.html\r\n"), (False, b"<html>\n hello world\n</html>\n"))
    rows = sorted(ctx.rows("http"), key=lambda r: r.trans_depth)
    assert [(r.method, r.version, r.status_code, r.status_msg, r.response_body_len) for r in rows] == [
        ("POST", "0.9", 0, "<empty>", 28), (None, None, None, None, 0)]
    assert rows[0].resp_mime_types == ["text/html"]
    assert ("invalid_http_09_request_method", "POST") in ctx.weirds


def test_reply_before_http09_request():
    ctx = exchange((False, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"), (True, b"GET /\r\n\r\n"),
                   (False, b"this is too much.\r\n"))
    assert set(weird_names(ctx)) >= {"http_09_reply_before_request", "HTTP_response_before_request",
                                      "HTTP_version_mismatch"}
    rows = sorted(ctx.rows("http"), key=lambda r: r.trans_depth)
    assert [(r.method, r.version, r.response_body_len) for r in rows] == [(None, "1.1", 0), ("GET", "0.9", 19)]


def test_bare_lf_lines_and_missing_entity():
    ctx = exchange((True, b"POST / HTTP/1.1\nHost: i\nContent-Length: 10\n\n1234\n"),
                   (False, b"HTTP/1.1 200 OK\nContent-Length: 3\n"), (True, b"4567\n"),
                   (False, b'Content-Disposition: attachment; filename="t.txt"\n\nfin\n'))
    [row] = ctx.rows("http")
    assert (row.request_body_len, row.response_body_len) == (10, 3)
    assert row.resp_filenames is None and "missing_HTTP_entity" in weird_names(ctx)


def test_basic_auth_and_proxy_headers():
    hdr = b"GET / HTTP/1.1\r\nAuthorization: Basic dGVzdDoxMjM0\r\nVia: 1.1 proxy\r\n\r\n"
    [row] = exchange((True, hdr), (False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).rows("http")
    assert (row.username, row.password, row.proxied) == ("test", None, ["VIA -> 1.1 proxy"])
    opts = HTTPOptions(default_capture_password=True)
    [row] = exchange((True, hdr), options=opts).rows("http")
    assert (row.username, row.password) == ("test", "1234")
    [row] = exchange((True, b"GET / HTTP/1.1\r\nAuthorization: Basic bm9jb2xvbg==\r\n\r\n")).rows("http")
    assert row.username == "<problem-decoding> (Basic bm9jb2xvbg==)"


def test_multipart_files_with_names():
    body = (b"--XX\r\nContent-Disposition: form-data; name=\"a\"; filename=\"one.txt\"\r\n\r\n"
            b"first file contents\r\n--XX\r\nContent-Type: image/gif\r\n\r\nGIF89a......\r\n--XX--\r\n")
    ctx = exchange((True, b"POST /up HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=XX\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body),
                   (False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    [row] = ctx.rows("http")
    assert row.request_body_len == len(body)
    assert len(row.orig_fuids) == 2 and row.orig_filenames == ["one.txt"]
    assert row.orig_mime_types == ["text/plain", "image/gif"]


def test_mime_depth_cap_sets_history_x():
    depth = 120
    body = b"".join(b"Content-Type: message/rfc822\r\n\r\n" for _ in range(depth)) + b"leaf\r\n"
    ctx = exchange((True, b"POST / HTTP/1.1\r\nContent-Type: message/rfc822\r\nContent-Length: %d\r\n\r\n"
                    % len(body) + body))
    assert ("exceeded_mime_max_depth", "100") in ctx.weirds
    assert ctx.history == ["X"]


def test_filename_from_content_disposition():
    ctx = exchange((True, b"GET / HTTP/1.1\r\n\r\n"),
                   (False, b'HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename="test.json"\r\n'
                           b'Content-Length: 11\r\n\r\n{"a": [1]}\n'))
    [row] = ctx.rows("http")
    assert row.resp_filenames == ["test.json"] and row.resp_mime_types == ["text/json"]


def test_content_gap_inside_body_is_counted():
    ctx = Recorder(Conn("C", "a", 1, "b", 80, start_time=0.0))
    a = HTTPAnalyzer(ctx)
    a.data(True, b"GET / HTTP/1.1\r\n\r\n", 1.0)
    a.data(False, b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n0123456789", 1.1)
    a.gap(False, 10, 1.2)
    a.data(False, b"0123456789", 1.3)
    a.done(2.0)
    [row] = ctx.rows("http")
    assert row.response_body_len == 30


def test_excessive_pipelining_flushes():
    reqs = b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % i for i in range(105))
    ctx = exchange((True, reqs), close=False)
    assert "HTTP_excessive_pipelining" in weird_names(ctx)
    assert len(ctx.rows("http")) == 105


def test_connect_tunnel_row_and_inner_protocol():
    ctx = exchange((True, b"CONNECT mail:25 HTTP/1.0\r\n\r\n"),
                   (False, b"HTTP/1.0 200 Connection established\r\n\r\n220 mail ESMTP\r\n"),
                   (True, b"HELO x\r\n"))
    [row] = ctx.rows("http")
    assert (row.method, row.uri, row.status_code) == ("CONNECT", "mail:25", 200)
    [tun] = ctx.rows("tunnel")
    assert (tun.orig_p, tun.tunnel_type, tun.action) == (0, "Tunnel::HTTP", "Tunnel::DISCOVER")


# -- resource caps ---------------------------------------------------------------------------

def test_endless_line_is_capped():
    p = HTTPParser()
    evs = []
    for _ in range(40):
        evs += p.data(True, b"A" * 65536, 1.0)
    assert any(type(e) is ev.Weird and e.name == "contentline_size_exceeded" for e in evs)
    assert p.stopped and len(p._buf[True]) <= (1 << 20) + 65536


def test_decompression_bomb_is_capped(monkeypatch):
    import analysis.protocols.http.parser as parser
    monkeypatch.setattr(parser, "MAX_DECOMPRESSED", 1 << 20)
    z = gzip.compress(b"\0" * (8 << 20))
    ctx = exchange((True, b"GET / HTTP/1.1\r\n\r\n"),
                   (False, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(z) + z))
    assert ctx.rows("http")[0].response_body_len <= 1 << 20


# -- misc ---------------------------------------------------------------------------------

def test_sniffer():
    assert sniff(b"<!DOCTYPE html><html>") == "text/html"
    assert sniff(b"HTTP/1.0 403 Forbidden\r\n\r\n<html>") == "text/plain"
    assert sniff(b"MZ\x90\x00") == "application/x-dosexec"
    assert sniff(b"%PDF-1.4") == "application/pdf"
    assert sniff(b"document.write(\"x\")") == "application/javascript"
    assert sniff(b"short") is None and sniff(b"\x00\x01\x02binary") is None


def test_spec_registration():
    assert SPEC.name == "http" and (80, "tcp") in SPEC.ports and (8888, "tcp") in SPEC.ports
    assert SPEC.dpd_orig[0].match(b"GET / HTTP/1.1") and SPEC.dpd_resp[0].match(b"HTTP/1.1 200")
    assert not SPEC.dpd_orig[0].match(b"\x16\x03\x01")
    assert {"http_request", "http_reply", "http_header", "http_message_done"} <= set(SPEC.events)


# -- corpus ---------------------------------------------------------------------------------

def _http_cases():
    cases_file = CORPUS / "zeek" / "cases.json"
    if not cases_file.exists():
        return []
    cases = json.loads(cases_file.read_text())["cases"]
    return [c for c in cases if "http.log" in c["baselines"]]


@pytest.mark.parametrize("case", _http_cases(), ids=lambda c: c["test"])
def test_conformance_case(case, tmp_path):
    sys.path.insert(0, str(CORPUS))
    from compare_logs import compare_logs

    from analysis.logs.files import DirectoryLogSink
    root = CORPUS / "zeek"
    opts = HTTPOptions(default_capture_password=any("default_capture_password = T" in r for r in case["redefs"]))
    sink = DirectoryLogSink(tmp_path, "tsv")
    for ctx in run_trace(HTTPAnalyzer, root / case["trace"], opts, udp=False, marks=True, detach=False):
        for path, rec in ctx.logs:
            sink.write(path, rec)
    sink.flush()
    sink.close()
    res = compare_logs(root / case["baselines"]["http.log"], tmp_path / "http.log")
    assert res.passed, json.dumps(res.to_dict(), default=str)[:2000]


def test_conformance_cases_present_or_skipped():
    if not _http_cases():
        pytest.skip("conformance corpus not available (STARLING_CONFORMANCE)")
    assert len(_http_cases()) >= 29


def test_engine_end_to_end(tmp_path):
    """The real engine (reassembly, port attachment, DPD) writes http.log for a corpus trace."""
    case = next((c for c in _http_cases() if c["test"].endswith("http.x-gzip")), None)
    if case is None:
        pytest.skip("conformance corpus not available")
    from analysis.config import AnalysisConfig
    from analysis.engine import analyze_file
    from analysis.logs.reader import read_tsv
    analyze_file(CORPUS / "zeek" / case["trace"], tmp_path, AnalysisConfig(strict_analyzers=True))
    rows = list(read_tsv(tmp_path / "http.log").rows())
    assert len(rows) == 1
    row = rows[0]
    assert row["response_body_len"] == 19 and row["resp_mime_types"] == ["text/plain"]


def test_inflate_is_chunked():
    from analysis.protocols.http.parser import DECODE_CHUNK, _Decoder
    chunks = list(_Decoder(True).feed(gzip.compress(b"\0" * (5 << 20))))
    assert sum(map(len, chunks)) == 5 << 20
    assert max(map(len, chunks)) <= DECODE_CHUNK

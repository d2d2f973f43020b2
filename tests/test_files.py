"""files.log: Zeek's file analysis framework as the protocol analyzers feed it.

Hand-made exchanges check one rule each (the fuid is the one the protocol log names, sizes and
sizes from headers, decoding of MIME transfer encodings, hashes, byte ranges over several
connections, load switches); the corpus cases run through the real engine and the corpus
comparator (skipped cleanly without ``STARLING_CONFORMANCE``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "protocols"))

from harness import Conn, Recorder  # noqa: E402

from analysis.files import FileState, FilesInfo, files_record_type  # noqa: E402
from analysis.logs.schema import columns  # noqa: E402
from analysis.protocols.http import HTTPAnalyzer, HTTPOptions  # noqa: E402
from analysis.protocols.mime import BodyDecoder  # noqa: E402
from analysis.protocols.smtp import SMTPAnalyzer, SMTPOptions  # noqa: E402
from analysis.zeek_scripts import configure  # noqa: E402

CORPUS = Path(os.environ.get("STARLING_CONFORMANCE", ROOT.parent / "shared" / "conformance")) / "zeek"

BASE_COLUMNS = ["ts", "fuid", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "source", "depth",
                "analyzers", "mime_type", "filename", "duration", "local_orig", "is_orig", "seen_bytes",
                "total_bytes", "missing_bytes", "overflow_bytes", "timedout", "parent_fuid"]


def http(*chunks, options=None, conn=None, gaps=()):
    """(is_orig, bytes | int) chunks through a fresh HTTP analyzer (an int is a content gap)."""
    ctx = Recorder(conn or Conn("Ctest", "10.0.0.1", 40000, "93.184.216.34", 80, start_time=1.0), options)
    a = HTTPAnalyzer(ctx)
    ts = 1.0
    for is_orig, data in chunks:
        ts += 0.25
        if isinstance(data, int):
            a.gap(is_orig, data, ts)
        else:
            a.data(is_orig, data, ts)
    a.eof(False, ts)
    a.eof(True, ts)
    a.done(ts + 1)
    return ctx


GET = (True, b"GET /f HTTP/1.1\r\nHost: example.com\r\n\r\n")


def test_schema_is_zeek9s():
    assert [c.name for c in columns(FilesInfo)] == BASE_COLUMNS
    both = [c.name for c in columns(files_record_type(True, True))]
    assert both == BASE_COLUMNS + ["md5", "sha1", "sha256", "extracted", "extracted_cutoff", "extracted_size"]
    assert [c.zeek_type for c in columns(FilesInfo)][9] == "set[string]"


def test_http_body_is_one_file_named_by_http_log():
    body = b"hello world, this is a plain text body\n" * 3
    ctx = http(GET, (False, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)),
               (False, body[:50]), (False, body[50:]))
    [h] = ctx.rows("http")
    [f] = ctx.rows("files")
    assert h.resp_fuids == [f.fuid] and h.resp_mime_types == ["text/plain"]
    assert (f.source, f.depth, f.is_orig, f.mime_type) == ("HTTP", 0, False, "text/plain")
    assert (f.seen_bytes, f.total_bytes, f.missing_bytes, f.timedout) == (len(body), len(body), 0, False)
    assert (f.uid, f.orig_h, f.resp_p) == ("Ctest", "10.0.0.1", 80)
    assert f.local_orig is False            # the sender is the (public) server
    assert f.duration == pytest.approx(0.25)  # first to last data
    assert f.analyzers == [] and f.md5 is None and f.extracted is None  # default config: columns, no hashing
    assert [c.name for c in columns(type(f))][len(BASE_COLUMNS):] == [
        "md5", "sha1", "sha256", "extracted", "extracted_cutoff", "extracted_size"]


def test_http_gzip_body_counts_decoded_bytes_and_no_total():
    import gzip
    plain = b"0123456789" * 500
    z = gzip.compress(plain)
    ctx = http(GET, (False, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(z) + z))
    [f] = ctx.rows("files")
    assert f.seen_bytes == len(plain) and f.total_bytes is None


def test_http_multipart_upload_files_have_filenames_and_request_side():
    parts = (b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"; filename=\"one.txt\"\r\n\r\n"
             b"first file content\r\n--XyZ\r\nContent-Disposition: form-data; name=\"b\"; filename=\"two.bin\"\r\n\r\n"
             b"\x00\x01\x02second\r\n--XyZ--\r\n")
    ctx = http((True, b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(parts) + parts),
               (False, b"HTTP/1.1 204 No Content\r\n\r\n"))
    [h] = ctx.rows("http")
    files = ctx.rows("files")
    assert [f.fuid for f in files] == h.orig_fuids
    assert [(f.filename, f.seen_bytes, f.is_orig, f.total_bytes) for f in files] == [
        ("one.txt", 18, True, None), ("two.bin", 9, True, None)]
    assert all(f.local_orig for f in files)     # sent by 10.0.0.1


def test_hash_all_files_digests_and_gap_drops_them():
    body = bytes(range(256)) * 20
    opts = HTTPOptions(files_hash_all=True, files_extract_columns=False)
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    [f] = http(GET, (False, reply + body), options=opts).rows("files")
    assert (f.md5, f.sha1, f.sha256) == (hashlib.md5(body).hexdigest(), hashlib.sha1(body).hexdigest(),
                                         hashlib.sha256(body).hexdigest())
    assert sorted(f.analyzers) == ["MD5", "SHA1", "SHA256"]
    assert [c.name for c in columns(type(f))][-3:] == ["md5", "sha1", "sha256"]
    [g] = http(GET, (False, reply + body[:1000]), (False, 500), (False, body[1500:]), options=opts).rows("files")
    assert g.md5 is None and g.missing_bytes == 500 and g.seen_bytes == len(body) - 500


def _range_conn(uid, port, first, data, total, ts0):
    req = (b"GET /big.bin HTTP/1.1\r\nHost: files.example\r\nRange: bytes=%d-%d\r\n\r\n"
           % (first, first + len(data) - 1))
    rep = (b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n\r\n"
           % (first, first + len(data) - 1, total, len(data)))
    ctx = Recorder(Conn(uid, "192.168.0.9", port, "93.184.216.34", 80, start_time=ts0))
    a = HTTPAnalyzer(ctx)
    a.data(True, req, ts0)
    a.data(False, rep + data, ts0 + 0.5)
    return a, ctx


def test_range_requests_over_connections_are_one_file():
    """Zeek names range-request files by host and URI: two connections fetching two pieces give
    one fuid, a row per connection, the hole between the pieces as missing bytes."""
    a1, c1 = _range_conn("Cone", 50001, 0, b"A" * 100, 10000, 10.0)
    a2, c2 = _range_conn("Ctwo", 50002, 300, b"B" * 50, 10000, 11.0)
    a1.done(20.0)
    assert c1.rows("files") == []                 # the other connection still carries the file
    a2.done(21.0)
    rows = c2.rows("files")
    assert sorted(r.uid for r in rows) == ["Cone", "Ctwo"]
    assert len({r.fuid for r in rows}) == 1
    assert c1.rows("http")[0].resp_fuids == [rows[0].fuid]
    for r in rows:
        assert (r.seen_bytes, r.total_bytes, r.missing_bytes, r.timedout) == (150, 10000, 200, True)
        assert r.duration == pytest.approx(1.0) and r.local_orig is False


def test_body_decoder_follows_zeek_mime():
    qp = BodyDecoder("Quoted-Printable")
    assert qp.line(b"a=3Db  ") == b"a=b\r\n" and qp.line(b"soft=") == b"soft" and qp.line(b"=zz") == b"=zz\r\n"
    assert qp.bad
    b64 = BodyDecoder("base64")
    assert b64.line(b"aGVsbG8gd29y") + b64.line(b"bGQ=") == b"hello world"
    part = BodyDecoder("7bit", in_multipart=True)       # the CRLF before a boundary is not content
    assert part.line(b"x") + part.line(b"y") == b"x\r\ny"
    top = BodyDecoder("")
    assert top.line(b"x") + top.line(b"y") == b"x\r\ny\r\n"
    bad = BodyDecoder("base64")
    assert bad.line(b"!!!!") == b"" and bad.finish() == b"" and bad.bad is True


def smtp_session(message: bytes, options=None):
    ctx = Recorder(Conn("Csmtp", "10.1.1.1", 1470, "203.0.113.25", 25, start_time=1.0), options)
    a = SMTPAnalyzer(ctx)
    ts = 1.0
    for is_orig, data in ((False, b"220 mx ESMTP\r\n"), (True, b"EHLO me\r\n"), (False, b"250 ok\r\n"),
                          (True, b"MAIL FROM:<a@x>\r\n"), (False, b"250 ok\r\n"), (True, b"RCPT TO:<b@y>\r\n"),
                          (False, b"250 ok\r\n"), (True, b"DATA\r\n"), (False, b"354 go\r\n"),
                          (True, message + b".\r\n"), (False, b"250 queued\r\n"), (True, b"QUIT\r\n"),
                          (False, b"221 bye\r\n")):
        ts += 0.1
        a.data(is_orig, data, ts)
    a.done(ts + 1)
    return ctx


def test_smtp_entities_are_decoded_files():
    payload = bytes(range(200))
    b64 = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    msg = (b"From: a@x\r\nSubject: t\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n"
           b"preamble\r\n--BB\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"caf=C3=A9 line one\r\nsoft=\r\nbreak\r\n--BB\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Disposition: attachment; filename=\"blob.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + b64 + b"--BB--\r\n")
    ctx = smtp_session(msg, SMTPOptions(files_hash_all=True))
    [s] = ctx.rows("smtp")
    text, blob = ctx.rows("files")
    assert s.fuids == [text.fuid, blob.fuid]
    assert (text.source, text.depth, text.is_orig, text.local_orig) == ("SMTP", 2, True, True)
    assert text.seen_bytes == len("café line one\r\nsoftbreak\r\n".encode())
    assert (blob.depth, blob.filename, blob.seen_bytes) == (3, "blob.bin", 200)
    assert blob.md5 == hashlib.md5(payload).hexdigest()


def test_smtp_broken_base64_is_no_traceback():
    msg = (b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"@@@@not base64 at all\r\nAAA\r\n")
    ctx = smtp_session(msg)
    [f] = ctx.rows("files")
    assert f.seen_bytes > 0 and f.depth == 1


def test_file_state_sniffs_short_files_at_the_end():
    f = FileState("Fx", "HTTP", False, 5.0)
    f.data(b"%PDF-1.4 tiny", 5.5)
    assert f.mime_type is None and f.finish() and f.mime_type == "application/pdf"


def test_load_switches_and_bare_mode_enablement():
    bare = configure(["base/protocols/http"], bare=True)
    o = bare.analyzer_options["http"]
    assert bare.log_enabled("files") and not (o.files_hash_columns or o.files_extract_columns)
    assert not configure(["base/protocols/dns"], bare=True).log_enabled("files")
    hashed = configure(["base/protocols/http", "frameworks/files/hash-all-files"], bare=True)
    o = hashed.analyzer_options["http"]
    assert o.files_hash_all and o.files_hash_columns and not o.files_extract_columns
    full = configure(["frameworks/files/hash-all-files"], bare=False)
    for name in ("http", "smtp", "ftp-data"):
        o = full.analyzer_options[name]
        assert o.files_hash_columns and o.files_extract_columns and o.files_hash_all
    assert not any("files" in n for n in full.notes)
    assert "http" not in configure([], bare=False).analyzer_options   # defaults are Zeek's default mode


# -- the corpus, through the real engine ----------------------------------------------------------

def _case(name):
    f = CORPUS / "cases.json"
    if not f.is_file():
        pytest.skip(f"conformance corpus not found at {CORPUS} (STARLING_CONFORMANCE)")
    c = next((c for c in json.loads(f.read_text())["cases"] if c["test"] == name), None)
    if c is None:
        pytest.skip(f"case {name} not in the corpus")
    return c


@pytest.mark.parametrize("name", [
    "scripts.base.protocols.smtp.attachment",
    "scripts.base.frameworks.file-analysis.big-bof-buffer",
    "scripts.base.protocols.http.concurrent-range-requests",
])
def test_corpus_case_matches_zeek(name, tmp_path):
    case = _case(name)
    sys.path.insert(0, str(ROOT / "bench"))
    import conformance

    res = conformance.run_case((str(CORPUS), case, {"files"}, [], str(CORPUS.parent / "compare_logs.py"),
                                str(tmp_path)))
    files = res["logs"]["files"]
    assert files["passed"], files
    assert files["rows_matched"] == files["rows_total"] > 0


def test_ftp_data_files_through_the_engine(tmp_path):
    case = _case("scripts.base.protocols.ftp.ftp-ipv6")
    from analysis.engine import analyze_file
    from analysis.logs.reader import read_tsv

    cfg = configure(case["loads"], case["redefs"], bare=case["bare"])
    cfg.ignore_checksums = case["ignore_checksums"]
    analyze_file(CORPUS / case["trace"], tmp_path, cfg)
    files = list(read_tsv(tmp_path / "files.log").rows())
    ftp = [r["fuid"] for r in read_tsv(tmp_path / "ftp.log").rows() if r["fuid"]]
    assert files and all(r["source"] == "FTP_DATA" for r in files)
    assert set(ftp) <= {r["fuid"] for r in files}
    assert all(r["seen_bytes"] > 0 and r["missing_bytes"] == 0 for r in files)


def test_multipart_byteranges_parts_are_placed_by_their_content_range():
    parts = (b"--SEP\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-9/1000\r\n\r\n"
             b"0123456789\r\n--SEP\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 500-504/1000\r\n\r\n"
             b"abcde\r\n--SEP--\r\n")
    ctx = http((True, b"GET /r HTTP/1.1\r\nHost: ranges.example\r\nRange: bytes=0-9,500-504\r\n\r\n"),
               (False, b"HTTP/1.1 206 Partial Content\r\nContent-Type: multipart/byteranges; boundary=SEP\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(parts) + parts))
    [h] = ctx.rows("http")
    [f] = ctx.rows("files")
    assert h.resp_fuids == [f.fuid]              # one file, named once per connection
    assert (f.seen_bytes, f.total_bytes, f.missing_bytes, f.timedout) == (15, 1000, 490, True)


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "7bit", "x-unknown"])
def test_body_decoder_never_raises_on_random_lines(encoding):
    import random
    rng = random.Random(encoding)
    for in_multipart in (False, True):
        d = BodyDecoder(encoding, in_multipart)
        total = given = 0
        for _ in range(300):
            line = bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
            given += len(line)
            total += len(d.line(line))
        total += len(d.finish())
        if encoding == "base64":
            assert total <= given * 3 // 4 + 3
        elif encoding == "quoted-printable":
            assert total <= given + 2 * 300
        else:   # binary: every byte plus a CRLF per line, minus the one a boundary owns
            assert total == given + 2 * 300 - (2 if in_multipart else 0)

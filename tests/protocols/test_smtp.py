"""SMTP analyzer and the MIME parser: units, smtp.log against the Zeek corpus, caps, fuzz."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Conn, Recorder, case, check_case, corpus_trace, streams  # noqa: E402

from analysis.protocols import mime  # noqa: E402
from analysis.protocols.smtp import (SMTPAnalyzer, SMTPOptions, SMTPParser, SMTPReply, SMTPRequest,  # noqa: E402
                                     extract_email_addrs, extract_ip_addresses, find_address_in_smtp_header,
                                     split_mime_email_addresses)


def _conn():
    return Conn("Ctest", "10.0.0.1", 40000, "10.0.0.2", 25, start_time=1.0)


def _run(lines, options=None):
    ctx = Recorder(_conn(), options or SMTPOptions())
    a = SMTPAnalyzer(ctx)
    t = 1.0
    for is_orig, data in lines:
        a.data(is_orig, data, t)
        t += 1.0
    a.done(t)
    return ctx


MAIL = [
    (False, b"220 mx ESMTP\r\n"), (True, b"EHLO client.example\r\n"),
    (False, b"250-mx hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
    (True, b"MAIL FROM:<a@example.org> SIZE=10\r\n"), (False, b"250 ok\r\n"),
    (True, b"RCPT TO:<b@example.net>\r\n"), (False, b"250 ok\r\n"),
    (True, b"RCPT TO:<c@example.net>\r\n"), (False, b"250 ok\r\n"),
    (True, b"DATA\r\n"), (False, b"354 go\r\n"),
    (True, b"Received: from relay (relay [192.0.2.7]) by mx\r\n"
           b"From: \"A, B\" <a@example.org>\r\nTo: b@example.net,\r\n c@example.net\r\n"
           b"Subject: =?utf-8?q?caf=C3=A9?=\r\nX-Originating-IP: [198.51.100.4]\r\n"
           b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n"
           b"--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n..dot line\r\n"
           b"--XX\r\nContent-Type: application/octet-stream\r\n\r\nQUJD\r\n--XX--\r\n.\r\n"),
    (False, b"250 queued as 1234\r\n"), (True, b"QUIT\r\n"), (False, b"221 bye\r\n"),
]


def test_one_transaction_row():
    ctx = _run(MAIL)
    rows = ctx.rows("smtp")
    assert len(rows) == 1
    r = rows[0]
    assert (r.trans_depth, r.helo, r.mailfrom) == (1, "client.example", "a@example.org")
    assert r.rcptto == ["b@example.net", "c@example.net"]
    assert r.to == ["b@example.net", "c@example.net"]
    assert r.from_ == '"A, B" <a@example.org>'
    assert r.subject == "=?utf-8?q?caf=C3=A9?="          # RFC 2047 left encoded, as Zeek logs it
    assert r.x_originating_ip == "198.51.100.4"
    assert r.path == ["10.0.0.2", "10.0.0.1", "192.0.2.7"]
    assert r.last_reply == "250 queued as 1234" and r.tls is False
    assert len(r.fuids) == 2 and all(f.startswith("F") for f in r.fuids)
    assert ctx.confirmed
    names = [e[0] for e in ctx.events]
    assert "smtp_request" in names and "smtp_reply" in names


def test_pipelined_commands_pair_with_replies():
    p = SMTPParser()
    p.feed(False, b"220 hi\r\n", 1.0)
    p.feed(True, b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", 2.0)
    out = p.feed(False, b"250 hello\r\n250 sender ok\r\n250 rcpt ok\r\n", 3.0)
    assert [(e.code, e.cmd) for e in out if type(e) is SMTPReply] == [(250, "EHLO"), (250, "MAIL"), (250, "RCPT")]


def test_rejected_data_turns_following_lines_into_commands():
    p = SMTPParser()
    p.feed(False, b"220 hi\r\n", 1.0)
    p.feed(True, b"EHLO x\r\n", 1.0)
    p.feed(False, b"250 ok\r\n", 1.0)
    p.feed(True, b"DATA\r\n", 2.0)
    p.feed(False, b"503 no rcpt\r\n", 2.0)
    out = p.feed(True, b"Hello there\r\n.\r\nQUIT\r\n", 3.0)
    assert [e for e in out if type(e) is SMTPRequest] == [SMTPRequest("QUIT", "", 3.0)]


def test_invalid_transactions_weird_and_cap():
    ctx = _run([(False, b"220 hi\r\n")] + [(True, b"RCPT TO:<x@y>\r\n"), (False, b"503 no\r\n")] * 30)
    names = [w[0] for w in ctx.weirds]
    assert names[0] == "smtp_mail_transaction_invalid" and ("smtp_mail_transaction_invalid",
                                                            "rcpt to missing mail from") in ctx.weirds
    assert "smtp_excessive_invalid_mail_transactions" in names and ctx.violations


def test_starttls_hands_off_and_marks_row():
    ctx = _run([(False, b"220 hi\r\n"), (True, b"EHLO x\r\n"), (False, b"250 ok\r\n"), (True, b"STARTTLS\r\n"),
                (False, b"220 go ahead\r\n"), (True, b"\x16\x03\x01\x02\x00\x01\x00")])
    assert ctx.handoffs == ["ssl"]
    assert ("smtp_starttls", ctx.conn) in ctx.events
    rows = ctx.rows("smtp")
    assert len(rows) == 1 and rows[0].tls is True and rows[0].last_reply == "220 go ahead"


def test_bdat_chunks():
    ctx = _run([(False, b"220 hi\r\n"), (True, b"EHLO x\r\n"), (False, b"250 ok\r\n"),
                (True, b"MAIL FROM:<a@b.c>\r\n"), (False, b"250 ok\r\n"), (True, b"RCPT TO:<d@e.f>\r\n"),
                (False, b"250 ok\r\n"), (True, b"BDAT 26\r\nSubject: chunked\r\n\r\nbody\r\n"),
                (False, b"250 ok\r\n"), (True, b"BDAT 0 LAST\r\n"), (False, b"250 done\r\n"),
                (True, b"QUIT\r\n"), (False, b"221 bye\r\n")])
    rows = ctx.rows("smtp")
    assert len(rows) == 1 and rows[0].subject == "chunked" and rows[0].last_reply == "250 done"


def test_not_smtp_is_a_violation():
    ctx = _run([(False, b"SSH-2.0-OpenSSH_9.0\r\n")])
    assert ctx.violations and not ctx.rows("smtp")


def test_helpers_match_zeek():
    assert extract_email_addrs("FROM:<a@b.org> SIZE=1") == ["a@b.org"]
    assert extract_email_addrs("TO: <x@y.z>,<q@r.s>") == ["x@y.z", "q@r.s"]
    assert split_mime_email_addresses('"Doe, J" <j@d.org>, k@d.org') == ['"Doe, J" <j@d.org>', "k@d.org"]
    assert extract_ip_addresses("from a (a [1.2.3.4]) by b") == ["1.2.3.4"]
    assert find_address_in_smtp_header("from x ([10.0.0.1]) by y (1.2.3.4) ") == "1.2.3.4"
    assert find_address_in_smtp_header("id 1.2.3.4.5") == ""


def test_mime_parser_structure_and_caps():
    p = mime.MimeParser(max_depth=2, max_headers=3, max_header_len=100)
    out: list = []
    for line in [b"Content-Type: multipart/mixed; boundary=a", b"", b"--a",
                 b"Content-Type: multipart/mixed; boundary=b", b"", b"--b",
                 b"Content-Type: multipart/mixed; boundary=c", b"", b"--c", b"inner", b"--b--", b"--a--"]:
        p.line(line, out)
    p.finish(out)
    kinds = [type(e).__name__ for e in out]
    assert kinds.count("BeginEntity") == kinds.count("EndEntity") == 3
    assert mime.MimeWeird("MIME_excessive_nesting", "2") in out
    out = []
    p = mime.MimeParser(max_headers=3, max_header_len=100)
    for i in range(10):
        p.line(b"X-H%d: v" % i, out)
    p.line(b"X-Long: " + b"a" * 200, out)
    p.line(b"", out)
    assert sum(type(e) is mime.Header for e in out) == 3
    assert any(type(e) is mime.MimeWeird and e.name == "MIME_too_many_headers" for e in out)


def test_content_type_parameters():
    assert mime.parse_content_type('multipart/mixed;\tboundary="a;b"; x=1') == (
        "multipart/mixed", {"boundary": "a;b", "x": "1"})
    assert mime.parse_content_type("TEXT/Plain") == ("text/plain", {})


SMTP_CASES = [
    ("scripts.base.protocols.smtp.basic", ["smtp.log"]),
    ("scripts.base.protocols.smtp.attachment", ["smtp.log"]),
    ("scripts.base.protocols.smtp.attachment-msg", ["smtp.log"]),
    ("scripts.base.protocols.smtp.mail-transactions-invalid", ["smtp.log", "weird.log"]),
]


@pytest.mark.parametrize("name,logs", SMTP_CASES)
def test_corpus_case(name, logs, tmp_path):
    c = case(name)

    def factory(ctx):
        return SMTPAnalyzer(ctx) if ctx.conn.resp_p == 25 else None

    check_case(c, factory, logs, tmp_path, default_source="SMTP")


def test_fuzz_mutated_corpus_payloads_never_raise():
    trace = corpus_trace("smtp.pcap")
    if trace is None:
        pytest.skip("conformance corpus not found")
    conv = next(c for c in streams(trace) if c.resp_p == 25)
    rng = random.Random(7)
    deadline = time.monotonic() + 2.0
    runs = 0
    while time.monotonic() < deadline:
        ctx = Recorder(conv, SMTPOptions(max_line_length=2048, max_pending_commands=50))
        a = SMTPAnalyzer(ctx)
        for is_orig, data, ts in conv.chunks:
            b = bytearray(data)
            for _ in range(rng.randrange(4)):
                op = rng.randrange(3)
                if op == 0 and b:
                    b[rng.randrange(len(b))] = rng.choice(b"\r\n.-:<>@ \x00\xff0123456789")
                elif op == 1:
                    b[rng.randrange(len(b) + 1):0] = rng.choice(
                        [b"\r\n.\r\n", b"DATA\r\n", b"BDAT 5\r\n", b"--", b"\r\n\r\n", b"354 x\r\n"])
                elif b:
                    del b[rng.randrange(len(b)):rng.randrange(len(b) + 1)]
            a.data(is_orig, bytes(b), ts)
            assert len(a.parser._buf[0]) <= 2048 and len(a.parser._buf[1]) <= 2048
            assert len(a.parser.pending) <= 50
        a.done(conv.chunks[-1][2])
        runs += 1
    assert runs > 5


def test_gap_ends_message_and_recovers():
    ctx = Recorder(_conn(), SMTPOptions())
    a = SMTPAnalyzer(ctx)
    for is_orig, data in MAIL[:11]:
        a.data(is_orig, data[:200], 1.0)
    a.gap(True, 1000, 2.0)
    a.data(True, b"more text that is lost\r\n", 3.0)
    a.data(False, b"250 ok\r\n", 4.0)
    a.data(True, b"MAIL FROM:<z@example.org>\r\n", 5.0)
    a.data(False, b"250 ok\r\n", 6.0)
    a.done(7.0)
    rows = ctx.rows("smtp")
    assert rows[0].mailfrom == "a@example.org" and rows[-1].mailfrom == "z@example.org"

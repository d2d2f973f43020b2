"""FTP analyzer: parser, Zeek's helper semantics, ftp.log against the Zeek corpus, caps, fuzz."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Conn, Recorder, case, check_case, corpus_trace, streams  # noqa: E402

from analysis.protocols import ftp  # noqa: E402
from analysis.protocols.ftp import (EXPECTED, FTPAnalyzer, FTPDataAnalyzer, FTPOptions, FTPParser,  # noqa: E402
                                    FTPReply, FTPRequest, FTPWeird, build_path_compressed,
                                    decode_base64_zeek, extract_count, extract_path, normalize_path,
                                    parse_eftp, parse_ftp_epsv, parse_ftp_pasv, parse_ftp_port)


def _conn(resp_p=21, orig="10.0.0.1", resp="10.0.0.2"):
    return Conn("Ctest", orig, 40000, resp, resp_p, start_time=1.0)


# -- parser -----------------------------------------------------------------------------------

def test_parser_commands_and_multiline_replies():
    p = FTPParser()
    ev = p.feed(False, b"220-Welcome\r\n  more text\r\n220 ready\r\n", 1.0)
    assert ev == [FTPReply(220, "Welcome", True, 1.0), FTPReply(0, "  more text", True, 1.0),
                  FTPReply(220, "ready", False, 1.0)]
    ev = p.feed(True, b"user anon", 2.0) + p.feed(True, b"ymous\nPASS  x y \r\n", 2.5)
    assert ev == [FTPRequest("USER", "anonymous", 2.5), FTPRequest("PASS", "x y ", 2.5)]


def test_parser_command_length_cap_only_after_confirmation():
    p = FTPParser(max_command_length=5)
    assert p.feed(True, b"TOOLONGCMD x\r\n", 1.0) == []          # not yet FTP: silently ignored
    p.feed(True, b"USER a\r\n", 1.0)
    assert p.feed(True, b"TOOLONGCMD x\r\n", 1.0) == [FTPWeird("FTP_max_command_length_exceeded", "10 > 5", "X")]
    assert p.feed(True, b"ab\r\n", 1.0) == [FTPWeird("FTP_invalid_command", "", "")]


def test_parser_line_cap_bounds_memory():
    p = FTPParser(max_line_length=1000)
    out = []
    for _ in range(50):
        out += p.feed(True, b"A" * 500, 1.0)
    assert FTPWeird("contentline_size_exceeded", "", "") in out
    assert len(p._buf[1]) <= 1000
    assert p.feed(True, b"rest of the long line\r\nNOOP\r\n", 2.0) == [FTPRequest("NOOP", "", 2.0)]


# -- Zeek helper semantics ----------------------------------------------------------------------

@pytest.mark.parametrize("given,want", [
    ("./../foo", "../foo"), ("/1/./2/3", "/1/2/3"), ("/1/2/../3", "/1/3"), ("1/2//3///", "1/2/3"),
    ("~/zeek/testing/../././.", "~/zeek"), ("./zeek", "./zeek"), ("../zeek/testing/..", "../zeek"),
    ("./zeek/..", "."), ("./zeek/../..", ".."), ("/..", "/.."), ("~/..", "~/.."), ("/../..", "/../.."),
    ("zeek/..", ""), ("zeek/../..", ".."), ("../..", "../.."),
])
def test_normalize_path_matches_zeek_compress_path(given, want):
    assert normalize_path(given) == want


def test_paths_and_numbers():
    assert build_path_compressed(".", "robots.txt") == "./robots.txt"
    assert build_path_compressed("/pub/", "../etc/x") == "/etc/x"
    assert build_path_compressed("/pub", "/abs") == "/abs"
    assert extract_path('257 "/home/ftp" is current directory') == "/home/ftp"
    assert extract_path("257 /var/tmp is cwd") == "/var/tmp"
    assert extract_path("no path here") == ""
    assert extract_count("150 Opening data for rfc1001.txt (154427 bytes)", False) == 154427
    assert extract_count("nothing", False) == 0


def test_port_parsers():
    assert parse_ftp_port("10,0,0,1,4,31") == ("10.0.0.1", 1055)
    assert parse_ftp_port("114,115") is None
    assert parse_ftp_port("300,0,0,1,4,31") is None
    assert parse_ftp_pasv("Entering Passive Mode (164,107,123,6,183,187)") == ("164.107.123.6", 47035)
    assert parse_ftp_pasv("Entering Passive Mode 1,2,3,4,0,21") == ("1.2.3.4", 21)
    assert parse_ftp_epsv("Entering Extended Passive Mode (|||57086|)") == ("::", 57086)
    assert parse_eftp("|2|2001:470:1f11:81f:c999:d94:aa7c:2e3e|49189|") == ("2001:470:1f11:81f:c999:d94:aa7c:2e3e", 49189)
    assert parse_eftp("|1|10.0.0.1|99999|") is None
    assert parse_eftp("") is None


def test_base64_like_zeek():
    assert decode_base64_zeek(b"aGVsbG8=") == (b"hello", None)
    assert decode_base64_zeek(b"aGVs bG8=") == (None, "character 32 ignored by Base64 decoding")
    data, why = decode_base64_zeek(b"aGVsbG")
    assert data is None and why.startswith("incomplete base64 group")


# -- analyzer behaviour -------------------------------------------------------------------------

def _session(lines, options=None, resp_p=21):
    ctx = Recorder(_conn(resp_p), options or FTPOptions())
    a = FTPAnalyzer(ctx)
    t = 1.0
    for is_orig, text in lines:
        a.data(is_orig, text, t)
        t += 1.0
    a.done(t)
    return ctx


def test_pairing_cwd_and_passive_channel():
    ctx = _session([
        (False, b"220 hi\r\n"), (True, b"USER bob\r\n"), (False, b"331 pw\r\n"), (True, b"PASS secret\r\n"),
        (False, b"230 ok\r\n"), (True, b"CWD /pub\r\n"), (False, b"250 ok\r\n"), (True, b"PASV\r\n"),
        (False, b"227 Entering Passive Mode (10,0,0,2,4,1)\r\n"), (True, b"RETR a/../b.txt\r\n"),
        (False, b"150 Opening (42 bytes)\r\n"), (False, b"226 done\r\n"), (True, b"QUIT\r\n"), (False, b"221 bye\r\n"),
    ])
    rows = ctx.rows("ftp")
    assert [r.command for r in rows] == ["PASV", "RETR"]
    pasv, retr = rows
    assert (pasv.dc_passive, pasv.dc_orig_h, pasv.dc_resp_h, pasv.dc_resp_p) == (True, "10.0.0.1", "10.0.0.2", 1025)
    assert pasv.password == "<hidden>" and pasv.user == "bob"
    assert retr.arg == "ftp://10.0.0.2/pub/b.txt" and retr.file_size == 42 and retr.reply_code == 226
    assert retr.dc_passive is None          # the channel belongs to the PASV row only
    assert ctx.expected == [("10.0.0.1", "10.0.0.2", 1025, "ftp-data")]
    assert ctx.confirmed and ("ftp_request", ctx.conn, "USER", "bob") in ctx.events


def test_anonymous_password_and_logged_commands_redef():
    opts = FTPOptions(logged_commands=frozenset({"USER", "PASS"}))
    ctx = _session([(False, b"220 hi\r\n"), (True, b"USER anonymous\r\n"), (False, b"331 pw\r\n"),
                    (True, b"PASS me@x\r\n"), (False, b"230 ok\r\n")], opts)
    rows = ctx.rows("ftp")
    assert [(r.command, r.arg, r.password) for r in rows] == [("USER", "anonymous", None),
                                                                ("PASS", "me@x", "me@x")]


def test_session_without_logged_command_writes_one_row():
    ctx = _session([(False, b"220 hi\r\n"), (True, b"USER x\r\n"), (False, b"530 no\r\n"), (True, b"QUIT\r\n"),
                    (False, b"221 bye\r\n")])
    rows = ctx.rows("ftp")
    assert len(rows) == 1 and rows[0].command == "QUIT" and rows[0].reply_code == 221


def test_too_many_pending_commands_is_capped():
    ctx = _session([(True, b"".join(b"NOOP\r\n" for _ in range(50)))])
    assert ("FTP_too_many_pending_commands", "20") in ctx.weirds
    assert len(ctx.weirds) == 31       # the "<init>" shim holds one of the 20 slots


def test_non_ftp_is_a_violation():
    ctx = _session([(False, b"HTTP/1.1 200 OK\r\n")])
    assert ctx.violations and not ctx.confirmed


def test_auth_tls_hands_off():
    ctx = _session([(False, b"220 hi\r\n"), (True, b"AUTH TLS\r\n"), (False, b"234 go\r\n"),
                    (True, b"\x16\x03\x01\x00\x05hello")])
    assert ctx.handoffs == ["ssl"]
    assert ("ftp_starttls", ctx.conn) in ctx.events


def test_data_channel_gets_fuid_and_mime_type():
    EXPECTED.clear()
    ctl = Recorder(_conn(), FTPOptions())
    a = FTPAnalyzer(ctl)
    a.data(False, b"220 hi\r\n", 1.0)
    a.data(True, b"EPSV\r\n", 2.0)
    a.data(False, b"229 Entering Extended Passive Mode (|||5000|)\r\n", 3.0)
    a.data(True, b"RETR notes.txt\r\n", 4.0)
    dctx = Recorder(Conn("Cdata", "10.0.0.1", 40001, "10.0.0.2", 5000, start_time=5.0))
    d = FTPDataAnalyzer(dctx)
    d.data(False, b"plain text file, long enough\n" * 200, 5.0)
    d.done(6.0)
    a.data(False, b"226 done\r\n", 7.0)
    a.data(True, b"QUIT\r\n", 8.0)
    a.done(9.0)
    retr = [r for r in ctl.rows("ftp") if r.command == "RETR"][0]
    assert retr.fuid is not None and retr.fuid.startswith("F") and retr.mime_type == "text/plain"
    assert retr.arg == "ftp://10.0.0.2/./notes.txt"


# -- the Zeek corpus ----------------------------------------------------------------------------

FTP_CASES = [
    ("scripts.base.protocols.ftp.ftp-get-file-size", ["ftp.log"]),
    ("scripts.base.protocols.ftp.ftp-ipv6", ["ftp.log"]),
    ("scripts.base.protocols.ftp.ftp-max-command-length", ["ftp.log", "weird.log"]),
    ("scripts.base.protocols.ftp.ftp-password-pass-command", ["ftp.log"]),
    ("scripts.base.protocols.ftp.ftp-password-pass-command-hidden", ["ftp.log"]),
    ("scripts.policy.protocols.ftp.bruteforce", ["ftp.log"]),
    ("scripts.policy.protocols.ftp.ftp", ["ftp.log"]),
    ("scripts.base.protocols.ftp.bad-adat-encoding", ["weird.log"]),
]


def _options_for(c) -> FTPOptions:
    from analysis.zeek_scripts import configure
    cfg = configure(c["loads"], c["redefs"], bare=c["bare"])
    o = cfg.analyzer_options.get("ftp")
    return o if isinstance(o, FTPOptions) else FTPOptions()


@pytest.mark.parametrize("name,logs", FTP_CASES)
def test_corpus_case(name, logs, tmp_path):
    c = case(name)
    EXPECTED.clear()
    opts = _options_for(c)

    def factory(ctx):
        c = ctx.conn
        if c.resp_p in (21, 2811):
            ctx.options = opts
            return FTPAnalyzer(ctx)
        if EXPECTED.get(c.resp_h, c.resp_p, c.start_time) is not None:
            return FTPDataAnalyzer(ctx)
        return None

    check_case(c, factory, logs, tmp_path, default_source="FTP")


# -- robustness -------------------------------------------------------------------------------

def test_fuzz_mutated_corpus_payloads_never_raise():
    trace = corpus_trace("ftp/ipv6.pcap")
    if trace is None:
        pytest.skip("conformance corpus not found")
    conv = next(c for c in streams(trace) if c.resp_p == 21)
    rng = random.Random(5)
    deadline = time.monotonic() + 2.0
    runs = 0
    while time.monotonic() < deadline:
        ctx = Recorder(conv, FTPOptions(max_line_length=4096))
        a = FTPAnalyzer(ctx)
        for is_orig, data, ts in conv.chunks:
            b = bytearray(data)
            for _ in range(rng.randrange(4)):
                op = rng.randrange(3)
                if op == 0 and b:
                    b[rng.randrange(len(b))] = rng.randrange(256)
                elif op == 1:
                    b[rng.randrange(len(b) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
                elif b:
                    del b[rng.randrange(len(b)):rng.randrange(len(b) + 1)]
            a.data(is_orig, bytes(b), ts)
            assert len(a.parser._buf[0]) <= 4096 and len(a.parser._buf[1]) <= 4096
        a.done(conv.chunks[-1][2])
        assert len(a.s.pending) <= 20 if a.s else True
        runs += 1
    assert runs > 5
    EXPECTED.clear()


def test_module_registers_specs():
    from analysis.protocols import REGISTRY
    assert REGISTRY["ftp"].factory is FTPAnalyzer and (21, "tcp") in REGISTRY["ftp"].ports
    assert REGISTRY["ftp-data"].factory is FTPDataAnalyzer
    assert REGISTRY["ftp"].dpd_orig[0].match(b"USER anonymous\r\n")
    assert REGISTRY["ftp"].dpd_resp[0].match(b"220 ProFTPD ready\r\n")
    assert ftp.FTP_SPEC.events == ("ftp_request", "ftp_reply", "ftp_starttls")


def test_partial_request_at_close_is_a_weird():
    ctx = Recorder(_conn(), FTPOptions())
    a = FTPAnalyzer(ctx)
    a.data(False, b"220 hi\r\n", 1.0)
    a.data(True, b"USER x\r\nRETR unfinished", 2.0)
    a.eof(True, 3.0)
    a.done(4.0)
    assert ("partial_ftp_request", "") in ctx.weirds

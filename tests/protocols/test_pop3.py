"""POP3: confirmation, STLS hand-off to ssl (corpus trace), multi-line responses, caps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Conn, Recorder, corpus_trace, feed, streams  # noqa: E402

from analysis.protocols.pop3 import POP3Analyzer, POP3Parser, POP3Reply, POP3Request  # noqa: E402


def test_stls_trace_confirms_then_hands_off():
    trace = corpus_trace("tls/pop3-starttls.pcap")
    if trace is None:
        pytest.skip("conformance corpus not found")
    conv = streams(trace)[0]
    ctx = Recorder(conv)
    a = POP3Analyzer(ctx)
    feed(a, conv, detach=False, eofs=True)
    assert ctx.confirmed and ctx.handoffs == ["ssl"]
    assert [e[0] for e in ctx.events] == ["pop3_reply", "pop3_request", "pop3_reply", "pop3_starttls"]
    assert not ctx.violations


def test_multiline_response_is_skipped():
    p = POP3Parser()
    p.feed(False, b"+OK ready\r\n", 1.0)
    p.feed(True, b"RETR 1\r\n", 2.0)
    out = p.feed(False, b"+OK 12 octets\r\n+OK this is mail\r\n.\r\n+OK after\r\n", 3.0)
    # "+OK this is mail" is message content; "+OK after" follows the terminating "."
    assert [e for e in out if type(e) is POP3Reply] == [POP3Reply(True, "12 octets", 3.0),
                                                        POP3Reply(True, "after", 3.0)]
    p.feed(True, b"LIST 1\r\n", 4.0)
    out = p.feed(False, b"+OK 1 120\r\n", 5.0)
    assert out == [POP3Reply(True, "1 120", 5.0)] and not p.in_multiline


def test_not_pop3_is_a_violation_and_lines_are_capped():
    ctx = Recorder(Conn("C1", "10.0.0.1", 1, "10.0.0.2", 110))
    a = POP3Analyzer(ctx)
    a.data(False, b"220 smtp.example ESMTP\r\n", 1.0)
    assert ctx.violations and not ctx.confirmed
    p = POP3Parser(max_line_length=100)
    out = p.feed(True, b"X" * 500, 1.0)
    assert out and out[0].name == "contentline_size_exceeded" and p.lines._buf[1] == b""
    assert p.feed(True, b"\r\nUSER a\r\n", 2.0)[-1] == POP3Request("USER", "a", 2.0)


def test_fuzz_never_raises():
    import random
    rng = random.Random(3)
    pieces = [b"+OK ", b"-ERR ", b"\r\n", b".\r\n", b"STLS\r\n", b"RETR 1\r\n", b"LIST\r\n", b"\x00\xff", b"+ "]
    for _ in range(300):
        ctx = Recorder(Conn("C1", "10.0.0.1", 1, "10.0.0.2", 110))
        a = POP3Analyzer(ctx)
        for _ in range(rng.randrange(1, 30)):
            a.data(rng.random() < 0.5, b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 8))), 1.0)
        a.done(2.0)
        assert len(a.parser.pending) <= a.parser.max_pending

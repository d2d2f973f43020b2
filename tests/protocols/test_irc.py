"""IRC: STARTTLS hand-off (corpus trace), DCC SEND expectations and their cap."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Conn, Recorder, corpus_trace, feed, streams  # noqa: E402

from analysis.protocols.irc import DCC_EXPECTED, IRCAnalyzer, IRCOptions, IRCParser, IRCDCC  # noqa: E402


def test_starttls_trace_confirms_then_hands_off():
    trace = corpus_trace("tls/irc-starttls.pcap")
    if trace is None:
        pytest.skip("conformance corpus not found")
    conv = streams(trace)[0]
    ctx = Recorder(conv)
    feed(IRCAnalyzer(ctx), conv, detach=False, eofs=True)
    assert ctx.confirmed and ctx.handoffs == ["ssl"] and ("irc_starttls", ctx.conn) in ctx.events


def test_dcc_cap_trace():
    trace = corpus_trace("irc-dcc-state-growth.pcapng")
    if trace is None:
        pytest.skip("conformance corpus not found")
    DCC_EXPECTED.clear()
    conv = streams(trace)[0]
    ctx = Recorder(conv, IRCOptions(max_dcc_expected_transfers=15))
    feed(IRCAnalyzer(ctx), conv, detach=False, eofs=True)
    assert len(ctx.expected) == 15 and all(e[3] == "irc-dcc-data" for e in ctx.expected)
    assert ctx.weirds and {w[0] for w in ctx.weirds} == {"irc_max_dcc_expected_transfers_exceeded"}
    assert len(DCC_EXPECTED) == 15
    DCC_EXPECTED.clear()


def test_dcc_parsing():
    p = IRCParser()
    out = p.feed(True, b'PRIVMSG bob :\x01DCC SEND "my file.zip" 3232235777 4000 1234\x01\r\n', 1.0)
    dcc = [e for e in out if type(e) is IRCDCC]
    assert dcc == [IRCDCC(True, "", "bob", "SEND", "my file.zip", "192.168.1.1", 4000, 1234, 1.0)]
    assert [e for e in p.feed(True, b"PRIVMSG bob :\x01DCC SEND f 1 99999 1\x01\r\n", 2.0) if type(e) is IRCDCC] == []


def test_long_lines_are_capped():
    ctx = Recorder(Conn("C1", "10.0.0.1", 1, "10.0.0.2", 6667), IRCOptions())
    a = IRCAnalyzer(ctx)
    for _ in range(200):
        a.data(True, b"A" * 1000, 1.0)
    assert len(a.parser.lines._buf[1]) <= a.parser.lines.max_line_length
    assert ctx.weirds and ctx.weirds[0][0] == "contentline_size_exceeded"


def test_fuzz_never_raises():
    import random
    rng = random.Random(4)
    pieces = [b":srv 001 me :hi", b"\r\n", b"PRIVMSG a :\x01DCC SEND ", b"f 1 2 3\x01", b"STARTTLS\r\n",
              b":s 670 :go\r\n", b"99999999999999999999 ", b'"x', b"\x00\xff", b"NICK a\r\n"]
    DCC_EXPECTED.clear()
    for _ in range(300):
        ctx = Recorder(Conn("C1", "10.0.0.1", 1, "10.0.0.2", 6667), IRCOptions(max_dcc_expected_transfers=50))
        a = IRCAnalyzer(ctx)
        for _ in range(rng.randrange(1, 30)):
            a.data(rng.random() < 0.5, b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 8))), 1.0)
        a.done(2.0)
    assert len(DCC_EXPECTED) <= 50
    DCC_EXPECTED.clear()

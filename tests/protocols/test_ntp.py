"""NTP analyzer: parser, confirmation, ntp.log rows (from the GRE corpus trace's NTP exchanges)."""

from __future__ import annotations

import struct

import pytest

from analysis.protocols import ntp
from analysis.protocols.ntp import Malformed, NTPAnalyzer, NTPMessage, parse_message

from harness import Conn, Recorder, case, run_trace, trace_path


def std(mode=3, version=4, stratum=2, poll=6, prec=-20, refid=bytes([10, 1, 2, 3]), xmt=(3900000000, 1 << 31)) -> bytes:
    return struct.pack("!BBbbIi4sQQQQ", (version << 3) | mode, stratum, poll, prec, 1 << 16, 1 << 14, refid,
                       0, 0, 0, (xmt[0] << 32) | xmt[1])


def test_parse_standard_message():
    m = parse_message(std())
    assert isinstance(m, NTPMessage) and (m.version, m.mode) == (4, 3)
    s = m.std_msg
    assert (s.stratum, s.poll, s.precision, s.root_delay, s.root_disp) == (2, 64.0, 2.0 ** -20, 1.0, 0.25)
    assert s.ref_id == "10.1.2.3" and s.ref_time == 0.0
    assert s.xmt_time == pytest.approx(3900000000 - ntp.NTP_EPOCH_OFFSET + 0.5)
    assert parse_message(std(stratum=1, refid=b"GPS\x00")).std_msg.ref_id == "GPS\x00"


def test_extensions_counted_but_mac_is_not():
    ext = struct.pack("!HH", 0x0104, 16) + b"\x00" * 12
    assert parse_message(std() + ext + ext + b"m" * 20).std_msg.num_exts == 2
    assert parse_message(std() + b"m" * 20).std_msg.num_exts == 0


def test_malformed():
    assert isinstance(parse_message(b""), Malformed)
    assert isinstance(parse_message(std()[:40]), Malformed)
    assert isinstance(parse_message(bytes([(4 << 3) | 6]) + b"\x00" * 9 + b"\x00\x05"), Malformed)  # data past end
    assert isinstance(parse_message(bytes([(4 << 3) | 6]) + b"\x00" * 11), NTPMessage)
    assert parse_message(bytes([0x3B]) + std()[1:]).version == 7     # Zeek does not check the version


def test_short_format_is_signed_like_zeek():
    raw = bytearray(std())
    raw[4:8] = struct.pack("!hh", 1, -32768)
    assert parse_message(bytes(raw)).std_msg.root_delay == 0.5


def test_server_message_from_originator_flips_once():
    ctx = Recorder(Conn("Cflip", "10.0.0.2", 123, "10.0.0.1", 123, "udp", 0.0))
    a = NTPAnalyzer(ctx)
    a.data(True, std(mode=4), 1.0)
    a.data(False, std(mode=3), 1.1)
    assert ctx.flipped == 1 and ctx.conn.orig_h == "10.0.0.1"
    assert [(r.orig_h, r.mode) for r in ctx.rows("ntp")] == [("10.0.0.1", 4), ("10.0.0.1", 3)]


def test_analyzer_confirms_logs_and_rejects():
    ctx = Recorder(Conn("Cntp", "10.0.0.1", 123, "10.0.0.2", 123, "udp", 0.0))
    a = NTPAnalyzer(ctx)
    a.data(True, std(), 1.0)
    a.data(False, std(mode=4), 1.1)
    a.data(True, bytes([(4 << 3) | 6]) + b"\x00" * 11, 1.2)      # control: confirmed, not logged
    assert ctx.confirmed == 1
    assert [r.mode for r in ctx.rows("ntp")] == [3, 4]
    bad = Recorder(Conn("Cbad", "10.0.0.1", 5000, "10.0.0.2", 123, "udp", 0.0))
    NTPAnalyzer(bad).data(True, b"GET / HTTP/1.1\r\n", 1.0)      # 'G': mode 7, 17 bytes ... valid for Zeek
    assert bad.confirmed
    bad = Recorder(Conn("Cbad", "10.0.0.1", 5000, "10.0.0.2", 123, "udp", 0.0))
    NTPAnalyzer(bad).data(True, b"\x23 short", 1.0)               # mode 3 needs 48 bytes
    assert bad.violations and not bad.confirmed


def test_corpus_ntp_exchanges():
    c = case("core.tunnels.gre")
    ctxs = run_trace(NTPAnalyzer, trace_path(c["trace"]), None, server_ports={123}, interleave=True,
                     ports=ntp.SPEC.ports)
    # Zeek's conn.log for this trace has three 123/udp connections with service ntp
    assert sorted(x.conn.resp_h for x in ctxs if x.confirmed) == ["129.170.17.4", "18.26.4.105", "66.59.111.182"]
    rows = [r for x in ctxs for r in x.rows("ntp")]
    assert sorted(r.mode for r in rows) == [3, 3, 3, 4, 4, 4]
    assert all(r.version == 4 for r in rows)


def test_fuzz_never_raises():
    import random

    rng = random.Random(123)
    ctx = Recorder(Conn("Cfz", "10.0.0.1", 123, "10.0.0.2", 123, "udp", 0.0))
    a = NTPAnalyzer(ctx)
    base = std() + struct.pack("!HH", 0x0104, 16) + bytes(12)
    for i in range(3000):
        b = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            if b and rng.random() < 0.7:
                b[rng.randrange(len(b))] = rng.randrange(256)
            else:
                del b[rng.randrange(len(b) + 1):]
        a.data(True, bytes(b), float(i))
        ctx.logs.clear()
    assert ctx.confirmed == 1

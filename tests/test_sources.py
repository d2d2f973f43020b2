"""File sources: pcap (both byte orders, ns), pcapng (several interfaces, tsresol), gzip, damage."""

from __future__ import annotations

import gzip
import struct

import dpkt
import pytest
from decoder_frames import (TRACES, ng_block, ng_epb, ng_idb, ng_opb, ng_shb, ng_spb, pcap_bytes,
                            tcp4_frame, udp4_frame)

from analysis.sources import SourceError, open_source

FRAMES = [(1_600_000_000.25 + i * 0.5, tcp4_frame(sport=1000 + i, payload=b"x" * i)) for i in range(5)]


def read_all(path, max_batch: int = 1024):
    src = open_source(path)
    batches = list(src.batches(max_batch))
    src.close()
    return src, batches


def flat(batches):
    return [p for _, b in batches for p in b]


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, endian, nano):
    f = tmp_path / "t.pcap"
    f.write_bytes(pcap_bytes(FRAMES, endian=endian, nano=nano))
    src, batches = read_all(f, max_batch=2)
    assert [len(b) for _, b in batches] == [2, 2, 1]
    assert all(lt == 1 for lt, _ in batches)
    pkts = flat(batches)
    assert [p[2] for p in pkts] == [d for _, d in FRAMES]
    assert [p[1] for p in pkts] == [len(d) for _, d in FRAMES]
    for (ts, _), p in zip(FRAMES, pkts):
        assert p[0] == pytest.approx(ts, abs=1e-9 if nano else 1e-6)
    assert not src.truncated and src.error is None
    assert src.progress() == (f.stat().st_size, f.stat().st_size)


def test_gzip_pcap_and_pcapng(tmp_path):
    f = tmp_path / "t.pcap.gz"
    f.write_bytes(gzip.compress(pcap_bytes(FRAMES)))
    src, batches = read_all(f)
    assert [p[2] for p in flat(batches)] == [d for _, d in FRAMES]
    assert src.progress()[1] is None  # total unknown for compressed input
    g = tmp_path / "t.anything"
    g.write_bytes(gzip.compress(ng_shb() + ng_idb(1) + ng_epb(0, 1_000_000, FRAMES[0][1])))
    _, batches = read_all(g)
    assert flat(batches)[0][2] == FRAMES[0][1]


def test_pcapng_interfaces_link_types_and_resolution(tmp_path):
    raw4 = FRAMES[1][1][14:]
    body = (ng_shb() + ng_idb(1) + ng_idb(228, tsresol=9) + ng_idb(1, tsresol=0x80 | 10)
            + ng_block(5, b"stats-block-is-skipped")
            + ng_epb(0, 1_500_000_000_123_456, FRAMES[0][1])
            + ng_epb(0, 1_500_000_001_000_000, FRAMES[1][1])
            + ng_epb(1, 1_500_000_002_000_000_001, raw4)          # nanoseconds
            + ng_epb(2, (1_500_000_003 << 10) + 512, FRAMES[2][1])  # 2^-10 s units
            + ng_spb(FRAMES[3][1])                                 # no timestamp of its own
            + ng_opb(0, 1_500_000_004_000_000, FRAMES[4][1]))
    f = tmp_path / "t.pcapng"
    f.write_bytes(body)
    src, batches = read_all(f)
    assert [(lt, len(b)) for lt, b in batches] == [(1, 2), (228, 1), (1, 3)]
    pkts = flat(batches)
    assert pkts[0][0] == pytest.approx(1_500_000_000.123456)
    assert pkts[2][0] == pytest.approx(1_500_000_002.000000001, abs=1e-6)
    assert pkts[2][2] == raw4
    assert pkts[3][0] == pytest.approx(1_500_000_003.5)
    assert pkts[4][0] == pkts[3][0] and pkts[4][2] == FRAMES[3][1]
    assert pkts[5][2] == FRAMES[4][1]
    assert not src.truncated and src.error is None


def test_pcapng_big_endian_and_second_section(tmp_path):
    f = tmp_path / "be.pcapng"
    f.write_bytes(ng_shb(">") + ng_idb(1, endian=">") + ng_epb(0, 5_000_000, FRAMES[0][1], endian=">")
                  + ng_shb("<") + ng_idb(228) + ng_epb(0, 6_000_000, FRAMES[1][1][14:]))
    _, batches = read_all(f)
    assert [(lt, [p[2] for p in b]) for lt, b in batches] == [(1, [FRAMES[0][1]]), (228, [FRAMES[1][1][14:]])]
    assert batches[0][1][0][0] == pytest.approx(5.0)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"\xd4\xc3", "too short"),
    (b"GET / HTTP/1.1\r\n\r\n", "unknown file format"),
    (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", "truncated pcap file header"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x00\x00", "truncated pcapng"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x11\x22\x33\x44", "not a pcapng"),
])
def test_unusable_files_raise_source_error(tmp_path, content, reason):
    f = tmp_path / "bad"
    f.write_bytes(content)
    with pytest.raises(SourceError, match=reason):
        open_source(f)


def test_missing_directory_and_unreadable(tmp_path):
    with pytest.raises(SourceError, match="No such file"):
        open_source(tmp_path / "nope.pcap")
    with pytest.raises(SourceError, match="directory"):
        open_source(tmp_path)
    g = tmp_path / "broken.gz"
    g.write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    with pytest.raises(SourceError):
        open_source(g)


def test_truncated_record_delivers_what_is_complete(tmp_path):
    data = pcap_bytes(FRAMES)
    f = tmp_path / "cut.pcap"
    f.write_bytes(data[:-7])  # last record cut mid-way
    src, batches = read_all(f)
    assert [p[2] for p in flat(batches)] == [d for _, d in FRAMES[:-1]]
    assert src.truncated and "truncated record" in src.error
    f.write_bytes(data[:24 + 16 + len(FRAMES[0][1]) + 9])  # cut inside a record header
    src, batches = read_all(f)
    assert len(flat(batches)) == 1 and src.truncated


def test_corrupt_caplen_stops_cleanly(tmp_path):
    data = bytearray(pcap_bytes(FRAMES))
    second = 24 + 16 + len(FRAMES[0][1])
    struct.pack_into("<I", data, second + 8, 10_000_000)
    f = tmp_path / "corrupt.pcap"
    f.write_bytes(bytes(data))
    src, batches = read_all(f)
    assert len(flat(batches)) == 1
    assert not src.truncated and "capture length" in src.error


def test_caplen_above_snaplen_is_clipped_and_wire_len_kept(tmp_path):
    f = tmp_path / "snap.pcap"
    f.write_bytes(pcap_bytes(FRAMES[3:4], snaplen=40, wire_lens=[999]))
    _, batches = read_all(f)
    (pkt,) = flat(batches)
    assert pkt[2] == FRAMES[3][1][:40] and pkt[1] == 999


def test_zero_length_packets_pass_through(tmp_path):
    f = tmp_path / "zero.pcap"
    f.write_bytes(pcap_bytes([(1.0, b""), (2.0, udp4_frame())]))
    _, batches = read_all(f)
    assert [p[2] for p in flat(batches)] == [b"", udp4_frame()]


def test_pcapng_damage(tmp_path):
    good = ng_shb() + ng_idb(1) + ng_epb(0, 1, FRAMES[0][1])
    f = tmp_path / "d.pcapng"
    f.write_bytes(good + ng_epb(0, 2, FRAMES[1][1])[:-10])
    src, batches = read_all(f)
    assert len(flat(batches)) == 1 and src.truncated
    f.write_bytes(good + struct.pack("<II", 6, 13) + b"\x00" * 40)  # length not a multiple of 4
    src, batches = read_all(f)
    assert len(flat(batches)) == 1 and "bad block length" in src.error
    f.write_bytes(good + ng_epb(3, 2, FRAMES[1][1]))  # unknown interface
    src, batches = read_all(f)
    assert len(flat(batches)) == 1 and "unknown interface" in src.error


def test_corpus_traces_match_dpkt():
    if not TRACES.is_dir():
        pytest.skip("conformance corpus not available")
    checked = 0
    for path in sorted(TRACES.rglob("*")):
        if path.suffix not in (".pcap", ".pcapng"):
            continue
        with open(path, "rb") as fh:
            reader = dpkt.pcapng.Reader(fh) if path.suffix == ".pcapng" else dpkt.pcap.Reader(fh)
            ref = [(float(ts), bytes(buf)) for ts, buf in reader]
        _, batches = read_all(path)
        ours = flat(batches)
        assert [p[2] for p in ours] == [b for _, b in ref], path
        if path.suffix == ".pcap":  # dpkt's pcapng reader ignores a second interface's if_tsresol
            assert [p[0] for p in ours] == pytest.approx([t for t, _ in ref], abs=2e-6), path
        checked += 1
    assert checked > 50

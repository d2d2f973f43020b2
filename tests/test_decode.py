"""The decoder: link layers, IP checks in Zeek's order, fragments, transports, tunnels, weirds."""

from __future__ import annotations

import struct

import pytest
from decoder_frames import (MAC_A, MAC_B, TRACES, RecordingWeirds, a4, a6, ether, icmp, icmp6, ipv4, ipv6,
                            tcp, tcp4_frame, udp, udp4_frame)
from hypothesis import given
from hypothesis import strategies as st

from analysis.decode import Decoder, DecoderOptions
from analysis.decode.checksum import inet_checksum, plain_ok, region_sum
from analysis.packet import Packet
from analysis.sources import open_source

S, D = a4("10.0.0.1"), a4("10.0.0.2")
S6, D6 = a6("2001:db8::1"), a6("2001:db8::2")


def decode(frames, lt=1, batch=True, wire=None, **opts):
    w = RecordingWeirds()
    dec = Decoder(DecoderOptions(**opts), w)
    out: list[Packet] = []
    if isinstance(frames, bytes):
        frames = [frames]
    raw = [(1000.0 + i, wire if wire is not None else len(f), f) for i, f in enumerate(frames)]
    if batch:
        dec.decode_batch((lt, raw), out.append)
    else:
        for ts, wl, f in raw:
            dec.decode(lt, ts, wl, f, out.append)
    return out, w, dec


# ---------------------------------------------------------------- fast path basics

def test_tcp_fields_and_fast_path():
    (p,), w, dec = decode(tcp4_frame(payload=b"GET /", flags=0x18, seq=7, ack=9, win=1234))
    assert (p.src, p.dst, p.sport, p.dport, p.proto) == ("10.0.0.1", "10.0.0.2", 12345, 80, 6)
    assert (p.tcp_flags, p.seq, p.ack, p.win, p.ttl) == (0x18, 7, 9, 1234, 64)
    assert (p.ip_len, p.payload_len, p.payload) == (45, 5, b"GET /")
    assert (p.src_mac, p.dst_mac, p.vlan, p.encap, p.bad_checksum) == (
        MAC_A.hex(":"), MAC_B.hex(":"), None, (), False)
    assert dec.stats["fast_path"] == 1 and not w.rows


def test_fast_and_general_paths_agree_on_crafted_frames():
    frames = [tcp4_frame(payload=b"a" * n, bad=(n % 3 == 0)) for n in range(0, 40, 7)]
    frames += [udp4_frame(payload=b"q" * n) for n in range(0, 30, 5)]
    frames += [ether(ipv4(S, D, 6, tcp(S, D, 1, 2, b"vlan")), vlans=(42,))]
    frames += [ether(ipv6(S6, D6, 6, tcp(S6, D6, 3, 4, b"v6" * n, bad=(n == 2))), 0x86DD) for n in range(4)]
    frames += [ether(ipv6(S6, D6, 17, udp(S6, D6, 5, 6, b"u6", bad=True)), 0x86DD, vlans=(7,))]
    frames += [ether(ipv6(S6, D6, 58, icmp6(S6, D6, 128, 0)), 0x86DD), ether(ipv4(S, D, 1, icmp(0, 0, b"odd")))]
    fast, _, d1 = decode(frames)
    slow, _, d2 = decode(frames, batch=False)
    key = lambda p: tuple(getattr(p, f) for f in Packet.__slots__)  # noqa: E731
    assert [key(p) for p in fast] == [key(p) for p in slow]
    assert d1.stats["fast_path"] == len(frames) and d2.stats["fast_path"] == 0
    assert [p.bad_checksum for p in fast].count(True) == 2 + 1 + 1  # tcp4 (n=0, 21), tcp6, udp6


def test_checksum_fallback_without_numpy(monkeypatch):
    from analysis.decode import checksum
    frames = [tcp4_frame(payload=b"p" * n, bad=(n % 4 == 1)) for n in range(12)]
    frames += [ether(ipv6(S6, D6, 17, udp(S6, D6, 5, 6, b"q" * n, bad=(n % 3 == 0))), 0x86DD) for n in range(9)]
    frames.insert(5, ether(ipv4(S, D, 6, tcp(S, D, 1, 2), bad_csum=True)))
    with_np, w1, _ = decode(frames)
    monkeypatch.setattr(checksum, "_np", None)
    without, w2, _ = decode(frames)
    assert [p.bad_checksum for p in with_np] == [p.bad_checksum for p in without]
    assert sum(p.bad_checksum for p in without) == 3 + 3 and len(without) == len(frames) - 1
    assert w1.names() == w2.names() == ["bad_IP_checksum"]


def test_bad_transport_checksum_flagged_not_dropped():
    out, w, dec = decode([tcp4_frame(bad=True), udp4_frame(bad=True), tcp4_frame()] * 3)
    assert [p.bad_checksum for p in out] == [True, True, False] * 3
    assert dec.stats["bad_checksum"] == 6 and not w.rows
    out, _, _ = decode([tcp4_frame(bad=True), udp4_frame(bad=True)], ignore_checksums=True)
    assert [p.bad_checksum for p in out] == [False, False]
    (p,), _, _ = decode(udp4_frame(zero_csum=True))  # IPv4 UDP checksum 0 means "none"
    assert not p.bad_checksum


def test_bad_ip_checksum_dropped_with_flow_weird():
    bad = ether(ipv4(S, D, 6, tcp(S, D, 1, 2), bad_csum=True))
    out, w, dec = decode([tcp4_frame()] * 5 + [bad] + [tcp4_frame()])
    assert len(out) == 6 and [p.ts for p in out] == [1000.0 + i for i in (0, 1, 2, 3, 4, 6)]
    assert w.rows == [("bad_IP_checksum", "10.0.0.1", "10.0.0.2", "", "IP")]
    assert dec.stats["dropped_bad_ip_checksum"] == 1
    out, w, _ = decode(bad, ignore_checksums=True)
    assert len(out) == 1 and not w.rows


def test_vlan_qinq_and_triple_tag():
    payload = ipv4(S, D, 6, tcp(S, D, 1, 2))
    (p,), w, _ = decode(ether(payload, vlans=(10, 20)))
    assert (p.vlan, p.inner_vlan) == (10, 20) and not w.rows
    (p,), w, _ = decode(ether(payload, vlans=(10, 20, 30)))
    assert (p.vlan, p.inner_vlan) == (10, 30)
    assert w.rows == [("triple_tagged_vlan_unsupported", None, None, "inner VLAN tag overwritten", "VLAN")]


def test_icmp_type_code_as_ports_and_checksums():
    (p,), _, _ = decode(ether(ipv4(S, D, 1, icmp(8, 0))))
    assert (p.proto, p.sport, p.dport, p.payload_len, p.bad_checksum) == (1, 8, 0, 4, False)
    msg = bytearray(icmp(3, 1))
    msg[5] ^= 1
    (p,), _, _ = decode(ether(ipv4(S, D, 1, bytes(msg))))
    assert p.bad_checksum
    (p,), _, _ = decode(ether(ipv6(S6, D6, 58, icmp6(S6, D6, 135, 0)), 0x86DD))
    assert (p.ip_version, p.proto, p.sport, p.dport, p.src, p.bad_checksum) == (6, 58, 135, 0, "2001:db8::1", False)


def test_unknown_transport_emitted_like_zeek9():
    (p,), w, _ = decode(ether(ipv4(S, D, 89, b"ospf-hello-payload")))
    assert (p.proto, p.sport, p.dport, p.payload_len) == (89, 0, 0, 18) and not w.rows


def test_igmp_checksum_weird_and_no_packet():
    good = b"\x16\x00" + struct.pack("!H", inet_checksum(b"\x16\x00\x00\x00" + a4("224.0.0.251"))) + a4("224.0.0.251")
    out, w, _ = decode(ether(ipv4(S, a4("224.0.0.251"), 2, good)))
    assert out == [] and not w.rows
    bad = good[:2] + b"\x00\x00" + good[4:]
    out, w, _ = decode(ether(ipv4(S, a4("224.0.0.251"), 2, bad)))
    assert out == [] and w.rows == [("igmp_invalid_checksum", "10.0.0.1", "224.0.0.251", "", "IGMP")]


# ---------------------------------------------------------------- Zeek's IP header checks

@pytest.mark.parametrize("frame, wire, name, flow", [
    (ether(b"\x45" + b"\x00" * 10), None, "truncated_IP", False),
    (ether(b"\x75" + b"\x00" * 30), None, "unknown_ip_version", False),
    (ether(ipv4(S, D, 6, tcp(S, D, 1, 2), total=400)), None, "truncated_IP_len", False),
    (ether(ipv4(S, D, 6, b"", total=20)[:0] + bytes([0x4F]) + ipv4(S, D, 6, tcp(S, D, 1, 2))[1:]), None,
     "invalid_IP_header_size", False),
    (ether(bytes([0x44]) + ipv4(S, D, 6, tcp(S, D, 1, 2))[1:]), None, "IPv4_min_header_size", False),
    (ether(ipv4(S, D, 6, b"\x00" * 10)), None, "truncated_header", True),
    (ether(ipv4(S, D, 6, tcp(S, D, 1, 2)))[:40], 54, "internally_truncated_header", True),
    (ether(ipv4(S, D, 17, b"\x00\x01")), None, "truncated_header", True),
    (ether(ipv4(S, D, 6, tcp(S, D, 1, 2)[:12] + b"\x30" + tcp(S, D, 1, 2)[13:])), None, "bad_TCP_header_len", True),
    (ether(ipv6(S6, D6, 59, b"")), None, "ipv6_no_next", True),
    (b"\x00" * 10, None, "truncated_ethernet_frame", False),
])
def test_ip_and_transport_weirds(frame, wire, name, flow):
    out, w, _ = decode(frame, wire=wire, ignore_checksums=(name == "invalid_IP_header_size"))
    assert out == []
    assert [r[0] for r in w.rows] == [name]
    assert (w.rows[0][1] is not None) == flow


def test_zero_total_length_uses_caplen_only_with_C():
    frame = ether(ipv4(S, D, 6, tcp(S, D, 1, 2, b"tso"), total=0))
    out, w, _ = decode(frame)
    assert out == [] and w.names() == ["ip_hdr_len_zero"]
    out, w, _ = decode(frame, ignore_checksums=True)
    assert len(out) == 1 and out[0].payload == b"tso" and w.names() == ["ip_hdr_len_zero"]


def test_ipv4_options_and_ethernet_padding():
    frame = ether(ipv4(S, D, 17, udp(S, D, 1, 2, b"data"), options=b"\x01\x01\x01\x00")) + b"\x00" * 12
    (p,), w, _ = decode(frame)
    assert (p.ip_len, p.payload, p.bad_checksum) == (36, b"data", False) and not w.rows


# ---------------------------------------------------------------- link layers

def test_raw_null_sll_sll2_link_types():
    pkt4 = ipv4(S, D, 17, udp(S, D, 1, 2, b"x"))
    pkt6 = ipv6(S6, D6, 17, udp(S6, D6, 1, 2, b"y"))
    for lt in (12, 14, 101, 228):
        (p,), _, _ = decode(pkt4, lt=lt)
        assert p.src == "10.0.0.1"
    (p,), _, _ = decode(pkt6, lt=229)
    assert p.src == "2001:db8::1"
    for hdr in (struct.pack("<I", 2), struct.pack(">I", 2)):
        (p,), _, _ = decode(hdr + pkt4, lt=0)
        assert p.dst == "10.0.0.2"
    (p,), _, _ = decode(struct.pack("<I", 30) + pkt6, lt=0)
    assert p.ip_version == 6
    sll = struct.pack("!HHH8sH", 0, 1, 6, MAC_A + b"\x00\x00", 0x0800) + pkt4
    (p,), _, _ = decode(sll, lt=113)
    assert (p.src_mac, p.dst_mac) == (MAC_A.hex(":"), "00:00:00:00:00:00")
    sll2 = struct.pack("!HHIHBB8s", 0x86DD, 0, 1, 1, 0, 6, MAC_A + b"\x00\x00") + pkt6
    (p,), _, _ = decode(sll2, lt=276)
    assert p.ip_version == 6 and p.src_mac == MAC_A.hex(":")


def test_mpls_pppoe_pbb_fabricpath():
    pkt4 = ipv4(S, D, 6, tcp(S, D, 1, 2))
    mpls = struct.pack("!II", 100 << 12, (200 << 12) | 0x100 | 64)
    (p,), _, _ = decode(ether(mpls + pkt4, 0x8847))
    assert p.src == "10.0.0.1"
    pppoe = struct.pack("!BBHHH", 0x11, 0, 1, len(pkt4) + 2, 0x0021) + pkt4
    (p,), _, _ = decode(ether(pppoe, 0x8864, vlans=(5, 6)))
    assert (p.vlan, p.inner_vlan) == (5, 6)
    pbb = struct.pack("!I", 0x12345) + ether(pkt4, dst=b"\x02" * 6, src=b"\x04" * 6)
    (p,), _, _ = decode(ether(pbb, 0x88E7))
    assert p.src_mac == "04:04:04:04:04:04"
    cfp = b"\x01" * 12 + b"\x89\x03" + b"\x00" * 2 + ether(pkt4)
    (p,), _, _ = decode(cfp)
    assert p.dst == "10.0.0.2"
    out, w, _ = decode(ether(b"\x00" * 28, 0x0806))  # ARP: nothing, silently
    assert out == [] and not w.rows


def test_nflog_tlvs_and_bad_length():
    pkt4 = ipv4(S, D, 17, udp(S, D, 1, 2, b"z"))
    tlv = struct.pack("<HH", 8, 1) + b"\x00" * 4
    frame = bytes([2, 0, 0, 0]) + tlv + struct.pack("<HH", 4 + len(pkt4), 9) + pkt4
    (p,), w, _ = decode(frame, lt=239)
    assert p.src == "10.0.0.1" and not w.rows
    out, w, _ = decode(bytes([2, 0, 0, 0]) + struct.pack("<HH", 256, 1) + b"\x00" * 4, lt=239)
    assert out == [] and w.rows == [("nflog_bad_tlv_len", None, None, "(256 > 8)", "NFLOG")]


def test_80211_radiotap_llc():
    pkt4 = ipv4(S, D, 17, udp(S, D, 1, 2, b"w"))
    hdr = bytes([0x08, 0x01]) + b"\x00\x00" + b"\xaa" * 6 + b"\xbb" * 6 + b"\xcc" * 6 + b"\x00\x00"
    llc = b"\xaa\xaa\x03\x00\x00\x00\x08\x00"
    (p,), _, _ = decode(hdr + llc + pkt4, lt=105)
    assert (p.src_mac, p.dst_mac) == ("bb:bb:bb:bb:bb:bb", "cc:cc:cc:cc:cc:cc")  # ToDS: dst is addr3
    radiotap = b"\x00\x00\x08\x00\x00\x00\x00\x00"
    (p,), _, _ = decode(radiotap + hdr + llc + pkt4, lt=127)
    assert p.src == "10.0.0.1"
    out, _, _ = decode(radiotap + bytes([0x80, 0]) + b"\x00" * 30, lt=127)  # beacon
    assert out == []


# ---------------------------------------------------------------- fragments

def _fragments(payload_ip: bytes, proto: int, cuts: list[int], ident: int = 77):
    frags = []
    for i, start in enumerate(cuts):
        end = cuts[i + 1] if i + 1 < len(cuts) else len(payload_ip)
        mf = 0x2000 if i + 1 < len(cuts) else 0
        frags.append(ether(ipv4(S, D, proto, payload_ip[start:end], ident=ident, flags_frag=mf | (start // 8))))
    return frags


def test_ipv4_reassembly_out_of_order():
    seg = udp(S, D, 1111, 53, b"Q" * 200)
    f = _fragments(seg, 17, [0, 80, 160])
    out, w, dec = decode([f[2], f[0], f[1]])
    assert len(out) == 1 and out[0].payload == b"Q" * 200 and not out[0].bad_checksum
    assert out[0].ip_len == 20 + len(seg) and out[0].sport == 1111
    assert dec.stats["fragments"] == 3 and dec.stats["reassembled"] == 1 and len(dec.fragments) == 0
    assert w.rows == []


def test_fragment_overlap_inconsistency_and_small():
    seg = udp(S, D, 1, 2, b"A" * 120)
    f = _fragments(seg, 17, [0, 64])
    dup = _fragments(seg, 17, [0, 64])[0]
    out, w, _ = decode([f[0], dup, f[1]])
    assert len(out) == 1 and "fragment_overlap" in w.names()
    other = ether(ipv4(S, D, 17, b"B" * 64, ident=77, flags_frag=0x2000))
    out, w, _ = decode([f[0], other, f[1]])
    assert "fragment_inconsistency" in w.names() and out[0].payload == b"A" * 120  # first data wins
    tiny = _fragments(seg, 17, [0, 16, 64])
    out, w, _ = decode(tiny)
    assert len(out) == 1 and w.names() == ["excessively_small_fragment"]  # 36 bytes < 64; 68 is fine


def test_ipv6_fragments_reassemble():
    seg = udp(S6, D6, 5000, 53, b"6" * 100)
    frag_hdr = lambda off, mf: struct.pack("!BBHI", 17, 0, off | mf, 0xABCD)  # noqa: E731
    f1 = ether(ipv6(S6, D6, 44, frag_hdr(0, 1) + seg[:56]), 0x86DD)
    f2 = ether(ipv6(S6, D6, 44, frag_hdr(56, 0) + seg[56:]), 0x86DD)
    out, w, _ = decode([f2, f1])
    assert len(out) == 1 and out[0].payload == b"6" * 100 and not out[0].bad_checksum
    assert out[0].ip_len == 40 + len(seg) and not w.rows


def test_fragment_table_bounds_and_timeout():
    seg = udp(S, D, 1, 2, b"x" * 100)
    firsts = [_fragments(seg, 17, [0, 64], ident=i)[0] for i in range(50)]
    _, _, dec = decode(firsts, max_frag_datagrams=10)
    assert len(dec.fragments) <= 10 and dec.fragments.evicted == 40
    w = RecordingWeirds()
    dec = Decoder(DecoderOptions(frag_timeout=30.0), w)
    dec.decode_batch((1, [(0.0, len(firsts[0]), firsts[0])]), lambda p: None)
    late = _fragments(seg, 17, [0, 64], ident=0)[1]
    out: list = []
    dec.decode_batch((1, [(100.0, len(late), late)]), out.append)
    assert out == [] and dec.fragments.expired == 1  # the head expired: no reassembly


def test_incompletely_captured_fragment():
    seg = udp(S, D, 1, 2, b"x" * 100)
    first = _fragments(seg, 17, [0, 64])[0]
    out, w, _ = decode(first[:60], wire=len(first))
    assert w.names() == ["incompletely_captured_fragment"] and len(out) == 1  # first one still analysed


# ---------------------------------------------------------------- IPv6 extension headers

def test_ipv6_routing_and_home_address():
    seg = udp(S6, D6, 1, 2, b"r")
    home = a6("2001:db8::99")
    dstopts = struct.pack("!BB", 17, 2) + b"\x01\x00" + b"\xc9\x10" + home + b"\x01\x00"
    (p,), w, _ = decode(ether(ipv6(S6, D6, 60, dstopts + seg), 0x86DD), ignore_checksums=True)
    assert p.src == "2001:db8::99" and not w.rows
    final = a6("2001:db8::77")
    rt2 = struct.pack("!BBBBI", 17, 2, 2, 1, 0) + final
    (p,), w, _ = decode(ether(ipv6(S6, D6, 43, rt2 + seg), 0x86DD), ignore_checksums=True)
    assert p.dst == "2001:db8::77" and not w.rows
    rt0 = struct.pack("!BBBBI", 17, 2, 0, 1, 0) + final
    (p,), w, _ = decode(ether(ipv6(S6, D6, 43, rt0 + seg), 0x86DD), ignore_checksums=True)
    assert w.names() == ["routing0_hdr"]


def test_mobile_ipv6_corpus_weirds():
    path = TRACES / "ipv6-mobility-dst-opts.pcap"
    if not path.exists():
        pytest.skip("conformance corpus not available")
    w = RecordingWeirds()
    dec = Decoder(DecoderOptions(ignore_checksums=True), w)
    for b in open_source(path).batches():
        dec.decode_batch(b, lambda p: None)
    assert w.rows[:4] == [
        ("bad_ipv6_dest_opt_len", "2001:4f8:4:7:2e0:81ff:fe52:ffff", "2001:4f8:4:7:2e0:81ff:fe52:9a6b", "", ""),
        ("multiple_home_addr_opts", "2001:78:1:32::1", "2001:4f8:4:7:2e0:81ff:fe52:9a6b", "", ""),
        ("invalid_IP_header_size", None, None, "", "IP"),
        ("bad_home_addr_len", "2001:4f8:4:7:2e0:81ff:fe52:ffff", "2001:4f8:4:7:2e0:81ff:fe52:9a6b", "", ""),
    ]


# ---------------------------------------------------------------- tunnels

def _vxlan(inner: bytes, sport=40000) -> bytes:
    o1, o2 = a4("192.0.2.1"), a4("192.0.2.2")
    return ether(ipv4(o1, o2, 17, udp(o1, o2, sport, 4789, b"\x08\x00\x00\x00\x00\x00\x2a\x00" + inner,
                                      zero_csum=True)))


def test_vxlan_outer_first_then_inner():
    inner = tcp4_frame(payload=b"inner")
    outer, inn = decode(_vxlan(inner))[0]
    assert (outer.dport, outer.proto, outer.encap) == (4789, 17, ())
    assert inn.payload == b"inner" and inn.src_mac == MAC_A.hex(":")
    assert [e.key() for e in inn.encap] == [("VXLAN", "192.0.2.1", "192.0.2.2", 40000, 4789, 17)]


def test_ip_in_ip_and_gre_and_max_depth():
    o1, o2 = a4("198.51.100.1"), a4("198.51.100.2")
    inner = ipv4(S, D, 6, tcp(S, D, 1, 2, b"in"))
    (p,), _, _ = decode(ether(ipv4(o1, o2, 4, inner)))
    assert [e.tunnel_type for e in p.encap] == ["IP"] and p.payload == b"in"
    gre = struct.pack("!HH", 0, 0x0800) + inner
    (p,), _, _ = decode(ether(ipv4(o1, o2, 47, gre)))
    assert [(e.tunnel_type, e.proto, e.sport) for e in p.encap] == [("GRE", 47, 0)]
    teb = struct.pack("!HH", 0x2000, 0x6558) + b"\x00\x00\x00\x07" + ether(inner)
    (p,), _, _ = decode(ether(ipv4(o1, o2, 47, teb)))
    assert p.encap[0].tunnel_type == "GRE" and p.src_mac == MAC_A.hex(":")
    three = ipv4(o1, o2, 4, ipv4(o1, o2, 4, ipv4(o1, o2, 4, inner)))
    out, w, _ = decode(ether(three))
    assert out == [] and w.names() == ["exceeded_tunnel_max_depth_in_tunnel"]
    out, w, _ = decode(ether(ipv4(o1, o2, 47, struct.pack("!HH", 0x0005, 0x0800) + inner)))
    assert out == [] and w.rows[0][0] == "unknown_gre_version" and w.rows[0][3] == "version=5"


def test_pptp_gre_needs_exact_inner_length():
    o1, o2 = a4("198.51.100.1"), a4("198.51.100.2")
    inner = ipv4(S, D, 17, udp(S, D, 1, 53, b"dns"))
    egre = struct.pack("!HHHHI", 0x3001, 0x880B, len(inner) + 4, 7, 1) + b"\xff\x03\x00\x21"
    (p,), _, _ = decode(ether(ipv4(o1, o2, 47, egre + inner)))
    assert p.dport == 53 and p.encap[0].tunnel_type == "GRE"
    out, w, _ = decode(ether(ipv4(o1, o2, 47, egre + inner + b"junk")))
    assert out == [] and w.names() == ["inner_IP_payload_length_mismatch"]


def test_teredo_ayiya_geneve_gtp():
    o1, o2 = a4("192.0.2.10"), a4("192.0.2.20")
    in6 = ipv6(S6, D6, 17, udp(S6, D6, 7, 8, b"six"))
    teredo = ether(ipv4(o1, o2, 17, udp(o1, o2, 50000, 3544, in6)))
    out, _, _ = decode(teredo)
    assert [p.encap[-1].tunnel_type if p.encap else None for p in out] == [None, "TEREDO"]
    ayiya_hdr = bytes([0x41, 0x52, 0x11, 41]) + b"\x00" * 4 + b"\x00" * 16 + b"\x00" * 20  # id 16, sig 20
    out, _, _ = decode(ether(ipv4(o1, o2, 17, udp(o1, o2, 50001, 5072, ayiya_hdr + in6))))
    assert out[1].encap[0].tunnel_type == "AYIYA" and out[1].payload == b"six"
    gen = struct.pack("!BBHI", 0, 0, 0x86DD, 0x000100)
    out, _, _ = decode(ether(ipv4(o1, o2, 17, udp(o1, o2, 50002, 6081, gen + in6))))
    assert out[1].encap[0].key() == ("GENEVE", "192.0.2.10", "192.0.2.20", 50002, 6081, 17)
    in4 = ipv4(S, D, 17, udp(S, D, 1, 2, b"g"))
    gtp = struct.pack("!BBHI", 0x30, 0xFF, len(in4), 1) + in4
    out, _, _ = decode(ether(ipv4(o1, o2, 17, udp(o1, o2, 2152, 2152, gtp))))
    assert out[1].encap[0].tunnel_type == "GTPv1"
    # GTP port as *source*, a well-known port as destination: not GTP (Zeek's false_gtp case)
    out, _, _ = decode(ether(ipv4(o1, o2, 17, udp(o1, o2, 2152, 53, gtp))))
    assert len(out) == 1 and out[0].encap == ()


@pytest.mark.parametrize("trace, expect", [
    ("tunnels/gre-sample.pcap", {"GRE"}),
    ("tunnels/geneve-vxlan-dns-truncated.pcap", {"GENEVE", "VXLAN"}),
    ("tunnels/gtp/gtp1_gn_normal_incl_fragmentation.pcap", {"GTPv1"}),
    ("tunnels/ayiya3.pcap", {"AYIYA"}),
    ("erspanII.pcap", {"GRE"}),
    ("tunnels/gre-aruba-amsdu.pcap", {"GRE"}),
    ("tunnels/gtp/gtp3_false_gtp.pcap", set()),
])
def test_corpus_tunnels(trace, expect):
    path = TRACES / trace
    if not path.exists():
        pytest.skip("conformance corpus not available")
    out: list[Packet] = []
    dec = Decoder(DecoderOptions(ignore_checksums=True), RecordingWeirds())
    for b in open_source(path).batches():
        dec.decode_batch(b, out.append)
    assert {e.tunnel_type for p in out for e in p.encap} == expect
    assert out and dec.stats["decoder_errors"] == 0


def test_corpus_fast_and_general_paths_agree():
    if not TRACES.is_dir():
        pytest.skip("conformance corpus not available")
    key = lambda p: tuple(getattr(p, f) if f != "encap" else tuple(e.key() for e in p.encap)  # noqa: E731
                          for f in Packet.__slots__)
    total = 0
    for path in sorted(TRACES.rglob("*.pcap")):
        a: list = []
        b: list = []
        d1, d2 = Decoder(DecoderOptions(), None), Decoder(DecoderOptions(), None)
        for lt, batch in open_source(path).batches():
            d1.decode_batch((lt, batch), a.append)
            for ts, wl, data in batch:
                d2.decode(lt, ts, wl, data, b.append)
        assert [key(p) for p in a] == [key(p) for p in b], path
        total += len(a)
    assert total > 5000


# ---------------------------------------------------------------- checksum helper

@given(st.binary(min_size=2, max_size=300))
def test_checksum_congruence(data):
    c = inet_checksum(data)
    fixed = data + struct.pack("!H", c) if len(data) % 2 == 0 else data + b"\x00" + struct.pack("!H", c)
    assert plain_ok(fixed, 0, len(fixed)) == (any(fixed))
    assert region_sum(data, 0, len(data)) % 0xFFFF == (0xFFFF - c) % 0xFFFF


def test_l2_addresses_can_be_skipped():
    frames = [tcp4_frame(), ether(ipv4(S, D, 6, tcp(S, D, 1, 2)), vlans=(3, 4))]  # fast path, general path
    out, _, _ = decode(frames, l2_addrs=False)
    assert [(p.src_mac, p.dst_mac) for p in out] == [(None, None)] * 2
    assert out[1].inner_vlan == 4

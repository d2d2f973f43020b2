"""The sharding hash: symmetric, deterministic across processes, keeps tunnels and fragments whole."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

from decoder_frames import a4, ether, ipv4, ipv6, tcp, udp
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.sharding import flow_hash, outer_addresses, shard_filter, shard_of, symmetric_hash

ip4s = st.binary(min_size=4, max_size=4)
ip6s = st.binary(min_size=16, max_size=16)
ports = st.integers(0, 65535)


@given(ip4s, ip4s, ports, ports, st.integers(1, 64), st.booleans(), st.lists(st.integers(0, 4095), max_size=2))
def test_both_directions_same_shard_v4(s, d, sp, dp, n, is_udp, vlans):
    mk = udp if is_udp else tcp
    fwd = ether(ipv4(s, d, 17 if is_udp else 6, mk(s, d, sp, dp, b"x")), vlans=tuple(vlans))
    rev = ether(ipv4(d, s, 17 if is_udp else 6, mk(d, s, dp, sp, b"y")), vlans=tuple(vlans))
    assert shard_of(1, fwd, n) == shard_of(1, rev, n)
    assert 0 <= shard_of(1, fwd, n) < n


@given(ip6s, ip6s, ports, ports, st.integers(1, 64))
def test_both_directions_same_shard_v6(s, d, sp, dp, n):
    fwd = ipv6(s, d, 17, udp(s, d, sp, dp, b"x"))
    rev = ipv6(d, s, 17, udp(d, s, dp, sp, b"y"))
    assert shard_of(229, fwd, n) == shard_of(229, rev, n)


@given(ip4s, ip4s, ports, ports, st.integers(0, 255))
def test_flow_hash_symmetric(s, d, sp, dp, proto):
    assert flow_hash(s, d, sp, dp, proto) == flow_hash(d, s, dp, sp, proto)
    assert symmetric_hash(s, d) == symmetric_hash(d, s)


def test_fragments_and_tunnels_stay_with_their_flow():
    s, d = a4("10.1.1.1"), a4("10.2.2.2")
    whole = ether(ipv4(s, d, 17, udp(s, d, 1000, 53, b"q" * 100)))
    later_frag = ether(ipv4(d, s, 17, b"z" * 40, ident=9, flags_frag=5))
    o1, o2 = a4("192.0.2.1"), a4("192.0.2.2")
    inner = ether(ipv4(s, d, 6, tcp(s, d, 1, 2)))
    vx1 = ether(ipv4(o1, o2, 17, udp(o1, o2, 40000, 4789, b"\x08" + b"\x00" * 7 + inner)))
    vx2 = ether(ipv4(o2, o1, 17, udp(o2, o1, 40001, 4789, b"\x08" + b"\x00" * 7 + inner)))
    gre = ether(ipv4(o1, o2, 47, struct.pack("!HH", 0, 0x0800) + inner[14:]))
    for n in (2, 3, 5, 8, 13):
        assert shard_of(1, whole, n) == shard_of(1, later_frag, n)
        assert shard_of(1, vx1, n) == shard_of(1, vx2, n) == shard_of(1, gre, n)
    assert outer_addresses(1, vx1) == (o1, o2)


def test_other_link_types_use_the_outer_ip():
    s, d = a4("10.1.1.1"), a4("10.2.2.2")
    pkt = ipv4(s, d, 6, tcp(s, d, 1, 2))
    sll = struct.pack("!HHH8sH", 0, 1, 6, b"\x00" * 8, 0x0800) + pkt
    null = struct.pack("<I", 2) + pkt
    mpls = ether(struct.pack("!I", (5 << 12) | 0x100) + pkt, 0x8847)
    pppoe = ether(struct.pack("!BBHHH", 0x11, 0, 1, len(pkt) + 2, 0x21) + pkt, 0x8864, vlans=(1, 2))
    for lt, frame in ((113, sll), (0, null), (1, mpls), (1, pppoe), (101, pkt), (228, pkt)):
        assert outer_addresses(lt, frame) == (s, d), lt


def test_non_ip_and_garbage_go_to_shard_zero():
    arp = ether(b"\x00" * 28, 0x0806)
    for frame in (arp, b"", b"\x45", b"\xff" * 13):
        assert shard_of(1, frame, 7) == 0
    assert shard_of(1, ether(ipv4(a4("1.2.3.4"), a4("5.6.7.8"), 6, b"")), 1) == 0


def test_shard_filter_partitions_a_batch():
    seg = tcp(a4("1.1.1.1"), a4("2.2.2.2"), 1, 80)
    frames = [(float(i), 60, ether(ipv4(a4(f"10.0.{i}.1"), a4("10.9.9.9"), 6, seg))) for i in range(200)]
    parts = [shard_filter(k, 4)((1, frames))[1] for k in range(4)]
    assert sorted(f[0] for p in parts for f in p) == [f[0] for f in frames]
    assert all(len(p) > 20 for p in parts)  # spread reasonably
    assert shard_filter(0, 1)((1, frames))[1] == frames


@settings(max_examples=1, deadline=None)
@given(st.just(None))
def test_deterministic_across_processes(_):
    code = ("from analysis.sharding import shard_of; import sys; "
            "f=bytes.fromhex(sys.argv[1]); print(shard_of(1, f, 97))")
    frame = ether(ipv4(a4("203.0.113.5"), a4("198.51.100.7"), 6, tcp(a4("203.0.113.5"), a4("198.51.100.7"), 1, 2)))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    seen = set()
    for seed in ("1", "2", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=root)
        r = subprocess.run([sys.executable, "-c", code, frame.hex()], env=env, capture_output=True, text=True,
                           check=True, timeout=30)
        seen.add(int(r.stdout))
    assert seen == {shard_of(1, frame, 97)}

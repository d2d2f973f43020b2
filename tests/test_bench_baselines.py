"""The engine benchmark's baselines count what they claim, so the ratios against them mean something."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from ceiling import bare_conn_flows, count_flows  # noqa: E402

from analysis import trafficgen  # noqa: E402


def batches(n: int = 3000, size: int = 256) -> list:
    pkts = trafficgen.generate(n, seed=5)
    return [(1, [(ts, len(f), f) for ts, f in pkts[i:i + size]]) for i in range(0, len(pkts), size)]


def test_bare_accounting_sees_every_ipv4_tcp_udp_packet_of_the_ceiling() -> None:
    bs = batches()
    flows = count_flows(bs)
    ceiling_v4 = sum(v for k, v in flows.items() if len(k[0]) == 4 and k[4] in (6, 17))
    bare = bare_conn_flows(bs)
    assert ceiling_v4 > 1000
    assert sum(c.orig_pkts + c.resp_pkts for c in bare.values()) == ceiling_v4
    # one entry per connection, both directions folded into it: as many as the ceiling's flows
    assert len(bare) == sum(1 for k in flows if len(k[0]) == 4 and k[4] in (6, 17))


def test_bare_accounting_folds_directions_and_counts_bytes() -> None:
    def frame(src: bytes, dst: bytes, sp: int, dp: int, flags: int, seq: int, payload: bytes) -> bytes:
        tcp = struct.pack("!HHIIBBHHH", sp, dp, seq, 0, 5 << 4, flags, 1000, 0, 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
        return b"\x00" * 12 + b"\x08\x00" + ip + tcp

    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    pkts = [frame(a, b, 1234, 80, 0x02, 100, b""), frame(b, a, 80, 1234, 0x12, 500, b""),
            frame(a, b, 1234, 80, 0x18, 101, b"hello"), frame(a, b, 1234, 80, 0x18, 101, b"hello")]
    [c] = bare_conn_flows([(1, [(float(i), len(f), f) for i, f in enumerate(pkts)])]).values()
    assert (c.orig_pkts, c.resp_pkts) == (3, 1)
    assert c.orig_bytes == 40 + 45 + 45 and c.resp_bytes == 40
    assert c.bits & 0x100 and not c.bits & 0x200     # the repeated segment is a retransmission
    assert (c.first, c.last) == (0.0, 3.0)

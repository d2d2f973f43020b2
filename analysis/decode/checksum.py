"""Internet checksums without a per-word Python loop.

The ones'-complement sum of 16-bit words is congruent, modulo 0xFFFF, to the big-endian integer
made of those words (2**16 == 1 mod 0xFFFF).  So ``int.from_bytes(data, "big") % 0xFFFF`` — one
C-level conversion and one big-int remainder — tells whether a region including its checksum
field sums to ones'-complement zero, i.e. whether the checksum is valid.  For any header with a
non-zero word the two notions of zero (0x0000 / 0xFFFF) cannot be confused, which holds for every
IP/TCP/UDP/ICMP header (the pseudo-header always carries a protocol number).
"""

from __future__ import annotations

_from_bytes = int.from_bytes


def region_sum(data: bytes, start: int, end: int) -> int:
    """Value congruent (mod 0xFFFF) to the ones'-complement sum of ``data[start:end]``.

    An odd-length region is padded with a zero byte, as the checksum algorithm requires.
    """
    v = _from_bytes(data[start:end], "big")
    if (end - start) & 1:
        v <<= 8
    return v


def ipv4_header_ok(data: bytes, off: int, hlen: int) -> bool:
    return _from_bytes(data[off:off + hlen], "big") % 0xFFFF == 0


def transport_ok(data: bytes, start: int, end: int, addrs: bytes, proto: int) -> bool:
    """Checksum over a TCP/UDP/ICMPv6 segment plus pseudo-header.

    ``addrs`` is source and destination address bytes back to back (8 or 32 bytes), exactly as
    they sit in the IP header.
    """
    length = end - start
    return (region_sum(data, start, end) + _from_bytes(addrs, "big") + proto + length) % 0xFFFF == 0


def plain_ok(data: bytes, start: int, end: int) -> bool:
    """Checksum without pseudo-header (ICMPv4, IGMP)."""
    return region_sum(data, start, end) % 0xFFFF == 0


def inet_checksum(data: bytes) -> int:
    """The checksum field value for ``data`` (with its checksum field zeroed): for building packets."""
    if len(data) & 1:
        data += b"\x00"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


try:  # numpy sums many segments in one call; without it, one big-int remainder per segment
    import numpy as _np
except ImportError:  # pragma: no cover - exercised only where numpy is absent
    _np = None


def failed_checksums(regions: list[bytes], totals: list[int], extra: list[int],
                     ipv6: list[int] = ()) -> tuple[list[int], list[int]]:
    """Check the IPv4 header and transport checksums of a batch of fast-path packets at once.

    ``regions`` joined form one buffer holding, per packet, its IPv4 packet (header without
    options, then the transport segment) or, for IPv6, 12 zero bytes followed by the address
    pair and the transport segment — each zero-padded to a multiple of 4 bytes.  So in 32-bit
    lanes a packet is [start, +3) header start, [+3, +5 | +11) addresses, then the segment.
    ``totals[i]`` is packet i's IP total length; ``extra[i]`` its pseudo-header protocol +
    length term, or -1 when its transport checksum is not to be checked here; ``ipv6`` lists
    the IPv6 packets (no header checksum).  Returns (packets with a bad IPv4 header checksum,
    packets with a bad transport checksum) as indices.

    Summing native little-endian 32-bit lanes gives, modulo 0xFFFF, 256 times the big-endian
    16-bit ones'-complement sum (2**16 == 1, and a byte swap multiplies by 256), so the test
    "sum == 0 (mod 0xFFFF)" is unchanged once the big-endian ``extra`` term is scaled by 256.
    """
    buf = b"".join(regions)
    n = len(extra)
    if _np is not None and n > 4:
        tot = _np.asarray(totals, dtype=_np.intp)
        seg_off = _np.full(n, 5, dtype=_np.intp)
        lanes_per = (tot + 3) >> 2
        if ipv6:
            v6 = _np.asarray(ipv6, dtype=_np.intp)
            seg_off[v6] = 11
            lanes_per[v6] = (tot[v6] + 7) >> 2
        start = _np.zeros(n, dtype=_np.intp)
        _np.cumsum(lanes_per[:-1], out=start[1:])
        bounds = _np.empty(3 * n, dtype=_np.intp)
        bounds[0::3] = start
        bounds[1::3] = start + 3
        bounds[2::3] = start + seg_off
        lanes = _np.frombuffer(buf, dtype="<u4")
        parts = _np.add.reduceat(lanes, bounds, dtype=_np.uint64).reshape(n, 3)
        ip_ok = (parts[:, 0] + parts[:, 1]) % 0xFFFF == 0
        if ipv6:
            ip_ok[v6] = True
        ex = _np.asarray(extra, dtype=_np.int64)
        l4 = (parts[:, 1] + parts[:, 2] + (_np.maximum(ex, 0) * 256).astype(_np.uint64)) % 0xFFFF
        l4_bad = (l4 != 0) & (ex >= 0) & ip_ok
        return _np.nonzero(~ip_ok)[0].tolist(), _np.nonzero(l4_bad)[0].tolist()
    bad_ip: list[int] = []
    bad_l4: list[int] = []
    v6set = set(ipv6)
    pos = 0
    for i in range(n):
        is6 = i in v6set
        size = 4 * (((totals[i] + 7) if is6 else (totals[i] + 3)) >> 2)
        a, b, c = pos, pos + 12, pos + (44 if is6 else 20)
        e = pos + size
        pos = e
        if not is6 and _from_bytes(buf[a:c], "big") % 0xFFFF:
            bad_ip.append(i)
        elif extra[i] >= 0 and (_from_bytes(buf[b:e], "big") + extra[i]) % 0xFFFF:
            bad_l4.append(i)
    return bad_ip, bad_l4

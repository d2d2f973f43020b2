"""Baselines for the engine benchmark: how fast can plain Python (or dpkt) walk a trace at all?

* ``count_flows`` -- the pure-Python ceiling: Ethernet/IPv4/IPv6 and TCP/UDP headers parsed with
  precompiled ``struct.unpack_from``, a direction-free 5-tuple built, a per-flow counter dict
  updated.  Nothing else: no checksums, no options, no state machine.  Any real engine does at
  least this much per packet, so its rate is an upper bound for ours in pure Python.
* ``bare_conn_flows`` -- the envelope between that ceiling and a real engine: the same parse plus
  the barest per-connection accounting (direction, packets and IP bytes each way, highest sequence
  number, SYN/data/retransmission bits, first/last time), with none of Zeek's state machine,
  timers, UIDs or logs.  What an engine may spend on Zeek's semantics is what lies between this
  and its target.
* ``pcap_batches`` -- a struct-based pcap reader over bytes already in memory, for the
  ``*_reader`` variants (the same loops, plus record parsing).
* ``dpkt_flows`` / ``dpkt_reader_flows`` -- the same job written the usual dpkt way
  (``dpkt.ethernet.Ethernet(buf)`` and attribute access; ``dpkt.pcap.Reader`` for the reader).

Run standalone: ``python bench/ceiling.py TRACE.pcap`` prints packets/s of each loop.
"""

from __future__ import annotations

import io
import struct
import sys
import time
from collections.abc import Iterable, Iterator

Batch = tuple[int, list[tuple[float, int, bytes]]]

_ETHTYPE = struct.Struct("!H")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_PORTS = struct.Struct("!HH")
_REC = struct.Struct("<IIII")
_IP4_BARE = struct.Struct("!BxHxxHBBxx8s")     # vhl, total, frag, ttl, proto, addresses
_TCP_BARE = struct.Struct("!HHIIBBH")           # ports, seq, ack, offset, flags, window


def count_flows(batches: Iterable[Batch]) -> dict:
    """The ceiling loop: per-flow packet counts keyed by a direction-free 5-tuple."""
    flows: dict = {}
    get = flows.get
    ethtype = _ETHTYPE.unpack_from
    ip4 = _IP4.unpack_from
    ip6 = _IP6.unpack_from
    ports = _PORTS.unpack_from
    for _lt, pkts in batches:
        for _ts, _wire, data in pkts:
            n = len(data)
            if n < 34:
                continue
            (et,) = ethtype(data, 12)
            if et == 0x0800:
                vihl, _tos, _tl, _id, _off, _ttl, proto, _sum, src, dst = ip4(data, 14)
                l4 = 14 + (vihl & 0x0F) * 4
            elif et == 0x86DD and n >= 54:
                _vtf, _plen, proto, _hop, src, dst = ip6(data, 14)
                l4 = 54
            else:
                continue
            if (proto == 6 or proto == 17) and n >= l4 + 4:
                sp, dp = ports(data, l4)
            else:
                sp = dp = 0
            key = (src, sp, dst, dp, proto) if (src, sp) < (dst, dp) else (dst, dp, src, sp, proto)
            flows[key] = get(key, 0) + 1
    return flows


class _BareConn:
    __slots__ = ("first", "last", "orig_pkts", "resp_pkts", "orig_bytes", "resp_bytes",
                 "orig_seq", "resp_seq", "bits")

    def __init__(self, ts: float) -> None:
        self.first = self.last = ts
        self.orig_pkts = self.resp_pkts = self.orig_bytes = self.resp_bytes = 0
        self.orig_seq = self.resp_seq = self.bits = 0


def bare_conn_flows(batches: Iterable[Batch]) -> dict:
    """The barest per-connection accounting over Ethernet/IPv4 TCP/UDP (see the module doc)."""
    conns: dict = {}
    get = conns.get
    ip4 = _IP4_BARE.unpack_from
    tcp = _TCP_BARE.unpack_from
    ports = _PORTS.unpack_from
    for _lt, pkts in batches:
        for ts, _wire, data in pkts:
            if len(data) < 38 or data[12] != 8 or data[13] != 0:
                continue
            _vhl, total, _frag, _ttl, proto, addrs = ip4(data, 14)
            if proto == 6 and len(data) >= 54:
                _sp, _dp, seq, _ack, thl, flags, _win = tcp(data, 34)
                plen = total - 20 - ((thl >> 4) << 2)
            elif proto == 17 or proto == 6:
                _sp, _dp = ports(data, 34)
                flags = seq = 0
                plen = total - 28
            else:
                continue
            key = addrs + data[34:38]
            c = get(key)
            orig = True
            if c is None:
                c = get(addrs[4:] + addrs[:4] + data[36:38] + data[34:36])
                if c is None:
                    c = conns[key] = _BareConn(ts)
                else:
                    orig = False
            c.last = ts
            end = seq + plen
            if orig:
                c.orig_pkts += 1
                c.orig_bytes += total
                if end > c.orig_seq:
                    c.orig_seq = end
                elif plen:
                    c.bits |= 0x100
                if flags & 2:
                    c.bits |= 1
                if plen:
                    c.bits |= 4
            else:
                c.resp_pkts += 1
                c.resp_bytes += total
                if end > c.resp_seq:
                    c.resp_seq = end
                elif plen:
                    c.bits |= 0x200
                if flags & 2:
                    c.bits |= 2
                if plen:
                    c.bits |= 8
    return conns


def pcap_batches(raw: bytes, max_batch: int = 1024) -> Iterator[Batch]:
    """Batches from a little-endian microsecond pcap held in memory (what trafficgen writes)."""
    if raw[:4] != b"\xd4\xc3\xb2\xa1":
        raise ValueError("pcap_batches reads little-endian microsecond pcap only")
    (linktype,) = struct.unpack_from("<I", raw, 20)
    rec = _REC.unpack_from
    off, end = 24, len(raw)
    out: list = []
    while off + 16 <= end:
        sec, usec, caplen, wire = rec(raw, off)
        off += 16
        out.append((sec + usec * 1e-6, wire, raw[off:off + caplen]))
        off += caplen
        if len(out) == max_batch:
            yield linktype, out
            out = []
    if out:
        yield linktype, out


def _dpkt_count(frames: Iterable[bytes]) -> dict:
    import dpkt

    eth_cls, ip4_cls, ip6_cls = dpkt.ethernet.Ethernet, dpkt.ip.IP, dpkt.ip6.IP6
    l4_cls = (dpkt.tcp.TCP, dpkt.udp.UDP)
    errors = (dpkt.UnpackError, struct.error, IndexError, ValueError)
    flows: dict = {}
    get = flows.get
    for buf in frames:
        try:
            ip = eth_cls(buf).data
        except errors:
            continue
        if isinstance(ip, ip4_cls):
            proto = ip.p
        elif isinstance(ip, ip6_cls):
            proto = ip.nxt
        else:
            continue
        l4 = ip.data
        if isinstance(l4, l4_cls):
            sp, dp = l4.sport, l4.dport
        else:
            sp = dp = 0
        src, dst = ip.src, ip.dst
        key = (src, sp, dst, dp, proto) if (src, sp) < (dst, dp) else (dst, dp, src, sp, proto)
        flows[key] = get(key, 0) + 1
    return flows


def dpkt_flows(batches: Iterable[Batch]) -> dict:
    """The ceiling's job done with dpkt over pre-read frames."""
    return _dpkt_count(data for _lt, pkts in batches for _ts, _w, data in pkts)


def dpkt_reader_flows(raw: bytes) -> dict:
    """The same with ``dpkt.pcap.Reader`` reading the in-memory file."""
    import dpkt

    return _dpkt_count(buf for _ts, buf in dpkt.pcap.Reader(io.BytesIO(raw)))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python bench/ceiling.py TRACE.pcap", file=sys.stderr)
        return 2
    try:
        with open(argv[0], "rb") as fh:
            raw = fh.read()
        batches = list(pcap_batches(raw))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = sum(len(p) for _, p in batches)
    for name, fn in (("ceiling", lambda: count_flows(batches)), ("ceiling_reader", lambda: count_flows(pcap_batches(raw))),
                     ("bare_conn", lambda: bare_conn_flows(batches)),
                     ("dpkt", lambda: dpkt_flows(batches)), ("dpkt_reader", lambda: dpkt_reader_flows(raw))):
        t = time.perf_counter()
        flows = fn()
        dt = time.perf_counter() - t
        print(f"{name:15s} {n / dt:12,.0f} pkt/s  ({len(flows)} flows)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

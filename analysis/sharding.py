"""Which worker owns a frame: one symmetric flow hash, used by every file-mode worker.

Key choice: the **outermost IP address pair**, unordered, and nothing else.

* Symmetric: the pair is sorted before hashing, so A->B and B->A land on the same shard.
* Fragments: non-first IP fragments carry no ports; hashing ports for unfragmented packets
  only would send a flow's fragments elsewhere.  Addresses are in every fragment.
* Tunnels: the outer flow (a VXLAN/Geneve/GTP/AYIYA/Teredo UDP flow, a GRE or IP-in-IP pair)
  and all inner flows it carries share the outer address pair, so the tunnel's conn row, its
  tunnel.log rows and its inner connections stay on one worker — also when one inner flow
  uses several outer UDP flows (different outer ports), as AYIYA clients do.
* ICMP errors and their flows, and every connection between two hosts, stay together too.
The cost is balance: one very busy host pair is one worker's load — the same trade-off as the
symmetric 2-tuple RSS hashing NICs use for the same reasons.  Frames without an IP header
(ARP, undecodable garbage) all go to shard 0, so exactly one worker reports their weirds.

The hash is CRC-32 of the sorted address bytes: deterministic across processes and hosts
(unlike Python's ``hash()`` of str/bytes, which PYTHONHASHSEED randomises).
"""

from __future__ import annotations

from collections.abc import Callable
from zlib import crc32

from analysis.sources.base import Batch

_ETH = 1
_RAW_TYPES = (12, 14, 101, 228, 229)
_VLAN = (0x8100, 0x88A8, 0x9100)


def symmetric_hash(a: bytes, b: bytes) -> int:
    """Order-independent 32-bit hash of two packed addresses (any length)."""
    return crc32(a + b) if a <= b else crc32(b + a)


def flow_hash(src: bytes, dst: bytes, sport: int = 0, dport: int = 0, proto: int = 0) -> int:
    """Symmetric 5-tuple hash, for callers that do want ports (e.g. per-connection pools)."""
    ka = src + sport.to_bytes(2, "big")
    kb = dst + dport.to_bytes(2, "big")
    h = crc32(ka + kb) if ka <= kb else crc32(kb + ka)
    return crc32(proto.to_bytes(1, "big"), h)


def outer_addresses(link_type: int, data: bytes) -> tuple[bytes, bytes] | None:
    """The outermost IP source/destination bytes of a frame, or None when there is none.

    Cheap on purpose: Ethernet (+ any VLAN tags, MPLS, PPPoE, FabricPath), Linux SLL/SLL2,
    null/loopback, raw IP, NFLOG and 802.11 (+ radiotap) data frames.
    """
    try:
        off = 0
        n = len(data)
        if link_type == _ETH:
            if n >= 14 and data[12] == 0x89 and data[13] == 0x03:
                off = 16
            et = (data[off + 12] << 8) | data[off + 13]
            off += 14
        elif link_type == 113:
            et = (data[14] << 8) | data[15]
            off = 16
        elif link_type == 276:
            et = (data[0] << 8) | data[1]
            off = 20
        elif link_type in (0, 108):
            off, et = 4, 0x0800
        elif link_type == 239:
            off = 4
            while True:
                tlen = data[off] | (data[off + 1] << 8)
                if data[off + 2] == 9 and data[off + 3] == 0:
                    off += 4
                    break
                if tlen < 4:
                    return None
                off += (tlen + 3) & ~3
            et = 0x0800
        elif link_type in (105, 127):
            if link_type == 127:
                off = data[2] | (data[3] << 8)
            fc = data[off]
            if not (fc >> 2) & 0x02 or (fc >> 4) & 0x04 or data[off + 1] & 0x40:
                return None
            hl = 30 if data[off + 1] & 3 == 3 else 24
            if (fc >> 4) & 0x08:
                hl += 2
            off += hl + 6  # LLC/SNAP
            et = (data[off] << 8) | data[off + 1]
            off += 2
        else:
            et = 0x0800  # raw IP and unknown link types (like Zeek's root analyzer)
        while True:
            if et in _VLAN:
                et = (data[off + 2] << 8) | data[off + 3]
                off += 4
            elif et == 0x8847:  # MPLS: skip labels to bottom of stack
                while not data[off + 2] & 1:
                    off += 4
                off += 4
                et = 0x0800
            elif et == 0x8864:  # PPPoE session
                off += 8
                et = 0x0800
            else:
                break
        if et not in (0x0800, 0x86DD):
            return None
        v = data[off] >> 4
        if v == 4 and n >= off + 20:
            return data[off + 12:off + 16], data[off + 16:off + 20]
        if v == 6 and n >= off + 40:
            return data[off + 8:off + 24], data[off + 24:off + 40]
        return None
    except IndexError:
        return None


def shard_of(link_type: int, data: bytes, n_shards: int) -> int:
    """The shard (0..n_shards-1) that owns this frame."""
    if n_shards <= 1:
        return 0
    addrs = outer_addresses(link_type, data)
    if addrs is None:
        return 0
    return symmetric_hash(addrs[0], addrs[1]) % n_shards


def shard_filter(index: int, n_shards: int) -> Callable[[Batch], Batch]:
    """A batch filter keeping only the frames of shard ``index`` (for file-mode workers)."""
    if not 0 <= index < n_shards:
        raise ValueError(f"shard index {index} not in 0..{n_shards - 1}")

    def keep(batch: Batch) -> Batch:
        lt, pkts = batch
        if n_shards <= 1:
            return batch
        return lt, [p for p in pkts if shard_of(lt, p[2], n_shards) == index]

    return keep

"""Frame builders for the decoder/source/sharding tests: correct checksums unless asked not to."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from analysis.decode.checksum import inet_checksum

MAC_A = bytes.fromhex("001122334455")
MAC_B = bytes.fromhex("66778899aabb")

CONFORMANCE = Path(os.environ.get("STARLING_CONFORMANCE",
                                  Path(__file__).resolve().parent.parent.parent / "shared" / "conformance"))
TRACES = CONFORMANCE / "zeek" / "traces"


def a4(text: str) -> bytes:
    return socket.inet_aton(text)


def a6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def _l4_checksum(src: bytes, dst: bytes, proto: int, seg: bytes) -> int:
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(seg))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(seg), proto)
    return inet_checksum(pseudo + seg)


def tcp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes = b"", flags: int = 0x18,
        seq: int = 1000, ack: int = 2000, win: int = 8192, bad: bool = False, hlen: int = 20) -> bytes:
    opts = b"\x01" * (hlen - 20)
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (hlen // 4) << 4, flags, win, 0, 0) + opts + payload
    c = _l4_checksum(src, dst, 6, seg) ^ (0x1111 if bad else 0)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes = b"", bad: bool = False,
        zero_csum: bool = False) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if zero_csum:
        return seg
    c = (_l4_checksum(src, dst, 17, seg) or 0xFFFF) ^ (0x1111 if bad else 0)
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def icmp(itype: int, code: int, payload: bytes = b"abcd") -> bytes:
    msg = struct.pack("!BBHI", itype, code, 0, 0x12340001) + payload
    return msg[:2] + struct.pack("!H", inet_checksum(msg)) + msg[4:]


def icmp6(src: bytes, dst: bytes, itype: int, code: int, payload: bytes = b"abcd") -> bytes:
    msg = struct.pack("!BBHI", itype, code, 0, 0x12340001) + payload
    return msg[:2] + struct.pack("!H", _l4_checksum(src, dst, 58, msg)) + msg[4:]


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int = 1, flags_frag: int = 0x4000,
         ttl: int = 64, options: bytes = b"", bad_csum: bool = False, total: int | None = None) -> bytes:
    ihl = 5 + len(options) // 4
    tot = 4 * ihl + len(payload) if total is None else total
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tot, ident, flags_frag, ttl, proto, 0, src, dst) + options
    c = inet_checksum(hdr) ^ (0x1111 if bad_csum else 0)
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def ipv6(src: bytes, dst: bytes, nxt: int, payload: bytes, hlim: int = 64, plen: int | None = None) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload) if plen is None else plen, nxt, hlim,
                       src, dst) + payload


def ether(payload: bytes, ethertype: int = 0x0800, vlans: tuple[int, ...] = (), dst: bytes = MAC_B,
          src: bytes = MAC_A) -> bytes:
    tags = b"".join(struct.pack("!HH", 0x8100, v) for v in vlans)
    if tags:
        # each tag is TPID+TCI; the first TPID sits where the ethertype would be
        return dst + src + tags + struct.pack("!H", ethertype) + payload
    return dst + src + struct.pack("!H", ethertype) + payload


def tcp4_frame(sip="10.0.0.1", dip="10.0.0.2", sport=12345, dport=80, payload=b"hello", **kw) -> bytes:
    s, d = a4(sip), a4(dip)
    return ether(ipv4(s, d, 6, tcp(s, d, sport, dport, payload, **kw)))


def udp4_frame(sip="10.0.0.1", dip="10.0.0.2", sport=5353, dport=53, payload=b"query", **kw) -> bytes:
    s, d = a4(sip), a4(dip)
    return ether(ipv4(s, d, 17, udp(s, d, sport, dport, payload, **kw)))


def pcap_bytes(frames: list[tuple[float, bytes]], linktype: int = 1, endian: str = "<", nano: bool = False,
               snaplen: int = 65535, wire_lens: list[int] | None = None) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, (ts, data) in enumerate(frames):
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        wl = wire_lens[i] if wire_lens else len(data)
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), wl) + data)
    return b"".join(out)


def ng_block(btype: int, body: bytes, endian: str = "<") -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def ng_shb(endian: str = "<") -> bytes:
    return ng_block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)


def ng_idb(linktype: int, tsresol: int | None = None, snaplen: int = 0, endian: str = "<") -> bytes:
    opts = b""
    if tsresol is not None:
        opts = struct.pack(endian + "HH", 9, 1) + bytes([tsresol]) + b"\x00\x00\x00" + struct.pack(endian + "HH", 0, 0)
    return ng_block(1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts, endian)


def ng_epb(ifid: int, ticks: int, data: bytes, wire: int | None = None, endian: str = "<") -> bytes:
    return ng_block(6, struct.pack(endian + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                                   len(data) if wire is None else wire) + data, endian)


def ng_spb(data: bytes, endian: str = "<") -> bytes:
    return ng_block(3, struct.pack(endian + "I", len(data)) + data, endian)


def ng_opb(ifid: int, ticks: int, data: bytes, endian: str = "<") -> bytes:
    return ng_block(2, struct.pack(endian + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                                   len(data)) + data, endian)


class RecordingWeirds:
    """Stands in for WeirdReporter: records every report, no rate limiting."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def net(self, name: str, ts: float, addl: str = "", source: str = "") -> None:
        self.rows.append((name, None, None, addl, source))

    def flow(self, name: str, ts: float, src: str, dst: str, addl: str = "", source: str = "") -> None:
        self.rows.append((name, src, dst, addl, source))

    def names(self) -> list[str]:
        return [r[0] for r in self.rows]

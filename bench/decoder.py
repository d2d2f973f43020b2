"""Decoder speed against a minimal pure-Python header-unpacking loop, in the same run.

    python bench/decoder.py [--packets 200000] [--repeat 5] [--trace FILE ...] [-C]

The baseline loop unpacks Ethernet/IPv4/TCP|UDP headers with ``struct.unpack_from`` and counts
packets per 5-tuple in a dict (no checksums, no text addresses, no objects).  The decoder is
measured on the same frames: ``Decoder.decode_batch`` with checksum verification on (Zeek's
default) and off (``-C``).  Prints median packets/s and the ratio decoder/baseline.
A synthetic trace (valid checksums, 1024 flows, mixed sizes) is generated in memory unless
``--trace`` is given; the frames are read into memory first so file I/O is not measured.
"""

from __future__ import annotations

import argparse
import random
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.decode import Decoder, DecoderOptions  # noqa: E402
from analysis.decode.checksum import inet_checksum  # noqa: E402
from analysis.sources import open_source  # noqa: E402


def synth_frames(n: int, seed: int = 7) -> list[tuple[float, int, bytes]]:
    rng = random.Random(seed)
    flows = []
    for i in range(1024):
        src = bytes([10, 0, i >> 8, i & 0xFF])
        dst = bytes([192, 168, rng.randrange(256), rng.randrange(1, 255)])
        flows.append((src, dst, rng.randrange(1024, 65535), rng.choice((80, 443, 53, 22)),
                       6 if rng.random() < 0.85 else 17))
    out = []
    ts = 1_700_000_000.0
    for k in range(n):
        src, dst, sport, dport, proto = flows[rng.randrange(len(flows))]
        if rng.random() < 0.5:
            src, dst, sport, dport = dst, src, dport, sport
        plen = rng.choice((0, 0, 40, 200, 1400, 1460))
        payload = bytes(rng.randrange(256) for _ in range(16)) * (plen // 16) + b"x" * (plen % 16)
        if proto == 6:
            l4 = struct.pack("!HHIIBBHHH", sport, dport, k, k * 7, 0x50, 0x18, 65535, 0, 0) + payload
        else:
            l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(l4))
        c = inet_checksum(pseudo + l4)
        if proto == 6:
            l4 = l4[:16] + struct.pack("!H", c) + l4[18:]
        else:
            l4 = l4[:6] + struct.pack("!H", c or 0xFFFF) + l4[8:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), k & 0xFFFF, 0x4000, 64, proto, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
        frame = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00" + ip + l4
        ts += 0.0001
        out.append((ts, len(frame), frame))
    return out


def trace_frames(paths: list[str]) -> list[tuple[float, int, bytes]]:
    out = []
    for p in paths:
        src = open_source(p)
        for lt, batch in src.batches():
            if lt == 1:
                out.extend(batch)
    return out


def baseline(frames) -> int:
    unpack_from = struct.unpack_from
    counts: dict = {}
    for _ts, _wl, data in frames:
        if len(data) < 34:
            continue
        (et,) = unpack_from("!H", data, 12)
        if et != 0x0800:
            continue
        vhl, _tos, _tot, _id, _frag, _ttl, proto, _sum, src, dst = unpack_from("!BBHHHBBH4s4s", data, 14)
        t = 14 + (vhl & 15) * 4
        if proto == 6 or proto == 17:
            sport, dport = unpack_from("!HH", data, t)
        else:
            sport = dport = 0
        key = (src, dst, sport, dport, proto)
        counts[key] = counts.get(key, 0) + 1
    return len(counts)


def run_decoder(frames, ignore: bool) -> int:
    dec = Decoder(DecoderOptions(ignore_checksums=ignore), None)
    n = 0

    def emit(p):
        nonlocal n
        n += 1

    for i in range(0, len(frames), 1024):
        dec.decode_batch((1, frames[i:i + 1024]), emit)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--trace", nargs="*", default=None)
    args = ap.parse_args()
    frames = trace_frames(args.trace) if args.trace else synth_frames(args.packets)
    print(f"frames: {len(frames)} ({'trace' if args.trace else 'synthetic'})")
    contenders = {
        "baseline loop": baseline,
        "decoder (checksums)": lambda f: run_decoder(f, False),
        "decoder (-C)": lambda f: run_decoder(f, True),
    }
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    ratios: dict[str, list[float]] = {k: [] for k in contenders}
    # Interleaved rounds: on a shared, noisy machine each ratio compares runs made moments apart.
    for _ in range(args.repeat):
        base = None
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn(frames)
            r = len(frames) / (time.perf_counter() - t0)
            rates[name].append(r)
            base = r if base is None else base
            ratios[name].append(r / base)
    for name in contenders:
        print(f"{name:22} {statistics.median(rates[name]):12,.0f} pkt/s   "
              f"ratio {statistics.median(ratios[name]):.2f}x (median of {args.repeat} interleaved rounds)")


if __name__ == "__main__":
    main()

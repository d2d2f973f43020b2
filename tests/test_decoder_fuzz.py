"""Bounded fuzzing: mutated corpus frames never raise, never trip the decoder's internal guard,
and the fragment table stays within its bounds."""

from __future__ import annotations

import random
import time

from decoder_frames import TRACES, RecordingWeirds, a4, ether, ipv4, tcp4_frame, udp, udp4_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.decode import Decoder, DecoderOptions
from analysis.sources import open_source

LINK_TYPES = (0, 1, 12, 101, 105, 108, 113, 127, 228, 229, 239, 276, 9999)
FUZZ_SECONDS = 3.0


def seed_frames() -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    if TRACES.is_dir():
        for path in sorted(TRACES.rglob("*")):
            if path.suffix not in (".pcap", ".pcapng", ".gz"):
                continue
            src = open_source(path)
            for lt, batch in src.batches():
                frames.extend((lt, data) for _, _, data in batch[:40])
            src.close()
    frames += [(1, tcp4_frame()), (1, udp4_frame())]
    return frames


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    k = rng.randrange(5)
    if k == 0 and b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif k == 1:
        del b[rng.randrange(len(b) + 1):]
    elif k == 2 and b:  # header region: where the length fields live
        for _ in range(3):
            b[rng.randrange(min(len(b), 80))] = rng.randrange(256)
    elif k == 3:
        b += bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    else:
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    return bytes(b)


def test_mutated_corpus_frames():
    frames = seed_frames()
    rng = random.Random(20261127)
    w = RecordingWeirds()
    decs = [Decoder(DecoderOptions(max_frag_datagrams=64, max_frag_bytes=1 << 16), w),
            Decoder(DecoderOptions(ignore_checksums=True, max_frag_datagrams=64, max_frag_bytes=1 << 16), w)]
    out: list = []
    n = 0
    deadline = time.monotonic() + FUZZ_SECONDS
    while time.monotonic() < deadline:
        batch = []
        lt = rng.choice(frames)[0]
        for _ in range(64):
            flt, data = rng.choice(frames)
            if flt != lt:
                continue
            data = mutate(rng, data)
            wire = len(data) if rng.random() < 0.8 else rng.randrange(0, 3000)
            batch.append((float(n), wire, data))
            n += 1
        for dec in decs:
            dec.decode_batch((lt, batch), out.append)  # fast path + general path
            for ts, wire, data in batch[:8]:
                dec.decode(rng.choice(LINK_TYPES), ts, wire, data, out.append)
        out.clear()
    assert n > 2000
    for dec in decs:
        assert dec.stats["decoder_errors"] == 0, [r for r in w.rows if r[0] == "starling_decoder_error"][:3]
        assert len(dec.fragments) <= 64 and dec.fragments.nbytes <= 1 << 16


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LINK_TYPES), st.binary(max_size=200), st.integers(0, 400))
def test_random_bytes_any_link_type(lt, data, wire):
    dec = Decoder(DecoderOptions(), RecordingWeirds())
    dec.decode(lt, 1.0, wire, data, lambda p: None)
    dec.decode_batch((lt, [(1.0, wire, data), (2.0, len(data), data)]), lambda p: None)
    assert dec.stats["decoder_errors"] == 0


def test_fragment_flood_stays_bounded():
    s, d = a4("10.0.0.1"), a4("10.0.0.2")
    seg = udp(s, d, 1, 2, b"x" * 1400)
    dec = Decoder(DecoderOptions(max_frag_datagrams=100, max_frag_bytes=50_000), RecordingWeirds())
    batch = [(float(i), 0, ether(ipv4(s, d, 17, seg[:1000], ident=i, flags_frag=0x2000))) for i in range(3000)]
    batch = [(ts, len(f), f) for ts, _, f in batch]
    dec.decode_batch((1, batch), lambda p: None)
    assert len(dec.fragments) <= 100 and dec.fragments.nbytes <= 50_000
    assert dec.fragments.evicted >= 2900

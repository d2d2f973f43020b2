"""Connection UIDs in Zeek's shape: a type letter plus 96 random bits in base62.

Zeek prints each 64-bit word of the UID in base62 and concatenates them, so UIDs have a
varying length (about 16-18 characters).  With a seed the sequence is reproducible, which
keeps test runs and cluster/standalone comparisons stable.

Every connection needs one (at the latest for its conn.log row), so they are made in blocks:
one draw of random bytes per block and, with numpy, one vectorised base62 conversion — a
per-uid Python divmod loop was a noticeable share of a new connection's cost.
"""

from __future__ import annotations

import os
import random

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PAIRS = [a + b for a in _DIGITS for b in _DIGITS]   # two digits per step: half the divmods
BLOCK = 256                                           # uids made per refill

try:
    import numpy as _np
except ImportError:  # pragma: no cover - exercised only where numpy is absent
    _np = None


def _base62(n: int) -> str:
    if n < 62:
        return _DIGITS[n]
    out = []
    while n >= 62:
        n, r = divmod(n, 3844)
        out.append(_PAIRS[r])
    s = "".join(reversed(out))
    if n:
        return _DIGITS[n] + s
    return s.lstrip("0") or "0"


def _block_py(raw: bytes) -> list[str]:
    out = []
    for i in range(0, len(raw), 12):
        out.append(_base62(int.from_bytes(raw[i:i + 8], "big")) + _base62(int.from_bytes(raw[i + 8:i + 12], "big")))
    return out


if _np is not None:
    _ALPHA = _np.frombuffer(_DIGITS.encode(), dtype=_np.uint8)
    _W64, _W32 = 11, 6                                 # base62 digits of 2**64-1 and 2**32-1

    def _digits(v, width: int):
        """(n, width) base62 digit matrix of the uint64 vector ``v``, most significant first."""
        d = _np.empty((len(v), width), dtype=_np.uint8)
        for k in range(width - 1, -1, -1):
            d[:, k] = v % 62
            v = v // 62
        return d

    def _block(raw: bytes) -> list[str]:
        a = _np.frombuffer(raw, dtype=_np.uint8).reshape(-1, 12)
        hi = a[:, :8].copy().view(">u8").ravel().astype(_np.uint64)
        lo = a[:, 8:].copy()
        lo = (lo[:, 0].astype(_np.uint64) << 24) | (lo[:, 1].astype(_np.uint64) << 16) \
            | (lo[:, 2].astype(_np.uint64) << 8) | lo[:, 3].astype(_np.uint64)
        dh = _digits(hi, _W64)
        dl = _digits(lo, _W32)
        # leading zeros to drop per word (a zero word keeps one "0")
        zh = _np.minimum((dh != 0).argmax(axis=1) + (~(dh != 0).any(axis=1)) * _W64, _W64 - 1)
        zl = _np.minimum((dl != 0).argmax(axis=1) + (~(dl != 0).any(axis=1)) * _W32, _W32 - 1)
        text = _ALPHA[_np.concatenate((dh, dl), axis=1)].tobytes().decode("ascii")
        w = _W64 + _W32
        return [text[i * w + h:i * w + _W64] + text[i * w + _W64 + l:(i + 1) * w]
                for i, h, l in zip(range(len(zh)), zh.tolist(), zl.tolist())]
else:  # pragma: no cover
    _block = _block_py


class UidGenerator:
    """Makes ``C...`` (or any prefix) UIDs; ``seed=None`` draws from the OS entropy pool."""

    __slots__ = ("_rand", "_pool")

    def __init__(self, seed: int | None = None) -> None:
        self._rand = random.Random(seed if seed is not None else int.from_bytes(os.urandom(16), "big"))
        self._pool: list[str] = []

    def __call__(self, prefix: str = "C") -> str:
        pool = self._pool
        if not pool:
            pool = self._pool = _block(self._rand.randbytes(12 * BLOCK))
            pool.reverse()
        return prefix + pool.pop()

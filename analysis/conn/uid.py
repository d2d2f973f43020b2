"""Connection UIDs in Zeek's shape: a type letter plus 96 random bits in base62.

Zeek prints each 64-bit word of the UID in base62 and concatenates them, so UIDs have a
varying length (about 16-18 characters).  With a seed the sequence is reproducible, which
keeps test runs and cluster/standalone comparisons stable.
"""

from __future__ import annotations

import os
import random

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


_PAIRS = [a + b for a in _DIGITS for b in _DIGITS]   # two digits per step: half the divmods


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


class UidGenerator:
    """Makes ``C...`` (or any prefix) UIDs; ``seed=None`` draws from the OS entropy pool."""

    __slots__ = ("_rand",)

    def __init__(self, seed: int | None = None) -> None:
        self._rand = random.Random(seed if seed is not None else int.from_bytes(os.urandom(16), "big"))

    def __call__(self, prefix: str = "C") -> str:
        bits = self._rand.getrandbits(96)
        return prefix + _base62(bits >> 32) + _base62(bits & 0xFFFFFFFF)

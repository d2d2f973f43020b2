"""Zeek's cluster pools: pick one node of a role for a key (HRW) or in turn (round robin).

Rendezvous (highest random weight) hashing: every live member gets a score
``blake2b(key || member)`` and the highest wins.  It needs no shared state, gives the same answer
in every process (no Python ``hash()``, which is salted per process), and when a member joins or
leaves only the keys that member wins or loses move -- about 1/n of them.

Keys are turned into bytes by :func:`key_bytes` so ``"10.0.0.1"``, ``b"..."`` and ``42`` are
all usable, as any value is in Zeek's ``Cluster::publish_hrw``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import msgspec

__all__ = ["Pool", "hrw_pick", "key_bytes"]

_encode = msgspec.msgpack.Encoder(order="deterministic").encode


def key_bytes(key: Any) -> bytes:
    """A stable byte form of a key: strings as UTF-8, bytes as is, anything else as msgpack."""
    if isinstance(key, str):
        return b"s" + key.encode("utf-8", "surrogateescape")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return b"b" + bytes(key)
    return b"m" + _encode(key)


def _score(kb: bytes, member: str) -> bytes:
    return hashlib.blake2b(kb + b"\0" + member.encode(), digest_size=8).digest()


def hrw_pick(key: Any, members: Iterable[str]) -> str | None:
    """The member with the highest rendezvous score for ``key`` (None when there is none)."""
    return _pick(key_bytes(key), members)


def _pick(kb: bytes, members: Iterable[str]) -> str | None:
    best = best_score = None
    for m in members:
        s = _score(kb, m)
        if best_score is None or s > best_score or (s == best_score and m > best):
            best, best_score = m, s
    return best


class Pool:
    """Members of one role (in layout order) and which of them are alive.

    ``hrw(key)`` and ``rr(key)`` only ever return alive members; node up/down events keep
    :attr:`alive` current (:meth:`up`, :meth:`down`).
    """

    def __init__(self, name: str, members: Iterable[str], alive: Iterable[str] = ()) -> None:
        self.name = name
        self.members: tuple[str, ...] = tuple(members)
        self.alive: set[str] = set(alive) & set(self.members)
        self._rr: dict[str, int] = {}
        self._cache: dict[bytes, str | None] = {}

    def up(self, member: str) -> None:
        if member in self.members and member not in self.alive:
            self.alive.add(member)
            self._cache.clear()

    def down(self, member: str) -> None:
        if member in self.alive:
            self.alive.discard(member)
            self._cache.clear()

    def live_members(self) -> list[str]:
        return [m for m in self.members if m in self.alive]

    def hrw(self, key: Any) -> str | None:
        """The live member owning ``key``; stable while membership does not change."""
        kb = key_bytes(key)
        hit = self._cache.get(kb, ...)
        if hit is ...:
            if len(self._cache) > 65536:
                self._cache.clear()
            hit = self._cache[kb] = _pick(kb, self.alive)
        return hit

    def rr(self, key: str = "") -> str | None:
        """The next live member for the round-robin sequence named ``key``."""
        live = self.live_members()
        if not live:
            return None
        i = self._rr.get(key, 0)
        self._rr[key] = i + 1
        return live[i % len(live)]

    def __repr__(self) -> str:
        return f"Pool({self.name!r}, members={self.members!r}, alive={sorted(self.alive)!r})"

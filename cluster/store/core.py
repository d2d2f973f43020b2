"""The store's data: a sans-I/O key-value table with per-key expiry, shared by every backend.

A proxy's :class:`~cluster.store.server.StoreServer` and the standalone
:class:`~cluster.store.client.LocalStore` both apply operations here, so a cluster run and a
one-process run follow the same rules.  Expiry times are absolute, in the clock of whoever asked
(network time in a worker reading a trace, wall time otherwise): ``now`` is passed in with every
operation and the table never reads a clock itself.

Operations are plain lists so they travel unchanged over the bus::

    ["put", key, value, exp]          -> None      (overwrites, resets the expiry)
    ["put_unique", key, value, exp]   -> bool      (True: it was absent and is now stored)
    ["get", key]                      -> value or None
    ["incr", key, by, exp]            -> new value (exp applies when the key is created)
    ["delete", key]                   -> bool      (True: it existed)
    ["sadd", key, members, exp]       -> members that were new (exp applies on creation:
                                                    Zeek's ``&create_expire`` tables)

``exp`` is an absolute expiry time or None (never expires).
"""

from __future__ import annotations

import heapq
from typing import Any, Iterable, Iterator

__all__ = ["ERROR", "KeyStore", "StoreError", "hkey", "OPS", "is_error"]

ERROR = "\x00error"   # first element of a failed operation's result slot
OPS = frozenset({"put", "put_unique", "get", "incr", "delete", "sadd"})


class StoreError(ValueError):
    """A malformed operation (unknown name, wrong arity, unhashable key, bad increment)."""


def hkey(key: Any) -> Any:
    """A hashable form of a key: msgpack turns tuples into lists on the way, so make them tuples."""
    if isinstance(key, list):
        return tuple(hkey(k) for k in key)
    if isinstance(key, dict):
        raise StoreError("a store key cannot be a map")
    return key


def is_error(result: Any) -> bool:
    return type(result) is list and len(result) == 2 and result[0] == ERROR


class KeyStore:
    """key -> [value, exp]; expired entries are invisible and swept lazily."""

    __slots__ = ("data", "_heap", "ops", "expired")

    def __init__(self) -> None:
        self.data: dict[Any, list] = {}
        self._heap: list[tuple[float, int, Any]] = []
        self.ops = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self.data)

    def _live(self, k: Any, now: float) -> list | None:
        e = self.data.get(k)
        if e is not None and e[1] is not None and e[1] <= now:
            del self.data[k]
            self.expired += 1
            return None
        return e

    def has(self, key: Any, now: float) -> bool:
        return self._live(key, now) is not None

    def _set(self, k: Any, value: Any, exp: float | None) -> list:
        e = self.data[k] = [value, exp]
        if exp is not None:
            heapq.heappush(self._heap, (exp, id(e), k))
        return e

    def apply(self, op: list, now: float) -> Any:
        """Apply one operation; raises :class:`StoreError` for a malformed one."""
        try:
            name = op[0]
            k = hkey(op[1])
            hash(k)
        except (IndexError, TypeError) as e:
            raise StoreError(f"malformed store operation {op!r:.80}") from e
        self.ops += 1
        n = len(op)
        if name == "get" and n == 2:
            e = self._live(k, now)
            return None if e is None else e[0]
        if name == "put" and n == 4:
            self._set(k, op[2], op[3])
            return None
        if name == "put_unique" and n == 4:
            if self._live(k, now) is not None:
                return False
            self._set(k, op[2], op[3])
            return True
        if name == "incr" and n == 4:
            by = op[2]
            if not isinstance(by, (int, float)) or isinstance(by, bool):
                raise StoreError(f"increment must be a number, not {type(by).__name__}")
            e = self._live(k, now)
            if e is None:
                self._set(k, by, op[3])
                return by
            if not isinstance(e[0], (int, float)) or isinstance(e[0], bool):
                raise StoreError(f"cannot increment a {type(e[0]).__name__} value")
            e[0] += by
            return e[0]
        if name == "delete" and n == 2:
            return self.data.pop(k, None) is not None and True
        if name == "sadd" and n == 4:
            members = op[2]
            if not isinstance(members, (list, tuple)):
                raise StoreError("sadd members must be a list")
            e = self._live(k, now)
            if e is None:
                e = self._set(k, [], op[3])
            cur = e[0]
            if not isinstance(cur, list):
                raise StoreError(f"cannot add members to a {type(cur).__name__} value")
            new = []
            for m in members:
                if m not in cur:
                    cur.append(m)
                    new.append(m)
            return new
        raise StoreError(f"unknown or malformed store operation {name!r} with {n - 1} arguments")

    def apply_all(self, ops: Iterable[list], now: float) -> list:
        """Apply many; a malformed operation yields ``[ERROR, text]`` in its place."""
        out = []
        for op in ops:
            try:
                out.append(self.apply(op, now))
            except StoreError as e:
                out.append([ERROR, str(e)])
        return out

    def sweep(self, now: float) -> int:
        """Drop entries whose expiry passed; cost follows the expiring entries, not the table."""
        h, data, n = self._heap, self.data, 0
        while h and h[0][0] <= now:
            exp, _, k = heapq.heappop(h)
            e = data.get(k)
            if e is not None and e[1] is not None and e[1] <= now:
                del data[k]
                n += 1
        self.expired += n
        if len(h) > 4 * len(data) + 1024:      # rebuild after many overwrites left stale entries
            self._heap = [(e[1], id(e), k) for k, e in data.items() if e[1] is not None]
            heapq.heapify(self._heap)
        return n

    def pop(self, key: Any) -> list | None:
        return self.data.pop(key, None)

    def install(self, key: Any, value: Any, exp: float | None, now: float) -> bool:
        """Take over an entry handed off by another proxy; an existing live entry wins
        (it was written here after the hand-off began)."""
        k = hkey(key)
        if self._live(k, now) is not None or (exp is not None and exp <= now):
            return False
        self._set(k, value, exp)
        return True

    def items(self) -> Iterator[tuple[Any, list]]:
        return iter(list(self.data.items()))

"""A bounded table of expected connections keyed by (resp_h, resp_p), with read expiry.

Zeek keeps such tables as script globals (FTP's ``ftp_data_expected``, IRC's
``dcc_expected_transfers``, ``&read_expire=5mins``): a control connection announces a future
data connection and the data connection looks its announcer up.  One instance per protocol and
process, like Zeek's globals; ``limit`` bounds memory against floods of announcements.
"""

from __future__ import annotations

from typing import Any


class ExpectTable:
    __slots__ = ("_t", "limit", "expire")

    def __init__(self, limit: int = 65536, expire: float = 300.0) -> None:
        self._t: dict[tuple[str, int], tuple[Any, float]] = {}
        self.limit = limit
        self.expire = expire

    def __len__(self) -> int:
        return len(self._t)

    def purge(self, now: float) -> None:
        """Drop entries not read or written for ``expire`` seconds of network time."""
        dead = [k for k, (_, t) in self._t.items() if abs(now - t) > self.expire]
        for k in dead:
            del self._t[k]

    def add(self, resp_h: str, resp_p: int, value: Any, now: float) -> None:
        t = self._t
        t.pop((resp_h, resp_p), None)
        if len(t) >= self.limit:
            self.purge(now)
            if len(t) >= self.limit:          # still full: forget the oldest eighth
                for k in list(t)[: max(1, self.limit // 8)]:
                    del t[k]
        t[(resp_h, resp_p)] = (value, now)

    def get(self, resp_h: str, resp_p: int, now: float) -> Any:
        v = self._t.get((resp_h, resp_p))
        if v is None:
            return None
        if abs(now - v[1]) > self.expire:
            del self._t[(resp_h, resp_p)]
            return None
        self._t[(resp_h, resp_p)] = (v[0], now)
        return v[0]

    def remove(self, resp_h: str, resp_p: int) -> None:
        self._t.pop((resp_h, resp_p), None)

    def clear(self) -> None:
        self._t.clear()

"""Address-to-text caches: each distinct address is formatted once, then found by a dict lookup.

Traffic concentrates on few hosts, so a bounded dict keyed by the packed bytes saves the
``inet_ntop`` call on nearly every packet.  When a cache grows past its bound it is simply
cleared (a scan of random addresses must not grow memory without limit).
"""

from __future__ import annotations

import socket

MAX_ENTRIES = 1 << 16

_ntoa = socket.inet_ntoa
_ntop = socket.inet_ntop
_AF6 = socket.AF_INET6
_V4MAPPED = b"\x00" * 10 + b"\xff\xff"


class AddrCache:
    __slots__ = ("v4", "v6", "mac")

    def __init__(self) -> None:
        self.v4: dict[bytes, str] = {}
        self.v6: dict[bytes, str] = {}
        self.mac: dict[bytes, str] = {}

    def ip4(self, b: bytes) -> str:
        s = self.v4.get(b)
        if s is None:
            if len(self.v4) >= MAX_ENTRIES:
                self.v4.clear()
            s = self.v4[b] = _ntoa(b)
        return s

    def ip6(self, b: bytes) -> str:
        s = self.v6.get(b)
        if s is None:
            if len(self.v6) >= MAX_ENTRIES:
                self.v6.clear()
            # Zeek keeps IPv4 as IPv4-mapped IPv6 and prints those as dotted quads.
            s = _ntoa(b[12:]) if b[:12] == _V4MAPPED else _ntop(_AF6, b)
            self.v6[b] = s
        return s

    def ether(self, b: bytes) -> str:
        s = self.mac.get(b)
        if s is None:
            if len(self.mac) >= MAX_ENTRIES:
                self.mac.clear()
            s = self.mac[b] = b.hex(":")
        return s

    def trim(self) -> None:
        """Called once per batch by the fast path, which fills ``v4``/``mac`` directly."""
        if len(self.v4) > MAX_ENTRIES:
            self.v4.clear()
        if len(self.mac) > MAX_ENTRIES:
            self.mac.clear()

"""IP fragment reassembly (IPv4 and IPv6) with Zeek's fragment weirds and bounded memory.

Follows Zeek's FragReassembler: a datagram is keyed by (source, destination, identification);
the first fragment to *arrive* supplies the unfragmentable header; data already held wins over
overlapping new data (``fragment_overlap`` when the bytes agree, ``fragment_inconsistency`` when
they differ); the last fragment fixes the size, and a datagram is handed on as soon as it is
contiguous from 0 to that size.  Zeek's default ``frag_timeout`` is 0 (never); here state is
additionally bounded by a datagram count and a byte budget (oldest evicted first), and a
positive ``timeout`` expires datagrams by *network* time.
"""

from __future__ import annotations

from collections.abc import Callable

MIN_ACCEPTABLE_FRAG_SIZE = 64
MAX_ACCEPTABLE_FRAG_SIZE = 64000

# weird(name, src, dst): a flow weird with the fragment's addresses
WeirdFn = Callable[[str, str, str], None]


class _Datagram:
    __slots__ = ("first_ts", "hdr", "proto", "hdr_len", "frag_size", "blocks", "nbytes")

    def __init__(self, ts: float, hdr: bytes, proto: int, hdr_len: int) -> None:
        self.first_ts = ts
        self.hdr = hdr            # unfragmentable header of the first fragment that arrived
        self.proto = proto        # next protocol (IPv6: taken from the offset-0 fragment)
        self.hdr_len = hdr_len
        self.frag_size = 0        # 0: unknown until the last fragment is seen
        self.blocks: list[list] = []  # sorted [start, end, bytes], non-overlapping
        self.nbytes = 0


class FragmentTable:
    """Datagrams being reassembled.  ``add`` returns ``(header, proto, payload)`` when complete."""

    def __init__(self, weird: WeirdFn, timeout: float = 0.0, max_datagrams: int = 10000,
                 max_bytes: int = 32 << 20) -> None:
        self._weird = weird
        self.timeout = timeout
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self._table: dict[tuple, _Datagram] = {}
        self.nbytes = 0
        self.evicted = 0
        self.expired = 0
        self._next_expiry_check = 0.0

    def __len__(self) -> int:
        return len(self._table)

    def add(self, ts: float, key: tuple, src: str, dst: str, hdr: bytes, proto: int, offset: int,
            more: bool, dont_fragment: bool, total_len: int, payload: bytes) -> tuple[bytes, int, bytes] | None:
        """Add one fragment.

        ``hdr`` is the unfragmentable header (IPv6: without the fragment header), ``proto`` the
        protocol after it, ``offset`` in bytes, ``total_len`` the fragment's IP total length.
        """
        if self.timeout > 0 and ts >= self._next_expiry_check:
            self.expire(ts)
        weird = self._weird
        d = self._table.get(key)
        if d is None:
            d = _Datagram(ts, hdr, proto, len(hdr))
            self._table[key] = d
        else:
            if proto != d.proto or len(hdr) != d.hdr_len:
                weird("fragment_protocol_inconsistency", src, dst)
        if dont_fragment:
            weird("fragment_with_DF", src, dst)
        if offset == 0:
            d.proto = proto
        n = len(payload)
        upper = offset + n
        if not more:
            if d.frag_size == 0:
                d.frag_size = upper
            elif upper != d.frag_size:
                weird("fragment_size_inconsistency", src, dst)
                if upper > d.frag_size:
                    d.frag_size = upper
        elif total_len < MIN_ACCEPTABLE_FRAG_SIZE:
            weird("excessively_small_fragment", src, dst)
        if upper > MAX_ACCEPTABLE_FRAG_SIZE:
            weird("excessively_large_fragment", src, dst)
        if d.frag_size and upper > d.frag_size:
            weird("fragment_size_inconsistency", src, dst)
            d.frag_size = upper
        if n:
            added = self._insert(d, offset, upper, payload, src, dst)
            d.nbytes += added
            self.nbytes += added
        done = self._complete(d, src, dst)
        if done is not None:
            self._drop(key)
            return done
        if len(self._table) > self.max_datagrams or self.nbytes > self.max_bytes:
            self._evict()
        return None

    def _insert(self, d: _Datagram, start: int, end: int, data: bytes, src: str, dst: str) -> int:
        """Insert the parts of [start, end) not yet held; report overlaps.  Returns bytes added."""
        blocks = d.blocks
        new: list[list] = []
        cur = start
        added = 0
        for b in blocks:
            bs, be, bd = b
            if be <= cur or bs >= end:
                continue
            # overlap [max(bs,cur), min(be,end))
            os_, oe = max(bs, start), min(be, end)
            if bd[os_ - bs:oe - bs] != data[os_ - start:oe - start]:
                self._weird("fragment_inconsistency", src, dst)
            else:
                self._weird("fragment_overlap", src, dst)
            if bs > cur:
                new.append([cur, bs, data[cur - start:bs - start]])
                added += bs - cur
            cur = max(cur, be)
            if cur >= end:
                break
        if cur < end:
            new.append([cur, end, data[cur - start:]])
            added += end - cur
        if new:
            blocks.extend(new)
            blocks.sort(key=lambda b: b[0])
        return added

    def _complete(self, d: _Datagram, src: str, dst: str) -> tuple[bytes, int, bytes] | None:
        blocks = d.blocks
        if not blocks or blocks[0][0] > 0 or not d.frag_size:
            return None
        reach = blocks[0][1]
        i = 1
        while i < len(blocks) and blocks[i][0] == reach:
            reach = blocks[i][1]
            i += 1
        last_end = blocks[-1][1]
        if i < len(blocks):
            # A hole: stuck if everything up to the expected size is already contiguous.
            if reach >= d.frag_size:
                self._weird("fragment_size_inconsistency", src, dst)
                d.frag_size = reach
            else:
                return None
        elif last_end > d.frag_size:
            self._weird("fragment_size_inconsistency", src, dst)
            d.frag_size = last_end
        elif last_end < d.frag_size:
            return None
        size = d.frag_size
        payload = b"".join(b[2] for b in blocks[:i])[:size]
        return d.hdr, d.proto, payload

    def _drop(self, key: tuple) -> None:
        d = self._table.pop(key, None)
        if d is not None:
            self.nbytes -= d.nbytes

    def _evict(self) -> None:
        table = self._table
        while table and (len(table) > self.max_datagrams or self.nbytes > self.max_bytes):
            key = next(iter(table))
            self._drop(key)
            self.evicted += 1

    def expire(self, now: float) -> None:
        """Forget datagrams older than ``timeout`` seconds of network time."""
        if self.timeout <= 0:
            return
        limit = now - self.timeout
        old = [k for k, d in self._table.items() if d.first_ts <= limit]
        for k in old:
            self._drop(k)
        self.expired += len(old)
        self._next_expiry_check = now + min(1.0, self.timeout / 4)

    def clear(self) -> None:
        self._table.clear()
        self.nbytes = 0

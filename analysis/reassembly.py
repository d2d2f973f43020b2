"""TCP stream reassembly for analyzers: both directions of one connection, payload in order.

The connection table (``analysis.conn.tcp``) owns the sequence-space bookkeeping Zeek's
reassembler does for conn.log (relative sequence numbers from the ISN with wrap-around,
ACK-driven gap accounting, missed_bytes).  This class keeps the *payload*: it receives each
segment at its relative sequence number and hands contiguous bytes to a sink exactly once, in
order, per direction:

* data below the delivery point is a retransmission or overlap: the first data seen wins
  (Zeek's default, no overlap check against new bytes);
* data above a hole waits in a sorted buffer, trimmed on insertion so earlier-arrived bytes
  keep winning, and capped per connection (``cap`` bytes): past the cap the oldest hole is
  given up as a gap;
* the peer's ACK above a hole (``ack``) and the end of the connection (``flush``) deliver the
  buffered data up to that point, reporting every hole as a gap (Zeek's ``Undelivered``).

The sink has ``_deliver(is_orig, data, ts)`` and ``_undelivered(is_orig, length, ts)``.  The
in-order case (nearly every segment) allocates nothing here.
"""

from __future__ import annotations

from bisect import insort

DEFAULT_CAP = 1 << 20


class TCPReassembler:
    __slots__ = ("nxt_o", "nxt_r", "segs_o", "segs_r", "buffered", "cap")

    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        self.nxt_o = 1        # relative seq of the next byte to deliver (1 = first byte after SYN)
        self.nxt_r = 1
        self.segs_o = None    # sorted list[(seq, bytes)] above a hole, or None
        self.segs_r = None
        self.buffered = 0     # bytes held in both directions' lists
        self.cap = cap

    # -- input ------------------------------------------------------------------------------------
    def segment(self, is_orig: bool, seq: int, data, ts: float) -> None:
        """Payload ``data`` starting at relative sequence number ``seq``."""
        nxt = self.nxt_o if is_orig else self.nxt_r
        end = seq + len(data)
        if end <= nxt:
            return                                     # retransmission: first data wins
        if seq <= nxt:
            if seq < nxt:
                data = data[nxt - seq:]
            self._advance(is_orig, end)
            self._deliver(is_orig, data if type(data) is bytes else bytes(data), ts)
            if (self.segs_o if is_orig else self.segs_r) is not None:
                self._drain(is_orig, ts)
            return
        self._buffer(is_orig, seq, bytes(data), ts)

    def ack(self, is_orig: bool, up_to: int, ts: float) -> None:
        """The peer acknowledged ``is_orig``'s stream up to relative ``up_to``: what is below it
        will never come again, so deliver buffered data and report holes as gaps."""
        nxt = self.nxt_o if is_orig else self.nxt_r
        if up_to > nxt:
            self._skip_to(is_orig, up_to, ts)

    def flush(self, is_orig: bool, ts: float) -> None:
        """Deliver everything buffered for one side, holes as gaps (the connection ends)."""
        segs = self.segs_o if is_orig else self.segs_r
        if segs:
            last = segs[-1]
            self._skip_to(is_orig, last[0] + len(last[1]), ts)

    def pending(self, is_orig: bool) -> bool:
        return (self.segs_o if is_orig else self.segs_r) is not None

    # -- internals --------------------------------------------------------------------------------
    def _advance(self, is_orig: bool, to: int) -> None:
        if is_orig:
            self.nxt_o = to
        else:
            self.nxt_r = to

    def _buffer(self, is_orig: bool, seq: int, data: bytes, ts: float) -> None:
        segs = self.segs_o if is_orig else self.segs_r
        end = seq + len(data)
        if segs is None:
            segs = []
            if is_orig:
                self.segs_o = segs
            else:
                self.segs_r = segs
        # keep only the parts no earlier segment covers (first data wins)
        pieces = [(seq, end)]
        for s, d in segs:
            e = s + len(d)
            if e <= seq or s >= end:
                continue
            nxt_pieces = []
            for a, b in pieces:
                if e <= a or s >= b:
                    nxt_pieces.append((a, b))
                    continue
                if a < s:
                    nxt_pieces.append((a, s))
                if e < b:
                    nxt_pieces.append((e, b))
            pieces = nxt_pieces
            if not pieces:
                return
        for a, b in pieces:
            insort(segs, (a, data[a - seq:b - seq]))
            self.buffered += b - a
        while self.buffered > self.cap and (self.segs_o or self.segs_r):
            # over the cap: give up the lowest hole of the side holding the most
            side = bool(self.segs_o) and (not self.segs_r or len(self.segs_o) >= len(self.segs_r))
            first = (self.segs_o if side else self.segs_r)[0]
            self._skip_to(side, first[0] + len(first[1]), ts)

    def _drain(self, is_orig: bool, ts: float) -> None:
        """Deliver buffered segments that became contiguous."""
        segs = self.segs_o if is_orig else self.segs_r
        nxt = self.nxt_o if is_orig else self.nxt_r
        while segs and segs[0][0] <= nxt:
            s, d = segs.pop(0)
            self.buffered -= len(d)
            end = s + len(d)
            if end > nxt:
                if s < nxt:
                    d = d[nxt - s:]
                nxt = end
                self._advance(is_orig, nxt)
                self._deliver(is_orig, d, ts)
                segs = self.segs_o if is_orig else self.segs_r   # the sink may have reset us
                if segs is None:
                    return
                nxt = self.nxt_o if is_orig else self.nxt_r
        if not segs:
            if is_orig:
                self.segs_o = None
            else:
                self.segs_r = None

    def _skip_to(self, is_orig: bool, up_to: int, ts: float) -> None:
        """Everything below ``up_to`` is final: deliver what is buffered below it, gaps between."""
        segs = self.segs_o if is_orig else self.segs_r
        while True:
            nxt = self.nxt_o if is_orig else self.nxt_r
            if segs and segs[0][0] < up_to:
                s = segs[0][0]
                if s > nxt:
                    self._advance(is_orig, s)
                    self._undelivered(is_orig, s - nxt, ts)
                self._drain(is_orig, ts)
                segs = self.segs_o if is_orig else self.segs_r
                continue
            if up_to > nxt:
                self._advance(is_orig, up_to)
                self._undelivered(is_orig, up_to - nxt, ts)
                if segs:
                    self._drain(is_orig, ts)
            return

    # -- the sink (overridden) --------------------------------------------------------------------
    def _deliver(self, is_orig: bool, data: bytes, ts: float) -> None:
        raise NotImplementedError

    def _undelivered(self, is_orig: bool, length: int, ts: float) -> None:
        raise NotImplementedError

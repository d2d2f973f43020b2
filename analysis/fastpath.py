"""The fused fast path: established flows accounted straight from the raw frame's fields.

Most packets of a trace belong to connections the table already knows and change nothing but
counters: a pure ACK or an ACK+PSH data segment between two established TCP endpoints, or one
more datagram of a known UDP flow.  For those the decoder's batch loop (``Decoder.decode_batch``,
plain Ethernet/IPv4 frames) skips building a :class:`~analysis.packet.Packet` and the table's
dispatch: it looks the connection up by the 12 frame bytes holding addresses and ports (the
table indexes every eligible IPv4 connection under both orientations' keys, ``fast_o`` /
``fast_r``) and calls the update made here, which applies exactly what the general path would
(:func:`analysis.conn.tcp._fast` is shared) or declines without changing anything, in which case
the frame takes the general path.  Capture order is kept: with checksums ignored the update runs
in the decoder's first pass; with checksums verified (Zeek's default) it runs in the second
pass, after the batch's vectorised checksum check, and a frame with a bad checksum is decoded
on the general path (which logs the weird).  ``tests/test_fastpath.py`` asserts identical logs
with the path on and off.

``AnalysisConfig.fast_path`` None (the default) turns it on only when checksums are ignored:
with verification the second-pass deferral means connections established within a batch are
not yet indexed when the batch is scanned, and measured on the mixed benchmark trace the path
then costs more (index upkeep) than it saves.  ``fast_path=True`` forces it on.
"""

from __future__ import annotations

from analysis.conn.state import H_DATA
from analysis.conn.tcp import _fast

_ESTABLISHED = 4
_RESP_DATA = H_DATA << 16


def make_fast_update(table):
    """``update(c, is_orig, ts, proto, flags, seq, ack, win, plen, payload, ip_len) -> bool``
    for ``table``: True when the packet was fully accounted, False (nothing changed) to decline."""

    def update(c, is_orig, ts, proto, flags, seq, ack, win, plen, payload, ip_len) -> bool:
        if ts - c.last >= 5.0 or ts >= c.timer_at or c.tun is not None:
            return False                  # a timer may be due, or tunnel bookkeeping: general path
        if proto == 6:
            if flags & 0x37 != 0x10:
                return False
            if is_orig:
                ep = c.o
                peer = c.r
            else:
                ep = c.r
                peer = c.o
            if ep.state != _ESTABLISHED or peer.state != _ESTABLISHED:
                return False
            if ts > table.now:
                table.now = ts
            if not _fast(table, c, ep, peer, is_orig, ts, seq, ack, win, plen, payload):
                return False
        else:
            if not c.hist_seen & (H_DATA if is_orig else _RESP_DATA):
                return False              # the first datagram each way adds a history letter
            if ts > table.now:
                table.now = ts
            c.last = ts
            if is_orig:
                c.orig_size = plen if c.orig_size < 0 else c.orig_size + plen
            else:
                c.resp_size = plen if c.resp_size < 0 else c.resp_size + plen
            if c.analyzer is not None and plen:
                c.analyzer(is_orig, -1, payload, ts)
        if is_orig:
            c.orig_pkts += 1
            c.orig_ip_bytes += ip_len
        else:
            c.resp_pkts += 1
            c.resp_ip_bytes += ip_len
        table.packets += 1
        table.bytes += ip_len
        return True

    return update

"""Zeek's TCP endpoint state machine, history and gap accounting, as plain functions.

This follows Zeek's TCP session adapter (src/packet_analysis/protocol/tcp) and its
reassembler's bookkeeping closely enough that conn_state, history, orig_bytes/resp_bytes
(from sequence numbers) and missed_bytes come out as Zeek computes them.  Payload is not
buffered: the reassembler keeps only the ranges it has seen above a hole, which is all that
gap accounting needs.  Functions take the table (for weirds and config), the connection and
the two endpoints; they allocate nothing on the common path.
"""

from __future__ import annotations

import sys

from analysis.conn.state import shared_int
from analysis.conn.state import (
    F_DEFER_GEN, F_T_ATTEMPT, F_T_DELETE, F_T_PARTIAL, F_T_RESET,
    CLOSED, ESTABLISHED, F_ACTIVE, F_CLOSE_DEFERRED, F_PARTIAL, F_REASSEMBLE, F_SEEN_ORIG, F_SEEN_RESP,
    F_WEIRD, H_ACK, H_DATA, H_FIN, H_FIN_RST, H_MULTI, H_RST, H_SYN, INACTIVE, PARTIAL, RESET, RESP_SHIFT,
    SYN_ACK_SENT, SYN_SENT,
)

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
TOO_LARGE_SEQ_DELTA = 1048576
_HANDSHAKE = (INACTIVE, SYN_SENT, SYN_ACK_SENT)
_INF = float("inf")
_intern = sys.intern   # histories repeat ("ShADadFf"): one shared string each


def seq_delta(a: int, b: int) -> int:
    d = (a - b) & M32
    return d - 0x100000000 if d & 0x80000000 else d


# -- history --------------------------------------------------------------------------------------

def check_history(c, mask: int, code: str, is_orig: bool) -> bool:
    """Zeek's CheckHistory: add ``code`` the first time; True when it had been seen already."""
    if not is_orig:
        mask <<= RESP_SHIFT
        code = code.lower()
    if c.hist_seen & mask:
        return True
    c.hist_seen = shared_int(c.hist_seen | mask)
    c.history = _intern(c.history + code)
    return False


def scaled_history(c, holder, code: str) -> None:
    """Zeek's ScaledHistoryEntry: add ``code`` at the 1st, 10th, 100th, ... occurrence.

    The counters of both sides live in one dict on the connection (``holder`` is kept for the
    callers' readability: the codes of the two sides differ in case, so they never collide)."""
    sc = c.scaled
    if sc is None:
        sc = c.scaled = {}
    ent = sc.get(code)
    if ent is None:
        ent = sc[code] = [0, 1]
    ent[0] += 1
    if ent[0] == ent[1]:
        c.history = _intern(c.history + code)
        nt = ent[1] * 10
        if nt > 0xFFFFFFFF:
            ent[0] = 0
        else:
            ent[1] = nt


# -- endpoint helpers -----------------------------------------------------------------------------

def set_state(table, c, ep, peer, new: int) -> None:
    if new != ep.state:
        if new not in _HANDSHAKE and ep.state in _HANDSHAKE and peer.state in _HANDSHAKE:
            c.timeout = table.cfg.tcp_inactivity_timeout
        ep.prev_state = ep.state
        ep.state = new
        if new == ESTABLISHED and peer.state == ESTABLISHED and c.flags & F_T_ATTEMPT:
            # the attempt timer can no longer fire (it needs an INACTIVE responder): drop it
            c.flags &= ~F_T_ATTEMPT
            c.timer_at = _INF


def no_data_acked(ep) -> bool:
    ack = (ep.ack_wraps << 32) | ep.ack_seq
    return ack == ep.start_seq or ack == ep.start_seq + 1


def endpoint_size(ep, peer) -> int:
    """Payload bytes from sequence numbers (Zeek's TCP_Endpoint::Size)."""
    if ep.prev_state == SYN_SENT and ep.state == RESET and peer.state == INACTIVE and not no_data_acked(ep):
        return 0
    last64 = (ep.seq_wraps << 32) | ep.last_seq
    ack64 = (ep.ack_wraps << 32) | ep.ack_seq
    size = ((last64 if last64 > ack64 else ack64) - ep.start_seq) & M64
    if size:
        size -= 1
        if ep.fin_seq is not None and size:
            size -= 1
    return size


def _relative(ep, cur: int, last: int, wraps: int) -> tuple[int, bool]:
    delta = seq_delta(cur, last)
    if delta < 0:
        if wraps and cur > last:
            wraps -= 1
    elif delta > 0:
        if cur < last:
            wraps += 1
    if wraps == 0:
        d = seq_delta(cur, ep.start_seq)
        return d, d < 0
    return ((wraps << 32) | cur) - ep.start_seq, False


def _init_seqs(ep, seq: int, last: int) -> None:
    ep.start_seq = seq
    ep.ack_seq = seq
    ep.last_seq = last
    ep.seq_wraps = 0
    ep.ack_wraps = 0


# -- the per-packet entry point -------------------------------------------------------------------

def process(table, c, p, is_orig: bool, ts: float) -> int:
    """Run one TCP packet through the state machine.

    Returns 0 when the packet is dropped (bad checksum: not counted), else 1 when it counts for
    the originator and 2 for the responder (the roles may have flipped on this packet).
    """
    flags = p.tcp_flags
    if p.bad_checksum:
        table.conn_weird(c, "bad_TCP_checksum", ts, source="TCP")
        scaled_history(c, c.o if is_orig else c.r, "C" if is_orig else "c")
        return 0
    if not flags & 0x06 and (flags & 0x10 or p.payload_len) and c.o.state == SYN_ACK_SENT \
            and c.r.state == INACTIVE:
        # began with a SYN-ACK and now an ACK or data follows (a stealth scan would only ever
        # get a RST or nothing): the SYN-ACK's sender is the responder, so Zeek flips here
        # and forgets the missing SYN
        table.flip(c)
        c.flags = (c.flags & ~F_PARTIAL) | F_SEEN_ORIG
        is_orig = not is_orig
    if is_orig:
        ep, peer = c.o, c.r
    else:
        ep, peer = c.r, c.o

    syn = flags & 0x02
    fin = flags & 0x01
    rst = flags & 0x04
    ack = flags & 0x10
    length = p.payload_len
    base_seq = p.seq
    ack_seq = p.ack

    # SetPartialStatus
    f = c.flags
    if is_orig:
        if not f & F_SEEN_ORIG:
            f = (f | F_PARTIAL) if (not syn or ack) else (f & ~F_PARTIAL)
    elif not f & F_SEEN_RESP and not f & F_PARTIAL:
        if not syn:
            f |= F_PARTIAL
    c.flags = f

    seg_len = length
    if syn:
        seg_len += 1
    if fin:
        seg_len += 1
    if rst:
        seg_len -= length
    seq_end = (base_seq + seg_len) & M32

    # init_endpoint
    st = ep.state
    if st == INACTIVE:
        if syn:
            ep.start_seq = ep.ack_seq = base_seq
            ep.last_seq = seq_end
        else:
            ep.start_seq = ep.ack_seq = (base_seq - 1) & M32
            ep.last_seq = base_seq
    elif syn:
        if st == SYN_SENT or st == SYN_ACK_SENT:
            if base_seq != ep.start_seq:
                table.conn_weird(c, "SYN_seq_jump", ts)
                _init_seqs(ep, base_seq, seq_end)
        elif st == ESTABLISHED or st == PARTIAL:
            if endpoint_size(ep, peer) > 0:
                table.conn_weird(c, "SYN_inside_connection", ts)
            if base_seq != ep.start_seq:
                table.conn_weird(c, "SYN_seq_jump", ts)
            _init_seqs(ep, base_seq, seq_end)
        elif st == RESET and ep.prev_state == INACTIVE:
            _init_seqs(ep, base_seq, seq_end)

    rel_seq, underflow = _relative(ep, base_seq, ep.last_seq, ep.seq_wraps)
    if underflow and not rst:
        table.conn_weird(c, "TCP_seq_underflow_or_misorder", ts, source="TCP")

    # update_history
    nbits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
    if nbits == 0:
        if length:
            check_history(c, H_DATA, "D", is_orig)
        elif ack:
            check_history(c, H_ACK, "A", is_orig)
    elif nbits > 1:
        if fin and rst:
            check_history(c, H_FIN_RST, "I", is_orig)
        else:
            check_history(c, H_MULTI, "Q", is_orig)
    elif syn:
        code = "H" if ack else "S"
        if check_history(c, H_SYN, code, is_orig) and rel_seq != ep.h_syn:
            c.history = _intern(c.history + (code if is_orig else code.lower()))
        ep.h_syn = rel_seq
    elif fin:
        if check_history(c, H_FIN, "F", is_orig) and rel_seq + length != ep.h_fin:
            c.history = _intern(c.history + ("F" if is_orig else "f"))
        ep.h_fin = rel_seq + length
    else:
        if check_history(c, H_RST, "R", is_orig) and rel_seq != ep.h_rst:
            c.history = _intern(c.history + ("R" if is_orig else "r"))
        ep.h_rst = rel_seq

    # update_window: only the zero-window part (window scaling never turns 0 into non-0)
    if p.win == 0 and not rst and peer.state != CLOSED and ep.state != RESET:
        scaled_history(c, ep, "W" if is_orig else "w")

    if not (ep.did_close and peer.did_close):
        c.last = ts

    if syn:
        if rst:
            table.conn_weird(c, "TCP_christmas", ts, source="TCP")
        if flags & 0x20:
            table.conn_weird(c, "baroque_SYN", ts, source="TCP")
        if length > 0:
            table.conn_weird(c, "SYN_with_data", ts, source="TCP")
    if fin:
        ep.fin_seq = rel_seq + seg_len

    rel_ack = 0
    if ack:
        if peer.state == INACTIVE:
            rel_ack = 1
            if not syn and not fin and not rst:
                if ep.state in (SYN_SENT, SYN_ACK_SENT, ESTABLISHED) and not c.flags & F_WEIRD:
                    table.conn_weird(c, "possible_split_routing", ts)
            a1 = (ack_seq - 1) & M32
            peer.start_seq = peer.ack_seq = peer.last_seq = a1
        else:
            rel_ack, aunder = _relative(peer, ack_seq, peer.ack_seq, peer.ack_wraps)
            if aunder:
                rel_ack = 0
                table.conn_weird(c, "TCP_ack_underflow_or_misorder", ts, source="TCP")
            elif not rst:
                d = seq_delta(ack_seq, peer.ack_seq)
                if not (ack_seq == 0 and d > TOO_LARGE_SEQ_DELTA) and d > 0:
                    if ack_seq < peer.ack_seq:
                        peer.ack_wraps += 1
                    # the same int object as last_seq when equal (the usual case): a seq number
                    # is a 32-byte int and an idle connection keeps them all
                    peer.ack_seq = peer.last_seq if ack_seq == peer.last_seq else ack_seq

    # update_last_seq
    delta_last = seq_delta(seq_end, ep.last_seq)
    if (syn or rst) and (delta_last > TOO_LARGE_SEQ_DELTA or delta_last < -TOO_LARGE_SEQ_DELTA):
        pass
    elif fin and ep.last_seq == ((ep.start_seq + 1) & M32):
        if seq_end < ep.last_seq and delta_last > 0:
            ep.seq_wraps += 1
        ep.last_seq = seq_end
    elif ep.state == RESET:
        pass
    elif delta_last > 0:
        if seq_end < ep.last_seq:
            ep.seq_wraps += 1
        ep.last_seq = seq_end
    elif length > 0:
        scaled_history(c, ep, "T" if is_orig else "t")

    do_close, gen_event = _state_machine(table, c, ep, peer, base_seq, ack_seq, length, delta_last, is_orig,
                                         syn, fin, rst, ack, ts)

    reass = c.flags & F_REASSEMBLE
    if ack and reass:
        ack_received(table, c, peer, ep, rel_ack, ts)

    rel_data_seq = rel_seq + 1 if syn else rel_seq
    if length > 0 and not rst and not underflow:
        if len(p.payload) < length:
            if reass:
                table.conn_weird(c, "truncated_tcp_payload", ts, source="TCP")
        elif reass:
            data_sent(table, c, ep, peer, rel_data_seq, length, ts)
        if c.analyzer is not None:
            c.analyzer(is_orig, rel_data_seq, p.payload, ts)
    if reass:
        check_eof(table, c, ep, peer, ts)

    if do_close:
        connection_closed(table, c, ep, peer, gen_event)

    c.flags |= F_SEEN_ORIG if is_orig else F_SEEN_RESP
    return 1 if ep is c.o else 2


def _fast(table, c, ep, peer, is_orig: bool, ts: float, seq: int, ack: int, win: int, length: int, payload) -> int:
    """The common case, same result as the general path: an ACK (maybe with data) between two
    established endpoints, sequence numbers far from wrapping, payload fully captured.
    Takes header fields (not a Packet) so the raw-frame fast path shares it.
    Returns 0, having changed nothing, to hand the packet to the general path."""
    if ep.seq_wraps or ep.ack_wraps or peer.ack_wraps or not win or not c.flags & (F_SEEN_ORIG if is_orig else F_SEEN_RESP):
        return 0
    start = ep.start_seq
    seq_end = seq + length
    pstart = peer.start_seq
    if seq < start or seq_end > M32 or seq - start >= 0x80000000 or ack < pstart or ack - pstart >= 0x80000000 \
            or not 0 <= ep.last_seq - start < 0x80000000 or not 0 <= peer.ack_seq - pstart < 0x80000000 \
            or len(payload) < length:
        return 0
    # history
    if length:
        mask = H_DATA if is_orig else H_DATA << RESP_SHIFT
        if not c.hist_seen & mask:
            c.hist_seen = shared_int(c.hist_seen | mask)
            c.history = _intern(c.history + ("D" if is_orig else "d"))
    else:
        mask = H_ACK if is_orig else H_ACK << RESP_SHIFT
        if not c.hist_seen & mask:
            c.hist_seen = shared_int(c.hist_seen | mask)
            c.history = _intern(c.history + ("A" if is_orig else "a"))
    c.last = ts
    if ack > peer.ack_seq:
        peer.ack_seq = peer.last_seq if ack == peer.last_seq else ack    # share the int (memory)
    if seq_end > ep.last_seq:
        ep.last_seq = seq_end
    elif length:
        scaled_history(c, ep, "T" if is_orig else "t")
    rel = seq - start
    if c.flags & F_REASSEMBLE:
        s = ack - pstart
        if peer.fin_seq is not None:
            ack_received(table, c, peer, ep, s, ts)
        elif s > peer.trim_seq:
            if s > peer.reassem_seq:
                _undelivered(table, c, peer, ep, s, ts)
                if s > peer.reassem_seq:
                    peer.reassem_seq = s
            peer.trim_seq = s
            blocks = peer.blocks
            if blocks is not None:
                while blocks and blocks[0][1] <= s:
                    blocks.pop(0)
                if not blocks:
                    peer.blocks = None
        if length:
            up = rel + length
            if ep.blocks is None and not ep.skip and ep.ack_seq - start > 1 and ep.trim_seq <= rel <= ep.reassem_seq:
                if up > ep.reassem_seq:
                    ep.reassem_seq = up
                    lim = table.cfg.tcp_excessive_data_without_further_acks
                    if lim and up - ep.trim_seq > lim:
                        data_sent(table, c, ep, peer, up, 0, ts)
            else:
                data_sent(table, c, ep, peer, rel, length, ts)
    if length and c.analyzer is not None:
        c.analyzer(is_orig, rel, payload, ts)
    return 1 if is_orig else 2


def _state_machine(table, c, ep, peer, base_seq, ack_seq, length, delta_last, is_orig, syn, fin, rst, ack, ts):
    do_close = gen_event = False
    st = ep.state
    cw = table.conn_weird
    if st == INACTIVE:
        if syn:
            if is_orig:
                if ack:
                    cw(c, "connection_originator_SYN_ack", ts, source="TCP")
                    set_state(table, c, ep, peer, SYN_ACK_SENT)
                else:
                    set_state(table, c, ep, peer, SYN_SENT)
                if table.cfg.tcp_attempt_delay and not c.flags & (F_T_ATTEMPT | F_T_DELETE):
                    c.timer_at = ts + table.cfg.tcp_attempt_delay
                    c.flags |= F_T_ATTEMPT
                    if table._events is not None:
                        table.event_timer(c)
            else:
                if ack:
                    if peer.state not in (INACTIVE, PARTIAL) and not _seq_between(ack_seq, peer.start_seq, peer.last_seq):
                        cw(c, "bad_SYN_ack", ts, source="TCP")
                elif peer.state == SYN_ACK_SENT and base_seq == ep.start_seq:
                    # SYN/SYN-ACK reversal: flip the endpoints and establish
                    table.flip(c)
                    c.flags &= ~F_PARTIAL
                    set_state(table, c, peer, ep, ESTABLISHED)
                    c.flags |= F_SEEN_ORIG
                else:
                    cw(c, "simultaneous_open", ts, source="TCP")
                if peer.state == SYN_SENT:
                    set_state(table, c, peer, ep, ESTABLISHED)
                elif peer.state == INACTIVE:
                    cw(c, "unsolicited_SYN_response", ts, source="TCP")
                set_state(table, c, ep, peer, ESTABLISHED)
                if peer.state != PARTIAL and table._events is not None:
                    table.conn_event("connection_established", c)
        if fin:
            set_state(table, c, ep, peer, CLOSED)
            do_close = gen_event = True
            if peer.state != PARTIAL and not syn:
                cw(c, "spontaneous_FIN", ts, source="TCP")
        if rst:
            set_state(table, c, ep, peer, RESET)
            is_reject = False
            if is_orig:
                if peer.state == ESTABLISHED:
                    is_reject = True
            elif peer.state in (SYN_SENT, SYN_ACK_SENT):
                is_reject = True
            do_close = True
            gen_event = not is_reject
            if is_reject:
                if table._events is not None:
                    table.conn_event("connection_rejected", c)
            elif peer.state == INACTIVE:
                cw(c, "spontaneous_RST", ts, source="TCP")
        if ep.state == INACTIVE:
            if not is_orig and length == 0 and c.o.state == SYN_SENT:
                pass
            elif ack and peer.state == ESTABLISHED:
                set_state(table, c, ep, peer, ESTABLISHED)
                c.flags = (c.flags & ~F_PARTIAL) | (F_SEEN_ORIG if is_orig else F_SEEN_RESP)
            else:
                set_state(table, c, ep, peer, PARTIAL)
                if peer.state == PARTIAL and table._events is not None:
                    table.conn_event("partial_connection", c)     # both sides seen, no handshake
    elif st == SYN_SENT or st == SYN_ACK_SENT:
        if syn:
            if is_orig:
                if ack and not fin and not rst and st != SYN_ACK_SENT:
                    cw(c, "repeated_SYN_with_ack", ts, source="TCP")
            elif not ack and st != SYN_SENT:
                cw(c, "repeated_SYN_reply_wo_ack", ts, source="TCP")
        if fin:
            if peer.state in (INACTIVE, SYN_SENT):
                cw(c, "inappropriate_FIN", ts, source="TCP")
            set_state(table, c, ep, peer, CLOSED)
            do_close = gen_event = True
        if rst:
            set_state(table, c, ep, peer, RESET)
            connection_reset(table, c)
            do_close = True
        elif length > 0:
            cw(c, "data_before_established", ts, source="TCP")
    elif st == ESTABLISHED or st == PARTIAL:
        if syn and st == PARTIAL and peer.state == INACTIVE and not ack:
            cw(c, "SYN_after_partial", ts, source="TCP")
            set_state(table, c, ep, peer, SYN_SENT)
        if fin and not rst:
            set_state(table, c, ep, peer, CLOSED)
            if peer.state == RESET and peer.prev_state == CLOSED:
                set_state(table, c, peer, ep, CLOSED)
            do_close = gen_event = True
        if rst:
            set_state(table, c, ep, peer, RESET)
            do_close = True
            if peer.state != RESET or peer.prev_state != ESTABLISHED:
                connection_reset(table, c)
    elif st == CLOSED:
        if syn:
            cw(c, "SYN_after_close", ts, source="TCP")
        if fin and delta_last > 0:
            cw(c, "FIN_advanced_last_seq", ts, source="TCP")
        if rst and peer.state != CLOSED:
            set_state(table, c, ep, peer, RESET)
            if not ep.did_close:
                do_close = True
            if c.flags & F_ACTIVE:
                # Zeek's ResetTimer: removes the connection (raising connection_reset) unless an
                # earlier timer does first
                t = ts + table.cfg.tcp_reset_delay
                if not c.flags & F_T_DELETE or t < c.timer_at:
                    c.timer_at = t
                    c.flags = (c.flags & ~(F_T_ATTEMPT | F_T_PARTIAL)) | F_T_DELETE | F_T_RESET
                    if table._events is not None:
                        table.event_timer(c)
    else:  # RESET
        if syn:
            cw(c, "SYN_after_reset", ts, source="TCP")
        if fin:
            cw(c, "FIN_after_reset", ts, source="TCP")
        if length > 0 and not rst:
            cw(c, "data_after_reset", ts, source="TCP")
    return do_close, gen_event


def _seq_between(seq: int, low: int, high: int) -> bool:
    return seq_delta(seq, low) >= 0 and seq_delta(seq, high) <= 0


def connection_reset(table, c) -> None:
    """Zeek's ConnectionReset: the connection is no longer active."""
    c.flags &= ~F_ACTIVE
    if table._events is not None:
        table.conn_event("connection_reset", c)


def connection_closed(table, c, ep, peer, gen_event) -> None:
    if c.flags & F_REASSEMBLE and data_pending(ep, peer):
        c.flags |= (F_CLOSE_DEFERRED | F_DEFER_GEN) if gen_event else F_CLOSE_DEFERRED
        return
    c.flags &= ~F_CLOSE_DEFERRED
    if ep.did_close:
        return
    ep.did_close = True
    if ep.state == RESET or peer.did_close or peer.state == INACTIVE:
        if ep.prev_state != INACTIVE or peer.state != INACTIVE:
            if c.flags & F_DEFER_GEN:
                gen_event = True
                c.flags &= ~F_DEFER_GEN
            if gen_event:                 # ConnectionFinished
                c.flags &= ~F_ACTIVE
                if table._events is not None:
                    table.conn_event("connection_half_finished" if peer.state == INACTIVE
                                     else "connection_finished", c)
        # CancelTimers, then the delete timer
        c.timer_at = c.last + table.cfg.tcp_close_delay
        c.flags = (c.flags & ~(F_T_ATTEMPT | F_T_PARTIAL | F_T_RESET)) | F_T_DELETE
    elif ep.prev_state == INACTIVE and not c.flags & F_T_DELETE and table._events is not None:
        # the first thing seen from this side was its FIN: Zeek's PartialCloseTimer (only
        # scheduled when a script handles connection_partial_close; it replaces the attempt
        # timer, which can no longer fire once both sides were seen)
        c.timer_at = c.last + table.cfg.tcp_partial_close_delay
        c.flags = (c.flags & ~F_T_ATTEMPT) | F_T_PARTIAL
        table.event_timer(c)


def check_eof(table, c, ep, peer, ts) -> None:
    if not ep.did_eof and (ep.fin_seq is not None or ep.state == CLOSED or ep.state == RESET) and not data_pending(ep, peer):
        ep.did_eof = True
        if c.analyzer is not None:
            c.analyzer.eof(ep is c.o, ts)
        if c.flags & F_CLOSE_DEFERRED:
            c.flags &= ~F_CLOSE_DEFERRED
            connection_closed(table, c, ep, peer, bool(c.flags & F_DEFER_GEN))


def data_pending(ep, peer) -> bool:
    if ep.skip:
        return False
    delivered = ep.start_seq + ep.reassem_seq
    last = (ep.seq_wraps << 32) | ep.last_seq
    if last < delivered:
        return False
    if delivered != last - 1 and delivered != last:
        return True
    return ep.state != RESET and peer.blocks is not None


# -- reassembler bookkeeping (no payload kept) ----------------------------------------------------

def data_sent(table, c, ep, peer, seq: int, length: int, ts: float) -> None:
    if ep.skip:
        return
    ack = ((ep.ack_wraps << 32) | ep.ack_seq) - ep.start_seq
    upper = seq + length
    if seq < ack:
        if upper <= ack:
            return
        seq = ack
    if upper <= ep.trim_seq:
        return
    if seq < ep.trim_seq:
        seq = ep.trim_seq
    rs = ep.reassem_seq
    if seq <= rs:
        if upper > rs:
            rs = upper
            blocks = ep.blocks
            if blocks is not None:
                while blocks and blocks[0][0] <= rs:
                    b = blocks.pop(0)
                    if b[1] > rs:
                        rs = b[1]
                if not blocks:
                    ep.blocks = None
            ep.reassem_seq = rs
    else:
        _insert_block(ep, seq, upper)
    cfg = table.cfg
    if no_data_acked(ep):
        if ep.blocks is not None and cfg.tcp_max_above_hole_without_any_acks and \
                ep.blocks[-1][1] - ep.reassem_seq > cfg.tcp_max_above_hole_without_any_acks:
            table.conn_weird(c, "above_hole_data_without_any_acks", ts, source="TCP")
            ep.blocks = None
            ep.skip = True
            return
        if cfg.tcp_max_initial_window and endpoint_size(ep, peer) > cfg.tcp_max_initial_window:
            if ep.trim_seq < ep.reassem_seq:
                ep.trim_seq = ep.reassem_seq
    if cfg.tcp_excessive_data_without_further_acks:
        size = ep.reassem_seq - ep.trim_seq
        if ep.blocks is not None:
            size += sum(b[1] - b[0] for b in ep.blocks)
        if size > cfg.tcp_excessive_data_without_further_acks:
            table.conn_weird(c, "excessive_data_without_further_acks", ts, source="TCP")
            ep.blocks = None
            ep.skip = True


def _insert_block(ep, seq: int, upper: int) -> None:
    blocks = ep.blocks
    if blocks is None:
        ep.blocks = [[seq, upper]]
        return
    out = []
    placed = False
    for b in blocks:
        if b[1] < seq:
            out.append(b)
        elif upper < b[0]:
            if not placed:
                out.append([seq, upper])
                placed = True
            out.append(b)
        else:
            seq = min(seq, b[0])
            upper = max(upper, b[1])
    if not placed:
        out.append([seq, upper])
        out.sort()
    ep.blocks = out


def ack_received(table, c, ep, peer, seq: int, ts: float) -> None:
    """``peer`` acknowledged ``ep``'s data up to relative ``seq``."""
    if ep.fin_seq is not None and seq >= ep.fin_seq:
        seq = ep.fin_seq - 1
    if seq <= ep.trim_seq:
        return
    if seq > ep.reassem_seq:
        _undelivered(table, c, ep, peer, seq, ts)
        if seq > ep.reassem_seq:
            ep.reassem_seq = seq
    ep.trim_seq = seq
    blocks = ep.blocks
    if blocks is not None:
        while blocks and blocks[0][1] <= seq:
            blocks.pop(0)
        if not blocks:
            ep.blocks = None
    check_eof(table, c, ep, peer, ts)


def _clean(e) -> bool:
    return e.state == ESTABLISHED or (e.state == CLOSED and e.prev_state == ESTABLISHED)


def _gap(table, c, ep, peer, length: int) -> None:
    if _clean(ep) and _clean(peer):
        scaled_history(c, ep, "G" if ep is c.o else "g")
        c.missed += length


def _undelivered(table, c, ep, peer, up_to: int, ts: float) -> None:
    if up_to <= 2 and c.flags & F_PARTIAL:
        return
    if c.analyzer is not None:
        c.analyzer.ack(ep is c.o, up_to, ts)     # the payload reassembler gives up the same holes
    if ep.skip:
        return
    blocks = ep.blocks
    if blocks is not None:
        while blocks and blocks[0][0] < up_to:
            b = blocks.pop(0)
            if b[1] <= ep.reassem_seq:
                continue
            if b[0] > ep.reassem_seq:
                _gap(table, c, ep, peer, b[0] - ep.reassem_seq)
            ep.reassem_seq = b[1]
            while blocks and blocks[0][0] <= ep.reassem_seq:
                nb = blocks.pop(0)
                if nb[1] > ep.reassem_seq:
                    ep.reassem_seq = nb[1]
        if not blocks:
            ep.blocks = None
    if up_to > ep.reassem_seq:
        _gap(table, c, ep, peer, up_to - ep.reassem_seq)


# -- connection reuse (Zeek's TCPSessionAdapter::IsReuse) -----------------------------------------

def is_reuse(table, c, p, ts: float) -> bool:
    flags = p.tcp_flags
    if not flags & 0x02:
        return False
    o, r = c.o, c.r
    conn_orig = o
    if flags & 0x10:
        if o.state != INACTIVE:
            return False
        conn_orig = r
    if not (o.did_close or r.did_close):
        base_seq = p.seq
        if base_seq == conn_orig.start_seq:
            return False
        if not flags & 0x10 and conn_orig.state == SYN_ACK_SENT and r.state == INACTIVE and base_seq == r.start_seq:
            return False
        if conn_orig.state == SYN_SENT:
            table.conn_weird(c, "SYN_seq_jump", ts, source="TCP")
        else:
            table.conn_weird(c, "active_connection_reuse", ts, source="TCP")
    elif ((o.state != INACTIVE and not o.did_close) or (r.state != INACTIVE and not r.did_close)) \
            and o.state != RESET and r.state != RESET:
        table.conn_weird(c, "active_connection_reuse", ts, source="TCP")
    elif ts - c.last < table.cfg.tcp_connection_linger and o.state != RESET and r.state != RESET:
        table.conn_weird(c, "premature_connection_reuse", ts, source="TCP")
    return True


def run_timer(table, c) -> bool:
    """The timer in ``c.timer_at`` (due) fires: Zeek's AttemptTimer, ResetTimer, PartialCloseTimer
    or a delete timer.  Raises its event; True when the connection is to be removed.

    With an event sink the table runs the event-raising timers at their due packet
    (``ConnTable.event_timer``), before the removal that follows at the sweep: so an attempt
    becomes a delete timer here, and a reset timer forgets its event once raised."""
    f = c.flags
    o, r = c.o, c.r
    if f & F_T_DELETE:
        if f & F_T_RESET:
            c.flags = f & ~F_T_RESET
            if f & F_ACTIVE and not (o.did_close and r.did_close):
                connection_reset(table, c)
        return True
    if f & F_T_ATTEMPT:
        if f & F_ACTIVE and (o.state == SYN_SENT or o.state == SYN_ACK_SENT) and r.state == INACTIVE:
            c.flags = (f & ~F_T_ATTEMPT) | F_T_DELETE
            if table._events is not None:
                table.conn_event("connection_attempt", c)
            return True
        c.flags = f & ~F_T_ATTEMPT
        c.timer_at = _INF
    elif f & F_T_PARTIAL:
        c.flags = f & ~F_T_PARTIAL
        c.timer_at = _INF
        if f & F_ACTIVE and o.state != INACTIVE and r.state != INACTIVE and not (o.did_close and r.did_close) \
                and o.state != RESET and r.state != RESET and table._events is not None:
            table.conn_event("connection_partial_close", c)
    return False


def expired(table, c, now: float) -> bool:
    """Whether one of Zeek's TCP timers would have removed ``c`` by network time ``now``."""
    cfg = table.cfg
    o, r = c.o, c.r
    if c.timer_at <= now and run_timer(table, c):
        return True
    active = c.flags & F_ACTIVE
    if active and c.last + cfg.tcp_connection_linger < now:
        # the periodic ExpireTimer: ticks at start+SYN_timeout, then every session_timer
        base = c.start + cfg.tcp_SYN_timeout
        edge = c.last + cfg.tcp_connection_linger
        if edge < base:
            tick = base
        else:
            k = int((edge - base) // cfg.tcp_session_timer) + 1
            tick = base + k * cfg.tcp_session_timer
        if tick <= now:
            if o.did_close or r.did_close:
                if (o.did_close and r.did_close) or o.state == RESET or r.state == RESET \
                        or o.state == INACTIVE or r.state == INACTIVE:
                    return True
            if r.state == INACTIVE and o.state == INACTIVE:
                return True
    return False


def conn_state(c) -> str:
    """conn.log's conn_state for a TCP connection (base/protocols/conn/main.zeek)."""
    os_, rs = c.o.state, c.r.state
    o_inactive = os_ == INACTIVE or os_ == PARTIAL
    r_inactive = rs == INACTIVE or rs == PARTIAL
    if rs == RESET:
        if os_ in (SYN_SENT, SYN_ACK_SENT) or (os_ == RESET and endpoint_size(c.o, c.r) == 0
                                               and endpoint_size(c.r, c.o) == 0):
            return "REJ"
        return "RSTRH" if o_inactive else "RSTR"
    if os_ == RESET:
        if r_inactive:
            return "RSTOS0" if _rstos0(c.history) else "OTH"
        return "RSTO"
    if rs == CLOSED and os_ == CLOSED:
        return "SF"
    if os_ == CLOSED:
        return "SH" if r_inactive else "S2"
    if rs == CLOSED:
        return "SHR" if o_inactive else "S3"
    if os_ == SYN_SENT and rs == INACTIVE:
        return "S0"
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return "S1"
    return "OTH"


def _rstos0(h: str) -> bool:
    """``/\\^?S[^HAFGIQ]*R.*/ == history`` (a full match)."""
    i = 1 if h.startswith("^") else 0
    if len(h) <= i or h[i] != "S":
        return False
    for ch in h[i + 1:]:
        if ch == "R":
            return True
        if ch in "HAFGIQ":
            return False
    return False

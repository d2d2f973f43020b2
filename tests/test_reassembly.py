"""TCP payload reassembly: unit behaviour of TCPReassembler and end to end through the Engine."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from analysis.reassembly import TCPReassembler
from engine_toys import Conv, Recorder, run


class Sink(TCPReassembler):
    __slots__ = ("out",)

    def __init__(self, cap=1 << 20):
        super().__init__(cap)
        self.out = []

    def _deliver(self, is_orig, data, ts):
        self.out.append(("d", is_orig, data))

    def _undelivered(self, is_orig, n, ts):
        self.out.append(("g", is_orig, n))


def stream(out, side=True):
    return b"".join(d for k, o, d in out if k == "d" and o == side)


def test_in_order_and_out_of_order_delivery():
    r = Sink()
    r.segment(True, 1, b"abc", 0)
    r.segment(True, 7, b"ghi", 0)        # above a hole: buffered
    assert stream(r.out) == b"abc"
    r.segment(True, 4, b"def", 0)        # fills the hole: both delivered, in order
    assert stream(r.out) == b"abcdefghi"
    assert r.buffered == 0 and not r.pending(True)


def test_retransmission_and_overlap_first_data_wins():
    r = Sink()
    r.segment(True, 1, b"abcd", 0)
    r.segment(True, 1, b"XXXXef", 0)     # overlap: only the new tail counts, old bytes win
    assert stream(r.out) == b"abcdef"
    r.segment(True, 10, b"jkl", 0)       # buffered first ...
    r.segment(True, 9, b"YZZZm", 0)      # ... an overlapping later arrival keeps only uncovered bytes
    r.segment(True, 7, b"gh", 0)
    assert stream(r.out) == b"abcdefghYjklm"


def test_ack_above_hole_reports_gap_then_delivers():
    r = Sink()
    r.segment(True, 1, b"ab", 0)
    r.segment(True, 6, b"fg", 0)
    r.ack(True, 10, 0)                   # peer acked through seq 9: 3..5 and 8..9 never come
    assert r.out == [("d", True, b"ab"), ("g", True, 3), ("d", True, b"fg"), ("g", True, 2)]
    r.segment(True, 4, b"late", 0)       # below the delivery point now: ignored
    assert stream(r.out) == b"abfg"


def test_flush_delivers_buffered_with_gaps_and_sides_are_independent():
    r = Sink()
    r.segment(False, 5, b"xyz", 0)
    r.segment(True, 1, b"q", 0)
    r.flush(False, 0)
    assert r.out == [("d", True, b"q"), ("g", False, 4), ("d", False, b"xyz")]


def test_buffer_cap_gives_up_the_lowest_hole():
    r = Sink(cap=10)
    r.segment(True, 1, b"a", 0)
    r.segment(True, 5, b"12345678", 0)   # 8 buffered
    r.segment(True, 20, b"ABCDE", 0)     # 13 > 10: the first hole becomes a gap
    assert ("g", True, 3) in r.out and stream(r.out) == b"a12345678"
    assert r.buffered <= 10


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_arrival_order_yields_the_stream(data):
    payload = bytes(range(256)) * 2
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(payload) - 1), max_size=12))))
    bounds = [0, *cuts, len(payload)]
    segs = [(a + 1, payload[a:b]) for a, b in zip(bounds, bounds[1:])]
    segs += data.draw(st.lists(st.sampled_from(segs), max_size=4))     # retransmissions
    order = data.draw(st.permutations(segs))
    r = Sink()
    for seq, d in order:
        r.segment(True, seq, d, 0)
    assert stream(r.out) == payload
    assert not any(k == "g" for k, _, _ in r.out)


def _conversation(isn_o=1000, isn_r=5000):
    """A conversation with reordering, a retransmission and one lost-and-acked segment."""
    c = Conv(isn_o=isn_o, isn_r=isn_r).handshake()
    c.seg(True, b"hello ")
    c.seg(True, b"world", off=6, advance=False)      # out of order: "there " is missing yet
    c.seg(True, b"there ")
    c.seg(True, b"XXXXX", advance=False)             # retransmission with other bytes: ignored
    c.o = (c.o + 5) & 0xFFFFFFFF
    c.ack(False)
    c.seg(False, b"ok")
    c.seg(False, b"LOST", advance=True)
    c.frames.pop()                                   # ... never captured
    c.seg(False, b"after")
    c.ack(True)                                      # acks above the hole: gap of 4
    c.fin(True)
    c.ack(False)
    c.fin(False)
    c.ack(True)
    return c


def _check(eng, sink):
    (a,) = Recorder.instances
    assert bytes(a.stream[True]) == b"hello there world"
    assert bytes(a.stream[False]) == b"okafter"
    assert ("gap", False, 4) in a.calls
    assert ("eof", True) in a.calls and ("eof", False) in a.calls
    assert a.calls.count(("done",)) == 1 and a.calls[-1] == ("done",)
    (row,) = sink.records["conn"]
    assert row.missed_bytes == 4 and row.service == "echo" and row.conn_state == "SF"


def test_engine_reassembles_reports_gaps_eof_done():
    _check(*run(_conversation().frames))


def test_engine_sequence_wraparound():
    # ISNs a few bytes below 2**32: the stream crosses the wrap in both directions
    _check(*run(_conversation(isn_o=0xFFFFFFF8, isn_r=0xFFFFFFFE).frames))


def test_engine_reordered_capture_same_stream():
    c = _conversation()
    body = list(c.frames[3:])
    body[0], body[2] = body[2], body[0]      # arrival order differs from sequence order
    run(c.frames[:3] + body)
    (a,) = Recorder.instances
    assert bytes(a.stream[True]) == b"hello there world"

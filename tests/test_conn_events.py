"""Zeek's connection-lifecycle and DPD events from the engine, on real frames.

Every test decodes Ethernet frames (``decoder_frames``) through :class:`analysis.engine.Engine`
with an event-recording sink and asserts the exact event sequence, the network time each event
was raised at and the connection record it carried.  Trigger rules follow Zeek's
TCPSessionAdapter (see docs/events.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import pytest

from analysis.config import AnalysisConfig
from analysis.engine import Engine
from analysis.pcapwriter import LINKTYPE_ETHERNET
from analysis.sinks import ListLogSink
from decoder_frames import tcp4_frame, udp4_frame
from engine_toys import specs

S, F, R, P, A = 0x02, 0x01, 0x04, 0x08, 0x10
T0 = 1_700_000_000.0
CLIENT, SERVER = "10.0.0.1", "10.0.0.2"

LIFECYCLE = {"new_connection", "connection_established", "connection_attempt", "connection_rejected",
             "connection_reset", "connection_finished", "connection_half_finished",
             "connection_partial_close", "partial_connection", "connection_state_remove",
             "analyzer_confirmation_info", "analyzer_violation_info"}


class Events:
    """The sink: (name, network time when raised, the event's connection record, args)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float, object, tuple]] = []
        self.engine: Engine | None = None

    def event(self, name: str, args: tuple) -> None:
        if name not in LIFECYCLE:
            return
        c = args[1].c if name.startswith("analyzer_") else args[0]
        self.seen.append((name, self.engine.network_time, c, args))

    def names(self) -> list[str]:
        return [n for n, _, _, _ in self.seen]

    def one(self, name: str):
        got = [e for e in self.seen if e[0] == name]
        assert len(got) == 1, (name, self.names())
        return got[0]


class Tcp:
    """One TCP conversation's frames at explicit times, absolute sequence numbers."""

    def __init__(self, sport: int = 40000, dport: int = 9999, isn_o: int = 1000, isn_r: int = 5000) -> None:
        self.sport, self.dport = sport, dport
        self.o, self.r = isn_o, isn_r

    def pkt(self, t: float, is_orig: bool, flags: int, data: bytes = b"", seq: int | None = None,
            ack: int | None = None) -> tuple[float, bytes]:
        if is_orig:
            f = tcp4_frame(CLIENT, SERVER, self.sport, self.dport, data, flags=flags,
                           seq=self.o if seq is None else seq, ack=self.r if ack is None else ack)
            self.o += len(data) + (1 if flags & (S | F) else 0)
        else:
            f = tcp4_frame(SERVER, CLIENT, self.dport, self.sport, data, flags=flags,
                           seq=self.r if seq is None else seq, ack=self.o if ack is None else ack)
            self.r += len(data) + (1 if flags & (S | F) else 0)
        return T0 + t, f

    def handshake(self, t: float = 0.0) -> list[tuple[float, bytes]]:
        return [self.pkt(t, True, S, ack=0), self.pkt(t + 0.1, False, S | A), self.pkt(t + 0.2, True, A)]


def analyze(*batches, analyzer_specs=None, cfg: AnalysisConfig | None = None, events: bool = True):
    """Feed each batch as one source batch (the engine sweeps timers after each), then finish."""
    ev = Events() if events else None
    sink = ListLogSink()
    eng = Engine(cfg or AnalysisConfig(uid_seed=1, strict_analyzers=True), sink, ev,
                 analyzer_specs={} if analyzer_specs is None else analyzer_specs)
    if ev is not None:
        ev.engine = eng
    for frames in batches:
        eng.process_batch((LINKTYPE_ETHERNET, [(ts, len(f), f) for ts, f in frames]))
    eng.finish()
    return ev, sink.records.get("conn", [])


def at(ev: Events) -> list[tuple[str, float]]:
    return [(n, round(t - T0, 3)) for n, t, _, _ in ev.seen]


# -- handshake and close ------------------------------------------------------------------------

@pytest.mark.parametrize("reassemble", [False, True], ids=["plain", "reassembling"])
def test_handshake_and_close_raise_established_then_finished(reassemble):
    c = Tcp()
    frames = c.handshake() + [c.pkt(0.3, True, P | A, b"hello"), c.pkt(0.4, False, P | A, b"world"),
                              c.pkt(0.5, True, F | A), c.pkt(0.6, False, F | A), c.pkt(0.7, True, A)]
    cfg = AnalysisConfig(uid_seed=1, dpd_reassemble_first_packets=reassemble)
    ev, rows = analyze(frames, cfg=cfg)
    assert at(ev) == [("new_connection", 0.0), ("connection_established", 0.1),
                      ("connection_finished", 0.6), ("connection_state_remove", 0.7)]
    est = ev.one("connection_established")[2]
    assert (est.history, est.conn_state, est.uid) == ("Sh", "S1", rows[0].uid)
    fin = ev.one("connection_finished")[2]
    assert (fin.history, fin.conn_state) == ("ShADdFf", "SF")
    assert rows[0].conn_state == "SF"


def _hole_then(last_flags: int):
    """Handshake, then 5 bytes 10 bytes past the originator's next byte (a hole), then
    ``last_flags`` from the originator: its close must wait for the hole (reassembly on)."""
    c = Tcp()
    frames = c.handshake()
    o = c.o
    frames.append(c.pkt(0.3, True, P | A, b"later", seq=o + 10))
    c.o = o + 15
    frames.append(c.pkt(0.4, True, last_flags))
    return c, frames


def test_finished_waits_for_the_data_before_the_fin():
    c, frames = _hole_then(F | A)
    frames += [c.pkt(0.5, False, F | A), c.pkt(0.6, True, A)]      # the reply acks over the hole
    ev, rows = analyze(frames, cfg=AnalysisConfig(uid_seed=1, dpd_reassemble_first_packets=True))
    assert at(ev) == [("new_connection", 0.0), ("connection_established", 0.1), ("connection_finished", 0.5),
                      ("connection_state_remove", 0.6)]
    assert (rows[0].conn_state, rows[0].missed_bytes) == ("SF", 10)


def test_a_deferred_close_after_rst_owes_no_finished():
    # Zeek's deferred_gen_event: the RST's close is deferred without an event to generate
    c, frames = _hole_then(R | A)
    frames.append(c.pkt(0.5, False, A))
    ev, rows = analyze(frames, cfg=AnalysisConfig(uid_seed=1, dpd_reassemble_first_packets=True))
    assert at(ev) == [("new_connection", 0.0), ("connection_established", 0.1), ("connection_reset", 0.4),
                      ("connection_state_remove", 0.5)]


def test_established_needs_the_responders_syn_not_a_bare_ack():
    # no SYN-ACK seen: the responder's first packet is a pure ACK -> no connection_established
    c = Tcp()
    frames = [c.pkt(0.0, True, S, ack=0), c.pkt(0.1, False, A), c.pkt(0.2, True, P | A, b"x")]
    ev, _ = analyze(frames)
    assert "connection_established" not in ev.names()


def test_syn_ack_without_the_syn_is_still_established():
    # Zeek raises connection_established on a responder SYN-ACK even when the SYN was missed
    c = Tcp()
    frames = [c.pkt(0.0, True, S, ack=0), c.pkt(0.1, False, S | A)]
    c2 = Tcp(sport=40001, dport=80)
    frames += [c2.pkt(0.2, False, S | A)]     # lone SYN-ACK from a server port: its sender is the responder
    ev, rows = analyze(frames, cfg=AnalysisConfig(uid_seed=1, likely_server_ports=frozenset({(80, "tcp")})))
    est = [e[2].orig_p for e in ev.seen if e[0] == "connection_established"]
    assert est == [40000, 40001]


# -- attempts and rejections --------------------------------------------------------------------

def test_unanswered_syn_raises_attempt_after_the_delay_in_network_time():
    a, b = Tcp(sport=40000), Tcp(sport=40001)
    ev, rows = analyze([a.pkt(0.0, True, S, ack=0)],
                       [b.pkt(4.0, True, S, ack=0)],          # 4 s later: no attempt yet
                       [b.pkt(6.5, True, P | A, b"x")])        # past 5 s: the first SYN's timer ran
    assert at(ev)[:4] == [("new_connection", 0.0), ("new_connection", 4.0),
                          ("connection_attempt", 6.5), ("connection_state_remove", 6.5)]
    att = ev.one("connection_attempt")[2]
    assert (att.orig_p, att.conn_state, att.history) == (40000, "S0", "S")
    # the second connection (data after its SYN) had no attempt: only its removal at the end
    assert ev.names()[4:] == ["connection_state_remove"]


def test_attempt_comes_at_the_first_packet_past_its_time_before_that_packets_events():
    # one batch: the timer runs when network time passes it (B's SYN), not at the batch's end;
    # the removal that follows still comes at the sweep after the batch
    a, b = Tcp(sport=40000), Tcp(sport=40001)
    ev, rows = analyze([a.pkt(0.0, True, S, ack=0)] + b.handshake(6.0))
    assert at(ev)[:5] == [("new_connection", 0.0), ("connection_attempt", 6.0), ("new_connection", 6.0),
                          ("connection_established", 6.1), ("connection_state_remove", 6.2)]
    assert ev.seen[1][2].orig_p == ev.seen[4][2].orig_p == 40000


def test_attempt_fires_before_a_retransmitted_syn_opens_a_new_connection():
    # the same SYN again 6 s later: the timer runs at that packet, before it makes a new connection
    a = Tcp()
    syn = a.pkt(0.0, True, S, ack=0)
    again = (T0 + 6.0, syn[1])
    ev, rows = analyze([syn, again])
    assert at(ev) == [("new_connection", 0.0), ("connection_attempt", 6.0), ("connection_state_remove", 6.0),
                      ("new_connection", 6.0), ("connection_state_remove", 6.0)]
    assert [r.conn_state for r in rows] == ["S0", "S0"]


def test_attempt_delay_zero_disables_the_event():
    a, b = Tcp(sport=40000), Tcp(sport=40001)
    cfg = AnalysisConfig(uid_seed=1, tcp_attempt_delay=0.0)
    ev, _ = analyze([a.pkt(0.0, True, S, ack=0)], [b.pkt(30.0, True, S, ack=0)], cfg=cfg)
    assert "connection_attempt" not in ev.names()


def test_rst_answering_a_syn_is_a_rejection_not_a_reset():
    c = Tcp()
    ev, rows = analyze([c.pkt(0.0, True, S, ack=0), c.pkt(0.1, False, R | A, seq=0)])
    assert at(ev) == [("new_connection", 0.0), ("connection_rejected", 0.1), ("connection_state_remove", 0.1)]
    assert ev.one("connection_rejected")[2].conn_state == "REJ" == rows[0].conn_state


# -- resets -------------------------------------------------------------------------------------

def test_mid_stream_rst_raises_reset_at_the_rst():
    c = Tcp()
    frames = c.handshake() + [c.pkt(0.3, True, P | A, b"GET"), c.pkt(0.4, False, A), c.pkt(0.5, True, R | A)]
    ev, rows = analyze(frames)
    assert at(ev) == [("new_connection", 0.0), ("connection_established", 0.1), ("connection_reset", 0.5),
                      ("connection_state_remove", 0.5)]
    assert ev.one("connection_reset")[2].conn_state == "RSTO" == rows[0].conn_state


def test_rst_after_own_fin_raises_reset_when_the_reset_timer_fires():
    # the originator closed (FIN), the responder did not; a later RST from the originator arms
    # Zeek's ResetTimer (tcp_reset_delay = 5 s), whose expiry raises connection_reset
    c, other = Tcp(), Tcp(sport=40001)
    frames = c.handshake() + [c.pkt(0.3, True, F | A), c.pkt(0.4, False, A), c.pkt(1.0, True, R | A)]
    frames += [other.pkt(3.0, True, S, ack=0), other.pkt(6.5, True, A), other.pkt(7.0, True, A)]
    ev, _ = analyze(frames)
    mine = [(n, t) for (n, t), e in zip(at(ev), ev.seen) if e[2].orig_p == 40000]
    assert mine == [("new_connection", 0.0), ("connection_established", 0.1), ("connection_reset", 6.5),
                    ("connection_state_remove", 7.0)]


def test_rst_before_any_handshake_is_neither_reset_nor_rejected():
    c = Tcp()
    ev, _ = analyze([c.pkt(0.0, True, R | A)])
    assert ev.names() == ["new_connection", "connection_state_remove"]


# -- partial and half-closed connections --------------------------------------------------------

def test_both_sides_without_a_syn_raise_partial_connection_once():
    c = Tcp()
    ev, rows = analyze([c.pkt(0.0, True, P | A, b"abc"), c.pkt(0.1, False, P | A, b"def"),
                        c.pkt(0.2, True, P | A, b"ghi")])
    assert at(ev) == [("new_connection", 0.0), ("partial_connection", 0.1), ("connection_state_remove", 0.2)]
    assert ev.one("partial_connection")[2].history == "Dd"


def test_fin_without_any_reply_is_half_finished():
    c = Tcp()
    ev, rows = analyze([c.pkt(0.0, True, S, ack=0), c.pkt(0.5, True, F | A)])
    assert at(ev) == [("new_connection", 0.0), ("connection_half_finished", 0.5), ("connection_state_remove", 0.5)]
    assert "connection_finished" not in ev.names() and "connection_attempt" not in ev.names()


def test_fin_as_first_packet_of_a_side_raises_partial_close_after_the_delay():
    # the responder's first packet is its FIN; the originator never closes: Zeek's
    # PartialCloseTimer (tcp_partial_close_delay = 3 s) raises connection_partial_close
    c, other = Tcp(), Tcp(sport=40001)
    ev, rows = analyze([c.pkt(0.0, True, P | A, b"abc"), c.pkt(0.1, False, F | A),
                        other.pkt(2.0, True, S, ack=0), other.pkt(3.5, True, A), other.pkt(4.0, True, A)])
    mine = [(n, t) for (n, t), e in zip(at(ev), ev.seen) if e[2].orig_p == 40000]
    # the connection stays (see docs/events.md): removed at the end of input
    assert mine == [("new_connection", 0.0), ("connection_partial_close", 3.5), ("connection_state_remove", 4.0)]


# -- DPD ----------------------------------------------------------------------------------------

def test_analyzer_confirmation_is_raised_once_with_zeeks_tag_and_info():
    c = Tcp(dport=7)          # the toy "echo" analyzer's port; it confirms on every data chunk
    frames = c.handshake() + [c.pkt(0.3, True, P | A, b"ping"), c.pkt(0.4, False, P | A, b"pong"),
                              c.pkt(0.5, True, P | A, b"ping")]
    ev, rows = analyze(frames, analyzer_specs=specs())
    assert ev.names() == ["new_connection", "connection_established", "analyzer_confirmation_info",
                          "connection_state_remove"]
    name, t, conn, (atype, info) = ev.one("analyzer_confirmation_info")
    assert (atype, round(t - T0, 3)) == ("Analyzer::ANALYZER_ECHO", 0.3)
    assert conn.service == "echo" and conn.uid == rows[0].uid and isinstance(info.aid, int)


def test_content_detected_analyzer_confirms_under_its_own_tag():
    c = Tcp(dport=4444)       # no port: echo2 attaches on HELLO / WORLD
    frames = c.handshake() + [c.pkt(0.3, True, P | A, b"HELLO"), c.pkt(0.4, False, P | A, b"WORLD")]
    ev, rows = analyze(frames, analyzer_specs=specs())
    tags = [e[3][0] for e in ev.seen if e[0] == "analyzer_confirmation_info"]
    assert tags == ["Analyzer::ANALYZER_ECHO2"]
    assert rows[0].service == "echo2"


def test_violation_raises_violation_info_with_the_reason_and_detaches():
    c = Tcp(dport=7)
    frames = c.handshake() + [c.pkt(0.3, True, P | A, b"BAD"), c.pkt(0.4, True, P | A, b"more")]
    ev, rows = analyze(frames, analyzer_specs=specs())
    assert ev.names() == ["new_connection", "connection_established", "analyzer_violation_info",
                          "connection_state_remove"]
    _, t, conn, (atype, info) = ev.one("analyzer_violation_info")
    assert (atype, info.reason, info.data, round(t - T0, 3)) == ("Analyzer::ANALYZER_ECHO", "bad", None, 0.3)
    assert conn.uid == rows[0].uid and rows[0].service is None


def test_an_analyzer_exception_is_a_violation_carrying_the_error():
    class Boom(Exception):
        pass

    from engine_toys import Recorder
    from analysis.protocols.base import AnalyzerSpec

    class Exploding(Recorder):
        def data(self, is_orig, payload, ts):
            raise Boom("parser fell over")

    spec = AnalyzerSpec(name="ftp-data", factory=Exploding, transports=frozenset({"tcp"}),
                        ports=frozenset({(7, "tcp")}))
    c = Tcp(dport=7)
    frames = c.handshake() + [c.pkt(0.3, True, P | A, b"x")]
    ev, _ = analyze(frames, analyzer_specs={"ftp-data": spec}, cfg=AnalysisConfig(uid_seed=1))
    _, _, _, (atype, info) = ev.one("analyzer_violation_info")
    assert atype == "Analyzer::ANALYZER_FTP_DATA" and info.reason == "Boom: parser fell over"


def test_udp_confirmation():
    frames = [(T0 + i, udp4_frame(sport=3333, dport=7, payload=b"dgram%d" % i)) for i in range(3)]
    ev, rows = analyze(frames, analyzer_specs=specs())
    assert ev.names() == ["new_connection", "analyzer_confirmation_info", "connection_state_remove"]
    assert ev.one("analyzer_confirmation_info")[2].proto == "udp"


# -- the events leave the logs alone ------------------------------------------------------------

def test_logs_are_identical_with_and_without_an_event_sink():
    c, d = Tcp(sport=40000, dport=7), Tcp(sport=40001)
    frames = c.handshake() + [c.pkt(0.3, True, P | A, b"BAD"), c.pkt(0.5, True, F | A), c.pkt(0.6, False, F | A),
                              d.pkt(0.7, True, S, ack=0), d.pkt(0.8, False, R | A, seq=0)]
    later = [Tcp(sport=40002).pkt(9.0, True, S, ack=0)]
    _, with_events = analyze(frames, later, analyzer_specs=specs())
    _, without = analyze(frames, later, analyzer_specs=specs(), events=False)
    # every column but the uid (with events on, uids are made at new_connection: another order)
    rows = [[msgspec.structs.replace(r, uid="-") for r in got] for got in (with_events, without)]
    assert len(rows[0]) == 3 and rows[0] == rows[1]


# -- a real trace: every event agrees with the connection's final conn.log row ------------------

CONFORMANCE = Path(os.environ.get("STARLING_CONFORMANCE",
                                  Path(__file__).resolve().parent.parent.parent / "shared" / "conformance"))


def test_corpus_traces_events_agree_with_conn_log():
    cases_file = CONFORMANCE / "zeek" / "cases.json"
    if not cases_file.exists():
        pytest.skip("conformance corpus not available")
    from analysis.sources import open_source

    cases = {c["test"]: c for c in json.loads(cases_file.read_text())["cases"]}
    seen: dict[str, int] = {}
    for name in ("core.history-flip", "core.tcp.reassembly-known-ports", "scripts.base.protocols.ssh.half-duplex-client",
                 "core.tcp-padding"):
        case = cases.get(name)
        if case is None:
            continue
        ev = Events()
        sink = ListLogSink()
        eng = Engine(AnalysisConfig(uid_seed=1), sink, ev)
        ev.engine = eng
        src = open_source(CONFORMANCE / "zeek" / case["trace"])
        for batch in src.batches():
            eng.process_batch(batch)
        src.close()
        eng.finish()
        final = {r.uid: r for r in sink.records["conn"]}
        for n, _, c, _ in ev.seen:
            seen[n] = seen.get(n, 0) + 1
            row = final[c.uid]
            hist = row.history or ""
            if n == "connection_established":     # the responder's SYN (a flip swaps the letters' case)
                assert row.proto == "tcp" and ("h" in hist or "s" in hist or hist.startswith("^"))
            elif n == "connection_finished":
                assert row.conn_state == "SF"
            elif n == "connection_rejected":
                assert row.conn_state == "REJ"
            elif n == "connection_attempt":
                assert row.conn_state == "S0"
            elif n == "analyzer_confirmation_info":
                assert row.service and c.service and set(c.service.split(",")) <= set(row.service.split(","))
        # each connection_state_remove matches one conn.log row
        assert sorted(c.uid for n, _, c, _ in ev.seen if n == "connection_state_remove") == sorted(final)
    if not seen:
        pytest.skip("none of the chosen corpus cases present")
    assert seen.get("connection_established", 0) > 0 and seen.get("analyzer_confirmation_info", 0) > 0

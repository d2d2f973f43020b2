"""The Engine end to end on generated traces: decoder + connection table + sinks."""

from __future__ import annotations

import pytest

from analysis.config import AnalysisConfig
from analysis.engine import Engine, analyze_file
from analysis.pcapwriter import LINKTYPE_ETHERNET
from analysis.sinks import ListLogSink
from analysis.trafficgen import generate, write_trace
from analysis.zeek_scripts import configure


class Events:
    def __init__(self):
        self.names = []

    def event(self, name, args):
        self.names.append(name)


@pytest.fixture(scope="module")
def packets():
    return generate(3000, seed=3)


def run_engine(packets, cfg=None, batch=256, events=None):
    sink = ListLogSink()
    eng = Engine(cfg or AnalysisConfig(uid_seed=1), sink, events)
    for i in range(0, len(packets), batch):
        eng.process_batch((LINKTYPE_ETHERNET, [(ts, len(f), f) for ts, f in packets[i:i + batch]]))
    eng.finish()
    return eng, sink


def test_engine_writes_one_conn_row_per_connection_and_counts(packets):
    ev = Events()
    eng, sink = run_engine(packets, events=ev)
    st = eng.stats()
    conns = sink.records["conn"]
    assert st["packets"] >= len(packets) - 20          # a few malformed frames decode to nothing
    assert st["connections"] == len(conns) == ev.names.count("connection_state_remove")
    assert ev.names.count("new_connection") == len(conns)
    assert st["active_connections"] == 0
    assert len({c.uid for c in conns}) == len(conns)
    assert sum(c.orig_pkts + c.resp_pkts for c in conns) <= st["packets"]
    states = {c.conn_state for c in conns}
    assert {"SF", "S0", "REJ"} <= states
    assert {c.proto for c in conns} >= {"tcp", "udp", "icmp"}


def test_batching_does_not_change_results(packets):
    _, a = run_engine(packets, batch=1000)
    _, b = run_engine(packets, batch=7)

    def rows(sink):
        return sorted(repr((c.orig_h, c.orig_p, c.resp_h, c.resp_p, c.proto, c.history, c.conn_state, c.orig_bytes,
                       c.resp_bytes, c.orig_pkts, c.resp_pkts)) for c in sink.records["conn"])

    assert rows(a) == rows(b)


def test_bad_checksums_become_weirds_and_history_letters(packets):
    _, sink = run_engine(packets)
    names = {w.name for w in sink.records.get("weird", [])}
    assert names & {"bad_TCP_checksum", "bad_UDP_checksum", "bad_IP_checksum", "truncated_IP"}
    _, sink2 = run_engine(packets, AnalysisConfig(uid_seed=1, ignore_checksums=True))
    names2 = {w.name for w in sink2.records.get("weird", [])}
    assert not names2 & {"bad_TCP_checksum", "bad_UDP_checksum"}


def test_bare_mode_without_conn_script_writes_no_conn_log(packets):
    _, sink = run_engine(packets, configure(["base/frameworks/notice/weird"], bare=True))
    assert "conn" not in sink.records
    assert "weird" in sink.records


def test_finish_is_idempotent(packets):
    eng, sink = run_engine(packets[:200])
    n = len(sink.records["conn"])
    eng.finish()
    assert len(sink.records["conn"]) == n


def test_analyze_file_writes_zeek_logs(tmp_path, packets):
    trace = tmp_path / "t.pcap"
    write_trace(str(trace), 1500, seed=5)
    st = analyze_file(trace, tmp_path / "logs", AnalysisConfig(uid_seed=2))
    text = (tmp_path / "logs" / "conn.log").read_text()
    assert text.startswith("#separator \\x09")
    assert "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration" in text
    rows = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(rows) == st["connections"] > 10


def test_analyze_file_bad_trace_raises_source_error(tmp_path):
    from analysis.sources.base import SourceError

    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(SourceError):
        analyze_file(bad, tmp_path / "logs")


def test_shards_partition_the_connections(tmp_path):
    trace = tmp_path / "t.pcap"
    write_trace(str(trace), 1500, seed=9)
    whole = analyze_file(trace, tmp_path / "all", AnalysisConfig(uid_seed=1))
    parts = [analyze_file(trace, tmp_path / f"s{i}", AnalysisConfig(uid_seed=1), shard=(i, 3)) for i in range(3)]
    assert sum(p["connections"] for p in parts) == whole["connections"]
    assert sum(p["packets"] for p in parts) == whole["packets"]
    assert all(p["connections"] > 0 for p in parts)


def test_analyzer_slot_receives_payload_in_order():
    from analysis.conn import ConnTable
    from analysis.weird import WeirdReporter

    got = []
    ends = []

    class Slot:
        """The slot's contract: called per payload packet, plus ack/eof/done hooks."""
        def __call__(self, is_orig, seq, data, ts):
            got.append((is_orig, seq, bytes(data)))

        def ack(self, is_orig, up_to, ts):
            pass

        def eof(self, is_orig, ts):
            pass

        def done(self, ts):
            ends.append(ts)

    sink = ListLogSink()
    table = ConnTable(AnalysisConfig(uid_seed=1), sink, None, WeirdReporter(sink),
                      analyzer_factory=lambda c: Slot())
    eng_packets = generate(400, seed=4)
    from analysis.decode import Decoder, DecoderOptions
    dec = Decoder(DecoderOptions(), WeirdReporter(sink))
    dec.decode_batch((LINKTYPE_ETHERNET, [(ts, len(f), f) for ts, f in eng_packets]), table.process)
    assert got and all(isinstance(d, bytes) and d for _, _, d in got)
    assert {o for o, _, _ in got} == {True, False}
    table.finish()
    assert len(ends) == table.connections


def test_tcp_fast_path_matches_the_general_path(packets, monkeypatch):
    import analysis.conn.table as table_mod

    def rows(sink):
        return sorted(repr((c.orig_h, c.orig_p, c.resp_h, c.resp_p, c.proto, c.history, c.conn_state, c.orig_bytes,
                            c.resp_bytes, c.orig_pkts, c.resp_pkts, c.missed_bytes, c.duration))
                      for c in sink.records["conn"])

    _, fast = run_engine(packets)
    monkeypatch.setattr(table_mod, "_fast", lambda *a: 0)
    _, slow = run_engine(packets)
    assert rows(fast) == rows(slow)
    assert sorted(w.name for w in fast.records.get("weird", [])) == sorted(w.name for w in slow.records.get("weird", []))

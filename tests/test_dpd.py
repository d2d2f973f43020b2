"""Analyzer attachment: ports, content detection (DPD), violations, hand-off, expectations,
the AnalyzerContext, and how @load / redef lines configure analyzers."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import analysis.protocols as protocols
from analysis.config import AnalysisConfig
from analysis.protocols.base import REGISTRY, AnalyzerSpec
from analysis.zeek_scripts import configure
from engine_toys import Conv, Recorder, Recorder2, ToyOptions, run, specs, udp_frames


def test_every_protocol_module_is_imported_and_registered():
    mods = [m.name for m in pkgutil.iter_modules(protocols.__path__) if m.name != "base" and not m.name.startswith("_")]
    for name in mods:
        importlib.import_module(f"analysis.protocols.{name}")      # fails loudly on a broken module
    assert protocols.load_all() is REGISTRY
    for name, spec in REGISTRY.items():
        assert spec.name == name and spec.transports <= {"tcp", "udp"}


def test_port_attachment_tcp_and_udp():
    eng, sink = run(Conv(dport=7).handshake().seg(True, b"ping").seg(False, b"pong").frames + udp_frames(3))
    tcp, udp = sorted(Recorder.instances, key=lambda a: len(a.calls))
    assert [c[2] for c in udp.calls if c[0] == "data"] == [b"dgram0", b"dgram1", b"dgram2"]
    assert bytes(tcp.stream[True]) == b"ping" and bytes(tcp.stream[False]) == b"pong"
    assert {r.service for r in sink.records["conn"]} == {"echo"}


def test_no_analyzer_on_other_ports_without_a_content_match():
    eng, sink = run(Conv(dport=9999).handshake().seg(True, b"ping").seg(False, b"pong").frames)
    assert Recorder.instances == []
    assert sink.records["conn"][0].service is None


def test_dpd_attaches_on_any_port_when_both_sides_match_and_replays():
    c = Conv(dport=9999).handshake().seg(True, b"HEL").seg(True, b"LO there").seg(False, b"WORLD!").seg(True, b"more")
    eng, sink = run(c.frames)
    (a,) = Recorder.instances
    assert isinstance(a, Recorder2)
    assert bytes(a.stream[True]) == b"HELLO theremore" and bytes(a.stream[False]) == b"WORLD!"
    assert sink.records["conn"][0].service == "echo2"


def test_dpd_stops_after_the_buffer_size():
    c = Conv(dport=9999).handshake().seg(True, b"HELLO" + b"x" * 2000).seg(False, b"WORLD")
    eng, sink = run(c.frames)
    assert Recorder.instances == []
    cfg = AnalysisConfig(uid_seed=1, strict_analyzers=True, dpd_buffer_size=4096)
    run(c.frames, cfg=cfg)
    assert len(Recorder.instances) == 1


def test_violation_detaches_and_done_is_called_once():
    eng, sink = run(Conv(dport=7).handshake().seg(True, b"ok").seg(True, b"BAD").seg(True, b"later").frames)
    (a,) = Recorder.instances
    datas = [c[2] for c in a.calls if c[0] == "data"]
    assert datas == [b"ok", b"BAD"]
    assert a.calls.count(("done",)) == 1
    assert sink.records["conn"][0].service == "echo"     # confirmed before the violation


def test_hand_off_gives_the_rest_of_the_stream_to_the_child():
    c = Conv(dport=7).handshake().seg(True, b"EHLO\r\nSTARTTLS\r\nhs1").seg(False, b"srv").seg(True, b"hs2")
    eng, sink = run(c.frames)
    parent, child = Recorder.instances
    assert bytes(parent.stream[True]) == b"EHLO\r\nSTARTTLS\r\nhs1" and not parent.stream[False]
    assert bytes(child.stream[True]) == b"hs1hs2" and bytes(child.stream[False]) == b"srv"
    assert parent.calls.count(("done",)) == child.calls.count(("done",)) == 1
    assert sink.records["conn"][0].service == "echo,echo2"


def test_expected_connection_gets_its_service():
    class Expecter(Recorder):
        def data(self, is_orig, payload, ts):
            self.ctx.expect_connection(self.ctx.conn.orig_h, self.ctx.conn.resp_h, 2020, "echo-data")
            super().data(is_orig, payload, ts)

    sp = specs(echo=AnalyzerSpec(name="echo", factory=Expecter, transports=frozenset({"tcp"}),
                                 ports=frozenset({(7, "tcp")})))
    frames = Conv(dport=7).handshake().seg(True, b"PASV").frames
    later = Conv(sport=40001, dport=2020, t=frames[-1][0] + 1).handshake().seg(True, b"file").frames
    eng, sink = run(frames + later, analyzer_specs=sp)
    services = {r.resp_p: r.service for r in sink.records["conn"]}
    assert services == {7: "echo", 2020: "echo-data"}


def test_context_weird_log_event_history_and_conn_view():
    seen = {}

    class Busy(Recorder):
        def data(self, is_orig, payload, ts):
            ctx = self.ctx
            seen.update(uid=ctx.conn.uid, proto=ctx.conn.proto, resp_p=ctx.conn.resp_p, opts=ctx.options,
                        fid=ctx.uid_for("F"))
            ctx.weird("toy_weird", "detail")
            ctx.event("toy_event", 1, 2)
            ctx.add_history("X")
            ctx.write_log("echo", "a record")
            ctx.violation("done with it")

    class Ev:
        def __init__(self):
            self.got = []

        def event(self, name, args):
            self.got.append((name, args))

    ev = Ev()
    sp = specs(echo=AnalyzerSpec(name="echo", factory=Busy, transports=frozenset({"tcp"}),
                                 ports=frozenset({(7, "tcp")}), options=ToyOptions))
    eng, sink = run(Conv(dport=7).handshake().seg(True, b"x").frames, analyzer_specs=sp, events=ev)
    (row,) = sink.records["conn"]
    assert seen["uid"] == row.uid and seen["proto"] == "tcp" and seen["resp_p"] == 7
    assert isinstance(seen["opts"], ToyOptions) and seen["fid"].startswith("F")
    (w,) = [w for w in sink.records["weird"] if w.name == "toy_weird"]
    assert w.uid == row.uid and w.addl == "detail" and w.source == "ECHO" and w.resp_p == 7
    (c, *rest), = [args for name, args in ev.got if name == "toy_event"]    # the connection first, as in Zeek
    assert c.uid == row.uid and rest == [1, 2]
    assert row.history.endswith("X") and sink.records["echo"] == ["a record"]


def test_an_analyzer_exception_becomes_a_weird_not_a_crash():
    class Broken(Recorder):
        def data(self, is_orig, payload, ts):
            raise ValueError("boom")

    sp = specs(echo=AnalyzerSpec(name="echo", factory=Broken, transports=frozenset({"tcp"}),
                                 ports=frozenset({(7, "tcp")})))
    eng, sink = run(Conv(dport=7).handshake().seg(True, b"x").seg(True, b"y").frames,
                    cfg=AnalysisConfig(uid_seed=1), analyzer_specs=sp)
    assert [w.name for w in sink.records["weird"]] == ["analyzer_error"]
    assert eng.stats()["analyzer_errors"] == 1
    with pytest.raises(ValueError):
        run(Conv(dport=7).handshake().seg(True, b"x").frames, analyzer_specs=sp)   # strict in tests


@pytest.fixture
def toy_registry(monkeypatch):
    for name, spec in specs().items():
        monkeypatch.setitem(REGISTRY, name, spec)


def test_bare_mode_enables_only_loaded_analyzers_and_their_logs(toy_registry):
    cfg = configure(["base/protocols/echo"], bare=True)
    assert "echo" in cfg.analyzers and "echo2" not in cfg.analyzers and "echo" in cfg.logs
    assert configure([], bare=False).analyzers is None


def test_redefs_set_analyzer_options(toy_registry):
    cfg = configure([], ['redef Toy::verbs += { "PUT", "POST" };', "redef Toy::limit = 3;",
                         "redef Toy::timeout = 2 mins;", "redef Toy::on = T;",
                         "redef Analyzer::disabled_analyzers += { Analyzer::ANALYZER_ECHO2, };"])
    opts = cfg.analyzer_options["echo"]
    assert opts.verbs == frozenset({"GET", "PUT", "POST"}) and opts.limit == 3 and opts.timeout == 120.0 and opts.on
    assert cfg.disabled_analyzers == {"echo2"}
    cfg2 = configure([], ['redef Toy::verbs -= { "GET" };'])
    assert cfg2.analyzer_options["echo"].verbs == frozenset()


def test_disabled_analyzer_is_not_attached_nor_handed_off():
    cfg = AnalysisConfig(uid_seed=1, strict_analyzers=True, disabled_analyzers=frozenset({"echo2"}))
    c = Conv(dport=7).handshake().seg(True, b"STARTTLS\r\nrest")
    eng, sink = run(c.frames, cfg=cfg)
    (a,) = Recorder.instances
    assert sink.records["conn"][0].service == "echo"


def test_dpd_orig_only_pattern_attaches_without_a_server_reply():
    import re

    only = AnalyzerSpec(name="echo2", factory=Recorder2, transports=frozenset({"tcp"}),
                        dpd_orig=(re.compile(rb"HELLO"),), dpd_resp=(re.compile(rb"WORLD"),),
                        dpd_orig_only=(re.compile(rb"HI!"),))
    eng, sink = run(Conv(dport=9999).handshake().seg(True, b"HI! there").frames, analyzer_specs=specs(echo2=only))
    (a,) = Recorder.instances
    assert bytes(a.stream[True]) == b"HI! there"
    assert sink.records["conn"][0].service == "echo2"
    # the two-sided pattern alone still needs the responder
    run(Conv(dport=9999).handshake().seg(True, b"HELLO").frames, analyzer_specs=specs(echo2=only))
    assert Recorder.instances == []


def test_disable_stops_delivery_keeps_service_done_and_conn_accounting():
    class Quitter(Recorder):
        def data(self, is_orig, payload, ts):
            super().data(is_orig, payload, ts)
            if payload == b"enough":
                self.ctx.disable()

    sp = specs(echo=AnalyzerSpec(name="echo", factory=Quitter, transports=frozenset({"tcp"}),
                                 ports=frozenset({(7, "tcp")})))
    conv = Conv(dport=7).handshake().seg(True, b"ok").seg(True, b"enough").seg(True, b"later")
    conv.seg(False, b"gap!", off=100).seg(False, b"x").seg(True, b"", flags=0x10)   # acked hole
    eng, sink = run(conv.frames, analyzer_specs=sp)
    (a,) = Recorder.instances
    assert [c[2] for c in a.calls if c[0] == "data"] == [b"ok", b"enough"]
    assert not [c for c in a.calls if c[0] in ("gap", "eof")]
    assert a.calls.count(("done",)) == 1
    (row,) = sink.records["conn"]
    assert row.service == "echo" and row.missed_bytes == 100
    # conn.log's sizes are the same as with an analyzer that never stops looking
    eng2, sink2 = run(conv.frames, analyzer_specs=specs())
    (row2,) = sink2.records["conn"]
    assert (row.orig_bytes, row.resp_bytes, row.missed_bytes, row.history) == \
        (row2.orig_bytes, row2.resp_bytes, row2.missed_bytes, row2.history)

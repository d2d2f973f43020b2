"""The notice framework: Zeek's columns, defaults, policy hooks, suppression (local and cluster-wide)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.conn.record import ConnInfo
from analysis.logs.schema import columns
from analysis.sinks import ListLogSink
from analysis.trafficgen import GenConfig, write_trace
from cluster.frameworks import host, notice

CONFORMANCE_FIELDS = (
    "ts uid id.orig_h id.orig_p id.resp_h id.resp_p fuid file_mime_type file_desc proto note msg sub src "
    "dst p n peer_descr actions email_dest suppress_for remote_location.country_code remote_location.region "
    "remote_location.city remote_location.latitude remote_location.longitude").split()
CONFORMANCE_TYPES = (
    "time string addr port addr port string string string enum enum string string addr addr port count "
    "string set[enum] set[string] interval string string string double double").split()


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def local():
    """A standalone host writing into memory; policies and options restored afterwards."""
    sink, clock = ListLogSink(), Clock()
    h = host.LocalHost(sink, clock)
    host.install(h)
    notice.reset()
    pols = list(notice._policies)
    saved = (set(notice.alarmed_types), set(notice.ignored_types), set(notice.not_suppressed_types),
             dict(notice.type_suppression_intervals))
    yield h, sink, clock
    host.install(None)
    notice.reset()
    notice._policies[:] = pols
    notice.alarmed_types, notice.ignored_types, notice.not_suppressed_types, notice.type_suppression_intervals = saved


def rows(sink, path="notice"):
    return sink.records.get(path, [])


def conn() -> ConnInfo:
    return ConnInfo(ts=990.0, uid="CabC123", orig_h="10.0.0.5", orig_p=51000, resp_h="192.0.2.9", resp_p=53,
                    proto="udp")


def test_columns_are_zeek_9s():
    cols = columns(notice.NoticeInfo)
    assert [c.name for c in cols] == CONFORMANCE_FIELDS
    assert [c.zeek_type for c in cols] == CONFORMANCE_TYPES
    assert [c.name for c in columns(notice.AlarmInfo)] == CONFORMANCE_FIELDS


def test_columns_match_the_conformance_baselines():
    import os
    base = Path(os.environ.get("STARLING_CONFORMANCE", Path(__file__).resolve().parents[3] / "shared" / "conformance"))
    files = sorted(base.glob("zeek/baselines/*/notice.log"))
    if not files:
        pytest.skip("conformance corpus not available")
    for f in files:
        lines = f.read_text().splitlines()
        fields = next(ln for ln in lines if ln.startswith("#fields")).split("\t")[1:]
        types = next(ln for ln in lines if ln.startswith("#types")).split("\t")[1:]
        assert (fields, types) == (CONFORMANCE_FIELDS, CONFORMANCE_TYPES), f


def test_defaults_filled_from_the_connection(local):
    _h, sink, clock = local
    assert notice.NOTICE(note="DNS::Odd", msg="odd answer", conn=conn(), identifier="x")
    (r,) = rows(sink)
    assert (r.ts, r.uid, r.orig_h, r.orig_p, r.resp_h, r.resp_p) == (clock.t, "CabC123", "10.0.0.5", 51000,
                                                                       "192.0.2.9", 53)
    assert (r.src, r.dst, r.p, r.proto) == ("10.0.0.5", "192.0.2.9", 53, "udp")
    assert r.actions == [notice.ACTION_LOG] and r.email_dest == [] and r.suppress_for == 3600.0
    assert r.peer_descr is None and r.note == "DNS::Odd" and r.msg == "odd answer"


def test_port_text_and_no_port_means_no_proto(local):
    _h, sink, _c = local
    notice.NOTICE(note="A::B", src="10.1.1.1", p="161/udp")
    notice.NOTICE(note="A::C", src="10.1.1.1", dst="10.1.1.2")
    a, b = rows(sink)
    assert (a.p, a.proto) == (161, "udp")
    assert (b.p, b.proto, b.orig_h) == (None, None, None)


def test_suppression_by_identifier_for_an_interval_of_network_time(local):
    _h, sink, clock = local
    assert notice.NOTICE(note="X::Y", msg="1", identifier="h1")
    clock.t += 3599
    assert not notice.NOTICE(note="X::Y", msg="2", identifier="h1")    # suppressed
    assert notice.NOTICE(note="X::Y", msg="3", identifier="h2")        # other identifier
    assert notice.NOTICE(note="X::Z", msg="4", identifier="h1")        # other note
    assert notice.NOTICE(note="X::Y", msg="5")                         # no identifier: never
    assert notice.NOTICE(note="X::Y", msg="6")
    clock.t += 1.5
    assert notice.NOTICE(note="X::Y", msg="7", identifier="h1")        # interval over
    assert [r.msg for r in rows(sink)] == ["1", "3", "4", "5", "6", "7"]
    assert notice.stats()["suppressed"] == 1


def test_policy_hooks_change_actions_and_suppression(local):
    _h, sink, clock = local

    @notice.policy
    def alarm_and_short(n):
        if n.note == "Scan::Port_Scan":
            n.actions.add(notice.ACTION_ALARM)
            n.suppress_for = 10.0

    @notice.policy(priority=-5)
    def drop_log(n):
        if n.note == "Quiet::Thing":
            n.actions.discard(notice.ACTION_LOG)

    notice.NOTICE(note="Scan::Port_Scan", msg="a", identifier="s")
    notice.NOTICE(note="Quiet::Thing", msg="q")
    clock.t += 11
    notice.NOTICE(note="Scan::Port_Scan", msg="b", identifier="s")      # 10 s suppression is over
    assert [r.msg for r in rows(sink)] == ["a", "b"]
    assert [r.msg for r in rows(sink, "notice_alarm")] == ["a", "b"]
    assert rows(sink)[0].actions == [notice.ACTION_ALARM, notice.ACTION_LOG]
    assert rows(sink)[0].suppress_for == 10.0


def test_break_and_the_type_options(local):
    _h, sink, _c = local

    @notice.policy(priority=20)
    def stop(n):
        if n.note == "Stop::Here":
            return False        # Zeek's break: the default policy (priority 10) does not run

    notice.ignored_types.add("Ign::Ored")
    notice.alarmed_types.add("Al::Arm")
    notice.not_suppressed_types.add("Al::Arm")
    notice.type_suppression_intervals["Short::One"] = 5.0
    notice.NOTICE(note="Stop::Here", msg="s")
    notice.NOTICE(note="Ign::Ored", msg="i")
    notice.NOTICE(note="Al::Arm", msg="a1", identifier="k")
    notice.NOTICE(note="Al::Arm", msg="a2", identifier="k")              # never suppressed
    notice.NOTICE(note="Short::One", msg="s1", identifier="k")
    assert [r.msg for r in rows(sink)] == ["a1", "a2", "s1"]
    assert [r.msg for r in rows(sink, "notice_alarm")] == ["a1", "a2"]
    assert rows(sink)[2].suppress_for == 5.0 and rows(sink)[0].suppress_for == 0.0


def test_a_failing_hook_is_counted_not_fatal(local):
    _h, sink, _c = local

    @notice.policy
    def broken(n):
        raise RuntimeError("bug in a site policy")

    assert notice.NOTICE(note="A::B", msg="still logged")
    assert len(rows(sink)) == 1 and notice.stats()["hook_errors"] == 1


def test_manager_rejects_malformed_cluster_notices(local):
    h, sink, _c = local
    h.mode = "manager"
    for bad in (None, 5, {}, {"note": 3}, {"note": "A::B", "ts": "yesterday"}, {"note": "A::B", "p": "x"}):
        notice._cluster_notice(bad)
    notice._on_begin_suppression("x", 1, 2, 3)
    assert rows(sink) == [] and notice.stats()["malformed"] == 7
    n = notice.Notice(note="A::B", msg="ok", ts=5.0, identifier="i", suppress_for=60.0, actions={notice.ACTION_LOG})
    notice._cluster_notice(n.to_wire())
    notice._cluster_notice(n.to_wire())          # a second worker's copy: suppressed centrally
    assert [r.msg for r in rows(sink)] == ["ok"]


# ---- a real cluster ------------------------------------------------------------------------------

SCRIPT = '''
import json, os, time
from cluster import api
from cluster.frameworks import host, notice

raised = set()

@notice.policy
def alarm(n):
    if n.note == "Test::Dup":
        n.actions.add(notice.ACTION_ALARM)

@api.on("connection_state_remove")
def first(c):
    h = host.current()
    if "race" not in raised:          # every worker at once: the manager keeps one
        raised.add("race")
        notice.NOTICE(note="Test::Race", msg="same on all workers", identifier="race", conn=c)

late = {}
held = [0]

@api.on("new_connection")
def started(c):
    # at worker-1's first packet; the others raise it only when the manager's word reaches them
    if host.current().name == "worker-1":
        if "dup" not in raised:
            raised.add("dup")
            notice.NOTICE(note="Test::Dup", msg="from worker-1", identifier="dup")
    elif "late" not in late and held[0] < 500:
        held[0] += 1
        time.sleep(0.01)   # hold this worker's trace back (bounded) until that word has arrived

def record():
    h = host.current()
    with open(os.path.join(os.environ["FW_TEST_OUT"], h.name + ".json"), "w") as f:
        json.dump(dict(notice.stats(), late=late.get("late")), f)

@api.on(notice.BEGIN_SUPPRESSION)
def told(ts, suppress_for, note, identifier):
    # The manager's word has just been stored here: raising it now must stay on this node.
    if note == "Test::Dup" and host.current().name != "worker-1":
        late["late"] = notice.NOTICE(note="Test::Dup", msg="late", identifier="dup")
        record()          # the word may come after this worker's trace ended (a loaded machine)

@api.on(host.DONE)
def done():
    record()
'''


def test_same_notice_on_several_workers_is_one_row(tmp_path, monkeypatch):
    from cluster.run import run_local

    trace = tmp_path / "t.pcap"
    write_trace(str(trace), 8000, seed=3, config=GenConfig(scans=1))
    scr = tmp_path / "site.py"
    scr.write_text(SCRIPT)
    monkeypatch.setenv("FW_TEST_OUT", str(tmp_path))
    out = tmp_path / "logs"
    s = run_local(trace, workers=3, logdir=out, proxies=0, loggers=1, progress=False, scripts=[str(scr)])
    assert s["ok"], s["problems"]
    lines = [ln.split("\t") for ln in (out / "notice.log").read_text().splitlines() if not ln.startswith("#")]
    notes = sorted((f[10], f[11]) for f in lines)
    assert notes == [("Test::Dup", "from worker-1"), ("Test::Race", "same on all workers")]
    race = next(f for f in lines if f[10] == "Test::Race")
    assert race[17].startswith("worker-") and race[1].startswith("C")     # peer_descr, uid from conn
    alarms = [ln for ln in (out / "notice_alarm.log").read_text().splitlines() if not ln.startswith("#")]
    assert len(alarms) == 1 and "from worker-1" in alarms[0]
    st = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("worker-1", "worker-2", "worker-3")}
    # Copies raised after the manager's begin_suppression arrived never left their workers.
    lates = [st[w]["late"] for w in ("worker-2", "worker-3")]
    assert False in lates and True not in lates, lates
    assert sum(v["forwarded"] for v in st.values()) == 3 + 1 - sum(v["suppressed"] for v in st.values()) + \
        lates.count(False)


def test_ended_suppressions_are_forgotten(local):
    _h, _sink, clock = local
    notice.NOTICE(note="X::Y", msg="a", identifier="old", suppress_for=10.0)
    notice.NOTICE(note="X::Y", msg="b", identifier="new", suppress_for=1000.0)
    clock.t += 20
    notice._last_sweep = 0.0
    notice._expire()
    assert set(notice._suppressing) == {("X::Y", "new")}

"""SumStats: reducers, thresholds and epochs in network time, ordered merging, and a real cluster
that reports exactly what a standalone run reports."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.trafficgen import GenConfig, write_trace
from cluster.frameworks import host, sumstats
from cluster.frameworks.sumstats import Core, Key, Merger, Reducer, SumStat

REPO = Path(__file__).resolve().parents[2]


def core_with(*ss: SumStat) -> Core:
    c = Core()
    for s in ss:
        c.add(s)
    return c


def test_reducers_match_the_textbook():
    got = {}
    ss = SumStat("all", 100.0, [Reducer("s", {sumstats.SUM, sumstats.MIN, sumstats.MAX, sumstats.AVERAGE,
                                              sumstats.VARIANCE, sumstats.STD_DEV, sumstats.UNIQUE,
                                              sumstats.TOPK, sumstats.SAMPLE, sumstats.LAST},
                                         topk_size=3, num_samples=4, num_last_elements=2)],
                 epoch_result=lambda ts, key, r: got.setdefault(key, (ts, r["s"])))
    c = core_with(ss)
    vals = [5, 3, 8, 3, 3, 9, 1, 8]
    for i, v in enumerate(vals):
        c.process(10.0 + i, "s", Key("10.0.0.1"), v)
    c.finish_all()
    ts, r = got[Key("10.0.0.1")]
    assert (r.num, r.sum, r.min, r.max) == (8, sum(vals), 1, 9)
    assert r.average == pytest.approx(statistics.mean(vals))
    assert r.variance == pytest.approx(statistics.variance(vals))
    assert r.std_dev == pytest.approx(statistics.stdev(vals))
    assert r.unique == 5 and r.unique_vals == {1, 3, 5, 8, 9}
    assert r.topk(1) == [(3, 3)]
    assert len(r.samples) == 4 and set(r.samples) <= set(vals) and r.sample_elements == 8
    assert r.last == [1, 8]
    assert (r.begin, r.end) == (10.0, 17.0)


def test_unique_cap_keeps_counting_up_to_the_cap():
    out = {}
    c = core_with(SumStat("u", 100.0, [Reducer("s", {sumstats.UNIQUE}, unique_max=3)],
                          epoch_result=lambda ts, k, r: out.__setitem__(k, r["s"].unique)))
    for i in range(10):
        c.process(1.0 + i, "s", Key(str="k"), f"v{i}")
    c.finish_all()
    assert out[Key(str="k")] == 4        # Zeek adds while |set| <= unique_max


def test_threshold_fires_once_per_key_and_epoch_and_epochs_are_aligned():
    crossed, results, finished = [], [], []
    c = core_with(SumStat(
        "t", 60.0, [Reducer("s", {sumstats.SUM})],
        threshold_val=lambda k, r: r["s"].sum, threshold=10,
        threshold_crossed=lambda k, r: crossed.append((k.host, r["s"].sum, r["s"].end)),
        epoch_result=lambda ts, k, r: results.append((ts, k.host, r["s"].sum)),
        epoch_finished=finished.append))
    for t in (121.0, 125.0, 130.0, 131.0):            # epoch [120, 180)
        c.process(t, "s", Key("a"), 4)
    c.process(122.0, "s", Key("b"), 2)
    c.process(185.0, "s", Key("a"), 11)                # next epoch: crosses again at once
    c.advance(240.0)                                   # the second epoch ends by network time
    assert crossed == [("a", 12.0, 130.0), ("a", 11.0, 185.0)]
    assert results == [(180.0, "a", 16.0), (180.0, "b", 2.0), (240.0, "a", 11.0)]
    assert finished == [180.0, 240.0]


def test_threshold_series_steps_through_levels():
    seen = []
    c = core_with(SumStat("ser", 1000.0, [Reducer("s", {sumstats.SUM})],
                          threshold_val=lambda k, r: r["s"].sum, threshold_series=[3, 5, 100],
                          threshold_crossed=lambda k, r: seen.append(r["s"].sum)))
    for i in range(10):
        c.process(float(i), "s", Key("h"), 1)
    assert seen == [3.0, 5.0]


def test_pred_and_normalize_key_and_bad_callbacks():
    sums = {}
    c = core_with(SumStat("p", 100.0, [Reducer("s", {sumstats.SUM}, pred=lambda k, v: v > 0,
                                                normalize_key=lambda k: Key(k.host))],
                          threshold_val=lambda k, r: 1 / 0, threshold=1,
                          epoch_result=lambda ts, k, r: sums.__setitem__(k, r["s"].sum)))
    for v, s in ((5, "x"), (-3, "y"), (2, "z")):
        c.process(1.0, "s", Key("h", s), v)
    c.finish_all()
    assert sums == {Key("h"): 7.0} and c.errors == 2


def test_unknown_calculation_and_threshold_without_value_are_errors():
    with pytest.raises(ValueError):
        Reducer("s", {"MEDIAN"})
    with pytest.raises(ValueError):
        SumStat("x", 1.0, [Reducer("s", {sumstats.SUM})], threshold=3)


def test_merger_replays_interleaved_sources_in_time_order():
    """Two sources whose batches arrive out of order give the result of one ordered stream."""
    def run(batches):
        crossed = []
        c = core_with(SumStat("m", 1000.0, [Reducer("s", {sumstats.UNIQUE})],
                              threshold_val=lambda k, r: r["s"].unique, threshold=4,
                              threshold_crossed=lambda k, r: crossed.append((r["s"].end, r["s"].unique))))
        m = Merger(c)
        m.expected = lambda: ["w1", "w2"]
        for src, wm, done, rows in batches:
            m.add(src, wm, done, rows)
            m.release()
        return crossed, c.observations

    rows1 = [[t, "s", "h", None, f"p{t}"] for t in (1.0, 3.0, 5.0, 7.0)]
    rows2 = [[t, "s", "h", None, f"p{t}"] for t in (2.0, 4.0, 6.0, 8.0)]
    ordered = run([("w1", math.inf, True, sorted(rows1 + rows2)), ("w2", math.inf, True, [])])
    skewed = run([("w1", 7.0, False, rows1), ("w1", math.inf, True, []), ("w2", 3.0, False, rows2[:1]),
                  ("w2", math.inf, True, rows2[1:])])
    assert ordered == skewed == ([(4.0, 4)], 8)


def test_merger_waits_for_the_slowest_source_then_stops_waiting_when_it_is_idle(monkeypatch):
    c = core_with(SumStat("m", 1000.0, [Reducer("s", {sumstats.SUM})]))
    m = Merger(c)
    m.expected = lambda: ["w1", "w2"]
    m.add("w1", 50.0, False, [[10.0, "s", "h", None, 1]])
    m.release()
    assert c.observations == 0 and len(m.heap) == 1          # w2 has not said where it is
    monkeypatch.setattr(sumstats, "idle_timeout", 0.0)
    time.sleep(0.01)
    m.add("w1", 60.0, False, [])                           # w1 progresses, w2 stays silent
    m.release()
    assert c.observations == 1


def test_observe_standalone_runs_in_process_and_malformed_batches_are_counted():
    sink_rows = []
    h = host.LocalHost(None, lambda: 480.0)
    h.log_write = lambda path, rec: sink_rows.append(rec)
    host.install(h)
    sumstats.reset()
    name = f"probe-{time.monotonic_ns()}"
    hits = []
    sumstats.create(SumStat(name, 100.0, [Reducer(name, {sumstats.SUM})], threshold_val=lambda k, r: r[name].sum,
                            threshold=2, threshold_crossed=lambda k, r: hits.append(h.network_time())))
    try:
        sumstats.observe(name, Key("a"), 1, ts=460.0)
        sumstats.observe(name, Key("a"), 1, ts=465.0)
        assert hits == []                                  # within the reorder window: held back
        sumstats._done()                                   # end of input: everything is released
        assert hits == [465.0]                             # callbacks see the observation's time
        h.mode = "manager"
        for bad in ((1, 2, 3, 4), ("w", "x", False, []), ("w", 1.0, False, [[1, 2, 3]])):
            sumstats._batch(*bad)
        assert sumstats.stats()["malformed"] == 3
    finally:
        host.install(None)
        sumstats._sumstats.pop(name, None)
        sumstats.reset()


# ---- a real cluster ------------------------------------------------------------------------------

SCRIPT = '''
import os
from cluster import api
from cluster.frameworks import host, sumstats as ss
from analysis.logs.schema import LogRecord, Time, Addr, Count, Double, log_stream

@log_stream("sumstats_probe")
class Row(LogRecord, kw_only=True):
    ts: Time
    host: Addr
    conns: Count
    peers: Count
    port_max: Double
    port_avg: Double

def result(ts, key, r):
    rv, pv = r["probe.conn"], r["probe.port"]
    host.current().log_write("sumstats_probe", Row(ts=ts, host=key.host, conns=rv.num, peers=rv.unique,
                                                   port_max=pv.max or 0.0, port_avg=pv.average or 0.0))

ss.create(ss.SumStat("probe", 10.0, [ss.Reducer("probe.conn", {ss.UNIQUE}),
                                     ss.Reducer("probe.port", {ss.MAX, ss.AVERAGE})], epoch_result=result))

@api.on("new_connection")
def seen(c):
    # at the connection's first packet: never later than the worker's network time
    ss.observe("probe.conn", ss.Key(c.orig_h), c.resp_h)
    ss.observe("probe.port", ss.Key(c.orig_h), c.resp_p)

@api.on(host.DONE)
def report():
    if host.current().mode == "worker":
        st = ss.stats()
        with open(os.path.join(os.environ["FW_TEST_OUT"], host.current().name + ".txt"), "w") as f:
            f.write(f"{st['batches_sent']} {st['rows_sent']}")
'''


def data_rows(p: Path) -> list[str]:
    return sorted(ln for ln in p.read_text().splitlines() if not ln.startswith("#"))


def test_cluster_epoch_results_equal_standalone_and_travel_in_batches(tmp_path, monkeypatch):
    from cluster.run import run_local

    trace = tmp_path / "t.pcap"
    write_trace(str(trace), 12_000, seed=11, config=GenConfig(scans=1))
    scr = tmp_path / "probe.py"
    scr.write_text(SCRIPT)
    monkeypatch.setenv("FW_TEST_OUT", str(tmp_path))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "cluster", "analyze", str(trace), "--logdir", str(tmp_path / "sa"),
                        "--script", str(scr)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    want = data_rows(tmp_path / "sa" / "sumstats_probe.log")
    assert len(want) > 20
    s = run_local(trace, workers=2, logdir=tmp_path / "cl", proxies=0, loggers=1, progress=False,
                  scripts=[str(scr)])
    assert s["ok"], s["problems"]
    assert data_rows(tmp_path / "cl" / "sumstats_probe.log") == want
    for w in ("worker-1", "worker-2"):
        batches, rows = map(int, (tmp_path / f"{w}.txt").read_text().split())
        assert rows > 100 and batches * 5 < rows        # many observations per message

"""Node processes: the front door, the lifecycle (barrier, graceful stop), users' scripts."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.engine import analyze_file
from analysis.logs.reader import read_tsv
from cluster.layout import Layout
from cluster.run import count_rows, run_local
from cluster.supervisor import child_env
from tests.cluster_procs import SLOW_SCRIPT, ProcCluster

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "sample.pcap"

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not SAMPLE.is_file(), reason="samples/sample.pcap not present")]


def node_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.node", *args], capture_output=True, text=True,
                          env=child_env(env or {}), timeout=30)


def test_front_door_rejects_bad_input_in_one_line(tmp_path):
    layout = Layout.local(SAMPLE, workers=1, log_dir=tmp_path / "logs")
    lf = tmp_path / "layout.toml"
    lf.write_text(layout.to_toml())
    cases = [
        (["--role", "worker", "--name", "worker-9", "--layout", str(lf)], "no node named 'worker-9'"),
        (["--role", "logger", "--name", "worker-1", "--layout", str(lf)], "is a worker"),
        (["--role", "worker", "--name", "worker-1", "--layout", str(tmp_path / "nope.toml")], "no such layout"),
        (["--role", "worker", "--layout", str(lf)], "missing --name"),
    ]
    for args, msg in cases:
        r = node_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_environment_variables_stand_in_for_options_and_bad_script_is_reported(tmp_path):
    layout = Layout.local(SAMPLE, workers=1, log_dir=tmp_path / "logs")
    lf = tmp_path / "layout.toml"
    lf.write_text(layout.to_toml())
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom in script')\n")
    r = node_cli("--script", str(bad), env={"STARLING_ROLE": "proxy", "STARLING_NAME": "proxy-1",
                                            "STARLING_LAYOUT": str(lf)})
    assert r.returncode == 2
    assert "boom in script" in r.stderr and "Traceback" not in r.stderr


def test_workers_wait_for_the_cluster_to_start(tmp_path):
    """A worker reads nothing until every node of the layout is up (cluster_started)."""
    layout = Layout.local(SAMPLE, workers=1, proxies=1, log_dir=tmp_path / "logs")
    c = ProcCluster(layout, tmp_path / "run")
    try:
        for n in ("manager", "logger-1", "worker-1"):
            c.start(n)
        c.wait_event("worker-1", "node_started")
        c.wait_event("manager", "node_started")
        import time
        time.sleep(0.8)
        assert not any(e["event"] == "intake_started" for e in c.events("worker-1"))
        c.start("proxy-1")
        c.wait_event("worker-1", "cluster_started", timeout=10)
        assert c.wait("worker-1", 30) == 0
        codes = c.stop_all()
        assert all(v == 0 for v in codes.values()), codes
    finally:
        c.kill_all()
    assert count_rows(layout.log_dir / "conn.log") > 0


ORDER_SCRIPT = """
import json, os
from cluster import api

seen = {"started": False, "early": 0, "hellos": 0}

def record():
    c = api.current()
    with open(os.path.join(os.environ["ORDER_OUT"], c.name + ".json"), "w") as f:
        json.dump(seen, f)

@api.on(api.CLUSTER_STARTED)
def started():
    c = api.current()
    if c.roles[c.name] == "manager":
        seen["started"] = True
        record()
    elif c.roles[c.name] == "worker":
        api.publish(api.manager_topic, "order_hello", c.name)    # the very first thing a worker does

@api.on("order_hello")
def hello(name):
    seen["hellos"] += 1
    if not seen["started"]:
        seen["early"] += 1
    record()
"""


def test_manager_runs_its_cluster_started_handlers_before_any_worker_starts(tmp_path, monkeypatch):
    """What the manager's scripts set up at ``cluster_started`` (a SumStat, say) exists before the
    first message of a worker that has started: nothing a fast worker sends is dropped."""
    import json

    script = tmp_path / "order.py"
    script.write_text(ORDER_SCRIPT)
    monkeypatch.setenv("ORDER_OUT", str(tmp_path))
    s = run_local(SAMPLE, workers=2, logdir=tmp_path / "logs", proxies=0, loggers=1, progress=False,
                  scripts=[str(script)])
    assert s["ok"], s["problems"]
    got = json.loads((tmp_path / "manager.json").read_text())
    assert got["started"] and got["hellos"] == 2 and got["early"] == 0, got


def test_sigterm_mid_trace_writes_open_connections(tmp_path):
    """Graceful stop of a worker mid-trace: the engine is finished, open connections are logged
    and every row reaches the logger before the worker exits."""
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    layout = Layout.local(SAMPLE, workers=1, proxies=0, log_dir=tmp_path / "logs")
    c = ProcCluster(layout, tmp_path / "run", scripts=[str(script)], env={"STARLING_TEST_DELAY": "0.02"})
    try:
        c.start_all()
        c.wait_event("worker-1", "intake_started")
        import time
        time.sleep(0.6)
        c.signal("worker-1", signal.SIGTERM)
        assert c.wait("worker-1", 30) == 0
        stopped = c.wait_event("worker-1", "intake_stopped")
        codes = c.stop_all()
        assert all(v == 0 for v in codes.values()), codes
    finally:
        c.kill_all()
    assert stopped["active_connections"] > 0          # there really were open connections
    st = c.final_stats("worker-1")
    eng = st["engine"]
    sa = tmp_path / "sa"
    full = analyze_file(SAMPLE, sa)
    assert eng["packets"] < full["packets"]            # it really stopped mid-trace
    rows = count_rows(layout.log_dir / "conn.log")
    assert rows == eng["connections"] == st["logs"]["records"]["conn"]
    assert st["logs"]["unacked_batches"] == 0
    # The open connections were flushed with Zeek's states for unfinished connections.
    states = collections.Counter(r["conn_state"] for r in read_tsv(layout.log_dir / "conn.log").rows())
    assert set(states) - {"SF", "REJ", "RSTO", "RSTR", "SH", "SHR"}, states


def test_user_script_events_and_own_log_stream(tmp_path):
    """A script loaded into the workers sees engine events and writes its own log stream; the
    logger rebuilds the stream's record type from the batch header alone."""
    script = tmp_path / "count.py"
    script.write_text('''
from cluster import api as cluster
from analysis.logs.schema import Count, LogRecord, String, Time, log_stream, set_of

@log_stream("conn_summary")
class Summary(LogRecord, kw_only=True):
    ts: Time
    node: String
    orig_h: String
    bytes: Count | None = None
    tags: set_of("string") | None = None

@cluster.on("connection_state_remove")
def done(c):
    cluster.log_write("conn_summary", Summary(ts=c.ts, node=cluster.current().name, orig_h=c.orig_h,
                                              bytes=c.orig_bytes, tags=["a,b", c.proto]))
''')
    out = tmp_path / "logs"
    s = run_local(SAMPLE, workers=2, logdir=out, proxies=0, progress=False, scripts=[str(script)])
    assert s["ok"], s["problems"]
    log = read_tsv(out / "conn_summary.log")
    assert log.fields == ["ts", "node", "orig_h", "bytes", "tags"]
    assert log.types == ["time", "string", "string", "count", "set[string]"]
    rows = list(log.rows())
    assert len(rows) == s["rows"]["conn"] > 0
    assert {r["node"] for r in rows} == {"worker-1", "worker-2"}
    assert b"a\\x2cb," in (out / "conn_summary.log").read_bytes()   # set separator escaped


def test_cluster_api_pools_and_node_state(tmp_path):
    """publish_hrw from workers to the proxy pool: events reach the proxy that owns the key."""
    script = tmp_path / "pools.py"
    script.write_text('''
from cluster import api as cluster
from analysis.logs.schema import LogRecord, String, Count, log_stream

@log_stream("owners")
class Owner(LogRecord, kw_only=True):
    node: String
    key: String
    n: Count

seen = {}

@cluster.on("cluster_started")
def started():
    me = cluster.current()
    if me.role == "worker":
        assert me.nodes()["manager"]["state"] == "up"
        for i in range(20):
            assert cluster.publish_hrw(cluster.proxy_pool(), f"k{i}", "count_key", f"k{i}")

@cluster.on("count_key")
def count(key):
    seen[key] = seen.get(key, 0) + 1
    cluster.log_write("owners", Owner(node=cluster.current().name, key=key, n=seen[key]))
''')
    out = tmp_path / "logs"
    s = run_local(SAMPLE, workers=2, logdir=out, proxies=2, progress=False, scripts=[str(script)])
    assert s["ok"], s["problems"]
    from cluster.pools import hrw_pick
    rows = list(read_tsv(out / "owners.log").rows())
    assert len(rows) == 40                                   # 20 keys from each of 2 workers
    for r in rows:
        assert r["node"] == hrw_pick(r["key"], ["proxy-1", "proxy-2"])
    assert {r["node"] for r in rows} == {"proxy-1", "proxy-2"}

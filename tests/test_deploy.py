"""`starling deploy` under kill -9: the real supervisor daemon restarts each node, the bus sees it
leave and come back, a logger killed mid-run loses and duplicates no row, and `starling stop`
leaves no process behind.

The two workers read different traces: worker-1 the sample trace (never killed: its rows are
compared with `starling analyze` of the same trace), worker-2 a generated trace from another time
range (killed -9 and restarted, so it reads its trace again: its rows are told apart by ``ts``).
A script slows both down while a flag file exists, so that every kill hits a run in progress.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from analysis.engine import analyze_file
from analysis.trafficgen import write_trace
from broker import Endpoint, PeerEvent
from cluster.layout import Layout, NodeSpec, Role, _free_ports
from cluster.state import StateDir, pid_alive
from cluster.supervisor import child_env
from tests.test_cluster_run import log_rows, sample_trace

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parent.parent
OTHER_START = 1_800_000_000.0     # worker-2's trace starts here, far after the sample's
SLOW = '''
import os, time
from cluster import api as cluster

FLAG = {flag!r}

@cluster.on("new_connection")
def slow_down(c):
    if os.path.exists(FLAG):   # while it exists the sample (~270 connections) takes ~27 s:
        time.sleep(0.1)        # room for three kills and restarts on a loaded machine
'''


def starling(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def make_layout(tmp_path: Path) -> Path:
    """manager, logger, proxy, worker-1 on the sample, worker-2 on a generated trace; free ports."""
    other = tmp_path / "other.pcap"
    write_trace(str(other), 3000, seed=7, start=OTHER_START)
    script = tmp_path / "slow.py"
    script.write_text(SLOW.format(flag=str(tmp_path / "slow")))
    (tmp_path / "slow").touch()
    base = Layout.local(sample_trace(), workers=1, loggers=1, proxies=1, log_dir=tmp_path / "logs",
                        state_dir=tmp_path / "state", scripts=[script])
    w2 = NodeSpec("worker-2", Role.WORKER, base.manager.host, _free_ports(base.manager.host, 1)[0],
                  trace=other)
    layout = replace(base, nodes=base.nodes + (w2,))
    path = tmp_path / "cluster.toml"
    path.write_text(layout.to_toml())
    return path


def status(env: dict[str, str]) -> dict[str, dict]:
    r = starling("status", "--json", env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return {d["name"]: d for d in json.loads(r.stdout)["nodes"]}


async def wait_for(pred, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(pred)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def rows_by_time(path: Path, before: bool) -> tuple[tuple, collections.Counter]:
    """``log_rows`` of one log: only the sample's rows (``before``) or only worker-2's."""
    header, rows = log_rows(path)
    assert header[1][0] == "ts", f"{path.name}: ts is not the first column"
    return header, collections.Counter({r: n for r, n in rows.items()
                                        if (float(r[0]) < OTHER_START) == before})


def sample_rows_written(path: Path) -> bool:
    """Whether ``path`` holds a complete row of the sample. The logger is writing the file while
    this looks: only complete lines count, and a half-written header is not a parse error."""
    try:
        complete = path.read_bytes().split(b"\n")[:-1]
    except FileNotFoundError:
        return False
    return any(line and not line.startswith(b"#")
               and float(line.split(b"\t", 1)[0]) < OTHER_START for line in complete)


@pytest.fixture
def deployed(tmp_path):
    """The layout and the CLI's environment; afterwards no process of this cluster survives."""
    layout = make_layout(tmp_path)
    env = child_env({"STARLING_LAYOUT": str(layout), "STARLING_STOP_GRACE": "10"})
    state = StateDir(tmp_path / "state")
    seen: dict[int, int | None] = {}          # every node pid observed -> its start time
    yield layout, env, state, seen
    sup = state.supervisor_pid()
    if sup:
        os.kill(sup, signal.SIGCONT)
        starling("stop", env=env)
        if pid_alive(sup):
            seen[sup] = None
    for d in (state.read_state() or {}).get("nodes", []):
        if d.get("pid"):
            seen.setdefault(d["pid"], d.get("pid_start"))
    for pid, start in seen.items():
        if pid_alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def test_deploy_restarts_killed_nodes_and_stops_clean(tmp_path, deployed):
    layout_file, env, state, seen = deployed
    layout = Layout.load(layout_file)
    r = await asyncio.to_thread(starling, "deploy", env=env)
    assert r.returncode == 0, r.stderr
    sup_pid = state.supervisor_pid()
    assert sup_pid

    events: list[PeerEvent] = []
    async with Endpoint("observer", layout.endpoints("manager").hub) as ep:
        ep.on_peer(events.append)
        await ep.wait_for_peers({n.name for n in layout.nodes}, timeout=30)
        first = await asyncio.to_thread(status, env)
        assert all(d["state"] == "running" and d["restarts"] == 0 for d in first.values()), first
        seen.update({d["pid"]: d.get("pid_start") for d in first.values()})

        def ups(name: str) -> list[str]:
            """Instances of ``name`` seen coming up, oldest first (the slow script can make a
            busy worker miss heartbeats for a moment: peers() is not asked at a random time)."""
            return list(dict.fromkeys(e.instance for e in events if e.name == name and e.kind == "up"))

        # The logger first, while the sample's rows are being written.
        await wait_for(lambda: sample_rows_written(layout.log_dir / "conn.log"), "rows")
        for victim in ("logger-1", "worker-2", "proxy-1"):
            before = await asyncio.to_thread(status, env)
            assert before["worker-1"]["state"] == "running", "the sample run ended too early"
            old = before[victim]
            instance = ups(victim)[-1]
            os.kill(old["pid"], signal.SIGKILL)
            new = await wait_for(lambda: (d := status(env)[victim])["state"] == "running"
                                 and d["pid"] != old["pid"] and d, f"{victim} restarted")
            seen[new["pid"]] = new.get("pid_start")
            assert new["restarts"] >= 1 and pid_alive(new["pid"])
            await wait_for(lambda: ups(victim)[-1] != instance, f"{victim} back on the bus")
            mine = [(e.kind, e.instance) for e in events if e.name == victim]
            assert ("down", instance) in mine, mine
            assert mine.index(("down", instance)) < mine.index(("up", ups(victim)[-1])), mine
            if victim == "logger-1":
                restarted_logger = new["pid"]

        (tmp_path / "slow").unlink()        # the kills are done: full speed to the end
        # worker-1 reads the sample to its end: it finishes, it is not restarted.
        done = await wait_for(lambda: (d := status(env)["worker-1"])["state"] == "stopped" and d,
                              "worker-1 finished", timeout=40)
        assert done["restarts"] == 0 and done["last_exit"] == "exit 0"

    every = await asyncio.to_thread(status, env)
    seen.update({d["pid"]: d.get("pid_start") for d in every.values() if d["pid"]})
    r = await asyncio.to_thread(starling, "stop", env=env)
    assert r.returncode == 0 and "stopped the cluster" in r.stdout, r.stderr
    assert state.supervisor_pid() is None and not pid_alive(sup_pid)
    left = [pid for pid, start in seen.items() if pid_alive(pid, start)]
    assert not left, f"processes left behind: {left}"
    final = {d["name"]: d for d in state.read_state()["nodes"]}
    assert {d["state"] for d in final.values()} == {"stopped"}

    # The logger's kill lost and duplicated nothing of the sample's rows.
    sa = tmp_path / "standalone"
    analyze_file(sample_trace(), sa)
    out = layout.log_dir
    assert sorted(p.name for p in sa.glob("*.log")) == \
        sorted(p.name for p in out.glob("*.log") if rows_by_time(p, True)[1])
    for f in sa.glob("*.log"):
        ha, ra = log_rows(f)
        hb, rb = rows_by_time(out / f.name, True)
        assert ha == hb, f"{f.name}: header differs"
        missing, extra = ra - rb, rb - ra
        assert not missing and not extra, (f"{f.name}: {sum(missing.values())} rows missing, "
                                           f"{sum(extra.values())} extra")
        data = (out / f.name).read_bytes()
        assert data.count(b"#fields") == 1 and data.count(b"#close") == 1, f.name
    assert rows_by_time(out / "conn.log", False)[1], "worker-2's trace wrote no rows"
    # The restarted logger really took over mid-run: it got batches, some of them resent.
    stats = [json.loads(line)["stats"] for line in
             (state.node_dir("logger-1") / "node.log").read_text().splitlines()
             if '"node_final_stats"' in line]
    writer = next(s["writer"] for s in stats if s["pid"] == restarted_logger)
    assert writer["received"] > 0 and writer["rows"].get("conn", 0) > 0, writer

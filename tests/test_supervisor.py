"""The supervisor with real child processes: small stand-in nodes written by the tests.

Until ``cluster.node`` exists the node command is swapped (the supervisor's ``command`` hook, or
``STARLING_NODE_COMMAND`` for the daemon) for a script that runs forever, crashes, finishes, ignores
SIGTERM or stops heart-beating -- real processes, real signals, real files.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from cluster.layout import STOP_ORDER, Layout, Role
from cluster.state import StateDir, SupervisorUnavailable, pid_alive, request
from cluster.supervisor import BackoffPolicy, Supervisor, node_command, template_command
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent

FAKE_NODE = r'''
import os, signal, sys, time
mode, role, name = sys.argv[1], sys.argv[2], sys.argv[3]
modes = dict(m.split("=") for m in os.environ.get("FAKE_MODES", "").split(",") if m)
mode = modes.get(name, mode)
record = os.environ.get("FAKE_RECORD")
print("fake node", role, name, mode, os.environ.get("STARLING_NAME"), flush=True)

def on_term(*_):
    if record:
        with open(record, "a") as f:
            f.write(f"{role} {name} {time.monotonic()}\n")
    time.sleep(0.05)          # a node takes a moment to drain
    sys.exit(0)

signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else on_term)
hb = os.environ.get("STARLING_HEARTBEAT")
start = time.monotonic()
beats = 0
while True:
    if hb and (mode != "silent" or beats == 0):
        open(hb, "w").close()
        beats += 1
    up = time.monotonic() - start
    if mode == "crash" and up > float(os.environ.get("FAKE_CRASH_AFTER", "0.1")):
        sys.exit(3)
    if mode == "finish" and up > 0.1:
        sys.exit(0)
    time.sleep(0.02)
'''


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    p = tmp_path / "fake_node.py"
    p.write_text(FAKE_NODE)
    return p


def make_layout(tmp_path: Path, workers: int = 2, state: Path | None = None) -> Layout:
    return Layout.local("lo", workers=workers, loggers=2, proxies=1, log_dir=tmp_path / "logs",
                        state_dir=state or tmp_path / "state", base_port=41000)


def fake_command(script: Path, mode: str = "forever"):
    return lambda spec, layout_path: [sys.executable, str(script), mode, spec.role.value, spec.name]


async def all_beating(sup: Supervisor):
    state = sup.state
    await until(lambda: all(state.heartbeat(n.name).exists() for n in sup.layout.nodes),
                     what="every node's first heartbeat")


def row(sup: Supervisor, name: str):
    return next(r for r in sup.status() if r.name == name)


@asynccontextmanager
async def supervising(sup: Supervisor, names=None):
    task = asyncio.create_task(sup.run(names))
    await asyncio.wait_for(sup.wait_ready(), 10)
    try:
        yield sup
    finally:
        sup.shutdown()
        await asyncio.wait_for(task, 30)


def test_node_command_is_the_node_front_door(tmp_path):
    lay = make_layout(tmp_path)
    argv = node_command(lay.node("worker-1"), Path("/s/layout.toml"))
    assert argv[1:] == ["-m", "cluster.node", "--role", "worker", "--name", "worker-1",
                        "--layout", "/s/layout.toml"]
    t = template_command("nice -n 5 {python} -m cluster.node --role {role} --name {name}")
    assert t(lay.node("logger-1"), Path("x"))[4:] == ["-m", "cluster.node", "--role", "logger",
                                                      "--name", "logger-1"]
    with pytest.raises(ValueError, match="bad node command template"):
        template_command("{python} {nope}")


def test_backoff_policy():
    p = BackoffPolicy(initial=0.5, factor=2, cap=5)
    assert [p.delay(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 5, 5]


async def test_start_status_stop(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_RECORD", str(tmp_path / "record"))
    lay = make_layout(tmp_path)
    sup = Supervisor(lay, tmp_path / "layout.toml", command=fake_command(fake), grace=5)
    state = StateDir(lay.state_dir)
    async with supervising(sup):
        rows = sup.status()
        assert [r.name for r in rows] == [n.name for n in lay.nodes]
        assert all(r.state == "running" and pid_alive(r.pid) for r in rows)
        assert all(r.uptime is not None and r.uptime >= 0 for r in rows)
        await until(lambda: "fake node worker worker-1 forever worker-1"
                         in state.stdout("worker-1").read_text(), what="node stdout")
        await until(lambda: state.heartbeat("manager").exists(), what="heartbeat")

        def saved_pid(name: str):
            nodes = (state.read_state() or {}).get("nodes") or []
            return {d["name"]: d for d in nodes}.get(name, {}).get("pid")
        # the state file is rewritten on every change (coalesced): it catches up with the pids
        await until(lambda: saved_pid("worker-2") == row(sup, "worker-2").pid, what="worker-2's pid in the state file")
        assert state.supervisor_pid() == os.getpid()
        pids = [r.pid for r in rows]
    assert all(not pid_alive(p) for p in pids)
    final = state.read_state()
    assert final["supervisor"]["running"] is False
    assert {d["state"] for d in final["nodes"]} == {"stopped"}
    assert not state.socket.exists() and not state.pid_file.exists()


async def test_restart_after_kill9_with_backoff(tmp_path, fake):
    lay = make_layout(tmp_path, workers=1)
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5,
                     backoff=BackoffPolicy(initial=0.3, factor=2, cap=10))
    async with supervising(sup):
        first = row(sup, "worker-1").pid
        t0 = time.monotonic()
        os.kill(first, signal.SIGKILL)
        r = await until(lambda: (x := row(sup, "worker-1")).state == "backoff" and x,
                             what="backoff")
        assert r.last_exit == "killed by SIGKILL" and 0 <= r.retry_in <= 0.3
        r = await until(lambda: (x := row(sup, "worker-1")).state == "running" and x.pid
                             and x.pid != first and x, what="restart")
        assert time.monotonic() - t0 >= 0.3
        assert r.restarts == 1 and pid_alive(r.pid)
        # A second crash in a row waits twice as long.
        t1 = time.monotonic()
        os.kill(r.pid, signal.SIGKILL)
        r2 = await until(lambda: (x := row(sup, "worker-1")).state == "running"
                              and x.pid not in (first, r.pid) and x, what="second restart")
        assert time.monotonic() - t1 >= 0.6
        assert r2.restarts == 2
        assert row(sup, "manager").restarts == 0   # the others were left alone


async def test_crash_loop_gives_up_and_backoff_resets_after_uptime(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODES", "worker-1=crash")
    monkeypatch.setenv("FAKE_CRASH_AFTER", "0.05")
    lay = make_layout(tmp_path)
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5,
                     backoff=BackoffPolicy(initial=0.05, factor=2, cap=1, max_restarts=2))
    async with supervising(sup):
        r = await until(lambda: (x := row(sup, "worker-1")).state == "crashed" and x,
                             what="give up")
        assert r.restarts == 2 and r.last_exit == "exit 3" and "gave up" in r.detail
        assert row(sup, "worker-2").state == "running"
    # A node that stayed up longer than reset_after starts its back-off from the beginning.
    monkeypatch.setenv("FAKE_CRASH_AFTER", "0.3")
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5,
                     backoff=BackoffPolicy(initial=0.05, factor=10, cap=5, reset_after=0.2))
    async with supervising(sup):
        await until(lambda: row(sup, "worker-1").restarts >= 2, what="two restarts")
        r = await until(lambda: (x := row(sup, "worker-1")).state == "backoff" and x,
                             what="third crash")
        assert r.detail == "restart in 0.05s"


async def test_clean_exit_is_finished_not_crashed(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODES", "worker-1=finish,worker-2=finish")
    lay = make_layout(tmp_path)
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5)
    async with supervising(sup):
        for w in ("worker-1", "worker-2"):
            r = await until(lambda: (x := row(sup, w)).state == "stopped" and x,
                                 what="workers finishing")
            assert r.detail == "finished" and r.last_exit == "exit 0" and r.restarts == 0
        assert row(sup, "manager").state == "running"


async def test_stop_order_workers_proxies_loggers_manager(tmp_path, fake, monkeypatch):
    record = tmp_path / "record"
    monkeypatch.setenv("FAKE_RECORD", str(record))
    lay = make_layout(tmp_path, workers=3)
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5)
    async with supervising(sup):
        await all_beating(sup)       # signal handlers installed: they can record their stop
    lines = [ln.split() for ln in record.read_text().splitlines()]
    assert sorted(name for _, name, _ in lines) == sorted(n.name for n in lay.nodes)
    order = [STOP_ORDER.index(Role(role)) for role, _, _ in sorted(lines, key=lambda x: float(x[2]))]
    assert order == sorted(order), lines
    # Each group is gone before the next one is told to stop.
    by_role = {}
    for role, _, t in lines:
        by_role.setdefault(role, []).append(float(t))
    for earlier, later in zip(STOP_ORDER, STOP_ORDER[1:]):
        assert max(by_role[earlier.value]) + 0.05 <= min(by_role[later.value])


async def test_node_ignoring_sigterm_is_killed_after_grace(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODES", "worker-1=stubborn")
    lay = make_layout(tmp_path)
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=0.5)
    async with supervising(sup):
        await all_beating(sup)
        pid = row(sup, "worker-1").pid
        t0 = time.monotonic()
        await sup.stop_nodes(["worker-1"])
        took = time.monotonic() - t0
        r = row(sup, "worker-1")
        assert 0.5 <= took < 5 and r.state == "stopped" and r.last_exit == "killed by SIGKILL"
        assert not pid_alive(pid)
        assert row(sup, "worker-2").state == "running"
        await sup.start_nodes(["worker-1"])
        assert row(sup, "worker-1").state == "running"


async def test_status_of_a_sigstopped_node_is_prompt(tmp_path, fake):
    lay = make_layout(tmp_path)
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5)
    state = StateDir(lay.state_dir)
    async with supervising(sup):
        await all_beating(sup)
        pid = row(sup, "worker-1").pid
        os.kill(pid, signal.SIGSTOP)
        await until(lambda: row(sup, "worker-1").state == "hung", what="hung")
        t0 = time.monotonic()
        r = row(sup, "worker-1")
        assert time.monotonic() - t0 < 1.0        # from the table: no waiting on the node
        assert r.detail == "suspended (SIGSTOP)" and r.pid == pid
        # Through the control socket too (the client is blocking: run it off the loop).
        t0 = time.monotonic()
        reply = await asyncio.to_thread(request, state, {"cmd": "status"}, 3.0)
        assert time.monotonic() - t0 < 2.0       # answered, not stuck behind the hung node
        assert {d["name"]: d["state"] for d in reply["nodes"]}["worker-1"] == "hung"
        t0 = time.monotonic()
        await sup.stop_nodes(["worker-1"])        # SIGCONT lets it see SIGTERM: no grace wait
        assert time.monotonic() - t0 < 3 and row(sup, "worker-1").last_exit == "exit 0"


async def test_stale_heartbeat_means_hung(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODES", "proxy-1=silent")
    lay = make_layout(tmp_path)
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5,
                     heartbeat_timeout=0.3)
    async with supervising(sup):
        r = await until(lambda: (x := row(sup, "proxy-1")).state == "hung" and x,
                             what="stale heartbeat")
        assert r.detail.startswith("no heartbeat for") and r.heartbeat_age > 0.3
        assert row(sup, "manager").state == "running"


async def test_control_socket_commands_with_a_long_state_path(tmp_path, fake):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    lay = make_layout(tmp_path, state=deep)
    assert len(str(deep / "supervisor.sock")) > 108      # past AF_UNIX's path limit
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5)
    state = StateDir(deep)

    def ask(msg):
        return asyncio.to_thread(request, state, msg, 10.0)

    async with supervising(sup, ["manager", "logger-1"]):
        states = {r.name: r.state for r in sup.status()}
        assert states["manager"] == states["logger-1"] == "running"
        assert states["worker-1"] == "stopped"
        reply = await ask({"cmd": "start", "nodes": ["worker-1"]})
        assert reply["ok"] and {d["name"]: d["state"] for d in reply["nodes"]}["worker-1"] == "running"
        pid = row(sup, "worker-1").pid
        reply = await ask({"cmd": "restart", "nodes": ["worker-1"]})
        assert reply["ok"] and row(sup, "worker-1").pid not in (None, pid)
        reply = await ask({"cmd": "stop", "nodes": ["worker-1"]})
        assert {d["name"]: d["state"] for d in reply["nodes"]}["worker-1"] == "stopped"
        reply = await ask({"cmd": "stop", "nodes": ["nobody"]})
        assert not reply["ok"] and "unknown node nobody" in reply["error"]
        reply = await ask({"cmd": "explode"})
        assert not reply["ok"] and "unknown command" in reply["error"]
        reply = await ask({"nodes": 3})
        assert not reply["ok"] and "bad request" in reply["error"]


# ---- the daemon from another shell --------------------------------------------------------------

def cli(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


@pytest.fixture
def daemon_env(tmp_path, fake):
    layout = tmp_path / "cluster.toml"
    layout.write_text('loggers = 1\nproxies = 1\n[cluster]\nstate_dir = "state"\n'
                      'base_port = 42000\n[[capture]]\ninterface = "lo"\nworkers = 2\n')
    env = {**os.environ, "STARLING_LAYOUT": str(layout), "STARLING_STOP_GRACE": "3",
           "STARLING_NODE_COMMAND": f"{{python}} {fake} forever {{role}} {{name}}"}
    yield env
    # Whatever happened, leave no process behind.
    state = StateDir(tmp_path / "state")
    pid = state.supervisor_pid()
    if pid:
        os.kill(pid, signal.SIGCONT)
        cli("stop", env=env)
    for d in (state.read_state() or {}).get("nodes", []):
        if d.get("pid") and pid_alive(d["pid"], d.get("pid_start")):
            os.kill(d["pid"], signal.SIGKILL)


def test_daemon_status_when_the_supervisor_is_dead(tmp_path, daemon_env):
    state = StateDir(tmp_path / "state")
    r = cli("start", env=daemon_env)
    assert r.returncode == 0, r.stderr
    assert "started manager, logger-1, proxy-1, worker-1, worker-2" in r.stdout
    r = cli("status", "--json", env=daemon_env)
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["supervisor"]["running"] is True
    pids = {d["name"]: d["pid"] for d in status["nodes"]}
    assert all(pid_alive(p) for p in pids.values())

    os.kill(state.supervisor_pid(), signal.SIGKILL)
    os.kill(pids["worker-2"], signal.SIGKILL)     # ... and nobody restarts this one now
    time.sleep(0.2)
    t0 = time.monotonic()
    r = cli("status", "--json", env=daemon_env)
    assert time.monotonic() - t0 < 10
    assert r.returncode == 1 and "Traceback" not in r.stderr
    status = json.loads(r.stdout)
    assert status["supervisor"]["running"] is False
    assert "the supervisor is not running" in status["supervisor"]["note"]
    states = {d["name"]: (d["state"], d["detail"]) for d in status["nodes"]}
    assert states.pop("worker-2") == ("dead", "supervisor gone")
    assert set(states.values()) == {("running", "unsupervised")}
    r = cli("status", env=daemon_env)
    assert r.returncode == 1 and "the supervisor is not running" in r.stdout
    assert r.stdout.count("unsupervised") == 4 and r.stdout.count("dead") == 1
    r = cli("start", env=daemon_env)          # nothing starts over orphans
    assert r.returncode == 1 and "still running without a supervisor" in r.stderr
    r = cli("stop", env=daemon_env)
    assert r.returncode == 0 and "stopped unsupervised nodes" in r.stdout
    assert "worker-2" not in r.stdout
    assert not any(pid_alive(p) for p in pids.values())
    r = cli("status", "--json", env=daemon_env)
    assert {d["state"] for d in json.loads(r.stdout)["nodes"]} == {"stopped", "dead"}
    r = cli("stop", env=daemon_env)
    assert r.returncode == 1 and "nothing to stop" in r.stderr


def test_daemon_hung_supervisor_and_stop(tmp_path, daemon_env):
    state = StateDir(tmp_path / "state")
    assert cli("start", env=daemon_env).returncode == 0
    sup_pid = state.supervisor_pid()
    os.kill(sup_pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = cli("status", "--timeout", "0.5", env=daemon_env)
        assert time.monotonic() - t0 < 10
        assert r.returncode == 1 and "did not answer within 0.5s" in r.stdout
        assert r.stdout.count("running") >= 5     # the nodes themselves are fine
    finally:
        os.kill(sup_pid, signal.SIGCONT)
    r = cli("restart", "worker-2", env=daemon_env)
    assert r.returncode == 0, r.stderr
    nodes = json.loads(cli("status", "--json", env=daemon_env).stdout)["nodes"]
    pids = [d["pid"] for d in nodes]
    assert all(d["state"] == "running" for d in nodes)
    r = cli("stop", env=daemon_env)
    assert r.returncode == 0 and "stopped the cluster" in r.stdout
    assert state.supervisor_pid() is None and not pid_alive(sup_pid)
    assert not any(pid_alive(p) for p in pids)


async def test_run_to_completion_stops_the_rest_when_workers_finish(tmp_path, fake, monkeypatch):
    record = tmp_path / "record"
    monkeypatch.setenv("FAKE_RECORD", str(record))
    monkeypatch.setenv("FAKE_MODES", "worker-1=finish,worker-2=finish")
    lay = make_layout(tmp_path)
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5)
    failed = await asyncio.wait_for(sup.run_to_completion(), 30)
    assert failed == []
    assert {r.state for r in sup.status()} == {"stopped"}
    # Workers left by themselves; the others were stopped in order, manager last.
    stopped = [ln.split()[1] for ln in record.read_text().splitlines()]
    assert "worker-1" not in stopped and stopped[-1] == "manager"
    assert set(stopped) == {"proxy-1", "logger-1", "logger-2", "manager"}


async def test_run_to_completion_ends_at_the_first_crash(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODES", "worker-2=crash")
    lay = make_layout(tmp_path)
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5)
    failed = await asyncio.wait_for(sup.run_to_completion(), 30)
    assert [(r.name, r.last_exit, r.restarts) for r in failed] == [("worker-2", "exit 3", 0)]
    assert {r.state for r in sup.status()} <= {"stopped", "crashed"}


async def test_one_supervisor_per_state_dir(tmp_path, fake):
    lay = make_layout(tmp_path)
    sup = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5)
    async with supervising(sup, ["manager"]):
        other = Supervisor(lay, tmp_path / "l.toml", command=fake_command(fake), grace=5)
        with pytest.raises(SupervisorUnavailable, match=f"another supervisor \\(pid {os.getpid()}\\)"):
            await other.run()
        with pytest.raises(SupervisorUnavailable, match="another supervisor"):
            await other.run_to_completion()
        assert row(sup, "manager").state == "running"


def test_daemon_deploy_replaces_a_running_cluster(tmp_path, daemon_env):
    state = StateDir(tmp_path / "state")
    r = cli("deploy", env=daemon_env)
    assert r.returncode == 0, r.stderr
    first = state.supervisor_pid()
    old = json.loads(cli("status", "--json", env=daemon_env).stdout)["nodes"]
    r = cli("deploy", env=daemon_env)
    assert r.returncode == 0 and "stopped the running cluster" in r.stdout, r.stderr
    assert state.supervisor_pid() not in (None, first)
    assert not any(pid_alive(d["pid"], d["pid_start"]) for d in old)
    assert Layout.load(state.layout) == Layout.load(daemon_env["STARLING_LAYOUT"])
    assert cli("stop", env=daemon_env).returncode == 0

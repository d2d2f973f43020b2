"""The supervisor: runs every node of a layout as a process and keeps it running.

One asyncio program (uvloop at the entry point) whose tasks live in one TaskGroup: a runner per
node (spawn, wait, back off, respawn), a writer that mirrors the bookkeeping into ``state.json``,
and the control server on ``supervisor.sock`` (JSON lines; see :mod:`cluster.state`).

* Nodes start as ``python -m cluster.node --role R --name N --layout FILE`` (:func:`node_command`;
  the command is a parameter so tests and wrappers can run something else), each in its own
  session, with stdout/stderr appended to files under ``<state_dir>/nodes/<name>/``.
* A node that dies unexpectedly is restarted after an exponential back-off (capped); the back-off
  resets once a node has stayed up for ``reset_after`` seconds.  A node that exits 0 on its own
  (a worker that finished its trace) is done, not crashed.
* Stopping follows :meth:`Layout.stop_order`: workers, proxies, loggers, then the manager, each
  group with SIGTERM and, after the grace period, SIGKILL -- so logs drain into live loggers.
* Status comes from this process's own bookkeeping plus cheap reads of ``/proc`` and the nodes'
  heartbeat files: asking for status never waits on a node, however dead or hung it is.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import structlog

from cluster.layout import Layout, LayoutError, NodeSpec, Role
from cluster.state import (NodeStatus, StateDir, SupervisorUnavailable, heartbeat_age,
                           proc_start, proc_state, request, unix_path)

__all__ = ["BackoffPolicy", "NodeCommand", "Supervisor", "child_env", "node_command",
           "spawn_daemon", "template_command"]

log = structlog.get_logger("starling.supervisor")

#: Builds the argv of one node process from its spec and the layout file the node should read.
NodeCommand = Callable[[NodeSpec, Path], Sequence[str]]

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


def node_command(spec: NodeSpec, layout_path: Path) -> list[str]:
    """The real node process: the node runtime's front door."""
    return [sys.executable, "-m", "cluster.node", "--role", spec.role.value, "--name", spec.name,
            "--layout", str(layout_path)]


def template_command(template: str) -> NodeCommand:
    """A node command from a shell-like template with ``{role}``, ``{name}``, ``{layout}``,
    ``{python}`` (e.g. to run nodes under ``nice`` or, in tests, a stand-in script)."""
    parts = shlex.split(template)
    if not parts:
        raise ValueError("empty node command template")

    def build(spec: NodeSpec, layout_path: Path) -> list[str]:
        values = {"role": spec.role.value, "name": spec.name, "layout": str(layout_path),
                  "python": sys.executable}
        try:
            return [p.format(**values) for p in parts]
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"bad node command template {template!r}: {e}") from None
    build(NodeSpec("x", Role.WORKER, "127.0.0.1", 1), Path("x"))   # fail now, not at spawn
    return build


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment, with this project importable even when it is not pip-installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delay before the n-th consecutive restart: ``initial * factor**(n-1)``, at most ``cap``."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 60.0          # up this long -> the next crash counts as the first again
    max_restarts: int | None = None    # consecutive failures before giving up (None: never)

    def delay(self, failures: int) -> float:
        return min(self.cap, self.initial * self.factor ** max(0, failures - 1))


class _Runner:
    """Bookkeeping and lifecycle of one node; its :meth:`loop` is one task of the TaskGroup."""

    def __init__(self, sup: Supervisor, spec: NodeSpec) -> None:
        self.sup = sup
        self.spec = spec
        self.state = "stopped"
        self.want = False
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.pid_start: int | None = None
        self.started_wall: float | None = None
        self.started_mono: float | None = None
        self.restarts = 0
        self.failures = 0
        self.last_exit: str | None = None
        self.retry_at: float | None = None
        self.detail = ""
        self.wake = asyncio.Event()
        self.exited = asyncio.Event()
        self.exited.set()

    def _set(self, state: str, detail: str = "") -> None:
        self.state, self.detail = state, detail
        self.sup._changed()

    async def _sleep(self, seconds: float | None) -> None:
        """Sleep until woken (a start/stop request) or ``seconds`` pass."""
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except TimeoutError:
            pass
        self.wake.clear()

    async def loop(self) -> None:
        while True:
            if not self.want:
                await self._sleep(None)
                continue
            if not await self._spawn():
                await self._crashed(0.0)
                continue
            rc = await self.proc.wait()   # type: ignore[union-attr]
            up = time.monotonic() - (self.started_mono or time.monotonic())
            self.last_exit = _describe_exit(rc)
            self.pid = self.pid_start = None
            self.proc = None
            log.info("node_exited", node=self.spec.name, exit=self.last_exit, uptime=round(up, 3),
                     wanted=self.want)
            if not self.want:
                self._set("stopped")
            elif rc == 0 and not self.sup.restart_clean_exit:
                self.want = False
                self._set("stopped", "finished")
            else:
                await self._crashed(up)
            self.exited.set()

    async def _crashed(self, uptime: float) -> None:
        policy = self.sup.backoff
        if uptime >= policy.reset_after:
            self.failures = 0
        self.failures += 1
        if policy.max_restarts is not None and self.failures > policy.max_restarts:
            self.want = False
            self._set("crashed", f"gave up after {policy.max_restarts} restarts")
            log.error("node_given_up", node=self.spec.name, last_exit=self.last_exit)
            return
        delay = policy.delay(self.failures)
        self.retry_at = time.monotonic() + delay
        self._set("backoff", f"restart in {delay:g}s")
        log.warning("node_crashed", node=self.spec.name, exit=self.last_exit, backoff=delay,
                    failures=self.failures)
        self.exited.set()
        while self.want and time.monotonic() < self.retry_at:
            await self._sleep(self.retry_at - time.monotonic())
        self.retry_at = None
        if self.want:
            self.restarts += 1
            self._set("restarting")
        else:
            self._set("stopped")

    async def _spawn(self) -> bool:
        sd, name = self.sup.state, self.spec.name
        try:
            argv = list(self.sup.command(self.spec, self.sup.layout_path))
            sd.node_dir(name).mkdir(parents=True, exist_ok=True)
            sd.heartbeat(name).unlink(missing_ok=True)   # a new process earns its own heartbeat
            with open(sd.stdout(name), "ab") as out, open(sd.stderr(name), "ab") as err:
                self.exited.clear()
                self.proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    cwd=sd.node_dir(name), start_new_session=True,
                    env=child_env({"STARLING_NAME": name, "STARLING_ROLE": self.spec.role.value,
                                   "STARLING_LAYOUT": str(self.sup.layout_path),
                                   "STARLING_HEARTBEAT": str(sd.heartbeat(name))}))
        except (OSError, ValueError) as e:
            self.exited.set()
            self.last_exit = f"spawn failed: {getattr(e, 'strerror', None) or e}"
            log.error("node_spawn_failed", node=name, error=str(e))
            return False
        self.pid = self.proc.pid
        self.pid_start = proc_start(self.pid)
        self.started_wall, self.started_mono = time.time(), time.monotonic()
        self._set("running")
        log.info("node_started", node=name, pid=self.pid, argv=argv)
        return True

    def start(self) -> None:
        if not self.want:
            self.want = True
            self.failures = 0
            self.wake.set()

    async def stop(self, grace: float) -> None:
        """SIGTERM (and SIGCONT, so a suspended node sees it), then SIGKILL after ``grace``."""
        self.want = False
        self.wake.set()
        while self.proc is None and not self.exited.is_set():
            await asyncio.sleep(0.01)          # a spawn is in flight: stop what it starts
        proc = self.proc
        if proc is None or proc.returncode is not None:
            if self.state in ("backoff", "restarting"):
                self._set("stopped")
            return
        self._set("stopping")
        _kill(proc.pid, signal.SIGTERM)
        _kill(proc.pid, signal.SIGCONT)
        try:
            await asyncio.wait_for(self.exited.wait(), grace)
            return
        except TimeoutError:
            pass
        log.warning("node_kill", node=self.spec.name, pid=proc.pid, grace=grace)
        _killpg(proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(self.exited.wait(), 10.0)
        except TimeoutError:   # only a process stuck in the kernel (state D) survives SIGKILL
            log.error("node_unkillable", node=self.spec.name, pid=proc.pid)

    def status(self, now_mono: float, now_wall: float) -> NodeStatus:
        state, detail = self.state, self.detail
        hb = None
        if self.pid is not None and state == "running":
            hb = heartbeat_age(self.sup.state, self.spec.name, now_wall)
            if proc_state(self.pid) in ("T", "t"):
                state, detail = "hung", "suspended (SIGSTOP)"
            elif hb is not None and hb > self.sup.heartbeat_timeout:
                state, detail = "hung", f"no heartbeat for {hb:.0f}s"
        return NodeStatus(
            name=self.spec.name, role=self.spec.role.value, host=self.spec.host, state=state,
            pid=self.pid, pid_start=self.pid_start, started=self.started_wall if self.pid else None,
            uptime=now_mono - self.started_mono if self.pid and self.started_mono else None,
            restarts=self.restarts, last_exit=self.last_exit,
            retry_in=max(0.0, self.retry_at - now_mono) if self.retry_at else None,
            heartbeat_age=hb, detail=detail)


class Supervisor:
    """Runs a layout's nodes; :meth:`run` is the whole program, the rest is its API."""

    def __init__(self, layout: Layout, layout_path: str | os.PathLike[str], *,
                 command: NodeCommand = node_command, backoff: BackoffPolicy = BackoffPolicy(),
                 grace: float = 10.0, heartbeat_timeout: float = 30.0,
                 restart_clean_exit: bool = False, state_dir: str | os.PathLike[str] | None = None,
                 serve: bool = True) -> None:
        self.layout = layout
        self.layout_path = Path(layout_path).resolve()
        self.command = command
        self.backoff = backoff
        self.grace = grace
        self.heartbeat_timeout = heartbeat_timeout
        self.restart_clean_exit = restart_clean_exit
        self.state = StateDir(state_dir if state_dir is not None else layout.state_dir)
        self.serve = serve
        self.started = time.time()
        self._runners: dict[str, _Runner] = {}
        self._dirty: asyncio.Event | None = None
        self._shutdown: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._ready: asyncio.Event | None = None

    # ---- the program ----------------------------------------------------------------------

    async def run(self, names: Iterable[str] | None = None) -> None:
        """Start ``names`` (all nodes by default) and supervise until :meth:`shutdown`."""
        self._dirty, self._shutdown = asyncio.Event(), asyncio.Event()
        self._lock, self._ready = asyncio.Lock(), asyncio.Event()
        self._runners = {n.name: _Runner(self, n) for n in self.layout.nodes}
        names = self._check_names(names)
        self.state.root.mkdir(parents=True, exist_ok=True)
        lock = self._lock_state_dir()
        self.state.write_pid()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.shutdown)
        server = None
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(r.loop(), name=f"node:{n}")
                         for n, r in self._runners.items()]
                tasks.append(tg.create_task(self._write_state_loop(), name="state-writer"))
                if self.serve:
                    server = await self._serve()
                log.info("supervisor_started", pid=os.getpid(), layout=str(self.layout_path),
                         nodes=len(self._runners))
                await self.start_nodes(names)
                self._ready.set()
                await self._shutdown.wait()
                if server is not None:
                    server.close()
                await self.stop_nodes(None)
                for t in tasks:
                    t.cancel()
        except ExceptionGroup as eg:
            raise _sole(eg) from None
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            for r in self._runners.values():          # only after a bug: leave nothing behind
                if r.proc is not None and r.proc.returncode is None:
                    _killpg(r.proc.pid, signal.SIGKILL)
            self._write_state(final=True)
            for p in (self.state.socket, self.state.pid_file):
                p.unlink(missing_ok=True)
            os.close(lock)
            log.info("supervisor_stopped")

    async def run_to_completion(self) -> list[NodeStatus]:
        """``starling run``: start everything, wait until every worker has finished its trace
        (exit 0), then stop the rest in order so the loggers drain.  No restarts here -- a
        restarted worker would read its trace again -- so any crash ends the run at once.
        Returns the nodes that crashed (empty on success)."""
        self.backoff = BackoffPolicy(max_restarts=0)
        failed: list[NodeStatus] = []

        async def watch() -> None:
            await self.wait_ready()
            while not self._shutdown.is_set():   # type: ignore[union-attr]
                rows = self.status()
                failed[:] = [r for r in rows if r.state == "crashed"]
                if failed or all(r.state == "stopped" for r in rows if r.role == "worker"):
                    break
                await asyncio.sleep(0.05)
            self.shutdown()

        try:
            async with asyncio.TaskGroup() as tg:   # if run() fails, the watcher goes with it
                tg.create_task(self.run())
                tg.create_task(watch())
        except ExceptionGroup as eg:
            raise _sole(eg) from None
        return failed

    def _lock_state_dir(self) -> int:
        """One supervisor per state dir, even when two start at the same moment."""
        fd = os.open(self.state.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = self.state.supervisor_pid()
            raise SupervisorUnavailable(f"another supervisor (pid {other or '?'}) already uses "
                                        f"{self.state.root}") from None
        return fd

    def shutdown(self) -> None:
        """Stop every node in order, then return from :meth:`run`."""
        if self._shutdown is not None:
            self._shutdown.set()

    async def wait_ready(self) -> None:
        while self._ready is None:
            await asyncio.sleep(0.01)
        await self._ready.wait()

    # ---- control --------------------------------------------------------------------------

    def _check_names(self, names: Iterable[str] | None) -> list[str]:
        if names is None:
            return list(self._runners)
        names = list(names)
        unknown = [n for n in names if n not in self._runners]
        if unknown:
            raise LayoutError(f"unknown node{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(unknown)} (nodes: {self.layout.names_text()})")
        return names or list(self._runners)

    async def start_nodes(self, names: Iterable[str] | None = None) -> None:
        """Start nodes in the reverse of the stop order (manager and loggers first)."""
        names = set(self._check_names(names))
        for group in reversed(self.layout.stop_order(names)):
            runners = [self._runners[spec.name] for spec in group]
            for r in runners:
                r.start()
            # Let the group spawn (or fail) before the next, bounded: a spawn never hangs us.
            deadline = time.monotonic() + 5.0
            while any(r.want and r.state == "stopped" for r in runners) \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.005)

    async def stop_nodes(self, names: Iterable[str] | None = None) -> None:
        """Stop nodes group by group (workers, proxies, loggers, manager)."""
        names = set(self._check_names(names))
        for group in self.layout.stop_order(names):
            await asyncio.gather(*(self._runners[s.name].stop(self.grace) for s in group))

    async def restart_nodes(self, names: Iterable[str] | None = None) -> None:
        await self.stop_nodes(names)
        await self.start_nodes(names)

    def status(self) -> list[NodeStatus]:
        now_mono, now_wall = time.monotonic(), time.time()
        return [r.status(now_mono, now_wall) for r in self._runners.values()]

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "pid_start": proc_start(os.getpid()), "started": self.started,
                "layout": str(self.layout_path), "state_dir": str(self.state.root),
                "ready": self._ready is not None and self._ready.is_set()}

    # ---- state file -----------------------------------------------------------------------

    def _changed(self) -> None:
        if self._dirty is not None:
            self._dirty.set()

    def _write_state(self, final: bool = False) -> None:
        try:
            self.state.write_state({
                "supervisor": {**self.info(), "running": not final, "updated": time.time()},
                "nodes": [s.to_dict() for s in self.status()]})
        except OSError as e:
            log.error("state_write_failed", error=str(e))

    async def _write_state_loop(self) -> None:
        assert self._dirty is not None
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            self._write_state()
            await asyncio.sleep(0.05)   # coalesce bursts of changes

    # ---- control server -------------------------------------------------------------------

    async def _serve(self) -> asyncio.AbstractServer:
        self.state.socket.unlink(missing_ok=True)
        with unix_path(self.state.socket) as addr:
            server = await asyncio.start_unix_server(self._client, path=addr, limit=1 << 16)
        os.chmod(self.state.socket, 0o600)
        return server

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            reply = await self._handle(line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), 5.0)
        except (TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _handle(self, line: bytes) -> dict[str, Any]:
        try:
            msg = json.loads(line)
            cmd = msg["cmd"]
            nodes = msg.get("nodes") or None
            if nodes is not None and not (isinstance(nodes, list)
                                          and all(isinstance(n, str) for n in nodes)):
                raise ValueError("'nodes' must be a list of names")
        except (ValueError, KeyError, TypeError) as e:
            return {"ok": False, "error": f"bad request: {e}"}
        try:
            if cmd == "status":
                pass
            elif cmd in ("start", "stop", "restart"):
                self._check_names(nodes)
                assert self._lock is not None
                async with self._lock:
                    await {"start": self.start_nodes, "stop": self.stop_nodes,
                           "restart": self.restart_nodes}[cmd](nodes)
            elif cmd == "shutdown":
                self.shutdown()
            else:
                return {"ok": False, "error": f"unknown command {cmd!r}"}
        except LayoutError as e:
            return {"ok": False, "error": str(e)}
        return {"ok": True, "supervisor": self.info(), "nodes": [s.to_dict() for s in self.status()]}


# ---- the daemon, from the CLI's side -------------------------------------------------------------

def spawn_daemon(layout_path: Path, state: StateDir, nodes: Sequence[str] = (), *,
                 node_template: str | None = None, timeout: float = 15.0) -> dict[str, Any]:
    """Start ``python -m cluster supervise`` detached and wait until it answers on its socket."""
    state.root.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "cluster", "supervise", "--layout", str(layout_path), *nodes]
    if node_template:
        argv[5:5] = ["--node-command", node_template]
    with open(state.out, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, env=child_env(), cwd=state.root)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            raise SupervisorUnavailable(f"the supervisor exited at start-up (exit {rc}): "
                                        + _last_line(state.out))
        if state.socket.exists() and state.supervisor_pid() == proc.pid:
            try:
                reply = request(state, {"cmd": "status"}, timeout=2.0)
                if reply.get("supervisor", {}).get("ready"):   # its first nodes are started
                    return reply
            except SupervisorUnavailable:
                pass
        time.sleep(0.05)
    raise SupervisorUnavailable(f"the supervisor (pid {proc.pid}) did not come up within "
                                f"{timeout:g}s; see {state.out}")


def _sole(eg: BaseExceptionGroup) -> BaseException:
    """The one exception inside a TaskGroup's group (so callers can catch it by type), or the group."""
    leaves = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for x in e.exceptions:
                walk(x)
        else:
            leaves.append(e)
    walk(eg)
    return leaves[0] if len(leaves) == 1 else eg


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return f"see {path}"
    return lines[-1].strip() if lines else f"see {path}"


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit {rc}"


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _killpg(pid: int, sig: int) -> None:
    """Signal the node's whole session (it was started as its own group leader)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        _kill(pid, sig)


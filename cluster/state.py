"""The supervisor's state dir, as seen from both sides: the supervisor writing it, the CLI reading it.

Layout of ``<state_dir>``::

    supervisor.pid      "<pid> <start-ticks>" of the running supervisor
    supervisor.lock     flock()ed by the running supervisor: one per state dir
    supervisor.sock     control channel: one JSON object per line each way
    supervisor.log      structlog JSON diagnostics
    supervisor.out      the daemon's own stdout/stderr (startup failures land here)
    state.json          the supervisor's bookkeeping, rewritten atomically on every change
    layout.toml         the expanded layout the nodes were given
    nodes/<name>/       each node's cwd: stdout.log, stderr.log, heartbeat

Everything here is synchronous and bounded by timeouts: ``starling status`` must answer promptly even
when the supervisor is dead, hung or SIGSTOPped, so it falls back to ``state.json`` plus what
``/proc`` says about the recorded pids.  Pids are paired with their start time (``/proc/<pid>/stat``
field 22) so that a recycled pid is never mistaken for one of our nodes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "NodeStatus", "StateDir", "SupervisorUnavailable", "offline_status", "pid_alive",
    "proc_start", "proc_state", "request", "stop_orphans",
]

#: Order in which roles are stopped (kept here as strings so the CLI can stop orphans without a
#: layout object); :data:`cluster.layout.STOP_ORDER` is the same order.
_ROLE_ORDER = {"worker": 0, "proxy": 1, "logger": 2, "manager": 3}


class SupervisorUnavailable(RuntimeError):
    """The supervisor is not running or does not answer; the message says which."""


@dataclass(slots=True)
class NodeStatus:
    """One row of ``starling status``."""

    name: str
    role: str
    host: str
    state: str                      # running stopped crashed restarting backoff stopping hung dead
    pid: int | None = None
    pid_start: int | None = None    # /proc start ticks, guards against pid reuse
    started: float | None = None    # wall clock of the current process's start
    uptime: float | None = None
    restarts: int = 0
    last_exit: str | None = None
    retry_in: float | None = None
    heartbeat_age: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeStatus:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class StateDir:
    """Paths in the state dir (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.pid_file = self.root / "supervisor.pid"
        self.lock = self.root / "supervisor.lock"
        self.socket = self.root / "supervisor.sock"
        self.log = self.root / "supervisor.log"
        self.out = self.root / "supervisor.out"
        self.state_file = self.root / "state.json"
        self.layout = self.root / "layout.toml"

    def node_dir(self, name: str) -> Path:
        return self.root / "nodes" / name

    def stdout(self, name: str) -> Path:
        return self.node_dir(name) / "stdout.log"

    def stderr(self, name: str) -> Path:
        return self.node_dir(name) / "stderr.log"

    def heartbeat(self, name: str) -> Path:
        return self.node_dir(name) / "heartbeat"

    # -- the state file
    def write_state(self, data: dict[str, Any]) -> None:
        tmp = self.state_file.with_name(f".state.json.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.state_file)

    def read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- the supervisor's pid
    def write_pid(self) -> None:
        pid = os.getpid()
        self.pid_file.write_text(f"{pid} {proc_start(pid) or 0}\n")

    def supervisor_pid(self) -> int | None:
        """The live supervisor's pid, or None (no file, dead process, or a recycled pid)."""
        try:
            parts = self.pid_file.read_text().split()
            pid, start = int(parts[0]), int(parts[1])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid, start or None) else None


# ---- processes by pid (never blocking on them) ------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ppid ..." -- comm may contain spaces or parentheses, so split after the last ')'.
    return raw[raw.rfind(")") + 2:].split()


def proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    f = _stat_fields(pid)
    return int(f[19]) if f and len(f) > 19 else None


def proc_state(pid: int) -> str | None:
    """The one-letter state from /proc (R, S, D, T stopped, t traced, Z zombie ...), or None."""
    f = _stat_fields(pid)
    return f[0] if f else None


def pid_alive(pid: int | None, start: int | None = None) -> bool:
    """True if ``pid`` runs, is not a zombie, and (when given) started at ``start``."""
    if not pid or pid <= 0:
        return False
    f = _stat_fields(pid)
    if f is None or f[0] in ("Z", "X"):
        return False
    return start is None or int(f[19]) == start


# ---- the control channel (client side) ---------------------------------------------------------

@contextmanager
def unix_path(path: Path) -> Iterator[str]:
    """A usable AF_UNIX address for ``path``, even past the ~107-byte limit (via /proc/self/fd)."""
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def request(state: StateDir, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to the supervisor and return its reply; never waits past ``timeout``."""
    if state.supervisor_pid() is None:
        raise SupervisorUnavailable(f"the supervisor is not running (state dir {state.root})")
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        with unix_path(state.socket) as addr, socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(addr)
            s.sendall(json.dumps(message).encode() + b"\n")
            while b"\n" not in buf:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except TimeoutError:
        raise SupervisorUnavailable(f"the supervisor (pid {state.supervisor_pid()}) did not answer "
                                    f"within {timeout:g}s") from None
    except OSError as e:
        raise SupervisorUnavailable(f"cannot reach the supervisor at {state.socket}: "
                                    f"{e.strerror or e}") from None
    try:
        reply = json.loads(buf.decode())
    except ValueError:
        raise SupervisorUnavailable("the supervisor closed the connection without a reply") from None
    if not isinstance(reply, dict):
        raise SupervisorUnavailable("the supervisor sent a malformed reply")
    return reply


# ---- when the supervisor is gone ---------------------------------------------------------------

def offline_status(state: StateDir) -> list[NodeStatus]:
    """Node rows from the last state file, corrected by what /proc says about the pids now."""
    data = state.read_state() or {}
    rows = []
    now = time.time()
    for d in data.get("nodes", []):
        if not isinstance(d, dict) or "name" not in d:
            continue
        row = NodeStatus.from_dict({**d, "uptime": None, "retry_in": None, "heartbeat_age": None})
        if row.pid and pid_alive(row.pid, row.pid_start):
            row.state = "hung" if proc_state(row.pid) in ("T", "t") else "running"
            row.detail = "unsupervised" + (" (suspended)" if row.state == "hung" else "")
            row.uptime = now - row.started if row.started else None
            row.heartbeat_age = heartbeat_age(state, row.name, now)
        else:
            if row.state not in ("stopped", "crashed"):   # it was meant to run, and nobody will
                row.state, row.detail = "dead", "supervisor gone"
            row.pid = None
        rows.append(row)
    return rows


def heartbeat_age(state: StateDir, name: str, now: float | None = None) -> float | None:
    try:
        mtime = state.heartbeat(name).stat().st_mtime
    except OSError:
        return None
    return max(0.0, (now if now is not None else time.time()) - mtime)


def stop_orphans(state: StateDir, grace: float, names: set[str] | None = None) -> list[str]:
    """Stop nodes a dead supervisor left behind, in stop order; returns the names it stopped."""
    rows = [r for r in offline_status(state) if r.pid and (names is None or r.name in names)]
    rows.sort(key=lambda r: _ROLE_ORDER.get(r.role, 9))
    stopped = []
    for order in sorted({_ROLE_ORDER.get(r.role, 9) for r in rows}):
        group = [r for r in rows if _ROLE_ORDER.get(r.role, 9) == order]
        for r in group:
            _signal(r.pid, signal.SIGTERM)
            _signal(r.pid, signal.SIGCONT)   # a suspended process must run to see SIGTERM
        deadline = time.monotonic() + grace
        while any(pid_alive(r.pid, r.pid_start) for r in group) and time.monotonic() < deadline:
            time.sleep(0.05)
        for r in group:
            if pid_alive(r.pid, r.pid_start):
                _signal(r.pid, signal.SIGKILL)
            stopped.append(r.name)
    data = state.read_state()
    if data and stopped:
        for d in data.get("nodes", []):
            if isinstance(d, dict) and d.get("name") in stopped:
                d.update(state="stopped", pid=None, pid_start=None, detail="stopped unsupervised")
        state.write_state(data)
    return stopped


def _signal(pid: int | None, sig: int) -> None:
    if pid:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

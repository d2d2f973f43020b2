"""Test helper: a cluster of real node processes started one by one (so a test can kill,
signal and restart single nodes), with each node's structlog JSON diagnostics at hand."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster.layout import Layout
from cluster.state import StateDir
from cluster.supervisor import child_env


class ProcCluster:
    def __init__(self, layout: Layout, workdir: Path, scripts: list[str] = (), env: dict | None = None) -> None:
        self.layout = layout
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.layout_file = self.workdir / "layout.toml"
        self.layout_file.write_text(layout.to_toml())
        self.state = StateDir(layout.state_dir)
        self.scripts = list(scripts)
        self.env = child_env(env or {})
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> subprocess.Popen:
        spec = self.layout.node(name)
        cmd = [sys.executable, "-m", "cluster.node", "--role", spec.role.value, "--name", name,
               "--layout", str(self.layout_file)]
        for s in self.scripts:
            cmd += ["--script", s]
        err = open(self.workdir / f"{name}.stderr", "ab")
        p = subprocess.Popen(cmd, env=self.env, stdout=err, stderr=err, stdin=subprocess.DEVNULL)
        err.close()
        self.procs[name] = p
        return p

    def start_all(self) -> None:
        for group in reversed(self.layout.stop_order()):
            for n in group:
                self.start(n.name)

    def events(self, name: str) -> list[dict]:
        p = self.state.node_dir(name) / "node.log"
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def wait_event(self, name: str, event: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events(name):
                if e.get("event") == event:
                    return e
            time.sleep(0.02)
        raise TimeoutError(f"{name}: no {event!r} within {timeout}s; stderr: {self.stderr(name)[-2000:]}")

    def stderr(self, name: str) -> str:
        p = self.workdir / f"{name}.stderr"
        return p.read_text(errors="replace") if p.exists() else ""

    def wait(self, name: str, timeout: float = 60.0) -> int:
        return self.procs[name].wait(timeout)

    def wait_workers(self, timeout: float = 60.0) -> dict[str, int]:
        return {n.name: self.wait(n.name, timeout) for n in self.layout.workers}

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)

    def stop_all(self, timeout: float = 30.0) -> dict[str, int]:
        codes = {}
        for group in self.layout.stop_order():
            for n in group:
                p = self.procs.get(n.name)
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for n in group:
                p = self.procs.get(n.name)
                if p is not None:
                    codes[n.name] = p.wait(timeout)
        return codes

    def kill_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)

    def final_stats(self, name: str) -> dict:
        for e in reversed(self.events(name)):
            if e.get("event") == "node_final_stats":
                return e["stats"]
        raise AssertionError(f"{name} logged no final statistics")


SLOW_SCRIPT = '''
import os, time
from cluster import api as cluster

DELAY = float(os.environ.get("STARLING_TEST_DELAY", "0.01"))

@cluster.on("new_connection")
def slow_down(c):
    time.sleep(DELAY)   # makes a small trace last long enough to interrupt it
'''

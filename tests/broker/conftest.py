"""Shared fixtures for the bus tests: a hub per test, helper-process launching, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from broker.hub import Hub  # noqa: E402


@pytest.fixture
async def hub():
    async with Hub("tcp://127.0.0.1:*") as h:
        yield h


class Procs:
    """Start helper scripts as real processes; always SIGCONT + kill them at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, script: str, *args: str) -> tuple[subprocess.Popen, dict]:
        p = subprocess.Popen(
            [sys.executable, os.path.join(HERE, script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        self.procs.append(p)
        line = p.stdout.readline()
        if not line:
            p.kill()
            raise RuntimeError(f"{script} died before it was ready")
        return p, json.loads(line)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                except ProcessLookupError:
                    pass
            p.wait(5)
            if p.stdout:
                p.stdout.close()


@pytest.fixture
def procs():
    ps = Procs()
    yield ps
    ps.cleanup()

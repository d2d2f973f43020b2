"""Zeek policy scripts named with --load (or a layout's loads) turn on our frameworks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analysis.logs.reader import read_tsv
from analysis.trafficgen import write_trace
from cluster.frameworks import scripts_for_loads

LOADS = ["--load", "policy/misc/scan", "--load", "protocols/conn/known-hosts"]


def test_load_names_map_to_framework_scripts():
    got = scripts_for_loads(["base/protocols/dns", "policy/misc/scan", "misc/scan",
                             "policy/protocols/conn/known-hosts.zeek", "protocols/conn/known-services"])
    assert [Path(p).name for p in got] == ["scan_script.py", "known_script.py"]
    assert scripts_for_loads(["base/protocols/http"]) == []


@pytest.fixture(scope="module")
def scan_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scan") / "t.pcap"
    write_trace(str(path), packets=20000, seed=3)
    return path


def _notices(logdir: Path) -> set[tuple]:
    rows = read_tsv(logdir / "notice.log").rows()
    return {(r["note"], r["msg"], r["src"]) for r in rows}


def _starling(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True, text=True,
                          timeout=120)


def test_standalone_and_cluster_scan_notices_from_load(scan_trace, tmp_path):
    r = _starling("analyze", str(scan_trace), "--logdir", str(tmp_path / "sa"), *LOADS)
    assert r.returncode == 0, r.stderr
    assert "not mapped" not in r.stderr
    standalone = _notices(tmp_path / "sa")
    assert {n for n, _, _ in standalone} == {"Scan::Address_Scan", "Scan::Port_Scan"}
    assert (tmp_path / "sa" / "known_hosts.log").exists()

    r = _starling("run", str(scan_trace), "-w", "2", "--logdir", str(tmp_path / "cl"), *LOADS)
    assert r.returncode == 0, r.stderr
    assert _notices(tmp_path / "cl") == standalone
    hosts = lambda d: sorted(row["host"] for row in read_tsv(d / "known_hosts.log").rows())  # noqa: E731
    assert hosts(tmp_path / "cl") == hosts(tmp_path / "sa")

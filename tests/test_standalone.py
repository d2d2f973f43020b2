"""``python -m analysis``: real processes, real files, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.trafficgen import write_trace

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "analysis", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    p = tmp_path_factory.mktemp("trace") / "t.pcap"
    write_trace(str(p), 1200, seed=11)
    return p


def test_tsv_run_writes_logs_and_one_summary_line(trace, tmp_path):
    r = run(trace, "--logdir", tmp_path / "out", "--seed", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "packets" in lines[0] and "connections" in lines[0]
    conn = (tmp_path / "out" / "conn.log").read_text()
    assert "#path\tconn" in conn
    # the seed makes UIDs reproducible
    r2 = run(trace, "--logdir", tmp_path / "out2", "--seed", "3")
    uids = lambda t: [l.split("\t")[1] for l in t.splitlines() if not l.startswith("#")]
    assert uids(conn) == uids((tmp_path / "out2" / "conn.log").read_text())


def test_json_format_and_local_nets(trace, tmp_path):
    r = run(trace, "--logdir", tmp_path, "--format", "json", "--local-nets", "203.0.113.0/24")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in (tmp_path / "conn.log").read_text().splitlines()]
    assert rows and all("id.orig_h" in x for x in rows)
    assert any(x.get("local_resp") is True and x["id.resp_h"].startswith("203.0.113.") for x in rows) or \
        not any(x["id.resp_h"].startswith("203.0.113.") for x in rows)


def test_bare_mode_writes_only_loaded_logs(trace, tmp_path):
    r = run(trace, "--logdir", tmp_path, "--bare", "--load", "base/protocols/conn", "-C")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("*.log")) == ["conn.log"]


@pytest.mark.parametrize("args, msg", [
    (["/nonexistent.pcap"], "no such file"),
    (["{bad}"], "unknown file format"),
    (["{trace}", "--shard", "5/2"], "--shard"),
    (["{trace}", "--local-nets", "10.0.0.0/99"], "--local-nets"),
    (["{trace}", "--format", "xml"], "invalid choice"),
])
def test_bad_input_is_a_clear_error_with_status_2(trace, tmp_path, args, msg):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a pcap at all")
    args = [a.format(bad=bad, trace=trace) for a in args]
    r = run(*args, "--logdir", tmp_path / "o")
    assert r.returncode == 2
    assert msg in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_load_and_redef_are_notes_not_errors(trace, tmp_path):
    r = run(trace, "--logdir", tmp_path, "--load", "policy/nonsense", "--redef", "redef Foo::bar = 3;",
            "--redef", "this is not zeek")
    assert r.returncode == 0, r.stderr
    assert "note:" in r.stderr and "Traceback" not in r.stderr


def test_truncated_trace_still_writes_logs(trace, tmp_path):
    data = trace.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) // 2 + 7])
    r = run(cut, "--logdir", tmp_path / "o")
    assert "Traceback" not in r.stderr
    assert r.returncode in (0, 2)
    if r.returncode == 0:
        assert (tmp_path / "o" / "conn.log").exists()

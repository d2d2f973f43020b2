"""The `starling` CLI: options, validation and error paths (CliRunner and real subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cluster.cli import main
from cluster.layout import Layout

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def layout_file(tmp_path: Path) -> Path:
    p = tmp_path / "cluster.toml"
    p.write_text('loggers = 1\nproxies = 1\n[cluster]\nstate_dir = "state"\n'
                 '[[capture]]\ninterface = "lo"\nworkers = 2\n')
    return p


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    p = tmp_path / "t.pcap"
    p.write_bytes(b"")
    return p


def one_error_line(result) -> str:
    """The single `Error: ...` line of a failed command (and no traceback)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_check_prints_the_expanded_layout(runner, layout_file):
    r = runner.invoke(main, ["check", "--layout", str(layout_file)])
    assert r.exit_code == 0, r.output
    assert Layout.loads(r.output, source=layout_file) == Layout.load(layout_file)
    assert "[nodes.worker-2]" in r.output


@pytest.mark.parametrize("name", ["cluster.toml", "short.toml"])
def test_check_shipped_examples(runner, name):
    r = runner.invoke(main, ["check", "--layout", str(REPO / "examples" / name)])
    assert r.exit_code == 0, r.output
    assert "[nodes.manager]" in r.output


def test_check_warns_about_missing_sources(runner, tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('manager = 1\n[[capture]]\ntrace = "gone.pcap"\n')
    r = runner.invoke(main, ["check", "--layout", str(p)])
    assert r.exit_code == 0
    assert f"warning: worker-1: trace {tmp_path / 'gone.pcap'} does not exist" in r.output


def test_layout_from_environment(runner, layout_file):
    r = runner.invoke(main, ["check"], env={"STARLING_LAYOUT": str(layout_file)})
    assert r.exit_code == 0 and "[nodes.manager]" in r.output


@pytest.mark.parametrize("args,code,fragment", [
    (["check"], 2, "Missing option '--layout'"),
    (["check", "--layout", "/nonexistent/x.toml"], 1, "/nonexistent/x.toml: no such layout file"),
    (["run", "/nonexistent.pcap"], 2, "'/nonexistent.pcap' does not exist"),
    (["analyze", "/nonexistent.pcap", "--logdir", "x"], 2, "does not exist"),
    (["frobnicate"], 2, "No such command 'frobnicate'"),
])
def test_usage_errors(runner, args, code, fragment):
    r = runner.invoke(main, args, env={"STARLING_LAYOUT": ""})
    assert r.exit_code == code, r.output
    assert fragment in one_error_line(r)


def test_bad_layout_is_one_line(runner, tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[nodes.manager]\nrole = "manager"\nprot = 5\n')
    for cmd in ("check", "start", "status", "stop", "deploy", "restart"):
        r = runner.invoke(main, [cmd, "--layout", str(p)])
        assert r.exit_code == 1, (cmd, r.output)
        assert "line 3: nodes.manager.prot: unknown key (did you mean 'port'?)" in one_error_line(r)


def test_run_validates_options_before_anything(runner, trace, tmp_path):
    r = runner.invoke(main, ["run", str(trace), "--workers", "0"])
    assert r.exit_code == 2 and "--workers" in one_error_line(r)
    r = runner.invoke(main, ["run", str(trace), "--format", "xml"])
    assert r.exit_code == 2 and "'xml' is not one of 'tsv', 'json'" in one_error_line(r)
    r = runner.invoke(main, ["run", str(trace), "--local-nets", "10.0.0.0/8,nonsense"])
    assert r.exit_code == 2 and "'nonsense' is not a subnet" in one_error_line(r)
    r = runner.invoke(main, ["run", str(tmp_path)])
    assert r.exit_code == 2 and "is a directory" in one_error_line(r)


def test_run_writes_the_logs_with_the_options_given(tmp_path):
    """A real local cluster: 3 workers, JSON logs, local nets honoured, a summary and exit 0."""
    import json
    import subprocess
    import sys

    sample = Path(__file__).resolve().parents[1] / "samples" / "sample.pcap"
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "cluster", "run", str(sample), "-w", "3", "--logdir", str(out),
                        "--format", "json", "--local-nets", "10.0.0.0/8, 192.168.0.0/16"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "drops" in r.stdout and "conn.log rows" in r.stdout
    rows = [json.loads(line) for line in (out / "conn.log").read_text().splitlines()]
    assert rows and all("uid" in row for row in rows)
    assert any(row.get("local_orig") is True for row in rows)


def test_run_forwards_analysis_options_to_the_workers(tmp_path):
    """`starling run --bare --load base/protocols/dns -C` means what it means for `analyze`:
    only the loaded scripts' logs (no conn.log), rows as the standalone run writes them."""
    import os
    import subprocess
    import sys

    conf = Path(os.environ.get("STARLING_CONFORMANCE",
                               Path(__file__).resolve().parents[2] / "shared" / "conformance"))
    trace = conf / "zeek" / "traces" / "dns-spf.pcap"
    if not trace.is_file():
        pytest.skip(f"conformance trace {trace} not present")
    common = ["--bare", "--load", "base/protocols/dns", "-C"]
    sa, out = tmp_path / "sa", tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "cluster", "analyze", str(trace), "--logdir", str(sa), *common],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "cluster", "run", str(trace), "-w", "2", "--proxies", "0",
                        "--logdir", str(out), *common], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (out / "dns.log").is_file() and not (out / "conn.log").exists()
    assert sorted(p.name for p in out.glob("*.log")) == sorted(p.name for p in sa.glob("*.log"))

    def rows(p):
        return sorted(line.split("\t", 2)[2] for line in p.read_text().splitlines() if not line.startswith("#"))
    assert rows(out / "dns.log") == rows(sa / "dns.log") != []


def test_supervisor_commands_without_a_supervisor(runner, layout_file):
    args = ["--layout", str(layout_file)]
    r = runner.invoke(main, ["status", *args])
    assert r.exit_code == 1
    assert "the supervisor is not running" in r.output and r.output.count("stopped") == 5
    r = runner.invoke(main, ["status", "--json", *args])
    assert r.exit_code == 1 and '"running": false' in r.output
    r = runner.invoke(main, ["stop", *args])
    assert r.exit_code == 1 and "nothing to stop" in one_error_line(r)
    r = runner.invoke(main, ["restart", *args])
    assert r.exit_code == 1 and "the supervisor is not running" in one_error_line(r)
    r = runner.invoke(main, ["start", "worker-9", *args])
    assert r.exit_code == 1 and "no node named 'worker-9'" in one_error_line(r)
    r = runner.invoke(main, ["stop", "nobody", *args])
    assert r.exit_code == 1 and "no node named 'nobody'" in one_error_line(r)


def test_start_refuses_missing_sources_and_starts_nothing(runner, tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('manager = 1\n[cluster]\nstate_dir = "st"\n[[capture]]\ntrace = "gone.pcap"\n')
    for cmd in ("start", "deploy"):
        r = runner.invoke(main, [cmd, "--layout", str(p)])
        assert r.exit_code == 1 and "gone.pcap does not exist" in one_error_line(r)
    assert not (tmp_path / "st" / "supervisor.pid").exists()


def test_analyze_hands_over_to_the_standalone_engine(runner, tmp_path):
    """A real (tiny) trace through `starling analyze` gives the same logs as `python -m analysis`."""
    standalone = pytest.importorskip("analysis.standalone")
    dpkt = pytest.importorskip("dpkt")
    trace = tmp_path / "one.pcap"
    with open(trace, "wb") as f:
        w = dpkt.pcap.Writer(f)
        for i, flags in enumerate((dpkt.tcp.TH_SYN, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)):
            tcp = dpkt.tcp.TCP(sport=40000 if i == 0 else 80, dport=80 if i == 0 else 40000,
                               flags=flags, seq=1000 + i)
            src, dst = (b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02")[::1 if i == 0 else -1]
            ip = dpkt.ip.IP(src=src, dst=dst, p=dpkt.ip.IP_PROTO_TCP, data=tcp)
            ip.len = len(bytes(ip))
            eth = dpkt.ethernet.Ethernet(src=b"\x00" * 6, dst=b"\x01" * 6, data=ip)
            w.writepkt(bytes(eth), ts=1_600_000_000 + i * 0.01)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    r = runner.invoke(main, ["analyze", str(trace), "--logdir", str(ours), "-C", "--seed", "7",
                             "--local-nets", "10.0.0.0/8"])
    assert r.exit_code == 0, r.output
    assert standalone.main([str(trace), "--logdir", str(theirs), "-C", "--seed", "7",
                            "--local-nets", "10.0.0.0/8"]) == 0
    logs = sorted(p.name for p in ours.iterdir())
    assert "conn.log" in logs and logs == sorted(p.name for p in theirs.iterdir())
    strip = lambda p: [ln for ln in p.read_text().splitlines() if not ln.startswith(("#open", "#close"))]
    assert strip(ours / "conn.log") == strip(theirs / "conn.log")
    rows = [ln.split("\t") for ln in strip(ours / "conn.log") if not ln.startswith("#")]
    assert len(rows) == 1 and "10.0.0.1" in rows[0] and "40000" in rows[0]
    r = runner.invoke(main, ["analyze", str(trace), "--logdir", str(ours), "--local-nets", "bogus"])
    assert r.exit_code == 2 and "'bogus' is not a CIDR" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("args,code,fragment", [
    (["check", "--layout", "/nonexistent.toml"], 1, "no such layout file"),
    (["run", "/nonexistent.pcap"], 2, "does not exist"),
    (["status", "--layout", "/nonexistent.toml"], 1, "no such layout file"),
    (["start"], 2, "Missing option '--layout'"),
])
def test_error_paths_in_a_real_process(args, code, fragment):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True, text=True,
                       timeout=30, env=env, cwd="/")
    assert r.returncode == code
    assert "Traceback" not in r.stderr and r.stdout == ""
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0], r.stderr

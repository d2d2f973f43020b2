"""Scan detection (policy/misc/scan.zeek): standalone and 2/3-worker clusters give the same notices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.conn.record import ConnInfo
from analysis.trafficgen import GenConfig, write_trace
from cluster.frameworks import scan

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def read_notices(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    fields = next(ln for ln in lines if ln.startswith("#fields")).split("\t")[1:]
    return [dict(zip(fields, ln.split("\t"))) for ln in lines if ln and not ln.startswith("#")]


@pytest.fixture(scope="module")
def scan_trace(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("scan") / "scan.pcap"
    write_trace(str(p), 20_000, seed=7, config=GenConfig(scans=2))
    return p


def script(tmp: Path, body: str = "") -> Path:
    s = tmp / "site.py"
    s.write_text("from cluster.frameworks import scan\n" + body)
    return s


def standalone(trace: Path, out: Path, scr: Path) -> list[dict[str, str]]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "cluster", "analyze", str(trace), "--logdir", str(out),
                        "--script", str(scr)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    f = out / "notice.log"
    return read_notices(f) if f.exists() else []


def key(rows):
    return sorted((r["note"], r["src"], r["msg"], r["sub"], r["dst"], r["p"], r["proto"]) for r in rows)


def test_standalone_finds_both_scans_with_zeeks_text(scan_trace, tmp_path):
    rows = standalone(scan_trace, tmp_path / "sa", script(tmp_path))
    by_note = {r["note"]: r for r in rows}
    assert set(by_note) == {"Scan::Port_Scan", "Scan::Address_Scan"}
    # The second scan of each kind comes from the same scanner: suppressed by identifier (1 h).
    assert len(rows) == 2
    ps, ad = by_note["Scan::Port_Scan"], by_note["Scan::Address_Scan"]
    assert ps["src"] == "203.0.113.66" and ps["p"] == "-" and ps["proto"] == "-"
    assert ps["msg"] == f"203.0.113.66 scanned at least 15 unique ports of host {ps['dst']} in 0m0s"
    assert ad["src"] == "198.51.100.77" and ad["proto"] == "tcp" and ad["dst"] == "-"
    assert ad["msg"].startswith(f"198.51.100.77 scanned at least 25 unique hosts on port {ad['p']}/tcp in ")
    assert ps["sub"] == ad["sub"] == "remote"
    assert ps["actions"] == "Notice::ACTION_LOG" and ps["suppress_for"] == "3600.000000"
    assert ps["peer_descr"] == "-"


def test_thresholds_are_options(scan_trace, tmp_path):
    body = "scan.port_scan_threshold = 40.0\nscan.addr_scan_threshold = 10.0\nscan.local_nets.append('10.0.0.0/8')\n"
    rows = standalone(scan_trace, tmp_path / "sa", script(tmp_path, body))
    assert [r["note"] for r in rows] == ["Scan::Address_Scan"]      # 30 ports < 40
    assert " at least 10 unique hosts " in rows[0]["msg"]


@pytest.mark.parametrize("workers", [2, 3])
def test_cluster_gives_the_standalone_notices(scan_trace, tmp_path, workers):
    from cluster.run import run_local

    scr = script(tmp_path)
    want = standalone(scan_trace, tmp_path / "sa", scr)
    out = tmp_path / "cl"
    s = run_local(scan_trace, workers=workers, logdir=out, proxies=1, loggers=1, progress=False,
                  scripts=[str(scr)])
    assert s["ok"], s["problems"]
    got = read_notices(out / "notice.log")
    assert key(got) == key(want)
    for g in got:
        w = next(r for r in want if r["note"] == g["note"])
        assert abs(float(g["ts"]) - float(w["ts"])) < 1.0
        assert g["peer_descr"] == "manager"        # raised by SumStats on the manager, as in Zeek


def conn(state: str, hist: str, **kw) -> ConnInfo:
    base = dict(ts=100.0, uid="C1", orig_h="1.2.3.4", orig_p=40000, resp_h="10.0.0.1", resp_p=22,
                proto="tcp", duration=0.5, conn_state=state, history=hist)
    base.update(kw)
    return ConnInfo(**base)


@pytest.mark.parametrize("state,hist,want", [
    ("S0", "S", (False, 105.0)),            # connection_attempt, fires after tcp_attempt_delay
    ("S0", "H", (True, 105.0)),
    ("REJ", "Sr", (False, 100.5)),          # connection_rejected at the reset
    ("REJ", "sR", (True, 100.5)),
    ("RSTO", "ShR", (False, 100.5)),        # connection_reset, failed: no data
    ("RSTO", "ShADR", None),                # data went through: not a failure
    ("RSTR", "HaDr", None),
    ("RSTR", "Hr", (True, 100.5)),
    ("SF", "ShADadFf", None),
    ("S0", "D", (False, 105.0)),
])
def test_classify_follows_zeeks_failed_connection_rules(state, hist, want):
    assert scan.classify(conn(state, hist)) == want


def test_udp_is_never_a_scan_observation():
    assert scan.classify(conn("S0", "D", proto="udp")) is None


def test_an_attempt_younger_than_the_attempt_delay_is_no_observation():
    c = conn("S0", "S")
    assert scan.classify(c, now=104.0) is None          # removed at the end of a trace
    assert scan.classify(c, now=105.0) == (False, 105.0)

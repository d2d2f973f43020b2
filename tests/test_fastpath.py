"""The fused fast path changes speed, never results: every corpus trace and a generated trace
give byte-identical logs (every stream, uids seeded) with the path forced on and off, with
checksums verified and ignored."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from analysis.engine import analyze_file
from analysis.trafficgen import write_trace
from analysis.zeek_scripts import configure

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("STARLING_CONFORMANCE", ROOT.parent / "shared" / "conformance")) / "zeek"


def _logs(trace, tmp: Path, tag: str, loads=(), redefs=(), bare=False, ignore_checksums=False, fast=True) -> dict:
    cfg = configure(loads, redefs, bare=bare)
    cfg.ignore_checksums = ignore_checksums or cfg.ignore_checksums
    cfg.uid_seed = 7
    cfg.fast_path = fast
    cfg.strict_analyzers = False
    out = tmp / tag
    st = analyze_file(trace, out, cfg)
    logs = {}
    for f in sorted(out.iterdir()):
        # the #open/#close header lines carry wall-clock-independent but run-dependent times
        logs[f.name] = [ln for ln in f.read_text(errors="surrogateescape").splitlines()
                        if not ln.startswith(("#open", "#close"))]
    return {"logs": logs, "fused": st["decoder"].get("fused", 0)}


def _same(trace, tmp, **kw):
    on = _logs(trace, tmp, "on", fast=True, **kw)
    off = _logs(trace, tmp, "off", fast=False, **kw)
    assert off["fused"] == 0
    assert on["logs"].keys() == off["logs"].keys()
    for name in on["logs"]:
        assert on["logs"][name] == off["logs"][name], f"{name} differs with the fast path on"
    return on


@pytest.mark.parametrize("ignore_checksums", [True, False])
def test_generated_trace_identical(tmp_path, ignore_checksums):
    trace = tmp_path / "mixed.pcap"
    write_trace(str(trace), 6000, seed=11)
    on = _same(trace, tmp_path, ignore_checksums=ignore_checksums)
    assert on["fused"] > 1000          # the path was really taken
    assert "conn.log" in on["logs"]


def _cases():
    if not (CORPUS / "cases.json").is_file():
        return []
    return json.loads((CORPUS / "cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["test"])
def test_corpus_trace_identical(tmp_path, case):
    # both checksum modes in one case: corpus cases mostly run with verification
    _same(CORPUS / case["trace"], tmp_path / "a", loads=case.get("loads", ()), redefs=case.get("redefs", ()),
          bare=bool(case.get("bare")), ignore_checksums=bool(case.get("ignore_checksums")))
    _same(CORPUS / case["trace"], tmp_path / "b", loads=case.get("loads", ()), redefs=case.get("redefs", ()),
          bare=bool(case.get("bare")), ignore_checksums=True)


def test_corpus_present_or_skipped():
    if not _cases():
        pytest.skip(f"conformance corpus not found at {CORPUS}")

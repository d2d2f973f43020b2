"""The passing set of the Zeek conformance corpus may grow but never shrink.

``tests/conformance_floor.json`` lists every (case, log) that passed when it was written; this
test runs the conformance runner over those cases and fails on any that no longer pass.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

CORPUS = Path(os.environ.get("STARLING_CONFORMANCE", ROOT.parent / "shared" / "conformance")) / "zeek"
FLOOR = json.loads((Path(__file__).parent / "conformance_floor.json").read_text())


@pytest.fixture(scope="module")
def report():
    if not (CORPUS / "cases.json").is_file():
        pytest.skip(f"conformance corpus not found at {CORPUS}")
    import conformance

    cases = sorted({c for c, _ in FLOOR["passing"]})
    return conformance.run(str(CORPUS), only=FLOOR["only"], ignore=FLOOR["ignore"], jobs=2, cases=cases)


def test_floor_still_passes(report):
    failed = []
    for case, log in FLOOR["passing"]:
        res = report["cases"].get(case, {}).get("logs", {}).get(log)
        if res is None or not res["passed"]:
            failed.append(f"{case}:{log}")
    assert not failed, "conformance regressions: " + ", ".join(failed)


def test_runner_scores_a_missing_log_as_failed(tmp_path):
    if not (CORPUS / "cases.json").is_file():
        pytest.skip("conformance corpus not found")
    import conformance

    # with a comparator that cannot see our output (a bare run loading nothing), conn.log is missing
    cases = json.loads((CORPUS / "cases.json").read_text())["cases"]
    case = next(c for c in cases if c["test"] == "core.tunnels.gre")
    bare = dict(case, bare=True, loads=[])
    res = conformance.run_case((str(CORPUS), bare, {"conn"}, [], str(CORPUS.parent / "compare_logs.py"), None))
    assert res["logs"]["conn"]["passed"] is False
    assert res["logs"]["conn"]["rows_matched"] == 0 and res["logs"]["conn"]["rows_total"] > 0

"""Conformance runner: analyse every corpus case standalone and score our logs against Zeek's.

    python bench/conformance.py --corpus /work/shared/conformance/zeek [--only conn,weird,tunnel]
        [--ignore conn.service,...] [--comparator PATH] [--jobs N] [--cases NAME,...] [--json]

Each case's ``bare``/``loads``/``redefs``/``ignore_checksums``/``trace_gzipped`` become an
AnalysisConfig through ``analysis.zeek_scripts``.  A case whose loads name policy scripts we
implement as frameworks (``cluster.frameworks.scripts_for_loads``: FTP/SSH brute forcing,
expiring certificates, scan, known hosts/services) runs standalone with those scripts
(``cluster.frameworks.local.analyze_with_scripts``, in a forked child so that their handlers do
not stay registered for later cases), so its notice.log is written too.  Every reference log of
the selected kinds counts: a log we do not write fails its case with 0 rows matched.  Cases run in parallel
processes; the totals are per log: cases passed/total and rows matched/total.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

_COMPARATOR = None


def load_comparator(path: str):
    spec = importlib.util.spec_from_file_location("compare_logs", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("compare_logs", mod)
    spec.loader.exec_module(mod)
    return mod


def case_config(case: dict):
    from analysis.zeek_scripts import configure
    from cluster.frameworks import analysis_loads

    # loaded signature files enable their analyzers in bare mode (e.g. base/protocols/xmpp/dpd.sig
    # enables xmpp); analyzers list them in AnalyzerSpec.zeek_scripts (added by the ssl/ssh helper)
    # framework policy scripts give the engine the base scripts they load
    loads = analysis_loads(case.get("loads", ())) + list(case.get("load_sigs", ()))
    cfg = configure(loads, case.get("redefs", ()), bare=bool(case.get("bare")))
    cfg.ignore_checksums = bool(case.get("ignore_checksums")) or cfg.ignore_checksums
    cfg.uid_seed = 1
    return cfg


def _with_scripts(trace: Path, out: Path, scripts: list[str], case: dict) -> None:
    """``analyze_with_scripts`` in a forked child: script handlers register process-wide."""
    err = out / ".error"
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            from cluster.frameworks.local import analyze_with_scripts
            analyze_with_scripts(trace, out, scripts, case_config(case), redefs=case.get("redefs", ()))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            err.write_text(f"{type(e).__name__}: {e}")
            code = 1
        os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    if err.exists():
        msg = err.read_text()
        err.unlink()
        raise RuntimeError(msg)
    if status != 0:
        raise RuntimeError(f"analysis child exited with status {status}")


def run_case(args: tuple) -> dict:
    """Analyse one case and compare the selected logs (runs in a worker process)."""
    corpus, case, only, ignore, comparator_path, keep_dir = args
    global _COMPARATOR
    if _COMPARATOR is None:
        _COMPARATOR = load_comparator(comparator_path)
    from analysis.engine import analyze_file
    from cluster.frameworks import scripts_for_loads

    out = Path(keep_dir) / case["test"] if keep_dir else Path(tempfile.mkdtemp(prefix="conf-"))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    result: dict = {"logs": {}, "error": None}
    try:
        scripts = scripts_for_loads(case.get("loads", ()))
        if scripts:
            _with_scripts(Path(corpus) / case["trace"], out, scripts, case)
        else:
            analyze_file(Path(corpus) / case["trace"], out, case_config(case))
    except Exception as e:  # a failure is a result here, not a crash of the runner
        result["error"] = f"{type(e).__name__}: {e}"
    for log, ref in case["baselines"].items():
        kind = log.removesuffix(".log")
        if only and kind not in only:
            continue
        ours = out / log
        ign = [f.split(".", 1)[1] for f in ignore if f.split(".", 1)[0] == kind]
        if not ours.exists():
            base = _COMPARATOR.read_log(Path(corpus) / ref)
            result["logs"][kind] = {"passed": False, "rows_total": len(base.rows), "rows_matched": 0,
                                    "missing": True}
            continue
        try:
            res = _COMPARATOR.compare_logs(Path(corpus) / ref, ours, ignore=ign)
            d = res.to_dict(max_details=5)
            result["logs"][kind] = {
                "passed": res.passed, "rows_total": d["rows"]["baseline"], "rows_matched": d["rows"]["matched"],
                "rows_ours": d["rows"]["ours"],
                "fields_differing": {f: c["different"] for f, c in d["fields"].items() if c.get("different")},
                "missing_fields": d["missing_fields"],
                "unmatched_baseline_rows": d["unmatched_baseline_rows"][:3],
                "mismatches": d["mismatches"][:3],
            }
        except Exception as e:
            result["logs"][kind] = {"passed": False, "rows_total": 0, "rows_matched": 0,
                                    "error": f"{type(e).__name__}: {e}"}
    for log in case.get("expected_absent_logs", ()):
        kind = log.removesuffix(".log")
        if (not only or kind in only) and (out / log).exists():
            result["logs"].setdefault(kind, {"passed": True, "rows_total": 0, "rows_matched": 0})
            result["logs"][kind]["passed"] = False
            result["logs"][kind]["unexpected"] = True
    if not keep_dir:
        shutil.rmtree(out, ignore_errors=True)
    return result


def run(corpus: str, only=None, ignore=(), comparator: str | None = None, jobs: int | None = None,
        cases: list[str] | None = None, keep_dir: str | None = None) -> dict:
    corpus = str(Path(corpus).resolve())
    comparator = comparator or str(Path(corpus).parent / "compare_logs.py")
    all_cases = json.loads((Path(corpus) / "cases.json").read_text())["cases"]
    if cases:
        all_cases = [c for c in all_cases if c["test"] in set(cases)]
    only = set(only) if only else None
    work = [(corpus, c, only, list(ignore), comparator, keep_dir) for c in all_cases]
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1:
        results = [run_case(w) for w in work]
    else:
        with ProcessPoolExecutor(jobs) as ex:
            results = list(ex.map(run_case, work))
    report: dict = {"logs": {}, "cases": {}}
    for case, res in zip(all_cases, results):
        if not res["logs"] and not res["error"]:
            continue
        report["cases"][case["test"]] = res
        for kind, r in res["logs"].items():
            t = report["logs"].setdefault(kind, {"cases_passed": 0, "cases_total": 0, "rows_matched": 0,
                                                 "rows_total": 0})
            t["cases_total"] += 1
            t["cases_passed"] += 1 if r["passed"] else 0
            t["rows_matched"] += r.get("rows_matched", 0)
            t["rows_total"] += r.get("rows_total", 0)
    return report


def _table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Conformance")
    for col in ("log", "cases passed", "rows matched"):
        t.add_column(col)
    for kind, r in sorted(report["logs"].items()):
        t.add_row(kind, f"{r['cases_passed']}/{r['cases_total']}", f"{r['rows_matched']}/{r['rows_total']}")
    Console().print(t)
    fails = [(name, k) for name, c in report["cases"].items() for k, r in c["logs"].items() if not r["passed"]]
    for name, k in sorted(fails):
        err = report["cases"][name].get("error")
        print(f"FAIL {name} {k}.log" + (f"  ({err})" if err else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, help="folder with cases.json, traces/ and baselines/")
    ap.add_argument("--only", default="", help="log kinds to score, e.g. conn,weird,tunnel")
    ap.add_argument("--ignore", default="", help="columns to skip, as LOG.COLUMN, e.g. conn.service")
    ap.add_argument("--comparator", default=None, help="compare_logs.py (default: next to the corpus)")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--cases", default="", help="only these case names (comma-separated)")
    ap.add_argument("--keep", default=None, help="keep our logs under this directory")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if not (Path(a.corpus) / "cases.json").is_file():
        print(f"error: {a.corpus}: no cases.json", file=sys.stderr)
        return 2
    only = [x for x in a.only.split(",") if x] or None
    ignore = [x for x in a.ignore.split(",") if x]
    report = run(a.corpus, only, ignore, a.comparator, a.jobs, [x for x in a.cases.split(",") if x] or None, a.keep)
    if a.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        _table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

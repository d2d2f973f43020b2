"""File extraction (``extract-all-files``, ``FileExtract::*``): real files on disk, real traces.

The extracted bytes must be the file's bytes (checked against files.log's own MD5 and against
bodies we sent ourselves), holes stay holes, ``FileExtract::default_limit`` cuts a file off as
Zeek does, and a directory that cannot be written gives a reporter error, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "protocols"))
sys.path.insert(0, str(ROOT / "tests"))

from harness import Recorder  # noqa: E402
from test_files import GET, http  # noqa: E402  (its HTTP exchange helper)

from analysis.engine import analyze_file  # noqa: E402
from analysis.files import DirectoryExtractSink, Extractor, FileState, extract_name  # noqa: E402
from analysis.files.extract import install  # noqa: E402
from analysis.protocols.http import HTTPOptions  # noqa: E402
from analysis.zeek_scripts import configure  # noqa: E402

CORPUS = Path(os.environ.get("STARLING_CONFORMANCE", ROOT.parent / "shared" / "conformance")) / "zeek"
EXTRACT_ALL = "policy/frameworks/files/extract-all-files"
HASH_ALL = "policy/frameworks/files/hash-all-files"


def need_corpus() -> None:
    if not (CORPUS / "cases.json").is_file():
        pytest.skip(f"conformance corpus not found at {CORPUS}")


def read_log(path: Path) -> list[dict]:
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"))))
    return rows


def http_exchange(options, body_chunks) -> Recorder:
    """One GET and a 200 reply whose body is ``body_chunks`` (bytes, or an int for a content gap)."""
    size = sum(len(c) if isinstance(c, bytes) else c for c in body_chunks)
    return http(GET, (False, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size),
                *((False, c) for c in body_chunks), options=options)


def files_rows(ctx: Recorder) -> list:
    return [r for p, r in ctx.logs if p == "files"]


def extracting(tmp_path, redefs=(), loads=(EXTRACT_ALL,)) -> tuple[HTTPOptions, DirectoryExtractSink]:
    cfg = configure(list(loads), list(redefs))
    sink = install(cfg, tmp_path)
    assert sink is not None
    return cfg.analyzer_options["http"], sink


# -- the engine side ----------------------------------------------------------------------------------

def test_http_body_is_written_under_zeeks_name(tmp_path):
    body = bytes(range(256)) * 40
    opts, _ = extracting(tmp_path)
    ctx = http_exchange(opts, [body[:3000], body[3000:]])
    (row,) = files_rows(ctx)
    assert row.analyzers == ["EXTRACT"]
    assert row.extracted == extract_name(row.ts, "HTTP", row.fuid) == f"extract-{row.ts:.6f}-HTTP-{row.fuid}"
    assert row.extracted_cutoff is False and row.extracted_size is None
    assert (tmp_path / "extract_files" / row.extracted).read_bytes() == body


def test_limit_cuts_the_file_off(tmp_path):
    body = os.urandom(10000)
    opts, _ = extracting(tmp_path, ["redef FileExtract::default_limit = 4000;"])
    (row,) = files_rows(http_exchange(opts, [body[:2500], body[2500:6000], body[6000:]]))
    assert (row.extracted_cutoff, row.extracted_size) == (True, 4000)
    assert (tmp_path / "extract_files" / row.extracted).read_bytes() == body[:4000]
    assert row.seen_bytes == 10000          # file analysis itself goes on


def test_limit_not_reached_leaves_size_unset(tmp_path):
    body = os.urandom(4000)
    opts, _ = extracting(tmp_path, ["redef FileExtract::default_limit = 4000;"])
    (row,) = files_rows(http_exchange(opts, [body]))
    assert (row.extracted_cutoff, row.extracted_size) == (False, None)
    assert (tmp_path / "extract_files" / row.extracted).read_bytes() == body


def test_a_gap_stays_a_hole_and_counts_against_the_limit(tmp_path):
    a, b = os.urandom(1000), os.urandom(1000)
    opts, _ = extracting(tmp_path)
    (row,) = files_rows(http_exchange(opts, [a, 500, b]))
    assert row.missing_bytes == 500 and row.extracted_cutoff is False
    assert (tmp_path / "extract_files" / row.extracted).read_bytes() == a + bytes(500) + b
    # default_limit_includes_missing=T (Zeek's default): the hole is part of the 1800 bytes
    opts, _ = extracting(tmp_path / "t", ["redef FileExtract::default_limit = 1800;"])
    (row,) = files_rows(http_exchange(opts, [a, 500, b]))
    assert (row.extracted_cutoff, row.extracted_size) == (True, 1800)
    assert (tmp_path / "t" / "extract_files" / row.extracted).read_bytes() == a + bytes(500) + b[:300]
    # ... =F: only written bytes count, the hole is free
    opts, _ = extracting(tmp_path / "f", ["redef FileExtract::default_limit = 1800;",
                                          "redef FileExtract::default_limit_includes_missing = F;"])
    (row,) = files_rows(http_exchange(opts, [a, 500, b]))
    assert (row.extracted_cutoff, row.extracted_size) == (True, 1800)
    assert (tmp_path / "f" / "extract_files" / row.extracted).read_bytes() == a + bytes(500) + b[:800]


def test_out_of_order_chunks_land_at_their_offsets(tmp_path):
    sink = DirectoryExtractSink(tmp_path)
    opts = HTTPOptions(files_extract_all=True, extract_sink=sink)
    f = FileState("Fx", "HTTP", False, 5.0, opts)
    f.data(b"C" * 10, 5.1, offset=20)
    f.data(b"A" * 10, 5.2, offset=0)
    f.finish()
    assert (tmp_path / "extract_files" / extract_name(5.0, "HTTP", "Fx")).read_bytes() == \
        b"A" * 10 + bytes(10) + b"C" * 10


def test_prefix_redef_and_every_file_analyzer_gets_the_options(tmp_path):
    cfg = configure([EXTRACT_ALL], ['redef FileExtract::prefix = "./x/y/";', "redef FileExtract::default_limit=7;"],
                    bare=True)
    carriers = {n for n, o in cfg.analyzer_options.items() if getattr(o, "files_extract_all", False)}
    assert {"http", "smtp", "ftp-data"} <= carriers
    assert all(cfg.analyzer_options[n].extract_limit == 7 and cfg.analyzer_options[n].extract_prefix == "./x/y/"
               for n in carriers)
    assert not any("FileExtract" in n for n in cfg.notes)
    install(cfg, tmp_path)
    (row,) = files_rows(http_exchange(cfg.analyzer_options["http"], [b"0123456789"]))
    assert (tmp_path / "x" / "y" / row.extracted).read_bytes() == b"0123456"


def test_off_by_default():
    cfg = configure([], [])
    assert install(cfg, "/nonexistent") is None
    (row,) = files_rows(http_exchange(HTTPOptions(), [b"hello"]))
    assert row.analyzers == [] and row.extracted is None and row.extracted_cutoff is None


# -- errors: never a traceback, a reporter error and no `extracted` -------------------------------------

def test_uncreatable_directory_gives_a_reporter_error(tmp_path):
    (tmp_path / "blocker").write_text("a file where the directory should be")
    errors = []
    sink = DirectoryExtractSink(tmp_path / "blocker", lambda ts, msg: errors.append((ts, msg)))
    opts = HTTPOptions(files_extract_all=True, extract_sink=sink)
    (row,) = files_rows(http_exchange(opts, [b"abc", b"def"]))
    assert row.analyzers == ["EXTRACT"] and row.seen_bytes == 6
    assert row.extracted is None and row.extracted_cutoff is None and row.extracted_size is None
    (ts, msg), = errors
    assert msg.startswith(f"cannot open {tmp_path / 'blocker' / 'extract_files'}/extract-") and "Not a directory" in msg


def test_write_error_stops_extraction_of_that_file(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    errors = []
    sink = DirectoryExtractSink(tmp_path, lambda ts, msg: errors.append(msg))
    (tmp_path / "extract_files").mkdir()
    name = extract_name(1.0, "HTTP", "Ffull")
    os.symlink("/dev/full", tmp_path / "extract_files" / name)   # every write: ENOSPC
    x = Extractor(sink, "./extract_files/", name, 1.0)
    x.data(b"x" * 100, 0, 1.5)
    x.data(b"y" * 100, 100, 1.6)         # after the failure: nothing more is tried
    x.close()
    assert errors == [f"failed to write to extracted file {tmp_path / 'extract_files' / name}: "
                      "No space left on device"]
    assert x.columns() == {}


def test_unwritable_directory_in_a_real_run(tmp_path, capsys):
    need_corpus()
    (tmp_path / "blocker").write_text("")
    redef = f'redef FileExtract::prefix = "{tmp_path / "blocker" / "sub"}/";'
    # Zeek's default configuration: reporter.log
    out = tmp_path / "default"
    analyze_file(CORPUS / "traces/http/get.pcap", out, configure([EXTRACT_ALL], [redef]))
    (rep,) = read_log(out / "reporter.log")
    assert rep["level"] == "Reporter::ERROR" and rep["message"].startswith(
        f"cannot open {tmp_path / 'blocker' / 'sub'}/extract-") and rep["message"].endswith("Not a directory")
    (row,) = read_log(out / "files.log")
    assert row["analyzers"] == "EXTRACT" and row["extracted"] == "-" and row["seen_bytes"] == "4705"
    # bare mode without the reporter framework: stderr, as Zeek prints it
    out = tmp_path / "bare"
    analyze_file(CORPUS / "traces/http/get.pcap", out,
                 configure(["base/protocols/http", EXTRACT_ALL], [redef], bare=True))
    assert not (out / "reporter.log").exists()
    assert "error: cannot open" in capsys.readouterr().err


# -- real traces through the engine -----------------------------------------------------------------

@pytest.mark.parametrize("trace", ["http/get.pcap", "http/zeek-image-post-1080-8000-x.pcap",
                                   "http/deeply-nested-mime.pcap", "http/x-gzip.pcap", "smtp.pcap",
                                   "ftp/ipv6.pcap"])
def test_extracted_bytes_match_files_log_hashes(tmp_path, trace):
    need_corpus()
    analyze_file(CORPUS / "traces" / trace, tmp_path, configure([HASH_ALL, EXTRACT_ALL], []))
    rows = read_log(tmp_path / "files.log")
    assert rows
    for r in rows:
        assert set(r["analyzers"].split(",")) == {"MD5", "SHA1", "SHA256", "EXTRACT"}
        data = (tmp_path / "extract_files" / r["extracted"]).read_bytes()
        assert len(data) == int(r["seen_bytes"])
        assert hashlib.md5(data).hexdigest() == r["md5"]
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        assert r["extracted_cutoff"] == "F" and r["extracted_size"] == "-"


def test_range_requests_over_several_connections_fill_one_file(tmp_path):
    need_corpus()
    analyze_file(CORPUS / "traces/http/concurrent-range-requests.pcap", tmp_path, configure([EXTRACT_ALL], []))
    rows = read_log(tmp_path / "files.log")
    assert len({r["fuid"] for r in rows}) == 1 and len(rows) > 1
    r = rows[0]
    data = (tmp_path / "extract_files" / r["extracted"]).read_bytes()
    # every received byte is in place; the holes between the ranges are the missing bytes
    assert len(data) == int(r["seen_bytes"]) + int(r["missing_bytes"])
    assert len(data) - data.count(0) <= int(r["seen_bytes"])


def test_byteranges_case_matches_zeek(tmp_path):
    """The corpus case: Zeek's row except for the fuid that `extracted` embeds (the corpus's file
    ids come from Zeek's seeded generator, which we cannot reproduce; the comparator checks the
    fuid column itself by shape only)."""
    need_corpus()
    sys.path.insert(0, str(ROOT / "bench"))
    import conformance

    case = next(c for c in json.loads((CORPUS / "cases.json").read_text())["cases"]
                if c["test"] == "scripts.base.frameworks.file-analysis.byteranges")
    analyze_file(CORPUS / case["trace"], tmp_path, conformance.case_config(case))
    cmp = conformance.load_comparator(str(CORPUS.parent / "compare_logs.py"))
    baseline = CORPUS / case["baselines"]["files.log"]
    res = cmp.compare_logs(baseline, tmp_path / "files.log", ignore={"extracted"})
    assert res.passed, res.to_dict()
    (ours,) = read_log(tmp_path / "files.log")
    (zeeks,) = read_log(baseline)
    assert (ours["analyzers"], ours["extracted_cutoff"], ours["extracted_size"]) == ("EXTRACT", "T", "4000")
    assert ours["extracted"] == f"extract-{float(ours['ts']):.6f}-HTTP-{ours['fuid']}"
    masked = zeeks["extracted"].replace(zeeks["fuid"], ours["fuid"]).replace("XXXXXXXXXX.XXXXXX", ours["ts"])
    assert ours["extracted"] == masked
    # the first range lies beyond the 4000-byte limit (holes count): nothing is written
    assert (tmp_path / "extract_files" / ours["extracted"]).stat().st_size == 0


def test_cli_load_extracts_into_the_log_dir(tmp_path):
    need_corpus()
    from analysis import standalone

    out = tmp_path / "logs"
    assert standalone.main([str(CORPUS / "traces/http/get.pcap"), "--logdir", str(out), "--load", EXTRACT_ALL,
                            "--redef", "FileExtract::default_limit=100"]) == 0
    (r,) = read_log(out / "files.log")
    assert (r["extracted_cutoff"], r["extracted_size"]) == ("T", "100")
    assert (out / "extract_files" / r["extracted"]).stat().st_size == 100


def test_runs_with_scripts_extract_too(tmp_path):
    """``starling analyze --script`` and the framework policy loads build their engine through
    analyze_with_scripts: extraction reaches that path as well."""
    need_corpus()
    from cluster.frameworks.local import analyze_with_scripts

    script = tmp_path / "noop.py"
    script.write_text("from cluster import api\n\n@api.on('http_request')\ndef seen(c, *args):\n    pass\n")
    out = tmp_path / "logs"
    analyze_with_scripts(CORPUS / "traces/http/get.pcap", out, [str(script)],
                         config=configure([EXTRACT_ALL], ["FileExtract::default_limit=100"]))
    (r,) = read_log(out / "files.log")
    assert (r["extracted_cutoff"], r["extracted_size"]) == ("T", "100")
    assert (out / "extract_files" / r["extracted"]).stat().st_size == 100


@pytest.mark.timeout(120)
@pytest.mark.flaky(reruns=2, reruns_delay=1)   # a real cluster: see tests/conftest.py
def test_cluster_workers_extract_into_their_node_directories(tmp_path):
    """Zeek extracts on the worker that sees the file, into its working directory: ours is the
    node directory the supervisor starts it in; files.log still reaches the logger."""
    need_corpus()
    from cluster.run import run_local
    from cluster.state import StateDir

    trace = CORPUS / "traces/http/zeek-image-post-1080-8000-x.pcap"
    s = run_local(trace, workers=2, logdir=tmp_path / "logs", proxies=0, progress=False,
                  state_dir=tmp_path / "state", loads=[HASH_ALL, EXTRACT_ALL])
    assert s["ok"], s["problems"]
    rows = read_log(tmp_path / "logs" / "files.log")
    assert len(rows) == 2
    state = StateDir(tmp_path / "state")
    for r in rows:
        found = [p for w in ("worker-1", "worker-2")
                 if (p := state.node_dir(w) / "extract_files" / r["extracted"]).exists()]
        assert len(found) == 1, r["extracted"]
        assert hashlib.md5(found[0].read_bytes()).hexdigest() == r["md5"]

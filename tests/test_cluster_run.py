"""A cluster run writes the same rows as standalone analysis of the same trace.

Real processes (manager, logger, workers) over real sockets on 127.0.0.1, real files.  Rows are
compared as multisets with the values that are random (uids, and the uids inside
tunnel_parents) or node-specific by Zeek's own rules (weird.log's ``peer``: the worker's name)
left out; every other column must match exactly.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest

from analysis.engine import analyze_file
from analysis.logs.reader import read_tsv
from cluster.run import count_rows, run_local

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "sample.pcap"
CONFORMANCE = Path(os.environ.get("STARLING_CONFORMANCE", REPO.parent / "shared" / "conformance"))
CONFORMANCE_TRACES = ["traces/ftp/ipv6.pcap", "traces/cisco-fabric-path.pcap"]
# Random identifiers (connection uids, file ids) and weird.log's node-specific ``peer``.
IGNORED = {"uid", "peer", "tunnel_parents", "fuid", "fuids", "orig_fuids", "resp_fuids", "conn_uids",
           "parent_fuid", "cert_chain_fuids", "client_cert_chain_fuids", "id"}

pytestmark = pytest.mark.timeout(120)


def sample_trace() -> Path:
    if SAMPLE.is_file():
        return SAMPLE
    p = CONFORMANCE / "zeek" / CONFORMANCE_TRACES[0]
    if not p.is_file():
        pytest.skip("neither samples/sample.pcap nor the conformance corpus is present")
    return p


def log_rows(path: Path) -> tuple[tuple[str, ...], collections.Counter]:
    """(header lines that must match, multiset of rows without the ignored columns)."""
    log = read_tsv(path)
    keep = [i for i, f in enumerate(log.fields) if f not in IGNORED]
    rows = collections.Counter(tuple(r[i] for i in keep) for r in log.raw_rows)
    header = (log.meta.get("path"), tuple(log.fields), tuple(log.types))
    return header, rows


def assert_same_logs(standalone: Path, cluster: Path) -> dict[str, int]:
    a = sorted(p.name for p in standalone.glob("*.log"))
    b = sorted(p.name for p in cluster.glob("*.log"))
    assert a == b, f"different logs: standalone {a}, cluster {b}"
    counts = {}
    for name in a:
        ha, ra = log_rows(standalone / name)
        hb, rb = log_rows(cluster / name)
        assert ha == hb, f"{name}: header differs"
        missing, extra = ra - rb, rb - ra
        assert not missing and not extra, (
            f"{name}: {sum(missing.values())} rows missing, {sum(extra.values())} extra; "
            f"e.g. missing {list(missing)[:2]} extra {list(extra)[:2]}")
        counts[name] = sum(ra.values())
    return counts


def run_and_compare(trace: Path, tmp_path: Path, workers: int) -> dict:
    sa = tmp_path / "standalone"
    analyze_file(trace, sa)
    out = tmp_path / f"cluster{workers}"
    summary = run_local(trace, workers=workers, logdir=out, proxies=0, progress=False)
    assert summary["ok"], summary["problems"]
    counts = assert_same_logs(sa, out)
    assert sum(counts.values()) > 0
    for name, n in counts.items():
        assert summary["rows"][name[:-4]] == n
    return summary


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_sample_same_rows_as_standalone(tmp_path, workers):
    summary = run_and_compare(sample_trace(), tmp_path, workers)
    assert summary["workers"] == workers
    assert summary["drops"] == 0 and not summary["lost"] and not summary["duplicated"]
    assert summary["packets"] > 0 and summary["connections"] > 0
    # Every worker did a share of the work when there is more than one.
    worker_packets = [s["engine"]["packets"] for n, s in summary["nodes"].items() if n.startswith("worker")]
    assert len(worker_packets) == workers
    if workers > 1:
        assert all(p > 0 for p in worker_packets)


@pytest.mark.parametrize("rel", CONFORMANCE_TRACES)
def test_conformance_trace_same_rows(tmp_path, rel):
    trace = CONFORMANCE / "zeek" / rel
    if not trace.is_file():
        pytest.skip(f"conformance trace {rel} not present (STARLING_CONFORMANCE={CONFORMANCE})")
    run_and_compare(trace, tmp_path, 2)


def test_json_format_and_no_proxy_logs_written_by_manager(tmp_path):
    """No logger in the layout: the manager writes; JSON lines have one object per row."""
    trace = sample_trace()
    sa = tmp_path / "sa"
    analyze_file(trace, sa, fmt="json")
    out = tmp_path / "json"
    s = run_local(trace, workers=2, logdir=out, fmt="json", loggers=0, proxies=0, progress=False)
    assert s["ok"], s["problems"]
    assert "writer" in s["nodes"]["manager"]
    for f in sa.glob("*.log"):
        def norm(p):
            out = collections.Counter()
            for line in p.read_text().splitlines():
                d = json.loads(line)
                for k in IGNORED:
                    d.pop(k, None)
                out[json.dumps(d, sort_keys=True)] += 1
            return out
        assert norm(f) == norm(out / f.name), f.name
        assert count_rows(out / f.name) == s["rows"][f.stem]


def test_missing_trace_is_a_clear_error(tmp_path):
    from cluster.layout import LayoutError

    with pytest.raises(LayoutError, match="no such trace"):
        run_local(tmp_path / "nope.pcap", workers=1, logdir=tmp_path / "x", progress=False)


def test_unreadable_trace_fails_the_run_with_a_clear_reason(tmp_path):
    bad = tmp_path / "garbage.pcap"
    bad.write_bytes(bytes(range(256)) * 8)
    s = run_local(bad, workers=2, logdir=tmp_path / "out", proxies=0, progress=False)
    assert not s["ok"] and s["exit_code"] != 0
    assert any("unknown file format" in p for p in s["problems"]), s["problems"]
    assert s["rows"] == {}


def conformance_case(name: str) -> dict:
    f = CONFORMANCE / "zeek" / "cases.json"
    if not f.is_file():
        pytest.skip(f"conformance corpus not present (STARLING_CONFORMANCE={CONFORMANCE})")
    case = next((c for c in json.loads(f.read_text())["cases"] if c["test"] == name), None)
    if case is None or not (CONFORMANCE / "zeek" / case["trace"]).is_file():
        pytest.skip(f"conformance case {name} not present")
    return case


# (case, what the options must change compared with a default run of the same trace)
OPTION_CASES = [
    ("core.tcp-padding", "ignore_checksums"),                  # -C: bad checksums, default scripts
    ("scripts.base.protocols.dns.spf", "bare"),                # --bare --load base/protocols/dns
]


@pytest.mark.parametrize("name,needs", OPTION_CASES)
def test_analysis_options_reach_the_workers(tmp_path, name, needs):
    """-C, --load, --redef and --bare mean in a cluster what they mean standalone: same rows,
    2 workers; and the options matter for these traces (a default run writes something else)."""
    from analysis.standalone import analysis_config

    case = conformance_case(name)
    trace = CONFORMANCE / "zeek" / case["trace"]
    opts = dict(ignore_checksums=case["ignore_checksums"], loads=case["loads"], redefs=case["redefs"],
                bare=case["bare"])
    sa = tmp_path / "standalone"
    analyze_file(trace, sa, analysis_config(**opts))
    plain = tmp_path / "plain"
    analyze_file(trace, plain)
    if needs == "ignore_checksums":
        assert case["ignore_checksums"]
        assert count_rows(sa / "conn.log") > 0
        assert log_rows(sa / "conn.log")[1] != log_rows(plain / "conn.log")[1], "-C changes nothing here"
    else:
        assert case["bare"] and case["loads"]
        assert (sa / "dns.log").is_file() and not (sa / "conn.log").exists()
        assert (plain / "conn.log").is_file()                  # without --bare conn.log is written
    out = tmp_path / "cluster"
    summary = run_local(trace, workers=2, logdir=out, proxies=0, progress=False, **opts)
    assert summary["ok"], summary["problems"]
    counts = assert_same_logs(sa, out)
    assert sum(counts.values()) > 0
    for log_name, n in counts.items():
        assert summary["rows"][log_name[:-4]] == n


def test_final_statistics_fall_back_to_the_nodes_own_log(tmp_path):
    """A node's final statistics travel on the bus while it leaves; the summary takes them from
    the node's diagnostics file when that message did not arrive, never from an earlier run."""
    from cluster.layout import Layout
    from cluster.run import _stats_from_node_logs
    from cluster.state import StateDir

    trace = tmp_path / "t.pcap"
    trace.write_bytes(b"")
    layout = Layout.local(trace, workers=1, proxies=1, log_dir=tmp_path / "logs")
    d = StateDir(layout.state_dir).node_dir("proxy-1")
    d.mkdir(parents=True)

    def line(ts: str, n: int) -> str:
        return json.dumps({"node": "proxy-1", "stats": {"node": "proxy-1", "logs": {"records": {"x": n}}},
                           "event": "node_final_stats", "timestamp": ts})
    (d / "node.log").write_text("\n".join([line("2026-01-01T10:00:00.000000Z", 1), "not json",
                                           line("2026-01-01T12:00:00.500000Z", 2),
                                           '{"event": "node_stopped"}']) + "\n")
    since = 1767268800.0   # 2026-01-01T12:00:00Z
    assert _stats_from_node_logs(layout, ["proxy-1", "worker-1"], since) == \
        {"proxy-1": {"node": "proxy-1", "logs": {"records": {"x": 2}}}}
    assert _stats_from_node_logs(layout, ["proxy-1"], since + 1) == {}     # only this run's lines

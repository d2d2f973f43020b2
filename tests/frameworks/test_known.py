"""Known hosts and services: Zeek's rules on hand-made connections, and a trace split over
three workers (two proxies holding the store) logs each host and service exactly once, the
same set as a standalone run."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from analysis.config import AnalysisConfig
from analysis.conn.record import ConnInfo
from analysis.engine import Engine
from analysis.logs.files import DirectoryLogSink
from analysis.logs.reader import read_tsv
from analysis.sinks import ListLogSink
from analysis.sources import open_source
from cluster.frameworks import known
from cluster.run import run_local

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "sample.pcap"
SCRIPT = REPO / "cluster" / "frameworks" / "known_script.py"

pytestmark = pytest.mark.timeout(90)

_uid = iter(range(10**6))


def conn(orig: str, resp: str, port: int, *, proto: str = "tcp", history: str = "ShADadFf",
         service: str | None = None, ts: float = 1000.0, duration: float = 1.0, resp_bytes: int = 10,
         resp_pkts: int = 3) -> ConnInfo:
    return ConnInfo(ts=ts, uid=f"C{next(_uid)}", orig_h=orig, orig_p=40000, resp_h=resp, resp_p=port,
                    proto=proto, service=service, duration=duration, resp_bytes=resp_bytes,
                    history=history, resp_pkts=resp_pkts, orig_pkts=3)


def tracker(**kw) -> tuple[known.Known, ListLogSink]:
    sink = ListLogSink()
    k = known.standalone(AnalysisConfig(local_nets=("10.0.0.0/8",), private_address_space_is_local=False,
                                        **kw), sink)
    return k, sink


def rows(sink: ListLogSink, path: str) -> list[tuple]:
    return [tuple(r.__struct_fields__ and [getattr(r, f) for f in r.__struct_fields__])
            for r in sink.records.get(path, [])]


def test_hosts_need_a_handshake_and_a_local_address() -> None:
    k, sink = tracker()
    remove = k.connection_state_remove
    remove(conn("10.0.0.1", "8.8.8.8", 443, ts=1000.0))                  # local originator
    remove(conn("192.0.2.7", "10.0.0.2", 22, ts=1001.0))                 # local responder
    remove(conn("10.0.0.3", "10.0.0.4", 80, history="S", ts=1002.0))    # no SYN-ACK: no host
    remove(conn("10.0.0.5", "10.0.0.6", 80, history="ShR", ts=1003.0, proto="udp"))   # not TCP
    remove(conn("10.0.0.1", "10.0.0.2", 80, ts=1004.0))                  # both already known
    remove(conn("8.8.4.4", "1.1.1.1", 80, ts=1005.0))                    # nothing local
    assert rows(sink, "known_hosts") == [(1000.0, "10.0.0.1"), (1001.0, "10.0.0.2")]


def test_a_host_is_logged_again_after_the_expiry_in_network_time() -> None:
    k, sink = tracker()
    k.connection_state_remove(conn("10.0.0.1", "8.8.8.8", 443, ts=1000.0))
    k.connection_state_remove(conn("10.0.0.1", "8.8.8.8", 443, ts=1000.0 + 86399))
    k.connection_state_remove(conn("10.0.0.1", "8.8.8.8", 443, ts=1000.0 + 86400.5))
    assert [r[0] for r in rows(sink, "known_hosts")] == [1000.0, 1000.0 + 86400.5]


def test_services_follow_zeeks_rules() -> None:
    k, sink = tracker()
    done = k.connection_state_remove
    done(conn("8.8.8.8", "10.0.0.9", 443, service="ssl", ts=10.0))
    done(conn("8.8.8.8", "10.0.0.9", 443, service="ssl", ts=11.0))              # known already
    done(conn("8.8.8.8", "10.0.0.9", 443, service="ssl,http", ts=12.0))         # only the new one
    done(conn("10.0.0.9", "8.8.8.8", 443, service="ssl", ts=13.0))              # remote server
    done(conn("8.8.8.8", "10.0.0.9", 20, service="ftp-data", ts=14.0))          # ftp data: never
    done(conn("8.8.8.8", "10.0.0.9", 53, proto="udp", service="dns", resp_bytes=0, ts=15.0))
    done(conn("8.8.8.8", "10.0.0.9", 53, proto="udp", service="dns", resp_pkts=0, resp_bytes=0, ts=16.0))
    done(conn("8.8.8.8", "10.0.0.9", 123, proto="udp", service="ntp", resp_pkts=0, resp_bytes=0, ts=17.0))
    done(conn("8.8.8.8", "10.0.0.9", 5353, proto="udp", service="dns", resp_bytes=40, ts=18.0))
    done(conn("8.8.8.8", "10.0.0.9", 8080, history="S", service=None, ts=19.0))  # no SYN-ACK
    done(conn("8.8.8.8", "10.0.0.9", 22, service="-ssh", history="ShAdDa", ts=20.0))   # violated
    done(conn("8.8.8.8", "10.0.0.9", 1, proto="icmp", service=None, ts=21.0))
    got = rows(sink, "known_services")
    assert got[:3] == [(10.0, "10.0.0.9", 443, "tcp", ["SSL"]), (12.0, "10.0.0.9", 443, "tcp", ["HTTP"]),
                       (18.0, "10.0.0.9", 5353, "udp", ["DNS"])]
    # a port without a protocol is committed 5 minutes (network time) later, with an empty service
    assert len(got) == 3
    done(conn("1.2.3.4", "10.0.0.5", 9999, ts=30.0))
    assert len(rows(sink, "known_services")) == 3
    k.connection_state_remove(conn("1.2.3.4", "10.0.0.5", 9999, ts=400.0))
    assert rows(sink, "known_services")[3:] == [(21.0, "10.0.0.9", 22, "tcp", [""]),
                                                 (31.0, "10.0.0.5", 9999, "tcp", [""])]
    k.finish()      # the one scheduled at 401 runs at the end (as Zeek runs timers at exit)
    assert len(rows(sink, "known_services")) == 5


def _standalone(trace: Path, logdir: Path) -> None:
    cfg = AnalysisConfig()
    sink = DirectoryLogSink(logdir, "tsv")
    k = known.standalone(cfg, sink)
    eng = Engine(cfg, sink, k)
    src = open_source(str(trace))
    try:
        for b in src.batches():
            eng.process_batch(b)
    finally:
        src.close()
    eng.finish()
    k.finish()
    sink.close()


def _keys(path: Path) -> collections.Counter:
    """Rows without ts (a cluster logs the row of whichever worker reached the store first)."""
    log = read_tsv(path)
    return collections.Counter(tuple(str(r[f]) for f in log.fields if f != "ts") for r in log.rows())


@pytest.mark.skipif(not SAMPLE.is_file(), reason="samples/sample.pcap not present")
def test_cluster_logs_each_host_and_service_once_like_standalone(tmp_path: Path) -> None:
    _standalone(SAMPLE, tmp_path / "alone")
    summary = run_local(SAMPLE, workers=3, proxies=2, logdir=tmp_path / "cluster", progress=False,
                        scripts=[str(SCRIPT)])
    assert summary["ok"], summary["problems"]
    for log in ("known_hosts", "known_services"):
        alone = _keys(tmp_path / "alone" / f"{log}.log")
        clustered = _keys(tmp_path / "cluster" / f"{log}.log")
        assert len(alone) > 20 and max(alone.values()) == 1
        assert max(clustered.values()) == 1, [k for k, n in clustered.items() if n > 1][:5]
        assert clustered == alone
    # the work really was spread: more than one worker wrote rows, the proxies held the keys
    logged = [summary["nodes"][w]["logs"]["records"].get("known_hosts", 0) for w in
              ("worker-1", "worker-2", "worker-3")]
    assert sum(1 for n in logged if n) >= 2
    assert sum(summary["nodes"][p]["store"]["ops"] for p in ("proxy-1", "proxy-2")) > 0


@pytest.mark.skipif(not SAMPLE.is_file(), reason="samples/sample.pcap not present")
def test_the_node_script_works_in_standalone_script_mode(tmp_path: Path) -> None:
    """``starling analyze --script cluster/frameworks/known_script.py`` (the one-process runner)
    loads the same script a cluster loads and writes the same rows as :func:`known.standalone`."""
    local = pytest.importorskip("cluster.frameworks.local")
    _standalone(SAMPLE, tmp_path / "alone")
    try:
        local.analyze_with_scripts(SAMPLE, tmp_path / "script", [str(SCRIPT)])
    finally:
        known.unload()       # this process's registry serves later tests too
    from cluster import api
    assert not any(h for hs in api.registry().handlers.values() for h in hs
                   if getattr(h, "__module__", "") == known.__name__)
    for log in ("known_hosts", "known_services"):
        assert _keys(tmp_path / "script" / f"{log}.log") == _keys(tmp_path / "alone" / f"{log}.log")


def test_without_a_store_rows_are_written_once_per_worker_not_per_connection() -> None:
    """No proxy answers (none configured, or all down): Zeek's timeout branch logs anyway; we
    still do not repeat a host or service for every connection."""
    class NoStore:
        def submit(self, ops, callback):
            callback(None)

    sink = ListLogSink()
    k = known.Known(NoStore(), sink.write, AnalysisConfig(local_nets=("10.0.0.0/8",),
                                                          private_address_space_is_local=False).local_netset())
    for i in range(5):
        k.connection_state_remove(conn("10.0.0.1", "10.0.0.2", 443, service="ssl", ts=100.0 + i))
    k.connection_state_remove(conn("10.0.0.1", "10.0.0.2", 443, service="ssl,http", ts=200.0))
    assert sorted(r.host for r in sink.records["known_hosts"]) == ["10.0.0.1", "10.0.0.2"]
    assert [r.service for r in sink.records["known_services"]] == [["SSL"], ["HTTP"]]
    assert k.counts["store_timeouts"] >= 4

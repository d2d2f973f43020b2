"""The cluster logging framework: batch codec, logger-side writing/resume/rotation, shipping,
and, with real processes, two loggers, rotation and a logger killed -9 mid-run."""

from __future__ import annotations

import collections
import gzip
import io
import re
import signal
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.conn.record import conn_record_type
from analysis.engine import analyze_file
from analysis.logs.files import WRITERS
from analysis.logs.reader import read_tsv
from analysis.logs.schema import (Count, Double, Int, LogRecord, String, Time, field, log_stream,
                                  set_of, vector_of)
from cluster.layout import Layout
from cluster.logging.codec import BatchError, LogDecoder, LogEncoder
from cluster.logging.service import LogWriterService, archive_name, next_rotation
from cluster.logging.shipper import LogShipper, logger_for
from cluster.run import count_rows, run_local
from tests.cluster_procs import SLOW_SCRIPT, ProcCluster

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "sample.pcap"
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason="samples/sample.pcap not present")


@log_stream("test_odd")
class Odd(LogRecord, kw_only=True):
    ts: Time
    text: String
    keyword: String = field(name="from")          # not a Python identifier on the wire side
    n: Count | None = None
    delta: Int | None = None
    ratio: Double | None = None
    tags: set_of("string") | None = None
    sizes: vector_of("count") | None = None


ODD_RECORDS = [
    Odd(ts=1.5, text="plain", keyword="a"),
    Odd(ts=1700000000.123456, text="tab\there, \\ and bytes \udcff\udcfe", keyword="-", n=2**63,
        delta=-5, ratio=0.1, tags=["x,y", "", "-"], sizes=[]),
    Odd(ts=0.0, text="ünïcødé ✓", keyword="(empty)", ratio=float("nan"), tags=[], sizes=[1, 2, 3]),
]


def _conn_records():
    T = conn_record_type(("mac", "vlan"))
    names = {f for f in T.__struct_fields__}
    base = dict(ts=1700000000.5, uid="CabcdEFGH1234567", orig_h="10.0.0.1", orig_p=1234,
                resp_h="2001:db8::1", resp_p=80, proto="tcp", duration=1.25, tunnel_parents=["Cx"])
    extra = {n: ("00:11:22:33:44:55" if n.endswith("l2_addr") else 7) for n in names - set(base)
             if n in ("orig_l2_addr", "resp_l2_addr", "vlan", "inner_vlan")}
    return [T(**base, **extra), T(**{**base, "orig_p": 1}, **extra)]


def _render(fmt, path, records, record_type):
    buf = io.BytesIO()
    w = WRITERS[fmt](buf, path, record_type, open_time=1.0)
    w.write_many(records)
    w.close(2.0)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["tsv", "json"])
@pytest.mark.parametrize("case", ["odd", "conn_extended"])
def test_codec_round_trip_writes_identical_bytes(fmt, case):
    """Records rebuilt from the batch header alone render byte for byte like the originals."""
    path, records = ("test_odd", ODD_RECORDS) if case == "odd" else ("conn", _conn_records())
    data = LogEncoder().encode(path, records)
    got_path, t, decoded = LogDecoder().decode(data)
    assert got_path == path and t is not type(records[0])
    assert _render(fmt, path, decoded, t) == _render(fmt, path, records, type(records[0]))


def test_decoder_caches_types_per_header():
    enc, dec = LogEncoder(), LogDecoder()
    _, t1, _ = dec.decode(enc.encode("test_odd", ODD_RECORDS[:1]))
    _, t2, _ = dec.decode(enc.encode("test_odd", ODD_RECORDS[1:]))
    assert t1 is t2


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\xc1", msgspec.msgpack.encode([2, "conn", [["ts", "time"]], [[1.0]]]),
    msgspec.msgpack.encode([1, "../etc", [["ts", "time"]], [[1.0]]]),
    msgspec.msgpack.encode([1, "conn", [["ts", "time; rm"]], [[1.0]]]),
    msgspec.msgpack.encode([1, "conn", [], []]),
    msgspec.msgpack.encode([1, "conn", [["ts", "time"], ["ts", "time"]], []]),
    msgspec.msgpack.encode([1, "conn", [["ts", "time"]], [["not a time"]]]),
    msgspec.msgpack.encode([1, "conn", [["n", "count"]], [[[1, 2]]]]),
    msgspec.msgpack.encode([1, "conn", [["ts", "time"]], [[1.0, 2.0, 3.0]]]),
])
def test_malformed_batches_raise_batch_error(data):
    with pytest.raises(BatchError):
        LogDecoder().decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(
    lambda a, b, c, d: msgspec.msgpack.encode([a, b, c, d]),
    st.integers(0, 2), st.sampled_from(["conn", "", "a/b"]),
    st.lists(st.tuples(st.sampled_from(["ts", "n", "s", "v"]),
                       st.sampled_from(["time", "count", "string", "set[string]", "bogus[", "int"])), max_size=3),
    st.lists(st.lists(st.one_of(st.none(), st.integers(-2**63, 2**64 - 1), st.floats(), st.text(max_size=4),
                                st.binary(max_size=3), st.lists(st.text(max_size=2), max_size=2)), max_size=3),
             max_size=3)))
def test_decoder_never_raises_anything_but_batch_error(data):
    try:
        LogDecoder().decode(data)
    except BatchError:
        pass


# ---- the logger side --------------------------------------------------------------------------

class _Batch:
    def __init__(self, data):
        self.data = data


def _batches(n, start=0, per=3):
    enc = LogEncoder()
    return [_Batch(enc.encode("test_odd", [Odd(ts=float(start + i * per + j), text=f"r{start + i * per + j}",
                                                 keyword="k") for j in range(per)]))
            for i in range(n)]


def _texts(path):
    return [r["text"] for r in read_tsv(path).rows()]


def test_resume_cuts_uncommitted_rows_and_continues_without_second_header(tmp_path):
    svc = LogWriterService(tmp_path)
    b = _batches(4)
    for x in b[:2]:
        ckpt = svc.handle(x)
    committed = msgspec.msgpack.decode(msgspec.msgpack.encode(ckpt))   # what the ack store holds
    svc.handle(b[2])                        # written, flushed, but never committed: a crash now
    f = tmp_path / "test_odd.log"
    assert len(_texts(f)) == 9
    svc2 = LogWriterService(tmp_path)
    svc2.resume(committed)
    assert len(_texts(f)) == 6              # cut back at once
    for x in b[2:]:                         # the sender resends what was not acknowledged
        svc2.handle(x)
    svc2.close()
    data = f.read_bytes()
    assert data.count(b"#fields") == 1 and data.count(b"#close") == 1
    assert _texts(f) == [f"r{i}" for i in range(12)]


def test_resume_restarts_a_file_created_after_the_last_commit(tmp_path):
    svc = LogWriterService(tmp_path)
    ckpt = msgspec.msgpack.decode(msgspec.msgpack.encode(svc.handle(_batches(1)[0])))
    f = tmp_path / "test_odd.log"
    f.unlink()                                          # e.g. replaced after the commit
    f.write_bytes(b"#separator \\x09\ngarbage row\n")
    svc2 = LogWriterService(tmp_path)
    svc2.resume(ckpt)
    for x in _batches(1):
        svc2.handle(x)
    svc2.close()
    assert _texts(f) == ["r0", "r1", "r2"] and b"garbage" not in f.read_bytes()


def test_resume_keeps_a_committed_file_whose_header_does_not_match(tmp_path):
    """A committed file that does not start with the header the writer would write (here another
    #open time) is never appended to under a wrong header, nor thrown away: its committed rows
    were acknowledged.  It is kept under a new name and a fresh file is started."""
    svc = LogWriterService(tmp_path)
    ckpt = msgspec.msgpack.decode(msgspec.msgpack.encode(svc.handle(_batches(1)[0])))
    f = tmp_path / "test_odd.log"
    committed = f.read_bytes()
    ckpt["test_odd"][2] += 3600.0           # the checkpoint's open time no longer matches #open
    svc2 = LogWriterService(tmp_path)
    svc2.resume(ckpt)
    svc2.handle(_batches(1, start=3)[0])
    svc2.close()
    assert (tmp_path / "test_odd.log.1").read_bytes() == committed
    assert _texts(f) == ["r3", "r4", "r5"] and f.read_bytes().count(b"#fields") == 1


def test_failed_write_leaves_a_clean_row_boundary(tmp_path):
    """After an OSError mid-write the partial rows are cut from the file and discarded from the
    writer, so the resent batch starts on a clean line (and the header is still there)."""
    svc = LogWriterService(tmp_path, buffer_size=1 << 20)
    svc.handle(_batches(1)[0])
    f = tmp_path / "test_odd.log"
    good = f.read_bytes()
    o = svc._files["test_odd"]
    real = o.file
    o.file = open("/dev/full", "wb", buffering=0)   # the disk is full now  # noqa: SIM115
    o.writer._file = o.file
    with pytest.raises(OSError):
        svc.handle(_batches(1, start=3)[0])
    o.file.close()
    o.file = o.writer._file = real
    assert f.read_bytes() == good
    svc.handle(_batches(1, start=3)[0])                 # the resend
    svc.close()
    assert _texts(f) == [f"r{i}" for i in range(6)]


def test_malformed_batch_is_counted_not_raised(tmp_path):
    svc = LogWriterService(tmp_path)
    svc.handle(_Batch(b"\x93garbage"))
    assert svc.malformed == 1 and svc.rows == {}


def test_rotation_archives_as_zeekctl_does(tmp_path):
    t = [time.mktime((2026, 11, 27, 10, 0, 5, 0, 0, -1))]
    svc = LogWriterService(tmp_path, rotation_interval=3600, gzip_archives=True, clock=lambda: t[0])
    assert svc.next_rotation == time.mktime((2026, 11, 27, 11, 0, 0, 0, 0, -1))
    for x in _batches(2):
        svc.handle(x)
    assert (tmp_path / "current" / "test_odd.log").exists()
    t[0] = svc.next_rotation
    assert svc.rotation_due()
    todo = svc.rotate()
    arch = tmp_path / "2026-11-27" / "test_odd.10:00:05-11:00:00.log"
    assert todo == [str(arch)] and arch.exists()
    assert not (tmp_path / "current" / "test_odd.log").exists()
    gz = LogWriterService.compress(str(arch))
    assert gz.endswith(".log.gz") and not arch.exists()
    rows = [r for r in gzip.open(gz).read().decode().splitlines() if not r.startswith("#")]
    assert len(rows) == 6
    t[0] += 30
    for x in _batches(1, start=6):
        svc.handle(x)
    for fn in svc.close():                      # shutdown archives the open file too
        LogWriterService.compress(fn)
    assert (tmp_path / "2026-11-27" / "test_odd.11:00:00-11:00:30.log.gz").exists()
    assert svc.next_rotation == time.mktime((2026, 11, 27, 12, 0, 0, 0, 0, -1))


def test_archive_name_and_alignment():
    o = time.mktime((2026, 1, 2, 23, 59, 59, 0, 0, -1))
    assert archive_name("conn", o, o + 2) == ("2026-01-02", "conn.23:59:59-00:00:01.log")
    now = time.mktime((2026, 1, 2, 10, 17, 0, 0, 0, -1))
    assert next_rotation(now, 900) == time.mktime((2026, 1, 2, 10, 30, 0, 0, 0, -1))


# ---- the worker side -------------------------------------------------------------------------

class _FakeSender:
    def __init__(self):
        self.batches = []
        self.pending = 0

    def put(self, data):
        self.batches.append(data)
        return True

    def stats(self):
        return {"dropped": 0}


def test_shipper_batches_by_size_and_time_and_routes_by_stream():
    now = [100.0]
    senders = {"logger-1": _FakeSender(), "logger-2": _FakeSender()}
    sh = LogShipper(senders, batch_records=3, max_delay=0.5, clock=lambda: now[0])
    for r in ODD_RECORDS:
        sh.write("test_odd", r)
    owner = senders[logger_for("test_odd", ["logger-1", "logger-2"])]
    assert len(owner.batches) == 1               # size reached
    sh.write("test_odd", ODD_RECORDS[0])
    sh.tick()
    assert len(owner.batches) == 1
    now[0] += 0.6
    sh.tick()
    assert len(owner.batches) == 2               # time reached
    conn = _conn_records()
    sh.write("test_odd", ODD_RECORDS[0])
    sh.write("test_odd", conn[0])                # another record type: its own batch
    sh.flush()
    dec = LogDecoder()
    types = [dec.decode(b)[1] for b in owner.batches]
    assert len(owner.batches) == 4 and types[2] is not types[3]
    assert sh.records == {"test_odd": 6}
    other = [s for s in senders.values() if s is not owner][0]
    assert other.batches == []


def test_every_stream_has_one_stable_logger():
    loggers = ["logger-1", "logger-2", "logger-3"]
    paths = ["conn", "dns", "http", "ssl", "weird", "files", "notice", "x509", "ssh", "ftp"]
    owners = {p: logger_for(p, loggers) for p in paths}
    assert owners == {p: logger_for(p, list(reversed(loggers))) for p in paths}
    assert len(set(owners.values())) > 1


# ---- real processes ---------------------------------------------------------------------------

STREAMS_SCRIPT = '''
from cluster import api as cluster
from analysis.logs.schema import LogRecord, String, Time, log_stream

@log_stream("copy_a")
class A(LogRecord, kw_only=True):
    ts: Time
    orig_h: String

@log_stream("copy_b")
class B(LogRecord, kw_only=True):
    ts: Time
    orig_h: String

@cluster.on("connection_state_remove")
def copy(c):
    cluster.log_write("copy_a", A(ts=c.ts, orig_h=c.orig_h))
    cluster.log_write("copy_b", B(ts=c.ts, orig_h=c.orig_h))
'''


@needs_sample
@pytest.mark.timeout(120)
def test_two_loggers_one_file_per_stream(tmp_path):
    script = tmp_path / "streams.py"
    script.write_text(STREAMS_SCRIPT)
    out = tmp_path / "logs"
    s = run_local(SAMPLE, workers=2, loggers=2, logdir=out, proxies=0, progress=False, scripts=[str(script)])
    assert s["ok"], s["problems"]
    writers = {n: st["writer"]["rows"] for n, st in s["nodes"].items() if n.startswith("logger")}
    assert set(writers) == {"logger-1", "logger-2"}
    streams = set(s["rows"])
    assert {"conn", "copy_a", "copy_b"} <= streams
    for p in streams:
        owners = [n for n, rows in writers.items() if rows.get(p)]
        assert owners == [logger_for(p, ["logger-1", "logger-2"])], p
        assert sorted(f.name for f in out.rglob(f"{p}.*log*")) == [f"{p}.log"]
    assert all(writers.values()), writers            # both loggers did write something
    assert s["rows"]["copy_a"] == s["rows"]["copy_b"] == s["rows"]["conn"]


@needs_sample
@pytest.mark.timeout(120)
def test_cluster_rotation_archive_layout(tmp_path):
    layout = Layout.local(SAMPLE, workers=2, loggers=2, proxies=0, log_dir=tmp_path / "logs",
                          rotation_interval=1, gzip_archives=True)
    c = ProcCluster(layout, tmp_path / "run")
    try:
        c.start_all()
        assert all(v == 0 for v in c.wait_workers(60).values())
        time.sleep(1.3)                             # at least one interval boundary passes
        codes = c.stop_all()
        assert all(v == 0 for v in codes.values()), codes
    finally:
        c.kill_all()
    logdir = layout.log_dir
    assert list((logdir / "current").iterdir()) == []
    archives = sorted(p for p in logdir.glob("*/*") if p.parent.name != "current" and p.parent.name != ".state")
    pat = re.compile(r"[a-z0-9_]+\.\d\d:\d\d:\d\d-\d\d:\d\d:\d\d(-\d+)?\.log\.gz$")
    assert archives and all(re.fullmatch(r"\d{4}-\d\d-\d\d", p.parent.name) for p in archives)
    assert all(pat.match(p.name) for p in archives), [p.name for p in archives]
    rows = collections.Counter()
    for p in archives:
        for line in gzip.open(p).read().decode().splitlines():
            if not line.startswith("#"):
                rows[p.name.split(".")[0]] += 1
    sa = tmp_path / "sa"
    analyze_file(SAMPLE, sa)
    assert rows == {f.stem: count_rows(f) for f in sa.glob("*.log")}


@needs_sample
@pytest.mark.timeout(180)
def test_logger_killed_9_mid_run_loses_and_duplicates_nothing(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    layout = Layout.local(SAMPLE, workers=2, proxies=0, log_dir=tmp_path / "logs")
    c = ProcCluster(layout, tmp_path / "run", scripts=[str(script)], env={"STARLING_TEST_DELAY": "0.01"})
    try:
        c.start_all()
        c.wait_event("worker-1", "intake_started")
        deadline = time.monotonic() + 20
        before = 0
        while before == 0 and time.monotonic() < deadline:    # kill once rows are being written
            time.sleep(0.1)
            before = sum(count_rows(f) for f in layout.log_dir.glob("*.log"))
        running = [n.name for n in layout.workers if c.procs[n.name].poll() is None]
        c.procs["logger-1"].send_signal(signal.SIGKILL)
        assert c.wait("logger-1", 10) == -signal.SIGKILL
        time.sleep(0.5)                            # workers keep going; batches queue up
        c.start("logger-1")
        codes = c.wait_workers(90)
        codes.update(c.stop_all())
    finally:
        c.kill_all()
    assert all(v == 0 for v in codes.values()), (codes, {n: c.stderr(n)[-500:] for n in codes},
                                                   [c.final_stats(n)["logs"] for n in ("worker-1", "worker-2")])
    assert before > 0 and running                  # the kill really hit a run in progress
    restarted = c.final_stats("logger-1")["writer"]
    assert restarted["duplicates"] + restarted["received"] > 0
    sa = tmp_path / "sa"
    analyze_file(SAMPLE, sa)
    from tests.test_cluster_run import assert_same_logs
    assert_same_logs(sa, layout.log_dir)
    for f in layout.log_dir.glob("*.log"):
        data = f.read_bytes()
        assert data.count(b"#fields") == 1 and data.count(b"#close") == 1, f.name

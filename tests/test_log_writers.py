"""Zeek log writers: byte-exact TSV against Zeek's baselines, JSON, escaping, tools, the sink."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pathlib
import subprocess
import sys
import time

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.logs import schema
from analysis.logs.base import LogWriteError
from analysis.logs.files import DirectoryLogSink
from analysis.logs.jsonl import JsonWriter
from analysis.logs.reader import parse_value, read_json, read_tsv
from analysis.logs.schema import (
    Addr, Bool, Count, Double, Enum, Interval, LogRecord, Port, String, Time, columns, field, set_of,
    vector_of,
)
from analysis.logs.tsv import TsvWriter, tsv_date

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFORMANCE = pathlib.Path(os.environ.get("STARLING_CONFORMANCE", REPO.parent / "shared" / "conformance"))
BASELINES = CONFORMANCE / "zeek" / "baselines"
MASK = b"XXXX"


# --- record types built from a baseline's #fields/#types ---------------------------------------

_SCALARS = {"time": Time, "interval": Interval, "double": Double, "count": Count, "int": schema.Int,
            "port": Port, "bool": Bool, "string": String, "enum": Enum, "addr": Addr,
            "subnet": schema.Subnet}


def _annotation(zeek_type: str):
    if zeek_type.startswith("set["):
        return set_of(zeek_type[4:-1])
    if zeek_type.startswith("vector["):
        return vector_of(zeek_type[7:-1])
    return _SCALARS[zeek_type]


def record_type_for(fields: list[str], types: list[str]) -> type[LogRecord]:
    """A LogRecord type with exactly these Zeek columns (``id.orig_h`` -> attribute ``id_orig_h``)."""
    spec = [(f.replace(".", "_"), _annotation(t) | None, msgspec.field(name=f, default=None))
            for f, t in zip(fields, types)]
    return msgspec.defstruct("BaselineRecord", spec, bases=(LogRecord,), kw_only=True)


def baseline_files() -> list[pathlib.Path]:
    if not BASELINES.is_dir():
        return []
    return sorted(p for p in BASELINES.glob("*/*.log") if b"\n#fields\t" in p.read_bytes())


def _placeholder(zeek_type: str):
    return {"time": 0.0, "interval": 0.0, "double": 0.0, "count": 0, "int": 0, "port": 0}.get(zeek_type, "m")


def _load_baseline(path: pathlib.Path):
    """(parsed log, record type, records); masked cells are read as 0.0 and skipped in checks."""
    log = read_tsv(path)
    rtype = record_type_for(log.fields, log.types)
    cols = columns(rtype)
    records = []
    for raw in log.raw_rows:
        values = {}
        for col, t, cell in zip(cols, log.types, raw):
            values[col.attr] = _placeholder(t) if MASK in cell else parse_value(cell, t)
        records.append(rtype(**values))
    return log, rtype, records


def _header_lines(data: bytes) -> list[bytes]:
    return [ln for ln in data.split(b"\n") if ln.startswith(b"#") and not ln.startswith(
        (b"#open", b"#close", b"###"))]


def _row_lines(data: bytes) -> list[bytes]:
    return [ln for ln in data.split(b"\n") if ln and not ln.startswith(b"#")]


needs_corpus = pytest.mark.skipif(not BASELINES.is_dir(), reason="conformance corpus not available")
BASELINE_FILES = baseline_files()


@needs_corpus
@pytest.mark.parametrize("path", BASELINE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tsv_byte_exact_against_zeek_baseline(path: pathlib.Path) -> None:
    log, rtype, records = _load_baseline(path)
    out = io.BytesIO()
    w = TsvWriter(out, log.path, rtype, open_time=0.0)
    w.write_many(records)
    w.close(0.0)
    base = path.read_bytes()
    assert _header_lines(out.getvalue()) == _header_lines(base)
    ours, theirs = _row_lines(out.getvalue()), _row_lines(base)
    assert len(ours) == len(theirs)
    for o, b in zip(ours, theirs):
        if MASK not in b:
            assert o == b
        else:  # compare cell by cell, skipping the masked ones
            oc, bc = o.split(b"\t"), b.split(b"\t")
            assert len(oc) == len(bc)
            assert [x for x, y in zip(oc, bc) if MASK not in y] == [y for y in bc if MASK not in y]


def _compare_logs_module():
    spec = importlib.util.spec_from_file_location("compare_logs", CONFORMANCE / "compare_logs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("compare_logs", mod)
    spec.loader.exec_module(mod)
    return mod


# A spread of logs: sets/unsets (conn, http), weird, escapes (odd-url), vectors of intervals (dns),
# doubles (files), set[enum] (http tags).
COMPARATOR_CASES = [
    "core.tunnels.gre/conn.log", "core.tunnels.gre/tunnel.log",
    "scripts.base.frameworks.logging.ascii-escape-odd-url/http.log",
    "scripts.base.protocols.http.bad-content-range/weird.log",
    "scripts.base.protocols.http.bad-content-range/http.log",
    "scripts.base.protocols.dns.flip/dns.log", "scripts.base.protocols.ssl.ecdsa/ssl.log",
    "scripts.policy.protocols.ssl.certificate-request-info/ssl.log",
    "scripts.base.frameworks.file-analysis.big-bof-buffer/files.log",
]


@needs_corpus
@pytest.mark.parametrize("fmt", ["tsv", "json"])
@pytest.mark.parametrize("case", COMPARATOR_CASES)
def test_comparator_scores_written_copy_as_passed(case: str, fmt: str, tmp_path) -> None:
    base = BASELINES / case
    if not base.exists():
        pytest.skip(f"{case} not in corpus")
    compare = _compare_logs_module()
    log, rtype, records = _load_baseline(base)
    sink = DirectoryLogSink(tmp_path, fmt=fmt)
    for r in records:
        sink.write(log.path, r)
    sink.close()
    ours = tmp_path / f"{log.path}.log"
    res = compare.compare_logs(base, ours)
    report = res.to_dict()
    assert res.passed, report
    assert report["rows"]["matched"] == len(records) > 0


# --- escaping ------------------------------------------------------------------------------------

@schema.log_stream("test_escape")
class Esc(LogRecord, kw_only=True):
    s: String | None = None
    ss: set_of("string") | None = None
    vs: vector_of("string") | None = None
    e: Enum | None = None


def tsv_row(record: LogRecord) -> bytes:
    out = io.BytesIO()
    w = TsvWriter(out, "test_escape", type(record), open_time=0.0)
    w.write(record)
    w.close(0.0)
    rows = _row_lines(out.getvalue())
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize("value, expected", [
    ("plain", b"plain"),
    ("a\tb", b"a\\x09b"),
    ("line\nbreak\r", b"line\\x0abreak\\x0d"),
    ("back\\slash", b"back\\\\slash"),
    ("del\x7f", b"del\\x7f"),
    ("nul\x00bell\x07", b"nul\\x00bell\\x07"),
    ("foo \n\t\x00 bar", b"foo \\x0a\\x09\\x00 bar"),  # Zeek's ascii-utf8-enabled-control-characters
    (b"r\xfchma".decode("utf-8", "surrogateescape"), b"r\\xfchma"),  # invalid UTF-8 byte
    (b"\xe2\x82".decode("utf-8", "surrogateescape") + "A", b"\\xe2\\x82A"),  # truncated sequence
    ("caf\u00e9 \U0001F604", "caf\u00e9 \U0001F604".encode()),  # valid UTF-8 passes through
    ("a,b", b"a,b"),  # the set separator is plain outside containers
    ("-", b"\\x2d"),
    ("(empty)", b"\\x28empty)"),
    ("", b"(empty)"),
    ("--", b"--"),
])
def test_tsv_string_escaping(value: str, expected: bytes) -> None:
    assert tsv_row(Esc(s=value)) == expected + b"\t-\t-\t-"


def test_tsv_container_escaping_and_empty_vs_unset() -> None:
    assert tsv_row(Esc(ss=["a,b", "-", "", "x\ty"], vs=[])) == b"-\ta\\x2cb,\\x2d,(empty),x\\x09y\t(empty)\t-"
    assert tsv_row(Esc(ss=None, vs=None, e="T")) == b"-\t-\t-\tT"


def test_tsv_recombines_split_utf8_from_surrogates() -> None:
    # Two strings each holding half of "é" as escaped bytes: concatenated, the bytes are valid.
    half1 = b"\xc3".decode("utf-8", "surrogateescape")
    half2 = b"\xa9".decode("utf-8", "surrogateescape")
    assert tsv_row(Esc(s=half1 + half2)) == "é".encode() + b"\t-\t-\t-"


def test_tsv_row_starting_with_hash_is_escaped() -> None:
    assert tsv_row(Esc(s="#not a comment")) == b"\\x23not a comment\t-\t-\t-"


class Nums(LogRecord, kw_only=True):
    t: Time | None = None
    i: Interval | None = None
    d: Double | None = None
    c: Count | None = None
    n: schema.Int | None = None
    p: Port | None = None
    b: Bool | None = None
    a: Addr | None = None
    vi: vector_of("interval") | None = None
    sc: set_of("count") | None = None


def test_tsv_numbers() -> None:
    row = tsv_row(Nums(t=1300475167.0965352, i=-0.5, d=1.5, c=2**64 - 1, n=-3, p=443, b=True,
                       a="2001:db8::1", vi=[0.25, 1.0], sc=[1, 2]))
    assert row == (b"1300475167.096535\t-0.500000\t1.5\t18446744073709551615\t-3\t443\tT\t2001:db8::1\t"
                   b"0.250000,1.000000\t1,2")
    assert tsv_row(Nums(t=-0.0, i=3e9, b=False)) == b"0.000000\t3e+09\t-\t-\t-\t-\tF\t-\t-\t-"


# Zeek's testing/btest/Baseline/scripts.base.frameworks.logging.ascii-double (test.log, json.log)
_DMAX, _DMIN, _INF = 1.79e308, 2.23e-308, float("inf")
DOUBLES = [2153226000.0, 2153226000.1, 2153226000.123456789, 1.0, 1.1, 1.123456789, -1.123456789,
           1.1234, .1234, 5e4, -5e4, 3.14e15, -3.14e15, _DMAX, -_DMAX, 1.23456789e-5, _DMIN, -_DMIN,
           _INF, -_INF, -0.0, float("nan")]
DOUBLES_TSV = ["2153226000.0", "2153226000.1", "2153226000.123457", "1.0", "1.1", "1.123457",
               "-1.123457", "1.1234", "0.1234", "50000.0", "-50000.0", "3140000000000000.0",
               "-3140000000000000.0", "%d.0" % int(_DMAX), "-%d.0" % int(_DMAX), "0.000012", "0.0",
               "-0.0", "inf", "-inf", "0.0", "nan"]
DOUBLES_JSON = ["2153226000.0", "2153226000.1", "2153226000.123457", "1.0", "1.1", "1.123456789",
                "-1.123456789", "1.1234", "0.1234", "50000.0", "-50000.0", "3140000000000000.0",
                "-3140000000000000.0", "1.79e308", "-1.79e308", "0.0000123456789", "2.23e-308",
                "-2.23e-308", "null", "null", "-0.0", "null"]


class D(LogRecord, kw_only=True):
    d: Double


def test_doubles_as_zeek_writes_them() -> None:
    out_t, out_j = io.BytesIO(), io.BytesIO()
    with TsvWriter(out_t, "test", D, open_time=0.0) as wt, JsonWriter(out_j, "test", D) as wj:
        wt.write_many([D(d=v) for v in DOUBLES])
        wj.write_many([D(d=v) for v in DOUBLES])
    assert _row_lines(out_t.getvalue()) == [s.encode() for s in DOUBLES_TSV]
    assert out_j.getvalue().decode().splitlines() == ['{"d":%s}' % s for s in DOUBLES_JSON]


# --- header, close, rotation ---------------------------------------------------------------------

def test_header_and_close_lines(tmp_path) -> None:
    opened, closed = 1300475167.5, 1300475200.0
    w = TsvWriter(tmp_path / "x.log", "weird", Esc, open_time=opened)
    w.write(Esc(s="a"))
    w.close(closed)
    lines = (tmp_path / "x.log").read_bytes().split(b"\n")
    assert lines[:8] == [b"#separator \\x09", b"#set_separator\t,", b"#empty_field\t(empty)",
                         b"#unset_field\t-", b"#path\tweird",
                         b"#open\t" + tsv_date(opened).encode(), b"#fields\ts\tss\tvs\te",
                         b"#types\tstring\tset[string]\tvector[string]\tenum"]
    assert lines[8:] == [b"a\t-\t-\t-", b"#close\t" + tsv_date(closed).encode(), b""]
    assert tsv_date(opened) == time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(opened))


def test_rotation_is_close_and_reopen(tmp_path) -> None:
    a, b = tmp_path / "conn.log", tmp_path / "conn.2026-01-01.log"
    w = TsvWriter(a, "conn", Esc, open_time=0.0)
    w.write(Esc(s="first"))
    w.close(1.0)
    w2 = TsvWriter(b, "conn", Esc, open_time=1.0)
    w2.write(Esc(s="second"))
    w2.close(2.0)
    assert [r["s"] for r in read_tsv(a).rows()] == ["first"]
    assert [r["s"] for r in read_tsv(b).rows()] == ["second"]
    assert a.read_bytes().rstrip(b"\n").split(b"\n")[-1].startswith(b"#close\t")
    with pytest.raises(LogWriteError):
        w.write(Esc(s="late"))


def test_caller_owned_file_stays_open() -> None:
    out = io.BytesIO()
    TsvWriter(out, "x", Esc, open_time=0.0).close(0.0)
    assert not out.closed and out.getvalue().startswith(b"#separator")


def test_bad_values_give_clear_error_and_keep_good_records() -> None:
    out = io.BytesIO()
    w = TsvWriter(out, "n", Nums, open_time=0.0)
    with pytest.raises(LogWriteError, match="1 record"):
        w.write_many([Nums(c=1), Nums(t="not a time"), Nums(c=3)])  # type: ignore[arg-type]
    with pytest.raises(LogWriteError, match="not a LogRecord"):
        w.write({"c": 1})  # type: ignore[arg-type]
    w.close(0.0)
    assert [r["c"] for r in read_tsv(out.getvalue()).rows()] == [1, 3]


# --- JSON ----------------------------------------------------------------------------------------

def test_json_lines_round_trip() -> None:
    out = io.BytesIO()
    w = JsonWriter(out, "n", Nums)
    w.write_many([Nums(t=1300475167.096535, i=0.25, c=7, p=53, b=False, a="10.0.0.1", vi=[], sc=[1, 2]),
                  Nums()])
    w.close()
    rows = read_json(out.getvalue())
    assert rows == [{"t": 1300475167.096535, "i": 0.25, "c": 7, "p": 53, "b": False, "a": "10.0.0.1",
                     "vi": [], "sc": [1, 2]}, {}]
    assert out.getvalue().split(b"\n")[1] == b"{}"


def test_json_string_escaping() -> None:
    out = io.BytesIO()
    with JsonWriter(out, "e", Esc) as w:
        w.write(Esc(s=b"a\"b\\c\n\t\x07\x7f\xfc\xc3\xa9".decode("utf-8", "surrogateescape"),
                    ss=["x,y", "-"]))
    line = out.getvalue().rstrip(b"\n")
    assert line == b'{"s":"a\\"b\\\\c\\n\\t\\\\x07\\\\x7f\\\\xfc\xc3\xa9","ss":["x,y","-"]}'
    assert json.loads(line) == {"s": 'a"b\\c\n\t\\x07\\x7f\\xfcé', "ss": ["x,y", "-"]}


_text = st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")) | st.text(max_size=20)


@settings(max_examples=200, deadline=None)
@given(s=_text, ss=st.lists(_text, max_size=4))
def test_tsv_round_trips_any_bytes_and_json_always_parses(s: str, ss: list[str]) -> None:
    row = tsv_row(Esc(s=s, ss=ss))
    assert b"\n" not in row and row.count(b"\t") == 3
    back = next(read_tsv(b"#fields\ts\tss\tvs\te\n#types\tstring\tset[string]\tvector[string]\tenum\n"
                         + row).rows())
    original = s.encode("utf-8", "surrogateescape")
    assert back["s"].encode("utf-8", "surrogateescape") == original
    if ss and not (len(ss) == 1 and ss[0] == ""):  # [""] and [] are both "(empty)" in Zeek's format
        assert [e.encode("utf-8", "surrogateescape") for e in back["ss"]] == [
            e.encode("utf-8", "surrogateescape") for e in ss]
    out = io.BytesIO()
    with JsonWriter(out, "e", Esc) as w:
        w.write(Esc(s=s, ss=ss))
    assert json.loads(out.getvalue())["s"] == _json_text_of(original)


def _json_text_of(raw: bytes) -> str:
    """Spec of Zeek's legacy JSON string policy: what json.loads gives back for these bytes."""
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:
            out.append("\\x%02x" % (cp - 0xDC00))
        elif (cp < 0x20 and ch not in "\b\f\n\r\t") or cp == 0x7F:
            out.append("\\x%02x" % cp)
        else:
            out.append(ch)
    return "".join(out)


# --- real tools ----------------------------------------------------------------------------------

class Conn(LogRecord, kw_only=True):
    ts: Time
    uid: String
    orig_h: Addr = field(name="id.orig_h")
    orig_p: Port = field(name="id.orig_p")
    resp_h: Addr = field(name="id.resp_h")
    resp_p: Port = field(name="id.resp_p")
    proto: Enum
    service: String | None = None
    duration: Interval | None = None
    tunnel_parents: set_of("string") | None = None


CONNS = [Conn(ts=1300475167.096535, uid="CHhAvVGS1DHFjwGM9", orig_h="141.142.220.202", orig_p=5353,
              resp_h="224.0.0.251", resp_p=5353, proto="udp", service="dns", duration=0.25),
         Conn(ts=1300475168.5, uid="C2", orig_h="fe80::1", orig_p=1, resp_h="ff02::1", resp_p=2,
              proto="tcp", tunnel_parents=["Cx", "Cy"])]


@pytest.mark.skipif(not os.path.exists("/usr/bin/bro-cut"), reason="bro-cut not installed")
def test_bro_cut_reads_our_tsv(tmp_path) -> None:
    with TsvWriter(tmp_path / "conn.log", "conn", Conn) as w:
        w.write_many(CONNS)
    out = subprocess.run(["/usr/bin/bro-cut", "uid", "id.orig_h", "service", "duration", "tunnel_parents"],
                         stdin=open(tmp_path / "conn.log", "rb"), capture_output=True, check=True, timeout=30)
    assert out.stdout.decode().splitlines() == [
        "CHhAvVGS1DHFjwGM9\t141.142.220.202\tdns\t0.250000\t-", "C2\tfe80::1\t-\t-\tCx,Cy"]


def test_zat_reads_our_tsv(tmp_path) -> None:
    zat_reader = pytest.importorskip("zat.zeek_log_reader")
    with TsvWriter(tmp_path / "conn.log", "conn", Conn) as w:
        w.write_many(CONNS)
    rows = list(zat_reader.ZeekLogReader(str(tmp_path / "conn.log")).readrows())
    assert [r["uid"] for r in rows] == ["CHhAvVGS1DHFjwGM9", "C2"]
    assert rows[0]["id.resp_p"] == 5353 and rows[1]["id.orig_h"] == "fe80::1"
    assert rows[0]["ts"].timestamp() == pytest.approx(1300475167.096535, abs=1e-6)


# --- DirectoryLogSink ----------------------------------------------------------------------------

class ConnPlus(Conn, kw_only=True):
    extra: String | None = None


def test_directory_sink_lazy_files_header_from_first_type(tmp_path) -> None:
    clock = iter([1000.0, 2000.0]).__next__
    sink = DirectoryLogSink(tmp_path / "logs", clock=clock)
    assert list((tmp_path / "logs").iterdir()) == []
    sink.write("conn", CONNS[0])
    sink.write("conn", ConnPlus(**msgspec.structs.asdict(CONNS[1]), extra="dropped"))
    sink.flush()
    data = (tmp_path / "logs" / "conn.log").read_bytes()
    assert len(_row_lines(data)) == 2 and b"dropped" not in data and b"#close" not in data
    sink.close()
    log = read_tsv(tmp_path / "logs" / "conn.log")
    assert log.fields == [c.name for c in columns(Conn)]
    assert log.meta["open"] == tsv_date(1000.0) and log.meta["close"] == tsv_date(2000.0)
    assert [r["uid"] for r in log.rows()] == ["CHhAvVGS1DHFjwGM9", "C2"]
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["conn.log"]


def test_directory_sink_extended_type_first_fixes_header(tmp_path) -> None:
    sink = DirectoryLogSink(tmp_path, fmt="json")
    sink.write_many("conn", [ConnPlus(**msgspec.structs.asdict(CONNS[0]), extra="kept"), CONNS[1]])
    sink.close()
    rows = read_json(tmp_path / "conn.log")
    assert rows[0]["extra"] == "kept" and "extra" not in rows[1] and rows[1]["tunnel_parents"] == ["Cx", "Cy"]


def test_directory_sink_rejects_bad_input(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        DirectoryLogSink(tmp_path, fmt="xml")
    sink = DirectoryLogSink(tmp_path)
    for bad in ("", "../x", "a/b"):
        with pytest.raises(ValueError, match="bad log stream path"):
            sink.write(bad, CONNS[0])
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.write("conn", CONNS[0])

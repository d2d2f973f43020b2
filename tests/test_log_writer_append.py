"""LogWriter's public API for continuing a file (logger restart) and for a failed write."""

from __future__ import annotations

import pytest

from analysis.logs.base import LogHeaderMismatch
from analysis.logs.files import WRITERS
from analysis.logs.schema import Count, LogRecord, String, Time, log_stream
from analysis.logs.tsv import TsvWriter


@log_stream("test_append")
class Row(LogRecord, kw_only=True):
    ts: Time
    n: Count


@log_stream("test_append_other")
class Other(LogRecord, kw_only=True):
    ts: Time
    s: String


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_append_continues_without_a_second_header(tmp_path, fmt):
    fn = tmp_path / "a.log"
    with WRITERS[fmt](fn, "test_append", Row, open_time=1000.5) as w:
        w.write(Row(ts=1.0, n=1))
        w.flush()
        whole_first = fn.read_bytes()
        w.write(Row(ts=2.0, n=2))
    one_go = fn.read_bytes()
    # cut the footer and continue, as a restarted logger does after its last commit
    fn.write_bytes(whole_first)
    with WRITERS[fmt](fn, "test_append", Row, open_time=1000.5, append=True) as w:
        w.write(Row(ts=2.0, n=2))
    got = fn.read_bytes()
    if fmt == "tsv":  # identical apart from the #close time
        assert got.count(b"#fields") == 1
        assert got.rsplit(b"#close", 1)[0] == one_go.rsplit(b"#close", 1)[0]
    else:
        assert got == one_go


def test_append_refuses_another_header(tmp_path):
    fn = tmp_path / "a.log"
    with TsvWriter(fn, "test_append", Row, open_time=1000.0):
        pass
    before = fn.read_bytes()
    with pytest.raises(LogHeaderMismatch, match="header"):
        TsvWriter(fn, "test_append_other", Other, open_time=1000.0, append=True)
    with pytest.raises(LogHeaderMismatch):
        TsvWriter(fn, "test_append", Row, open_time=2000.0, append=True)  # another #open
    assert fn.read_bytes() == before  # untouched


def test_append_on_an_open_file_writes_at_its_position(tmp_path):
    fn = tmp_path / "a.log"
    with TsvWriter(fn, "test_append", Row, open_time=5.0) as w:
        w.write(Row(ts=1.0, n=1))
        w.flush()
        keep = fn.stat().st_size
        w.write(Row(ts=2.0, n=2))
    with open(fn, "r+b") as f:
        f.truncate(keep)
        f.seek(keep)
        w = TsvWriter(f, "test_append", Row, open_time=5.0, append=True)
        w.write(Row(ts=3.0, n=3))
        w.flush()
    rows = [ln for ln in fn.read_bytes().splitlines() if not ln.startswith(b"#")]
    assert [r.split(b"\t")[1] for r in rows] == [b"1", b"3"]


def test_discard_drops_rows_of_a_failed_write_but_keeps_an_unwritten_header():
    # /dev/full: every write fails with ENOSPC, a real failing disk
    with open("/dev/full", "wb", buffering=0) as full:
        w = TsvWriter(full, "test_append", Row, open_time=5.0)
        w.write_many([Row(ts=1.0, n=1), Row(ts=2.0, n=2)])
        with pytest.raises(OSError):
            w.flush()
        assert w.records_written == 2
        assert w.discard() == 2 and w.records_written == 0
    import io
    buf = io.BytesIO()
    w._file = buf            # the same writer on a working file afterwards: header, no lost rows
    w.write(Row(ts=3.0, n=3))
    w.flush()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith(b"#separator") and sum(ln.startswith(b"#fields") for ln in lines) == 1
    assert [ln for ln in lines if not ln.startswith(b"#")] == [b"3.000000\t3"]

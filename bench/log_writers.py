"""Records/s of the TSV and JSON log writers for conn-like records, against a naive writer.

    python bench/log_writers.py [--records 200000] [--batch 1000] [--repeat 5]

The naive baseline walks the columns and dispatches on the Zeek type for every field (what the
writers avoid by compiling one row function per record type).  Prints medians.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from analysis.conn.record import ConnInfo  # noqa: E402  (conn.log's own schema, not a copy)
from analysis.logs.files import DirectoryLogSink  # noqa: E402
from analysis.logs.jsonl import JsonWriter  # noqa: E402
from analysis.logs.schema import LogRecord, columns  # noqa: E402
from analysis.logs.tsv import TsvWriter  # noqa: E402
from analysis.logs.values import tsv_double, tsv_set_string, tsv_string, tsv_time  # noqa: E402
from _common import median_time  # noqa: E402


def make_records(n: int) -> list[ConnInfo]:
    out = []
    for i in range(n):
        out.append(ConnInfo(
            ts=1300475167.096535 + i * 0.000731, uid=f"C{i:017d}", orig_h=f"10.0.{i % 256}.{i % 200}",
            orig_p=1024 + i % 60000, resp_h="192.168.1.1", resp_p=(53, 80, 443)[i % 3],
            proto=("udp", "tcp", "tcp")[i % 3], service=(None, "http", "ssl")[i % 3],
            duration=None if i % 7 == 0 else 0.001 * (i % 5000), orig_bytes=i % 9000,
            resp_bytes=(i * 7) % 100000, conn_state=("S0", "SF", "RSTO")[i % 3], local_orig=None,
            local_resp=None, missed_bytes=0, history=("D", "ShADadFf", "ShADadR")[i % 3],
            orig_pkts=i % 30, orig_ip_bytes=i % 12000, resp_pkts=i % 25, resp_ip_bytes=i % 150000,
            tunnel_parents=None if i % 5 else [], ip_proto=(17, 6, 6)[i % 3]))
    return out


def naive_row(rec: LogRecord) -> str:
    cells = []
    for col in columns(type(rec)):
        v = getattr(rec, col.attr)
        if v is None:
            cells.append("-")
        elif col.container:
            cells.append(",".join(tsv_set_string(str(e)) for e in v) if v else "(empty)")
        elif col.zeek_type in ("time", "interval"):
            cells.append(tsv_time(v))
        elif col.zeek_type == "double":
            cells.append(tsv_double(v))
        elif col.zeek_type == "bool":
            cells.append("T" if v else "F")
        elif isinstance(v, int):
            cells.append(str(v))
        else:
            cells.append(tsv_string(v))
    return "\t".join(cells)


def run_naive(records, batch):
    buf = io.BytesIO()
    for i in range(0, len(records), batch):
        buf.write(("\n".join(naive_row(r) for r in records[i:i + batch]) + "\n").encode())


def run_writer(cls, records, batch):
    w = cls(io.BytesIO(), "conn", ConnInfo, open_time=0.0)
    for i in range(0, len(records), batch):
        w.write_many(records[i:i + batch])
    w.close(0.0)


def run_sink_per_record(records, batch, fmt="tsv"):
    """The engine's path: one ``write`` call per record into files on disk."""
    with tempfile.TemporaryDirectory() as d:
        sink = DirectoryLogSink(d, fmt=fmt, clock=lambda: 0.0)
        for r in records:
            sink.write("conn", r)
        sink.close()


def median_rate(fn, records, batch, repeat) -> float:
    return len(records) / median_time(lambda: fn(records, batch), repeat)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    records = make_records(a.records)
    naive = median_rate(run_naive, records, a.batch, a.repeat)
    tsv = median_rate(lambda r, b: run_writer(TsvWriter, r, b), records, a.batch, a.repeat)
    js = median_rate(lambda r, b: run_writer(JsonWriter, r, b), records, a.batch, a.repeat)
    sink = median_rate(run_sink_per_record, records, a.batch, a.repeat)
    print(f"conn-like records: {a.records}, batch {a.batch}, median of {a.repeat}")
    print(f"naive TSV (per-field dispatch): {naive:12,.0f} records/s")
    print(f"TsvWriter                     : {tsv:12,.0f} records/s  ({tsv / naive:.2f}x naive)")
    print(f"JsonWriter                    : {js:12,.0f} records/s  ({js / naive:.2f}x naive)")
    print(f"DirectoryLogSink.write, TSV   : {sink:12,.0f} records/s  ({sink / naive:.2f}x naive)"
          " (one call per record, to disk)")


if __name__ == "__main__":
    main()

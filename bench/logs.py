"""Log shipping throughput: 2 worker processes -> 1 logger process -> TSV files, end to end,
against the single-process ceiling for the same records, measured in the same run.

    python bench/logs.py --json [--records 200000] [--runs 3]

End to end: each sender process makes conn-like records (with a ``sender`` and a ``seq`` column),
hands them to a :class:`~cluster.logging.shipper.LogShipper` over the reliable channel
(:class:`broker.reliable.BatchSender`, spill journal on) and waits until the logger acknowledged
everything; the logger process runs :class:`~cluster.logging.receiver.LogReceiver` (decode,
format, write, flush, commit, ack).  records/s = all records / (last ack - first record).
Afterwards the file is read back and every (sender, seq) is checked: ``lost`` and
``duplicated`` count rows that are missing or written twice.

Ceiling: one process, no sockets: encode the same batches, decode them, format and write them
with the same LogWriterService.  Figures are medians of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from analysis.logs.schema import (ConnIdRecord, Count, Enum, Interval, String,  # noqa: E402
                                  log_stream)

PATH = "benchconn"
BATCH = 2000


@log_stream(PATH)
class BenchRecord(ConnIdRecord, kw_only=True):
    proto: Enum
    duration: Interval | None = None
    orig_bytes: Count | None = None
    resp_bytes: Count | None = None
    conn_state: String | None = None
    history: String | None = None
    sender: String
    seq: Count


def make(sender: str, i: int) -> BenchRecord:
    return BenchRecord(ts=1700000000.0 + i * 1e-3, uid=f"C{i:017d}", orig_h=f"10.0.{(i >> 8) & 255}.{i & 255}",
                       orig_p=1024 + i % 60000, resp_h="192.0.2.10", resp_p=443, proto="tcp",
                       duration=0.25 + (i % 100) / 1000, orig_bytes=i % 5000, resp_bytes=i % 70000,
                       conn_state="SF", history="ShADadFf", sender=sender, seq=i)


# ----------------------------------------------------------------------------- child roles

def child_logger(a) -> None:
    import uvloop

    from cluster.logging.receiver import LogReceiver

    async def main():
        r = LogReceiver("logger-1", a.address, a.dir, "tsv", state_dir=os.path.join(a.dir, ".acks"))
        await r.start()
        print("ready", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await r.close()
        print(json.dumps(r.stats()), flush=True)

    uvloop.run(main())


def child_sender(a) -> None:
    import uvloop

    from broker.reliable import BatchSender
    from cluster.logging.shipper import LogShipper

    async def main():
        s = await BatchSender(a.name, a.address, journal_dir=os.path.join(a.dir, ".journal", a.name),
                              channel="starling/logs", window=16, ack_timeout=3.0).start()
        sh = LogShipper({"logger-1": s}, batch_records=BATCH)

        async def ticker():                       # what the node runtime's log timer does
            while True:
                await asyncio.sleep(0.05)
                sh.tick()

        tick = asyncio.get_running_loop().create_task(ticker())
        print("ready", flush=True)
        sys.stdin.readline()                      # go
        t0 = time.time()
        for i in range(a.records):
            sh.write(PATH, make(a.name, i))
            if i % BATCH == BATCH - 1:
                await asyncio.sleep(0)            # let the channel pump (as a worker does per batch)
        ok = await sh.drain(120)
        t1 = time.time()
        tick.cancel()
        st = s.stats()
        await s.close(0.1)
        print(json.dumps({"t0": t0, "t1": t1, "ok": ok, "resent": st["resent"], "spilled": st["spilled"]}),
              flush=True)

    uvloop.run(main())


# ----------------------------------------------------------------------------- measurements

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)


def check_file(path: str, senders: list[str], n: int) -> tuple[int, int]:
    """(lost, duplicated) over every (sender, seq) expected in the file."""
    from analysis.logs.reader import read_tsv

    log = read_tsv(path)
    si, qi = log.fields.index("sender"), log.fields.index("seq")
    seen: dict[tuple[bytes, int], int] = {}
    for row in log.raw_rows:
        k = (row[si], int(row[qi]))
        seen[k] = seen.get(k, 0) + 1
    dup = sum(c - 1 for c in seen.values() if c > 1)
    lost = sum(1 for s in senders for i in range(n) if (s.encode(), i) not in seen)
    return lost, dup


def end_to_end(records: int) -> dict:
    d = tempfile.mkdtemp(prefix="starling-bench-logs-")
    addr = f"tcp://127.0.0.1:{free_port()}"
    try:
        logger = spawn("--child", "logger", "--address", addr, "--dir", d)
        assert logger.stdout.readline().strip() == "ready"
        names = ["worker-1", "worker-2"]
        senders = [spawn("--child", "sender", "--address", addr, "--dir", d, "--name", n,
                         "--records", str(records)) for n in names]
        for p in senders:
            assert p.stdout.readline().strip() == "ready"
        for p in senders:
            p.stdin.write("go\n")
            p.stdin.flush()
        res = [json.loads(p.stdout.readline()) for p in senders]
        for p in senders:
            p.wait(30)
        logger.send_signal(signal.SIGTERM)
        lstats = json.loads(logger.stdout.readline())
        logger.wait(30)
        elapsed = max(r["t1"] for r in res) - min(r["t0"] for r in res)
        lost, dup = check_file(os.path.join(d, f"{PATH}.log"), names, records)
        return {"records_per_s": 2 * records / elapsed, "seconds": elapsed, "lost": lost, "duplicated": dup,
                "all_acked": all(r["ok"] for r in res), "resent": sum(r["resent"] for r in res),
                "spilled": sum(r["spilled"] for r in res), "logger_rows": lstats["rows"].get(PATH, 0)}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def ceiling(records: int) -> dict:
    """Encode, decode, format and write the same records in one process, no sockets."""
    from cluster.logging.codec import LogEncoder
    from cluster.logging.service import LogWriterService

    recs = [make(n, i) for n in ("worker-1", "worker-2") for i in range(records)]
    d = tempfile.mkdtemp(prefix="starling-bench-ceiling-")
    try:
        enc = LogEncoder()
        svc = LogWriterService(d)

        class B:
            __slots__ = ("data",)

        t0 = time.perf_counter()
        for i in range(0, len(recs), BATCH):
            b = B()
            b.data = enc.encode(PATH, recs[i:i + BATCH])
            svc.handle(b)
        svc.close()
        t = time.perf_counter() - t0
        return {"ceiling_records_per_s": len(recs) / t}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--records", type=int, default=200_000, help="records per sender process")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", choices=("logger", "sender"), help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        import structlog
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
        (child_logger if a.child == "logger" else child_sender)(a)
        return 0
    import structlog
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    e2e = [end_to_end(a.records) for _ in range(a.runs)]
    ceil = [ceiling(a.records) for _ in range(a.runs)]
    rps = statistics.median(r["records_per_s"] for r in e2e)
    cps = statistics.median(c["ceiling_records_per_s"] for c in ceil)
    out = {
        "records_per_s": round(rps),
        "ceiling_records_per_s": round(cps),
        "ratio_to_ceiling": round(rps / cps, 3),
        "lost": sum(r["lost"] for r in e2e),
        "duplicated": sum(r["duplicated"] for r in e2e),
        "all_acked": all(r["all_acked"] for r in e2e),
        "records_per_run": 2 * a.records,
        "runs": a.runs,
        "runs_records_per_s": [round(r["records_per_s"]) for r in e2e],
        "runs_ceiling_records_per_s": [round(c["ceiling_records_per_s"]) for c in ceil],
        "resent": sum(r["resent"] for r in e2e),
        "spilled": sum(r["spilled"] for r in e2e),
        "target_met": (rps >= 250_000 or rps >= 0.75 * cps),
    }
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        for k, v in out.items():
            print(f"{k:28} {v}")
    return 0 if out["lost"] == 0 and out["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

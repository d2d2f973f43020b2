"""Helper process: a BatchReceiver that appends every record of every batch to a file.

Each batch is msgpack ``[record_id, ...]``; each record becomes a line ``<stream> <seq> <id>``.
The handler returns the file size after its write as the checkpoint; on start the file is cut
back to the last committed checkpoint, which is how an application turns "acked == handled
durably" into exactly-once output across kill -9.
"""

import argparse
import asyncio
import json
import logging
import os
import sys

import msgpack
import structlog

from broker.reliable import BatchReceiver


async def main(a) -> None:
    out = open(a.out, "ab")
    holder = {}

    def handle(batch):
        ids = msgpack.unpackb(batch.data)
        out.write(b"".join(b"%s %d %d\n" % (batch.stream.encode(), batch.seq, i) for i in ids))
        out.flush()  # in the kernel now: survives kill -9 of this process
        if a.slow:
            import time

            time.sleep(a.slow)
        return out.tell()

    rx = BatchReceiver("rx", a.bind, handle, state_dir=a.state, fsync=False)
    out.truncate(rx.checkpoint or 0)
    out.seek(0, os.SEEK_END)
    holder["rx"] = rx
    async with rx:
        print(json.dumps({"address": rx.address, "pid": os.getpid(), "checkpoint": rx.checkpoint}), flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--slow", type=float, default=0.0)
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    asyncio.run(main(ap.parse_args()))

"""A tour of the bus that ends by itself: ``python -m broker.demo``.

A hub, a "manager" and a "worker-1" endpoint: membership (peer up/down), pub/sub with single and
batched events, a request answered by the manager, and log batches over the reliable channel to
a "logger".  Prints what happened and a summary, then exits 0 (1 if something went missing).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time

import structlog

from broker.endpoint import Endpoint
from broker.hub import Hub
from broker.reliable import BatchReceiver, BatchSender
from broker.wire import encode


async def run(bind: str, n_events: int) -> int:
    out = print
    async with Hub(bind) as hub:
        out(f"hub        in={hub.in_addr} out={hub.out_addr}")
        async with Endpoint("manager", hub.addresses) as mgr:
            mgr.on_peer(lambda e: out(f"manager    peer {e.kind:4} {e.name} ({e.instance}, {e.reason})"))
            seen: list[tuple[str, list]] = []
            mgr.subscribe("starling/demo/events", lambda name, args, meta: seen.append((name, args)))
            mgr.serve("starling/demo/manager", lambda name, args, meta: {"echo": args, "from": "manager"})

            async with Endpoint("worker-1", hub.addresses) as worker:
                await worker.wait_for_peers(["manager"], 10)
                await worker.wait_subscribed("starling/demo/events", 10)
                t0 = time.perf_counter()
                worker.publish("starling/demo/events", "conn_seen", "C8vxyz", "10.0.0.1", 443)
                worker.publish_batch(
                    "starling/demo/events", [("conn_seen", [f"C{i}", "10.0.0.2", i]) for i in range(n_events)]
                )
                reply = await worker.request("starling/demo/manager", "ping", 1, "two")
                out(f"worker-1   request ping -> {reply}")
                deadline = time.monotonic() + 5
                while len(seen) < n_events + 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                dt = time.perf_counter() - t0
                out(f"manager    received {len(seen)} events, first {seen[0] if seen else None}")

                with tempfile.TemporaryDirectory() as tmp:
                    rows: list[bytes] = []
                    rx = BatchReceiver("logger", f"ipc://{tmp}/logger", lambda b: rows.append(b.data), state_dir=f"{tmp}/rx")
                    async with rx, BatchSender("worker-1", rx.address, journal_dir=f"{tmp}/journal") as tx:
                        for i in range(3):
                            tx.put(encode([["conn", {"uid": f"C{i}", "proto": "tcp"}]]))
                        await tx.flush(10)
                        out(f"logger     {len(rows)} log batches acknowledged: {tx.stats()['acked']} acked, 0 lost")
                wstats = worker.stats()
            await asyncio.sleep(0.3)  # let the manager see worker-1 leave
            mstats = mgr.stats()
    ok = len(seen) == n_events + 1 and reply["echo"] == [1, "two"] and len(rows) == 3
    out("")
    out("summary")
    out(f"  events   published={wstats['published']} received={mstats['received_events']} in {dt * 1e3:.1f} ms")
    out(f"  frames   gaps={mstats['gaps']} malformed={mstats['malformed']} dropped={wstats['dropped_out']}")
    out(f"  request  1 sent, {wstats['request_timeouts']} timed out")
    out(f"  batches  3 sent, {len(rows)} handled exactly once")
    out(f"  result   {'OK' if ok else 'MISSING DATA'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m broker.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--bind", default="tcp://127.0.0.1:*", help="hub base address (default: ephemeral port)")
    ap.add_argument("--events", type=int, default=1000, help="events in the batch")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the library's diagnostics")
    a = ap.parse_args(argv)
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if a.verbose else logging.WARNING),
    )
    return asyncio.run(asyncio.wait_for(run(a.bind, a.events), 60))


if __name__ == "__main__":
    sys.exit(main())

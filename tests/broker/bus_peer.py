"""Helper process for the bus tests: one Endpoint that answers requests on svc/<name>.

Prints one JSON line {"name", "instance", "pid"} once it is connected, then runs until killed.
"""

import argparse
import asyncio
import json
import logging
import os
import sys

import structlog

from broker.endpoint import Endpoint


async def main(a) -> None:
    async with Endpoint(a.name, (a.hub_in, a.hub_out), heartbeat_interval=a.interval, peer_timeout=a.timeout) as ep:
        ep.serve(f"svc/{a.name}", lambda name, args, meta: [a.name, ep.instance, name, args])
        if a.wait_for:
            await ep.wait_for_peers([a.wait_for], 10)
        print(json.dumps({"name": a.name, "instance": ep.instance, "pid": os.getpid()}), flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--hub-in", required=True)
    ap.add_argument("--hub-out", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--wait-for")
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    asyncio.run(main(ap.parse_args()))

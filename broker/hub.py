"""The central forwarder: endpoints publish into its XSUB side and subscribe at its XPUB side.

The data path is libzmq's own ``zmq_proxy_steerable`` running in a thread without the GIL, so
the hub adds no Python work per message; it does not decode payloads (every receiving endpoint
validates, see broker/wire.py), and ZMQ_MAXMSGSIZE makes libzmq drop a peer that sends an
oversized part.  XPUB_VERBOSE forwards *every* subscription upstream, including repeats, so each
endpoint's XPUB socket sees every peer's inbox subscription: that is the presence signal.

Run it alone with ``python -m broker.hub --bind tcp://127.0.0.1:5555`` or embed it::

    async with Hub("tcp://127.0.0.1:*") as hub:
        ...  # hub.addresses -> (in_addr, out_addr) for Endpoint(...)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import struct
import sys
import threading
from typing import Sequence

import structlog
import zmq

from broker import wire

log = structlog.get_logger(__name__)

_STATS_KEYS = (
    "in_msgs",
    "in_bytes",
    "in_sent_msgs",
    "in_sent_bytes",
    "out_msgs",
    "out_bytes",
    "out_sent_msgs",
    "out_sent_bytes",
)


def derive_addresses(base: str | Sequence[str]) -> tuple[str, str]:
    """One base address -> (in, out): tcp port P -> P and P+1, ipc/inproc path -> path.in/.out.

    A tuple/list of two addresses is returned unchanged, so callers can be explicit.
    """
    if not isinstance(base, str):
        a, b = base
        return a, b
    if base.startswith("tcp://"):
        host, _, port = base[6:].rpartition(":")
        if port == "*":
            return base, base
        return f"tcp://{host}:{int(port)}", f"tcp://{host}:{int(port) + 1}"
    if base.startswith(("ipc://", "inproc://")):
        return base + ".in", base + ".out"
    raise ValueError(f"unsupported address {base!r}")


class Hub:
    """XSUB/XPUB forwarder owned by an asyncio program (or by ``python -m broker.hub``)."""

    def __init__(
        self,
        bind: str | Sequence[str] = "tcp://127.0.0.1:*",
        *,
        context: zmq.Context | None = None,
        hwm: int = 200_000,
    ) -> None:
        self._bind = derive_addresses(bind)
        self._ctx = context or zmq.Context.instance()
        self._hwm = hwm
        self._ctl_addr = f"inproc://starling-hub-ctl-{id(self):x}"
        self._thread: threading.Thread | None = None
        self._ctl: zmq.Socket | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.addresses: tuple[str, str] = ("", "")

    @property
    def in_addr(self) -> str:
        return self.addresses[0]

    @property
    def out_addr(self) -> str:
        return self.addresses[1]

    def start(self) -> None:
        """Bind and start forwarding in a background thread; returns once bound."""
        self._ctl = self._ctx.socket(zmq.PAIR)
        self._ctl.linger = 0
        self._ctl.bind(self._ctl_addr)
        self._thread = threading.Thread(target=self._run, name="starling-hub", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._ctl.close()
            raise self._error
        log.info("hub_started", in_addr=self.addresses[0], out_addr=self.addresses[1])

    def _run(self) -> None:
        ctx = self._ctx
        xsub = ctx.socket(zmq.XSUB)
        xpub = ctx.socket(zmq.XPUB)
        ctl = ctx.socket(zmq.PAIR)
        try:
            for s in (xsub, xpub):
                s.linger = 0
                s.rcvhwm = s.sndhwm = self._hwm
            xsub.maxmsgsize = wire.ZMQ_MAXMSGSIZE
            xpub.maxmsgsize = wire.MAX_TOPIC + 2  # subscribers only send (un)subscriptions
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            xsub.bind(self._bind[0])
            xpub.bind(self._bind[1])
            ctl.connect(self._ctl_addr)
            self.addresses = (
                xsub.getsockopt_string(zmq.LAST_ENDPOINT),
                xpub.getsockopt_string(zmq.LAST_ENDPOINT),
            )
        except BaseException as exc:  # reported to start()
            self._error = exc
            for s in (xsub, xpub, ctl):
                s.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            zmq.proxy_steerable(xsub, xpub, None, ctl)
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError as exc:
            log.error("hub_proxy_failed", error=str(exc))
        finally:
            for s in (xsub, xpub, ctl):
                s.close(linger=0)

    def stats(self) -> dict[str, int]:
        """Message and byte counts from libzmq's proxy (in = publishers' side)."""
        if self._ctl is None or self._thread is None or not self._thread.is_alive():
            return dict.fromkeys(_STATS_KEYS, 0)
        self._ctl.send(b"STATISTICS")
        if not self._ctl.poll(2000):
            return dict.fromkeys(_STATS_KEYS, 0)
        parts = self._ctl.recv_multipart()
        return {k: struct.unpack("=Q", v)[0] for k, v in zip(_STATS_KEYS, parts)}

    def stop(self) -> None:
        if self._ctl is None:
            return
        if self._thread is not None and self._thread.is_alive():
            self._ctl.send(b"TERMINATE")
            self._thread.join(5)
        self._ctl.close()
        self._ctl = None
        log.info("hub_stopped")

    async def __aenter__(self) -> "Hub":
        await asyncio.get_running_loop().run_in_executor(None, self.start)
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def __enter__(self) -> "Hub":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m broker.hub", description=__doc__.split("\n")[0])
    ap.add_argument("--bind", default="tcp://127.0.0.1:5555", help="base address (in; out = +1 / .out)")
    ap.add_argument("--in", dest="in_addr", help="explicit XSUB address endpoints publish to")
    ap.add_argument("--out", dest="out_addr", help="explicit XPUB address endpoints subscribe at")
    ap.add_argument("--hwm", type=int, default=200_000)
    a = ap.parse_args(argv)
    # The entry point (not the library) decides where diagnostics go: stderr, so stdout
    # carries only the machine-readable address line.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    bind: str | tuple[str, str] = a.bind
    if a.in_addr or a.out_addr:
        if not (a.in_addr and a.out_addr):
            ap.error("--in and --out go together")
        bind = (a.in_addr, a.out_addr)
    hub = Hub(bind, hwm=a.hwm)
    try:
        hub.start()
    except zmq.ZMQError as exc:
        print(f"broker.hub: cannot bind: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # Ready only once a stop signal is handled: whoever reads this line may SIGTERM us at once.
    print(json.dumps({"in": hub.in_addr, "out": hub.out_addr, "pid": os.getpid()}), flush=True)
    while not stop.wait(0.5):
        pass
    hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Request/reply never loses the reply to a brand-new requester (broker/endpoint.py).

A requester's inbox subscription reaches the server on another path than its request, so the
request can win the race and the server's XPUB would drop the reply.  To make that race happen
on demand, a requester's *subscribing* socket is connected through :class:`SlowLink`, a real
TCP relay that opens its upstream connection to the hub only after a delay (a slow or congested
link); its publishing socket talks to the hub directly.  Hubs listen on tcp 127.0.0.1 and ipc.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile

import pytest

from broker import Endpoint, Hub
from broker.endpoint import RequestTimeout
from tests.waiting import until


class SlowLink:
    """TCP relay 127.0.0.1:port -> ``upstream`` (tcp or ipc) that connects upstream only after
    ``delay(n)`` seconds for its n-th accepted connection; bytes wait in the kernel meanwhile."""

    def __init__(self, upstream: str, delay) -> None:
        self.upstream = upstream
        self.delay = delay if callable(delay) else (lambda _n: delay)
        self.accepted = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.address = ""

    async def __aenter__(self) -> "SlowLink":
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.address = "tcp://127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for w in self._writers:
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_client(self, reader, writer) -> None:
        t = asyncio.get_running_loop().create_task(self._relay(reader, writer, self.delay(self.accepted)))
        self.accepted += 1
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _relay(self, reader, writer, delay: float) -> None:
        self._writers.append(writer)
        await asyncio.sleep(delay)
        if self.upstream.startswith("ipc://"):
            ur, uw = await asyncio.open_unix_connection(self.upstream[len("ipc://"):])
        else:
            host, _, port = self.upstream[len("tcp://"):].rpartition(":")
            ur, uw = await asyncio.open_connection(host, int(port))
        self._writers.append(uw)

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))


@pytest.fixture(params=["tcp", "ipc"])
async def any_hub(request):
    if request.param == "tcp":
        async with Hub("tcp://127.0.0.1:*") as h:
            yield h
        return
    d = tempfile.mkdtemp(prefix="sl-")  # short: ipc paths are limited to ~100 bytes
    try:
        async with Hub(f"ipc://{d}/hub") as h:
            yield h
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _echo(_name, args, _meta):
    return args[0]


async def test_fifty_fresh_requesters_get_their_first_reply(any_hub):
    """Each requester starts and requests at once; its inbox subscription is 0-60 ms late."""
    rng = random.Random(7)
    async with Endpoint("server", any_hub.addresses) as srv, \
            SlowLink(any_hub.out_addr, lambda _n: rng.uniform(0.0, 0.06)) as link:
        srv.serve("svc/echo", _echo)

        async def fresh(i: int) -> tuple[object, dict]:
            async with Endpoint(f"req-{i}", (any_hub.in_addr, link.address)) as c:
                try:
                    got = await c.request("svc/echo", "echo", i, timeout=3.0)
                except RequestTimeout:
                    got = None
                return got, c.stats()

        results = []
        for k in range(0, 50, 10):  # ten at a time: start-up of many endpoints is the slow part
            results += await asyncio.gather(*(fresh(i) for i in range(k, k + 10)))
        assert [got for got, _ in results] == list(range(50))
        assert sum(st["request_timeouts"] for _, st in results) == 0
        st = srv.stats()
        assert st["requests_served"] == 50
        assert st["replies_held"] >= 10, st  # the race really happened (all 50 lost without the hold)
        assert st["replies_unconfirmed"] == 0 and st["replies_dropped"] == 0
        assert st["held_replies"] == 0


async def test_requests_before_any_server_is_known(any_hub):
    """A brand-new requester's own XPUB knows no server yet: the request waits for one."""
    async with Endpoint("server", any_hub.addresses) as srv:
        srv.serve("svc/echo", _echo)
        for i in range(20):
            async with Endpoint(f"req-{i}", any_hub.addresses) as c:
                assert await c.request("svc/echo", "echo", i, timeout=3.0) == i
        async with Endpoint("late", any_hub.addresses) as c:
            # the server comes after the request was made: still answered within the timeout
            task = asyncio.get_running_loop().create_task(c.request("svc/late", "echo", "x", timeout=3.0))
            await asyncio.sleep(0.2)
            srv.serve("svc/late", _echo)
            assert await task == "x"


async def test_held_replies_keep_their_order(hub):
    async with Endpoint("server", hub.addresses) as srv, SlowLink(hub.out_addr, 0.6) as link:
        n = 0

        def handled(_name, args, _meta):
            nonlocal n
            n += 1
            return [args[0], n]

        async def later(_name, args, _meta):  # an async handler finishing after sync ones
            await asyncio.sleep(0.01)
            return handled(_name, args, _meta)

        srv.serve("svc/sync", handled)
        srv.serve("svc/async", later)
        async with Endpoint("req", (hub.in_addr, link.address)) as c:
            await c.wait_subscribed("svc/sync")
            await c.wait_subscribed("svc/async")
            order: list = []

            async def ask(i: int) -> None:
                order.append(await c.request("svc/async" if i % 7 == 3 else "svc/sync", "x", i, timeout=3.0))

            await asyncio.gather(*(ask(i) for i in range(40)))
            st = srv.stats()
            assert st["replies_held"] == 40, st      # every reply waited for the inbox
            assert st["replies_unconfirmed"] == 0
            # replies arrive in the order the server made them ...
            assert [k for _, k in order] == list(range(1, 41))
            # ... and nothing was lost between them
            assert c.stats()["gaps"] == 0 and sorted(i for i, _ in order) == list(range(40))
            # a known requester's reply goes out at once
            assert await c.request("svc/sync", "x", 99, timeout=3.0) == [99, 41]
            assert srv.stats()["replies_held"] == 40


async def test_holding_is_bounded_and_drops_are_counted(hub):
    async with Endpoint("server", hub.addresses, max_held_per_requester=5, max_held_replies=8) as srv, \
            SlowLink(hub.out_addr, 0.8) as link:
        srv.serve("svc/echo", _echo)
        async with Endpoint("a", (hub.in_addr, link.address)) as a, \
                Endpoint("b", (hub.in_addr, link.address)) as b:
            await a.wait_subscribed("svc/echo")
            await b.wait_subscribed("svc/echo")

            async def ask(ep: Endpoint, i: int):
                try:
                    return await ep.request("svc/echo", "x", i, timeout=2.0)
                except RequestTimeout:
                    return None

            ra = [asyncio.ensure_future(ask(a, i)) for i in range(6)]
            await until(lambda: srv.stats()["requests_served"] == 6, what="a's requests served")
            rb = [asyncio.ensure_future(ask(b, i)) for i in range(6)]
            await until(lambda: srv.stats()["requests_served"] == 12, what="b's requests served")
            st = srv.stats()
            # a: 5 held (per-requester cap), 1 dropped; b: 3 held (total cap 8), 3 dropped
            assert (st["held_replies"], st["replies_held"], st["replies_dropped"]) == (8, 8, 4), st
            got_a, got_b = await asyncio.gather(asyncio.gather(*ra), asyncio.gather(*rb))
            assert got_a == [0, 1, 2, 3, 4, None]
            assert got_b == [0, 1, 2, None, None, None]
            assert srv.stats()["held_replies"] == 0 and srv.stats()["replies_unconfirmed"] == 0


async def test_wait_is_bounded_then_sent_anyway_and_counted(hub):
    """An inbox subscription later than ``subscription_wait``: the reply is sent anyway (ZeroMQ
    drops it, nobody wants it yet; counted), and once the inbox is seen replies go out at once."""
    async with Endpoint("server", hub.addresses, subscription_wait=0.2) as srv, \
            SlowLink(hub.out_addr, 1.0) as link:
        srv.serve("svc/echo", _echo)
        async with Endpoint("req", (hub.in_addr, link.address)) as c:
            await c.wait_subscribed("svc/echo")
            with pytest.raises(RequestTimeout):
                await c.request("svc/echo", "x", 1, timeout=0.6)
            st = srv.stats()
            assert (st["replies_held"], st["replies_unconfirmed"], st["held_replies"]) == (1, 1, 0), st
            await until(lambda: srv._covered(c.inbox), what="the inbox subscription to reach the server")
            assert await c.request("svc/echo", "x", 2, timeout=2.0) == 2
            assert srv.stats()["replies_held"] == 1
            assert c.stats()["late_replies"] == 0  # the first reply was dropped, not delayed


async def test_close_sends_what_is_still_held(hub):
    async with SlowLink(hub.out_addr, 0.5) as link:
        srv = await Endpoint("server", hub.addresses).start()
        srv.serve("svc/echo", _echo)
        async with Endpoint("req", (hub.in_addr, link.address)) as c:
            await c.wait_subscribed("svc/echo")
            task = asyncio.ensure_future(c.request("svc/echo", "x", 1, timeout=1.0))
            await until(lambda: srv.stats()["held_replies"] == 1, what="a held reply")
            await srv.close()
            st = srv.stats()
            assert (st["held_replies"], st["replies_unconfirmed"]) == (0, 1)
            with pytest.raises(RequestTimeout):  # sent before its inbox was known: lost, counted
                await task

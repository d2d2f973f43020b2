"""Endpoint pub/sub and request/reply through a real hub over TCP on 127.0.0.1."""

import asyncio
import os
import socket
import time

import pytest
import zmq

from broker import wire
from broker.endpoint import Endpoint, Overloaded, RemoteError, RequestTimeout
from broker.hub import Hub
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)  # a hang fails fast, with stacks, instead of at 120 s




async def test_prefix_matches_whole_components(hub):
    async with Endpoint("pub", hub.addresses) as pub, Endpoint("s1", hub.addresses) as s1, Endpoint(
        "s2", hub.addresses
    ) as s2:
        exact, broad = [], []
        s1.subscribe("node/worker-1", lambda n, a, m: exact.append((m.topic, a[0])))
        s2.subscribe("node", lambda n, a, m: broad.append((m.topic, a[0])))
        await pub.wait_subscribed("node/worker-1/x")
        await pub.wait_subscribed("node/worker-10")
        for i, t in enumerate(["node/worker-1", "node/worker-10", "node/worker-1/x", "node/worker-1x", "nodes/a"]):
            pub.publish(t, "e", i)
        pub.publish("node/worker-1", "e", 99)  # sentinel: same path, so everything before is in
        await until(lambda: len(exact) == 3 and len(broad) == 5)
        assert exact == [("node/worker-1", 0), ("node/worker-1/x", 2), ("node/worker-1", 99)]
        assert [t for t, _ in broad] == ["node/worker-1", "node/worker-10", "node/worker-1/x", "node/worker-1x", "node/worker-1"]


async def test_batch_meta_iterator_unsubscribe_and_own(hub):
    async with Endpoint("a", hub.addresses) as a, Endpoint("b", hub.addresses) as b:
        batches = []
        b.subscribe("logs", lambda evs, m: batches.append((len(evs), m.sender_name, m.seq)), batch=True)
        it = b.subscribe("logs/conn")
        mine = a.subscribe("logs", lambda n, args, m: pytest.fail("own message delivered"))
        await a.wait_subscribed("logs/conn")
        t0 = time.time()
        assert a.publish_batch("logs/conn", [("row", [i, "x"]) for i in range(100)])
        got = []
        async for ev in it:
            got.append(ev)
            if len(got) == 100:
                break
        assert [e.args for e in got] == [[i, "x"] for i in range(100)]
        meta = got[0].meta
        assert meta.sender == f"a/{a.instance}" and meta.topic == "logs/conn"
        assert t0 - 1 <= meta.time <= time.time() and meta is got[99].meta  # one header per frame
        await until(lambda: batches == [(100, "a", 1)])
        b.unsubscribe(it)
        a.unsubscribe(mine)
        b.subscribe("logs/dns", lambda n, args, m: batches.append(n))
        await a.wait_subscribed("logs/dns")
        a.publish("logs/conn", "late", 1)
        a.publish("logs/dns", "dns", 1)
        await until(lambda: "dns" in batches)
        assert batches.count((1, "a", 2)) == 1  # conn still reaches the batch handler
        assert b.stats()["received_events"] == 102 and b.stats()["handler_errors"] == 0


async def test_not_running_is_a_clear_error(hub):
    ep = Endpoint("idle", hub.addresses)
    calls = (lambda: ep.publish("t", "e"), lambda: ep.subscribe("t"), lambda: ep.serve("t", print))
    for call in calls:
        with pytest.raises(ConnectionError):
            call()
    async with ep:
        ep.publish("t", "e")
    for call in calls:  # and after close
        with pytest.raises(ConnectionError):
            call()


async def test_async_handler_bounded_queue(hub):
    async with Endpoint("a", hub.addresses) as a, Endpoint("b", hub.addresses) as b:
        seen = []
        gate = asyncio.Event()

        async def slow(name, args, meta):
            await gate.wait()
            seen.append(args[0])

        sub = b.subscribe("q", slow, maxsize=10)
        await a.wait_subscribed("q")
        a.publish_batch("q", [("e", [i]) for i in range(50)])
        await until(lambda: b.stats()["received_events"] == 50)
        gate.set()
        await until(lambda: len(seen) == 10)  # the frame's 50 events meet a 10-slot queue
        await asyncio.sleep(0.05)
        assert sub.dropped == 40 and b.stats()["dropped_in"] == 40
        assert seen == list(range(10))


async def test_request_reply_error_and_timeout(hub):
    async with Endpoint("client", hub.addresses) as c, Endpoint("proxy-1", hub.addresses) as p:

        async def lookup(name, args, meta):
            await asyncio.sleep(0.01)
            if name == "boom":
                raise KeyError(args[0])
            return {"key": args[0], "from": meta.sender_name}

        p.serve("proxy/proxy-1", lookup)
        await c.wait_subscribed("proxy/proxy-1")
        results = await asyncio.gather(*(c.request("proxy/proxy-1", "get", i) for i in range(20)))
        assert results == [{"key": i, "from": "client"} for i in range(20)]
        with pytest.raises(RemoteError, match="KeyError"):
            await c.request("proxy/proxy-1", "boom", "k")
        t0 = time.monotonic()
        with pytest.raises(RequestTimeout):
            await c.request("proxy/nobody", "get", 1, timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 2
        st = c.stats()
        assert st["request_timeouts"] == 1 and st["pending_requests"] == 0


async def test_publish_backlog_then_drop_counted(tmp_path):
    """A hub that does not read: HWM -> bounded backlog -> counted drops, never a silent loss."""
    ctx = zmq.Context.instance()
    for policy in ("drop", "block"):
        fake_in, fake_out = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
        fake_in.rcvhwm = 5
        addrs = (f"ipc://{tmp_path}/{policy}.in", f"ipc://{tmp_path}/{policy}.out")
        fake_in.bind(addrs[0])
        fake_out.bind(addrs[1])
        try:
            async with Endpoint("a", addrs, hwm=5, backlog=20, policy=policy) as a:
                for _ in range(100):  # subscribe (until the endpoint has seen it), then never read
                    fake_in.send(b"\x01t/")
                    await asyncio.sleep(0.05)
                    if b"t/" in a._remote_subs:
                        break
                await a.wait_subscribed("t", 1)
                if policy == "drop":
                    results = [a.publish("t", "e", "x" * 10_000) for _ in range(5000)]
                    st = a.stats()
                    assert st["dropped_out"] > 0 and st["backlog"] == 20
                    assert st["dropped_out"] == results.count(False)
                    assert st["backlogged"] == 20
                else:
                    with pytest.raises(Overloaded):
                        for _ in range(5000):
                            a.publish("t", "e", "x" * 10_000)
                    assert a.stats()["dropped_out"] == 0
        finally:
            fake_in.close(0)
            fake_out.close(0)


async def test_hub_drops_show_up_as_gaps():
    async with Hub("tcp://127.0.0.1:*", hwm=20) as hub:
        async with Endpoint("a", hub.addresses) as a, Endpoint("b", hub.addresses, hwm=20) as b:
            got = []

            def handler(n, args, m):
                if not got:
                    time.sleep(0.5)  # stall the receiver: the hub's queue to it overflows
                got.append(args[0])

            b.subscribe("g", handler)
            await a.wait_subscribed("g")
            n = 3000
            for i in range(n):
                a.publish("g", "e", i, "y" * 200)
                if i % 100 == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0.8)
            a.publish("g", "e", n)  # a last frame closes any trailing gap
            await until(lambda: got and got[-1] == n)
            st = b.stats()
            assert st["gaps"] > 0
            assert len(got) + st["gaps"] == n + 1


async def test_malformed_frames_on_sub_socket(hub):
    """Garbage published into the hub reaches the endpoint's SUB socket: counted, dropped."""
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.XPUB)  # an XPUB so we can see the subscription arrive
    raw.connect(hub.in_addr)
    try:
        async with Endpoint("v", hub.addresses) as v, Endpoint("good", hub.addresses) as good:
            got = []
            v.subscribe("junk", lambda n, a, m: got.append(a[0]))
            while raw.poll(5000) and not raw.recv().startswith(b"\x01junk/"):
                pass
            await good.wait_subscribed("junk")
            sender = wire.sender_id("evil", "0123456789abcdef")
            bad = [
                [b"junk/" + os.urandom(50)],
                [b"junk/", os.urandom(20)],
                [b"junk/", sender, wire.FMT_EVENT, b"\x93\xcb\x00", b"extra"],
                [b"junk/", sender, b"starling.ev.9", wire.encode_events(1.0, 1, [("e", [1])])],
                [b"junk/", sender, wire.FMT_EVENT, b"\x93\xcb\x00"],  # truncated msgpack
                [b"junk/", sender, wire.FMT_EVENT, b"\xdd\xff\xff\xff\xff"],  # huge declared length
                [b"junk/", sender, wire.FMT_EVENT, os.urandom(64)],
                [b"junk/", sender, wire.FMT_REQUEST, b"\x91\x01"],
                [b"junk/", sender, wire.FMT_BEAT, wire.encode_beat(1.0, 1, 0, 1, 0.5)[:-1]],
                [b"junk/", b"x" * 500, wire.FMT_EVENT, wire.encode_events(1.0, 1, [("e", [1])])],
            ]
            for i, frames in enumerate(bad):
                before = v.stats()["malformed"]
                raw.send_multipart(frames)
                # probe with valid frames until one gets through (a short message may eat one)
                for k in range(50):
                    good.publish("junk", "probe", (i, k))
                    await asyncio.sleep(0.02)
                    if any(g[0] == i for g in got if isinstance(g, list)):
                        break
                assert v.stats()["malformed"] > before, frames
            reasons = v.stats()["malformed_reasons"]
            assert {"frame_count", "unknown_format", "bad_msgpack", "bad_shape", "bad_header"} <= set(reasons)
    finally:
        raw.close(0)


async def test_malformed_on_presence_socket_and_hub(hub):
    """Garbage sent up the subscription path reaches every endpoint's XPUB: counted, dropped.
    Raw TCP garbage at the hub's ports does not disturb it."""
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.XSUB)
    raw.connect(hub.out_addr)
    try:
        async with Endpoint("v", hub.addresses) as v:
            await asyncio.sleep(0.2)
            raw.send(b"garbage")
            raw.send_multipart([b"\x01a/", b"second part"])
            raw.send(b"\x01starling/node/evil/not-an-instance/")
            for addr in hub.addresses:
                host, port = addr[6:].rsplit(":", 1)
                with socket.create_connection((host, int(port))) as s:
                    s.sendall(os.urandom(4096))
            await until(lambda: v.stats()["malformed"] >= 3)
            async with Endpoint("w", hub.addresses) as w:
                got = []
                w.subscribe("still", lambda n, a, m: got.append(a))
                await v.wait_subscribed("still")
                v.publish("still", "alive", 1)
                await until(lambda: got == [[1]])
            assert v.stats()["malformed_reasons"].get("bad_subscription", 0) >= 2
            hs = hub.stats()  # libzmq's own counters, via the proxy's control socket
            assert hs["in_msgs"] > 0 and hs["out_msgs"] > 0
    finally:
        raw.close(0)


async def test_a_brand_new_endpoints_first_request_is_answered(hub):
    """ZeroMQ publishers drop what no subscription they know of wants: a request sent before the
    server's subscription reached us, or answered before our inbox's reached the server, is lost.
    request() waits (within its timeout) for both, so a fresh endpoint may ask at once."""
    async with Endpoint("server", hub.addresses) as srv:
        srv.serve("svc/echo", lambda name, args, meta: args[0])
        for i in range(25):
            async with Endpoint(f"fresh-{i}", hub.addresses) as c:
                assert await c.request("svc/echo", "echo", i, timeout=5.0) == i


async def test_a_busy_publisher_still_sees_new_subscriptions(hub):
    """Publishing on the XPUB may consume the edge that announces a queued subscription; the
    presence loop must not sleep through it (wait_subscribed, peers and requests rely on it)."""
    async with Endpoint("busy", hub.addresses) as busy, Endpoint("sink", hub.addresses) as sink:
        sink.subscribe("noise", lambda n, a, m: None)
        await busy.wait_subscribed("noise")
        stop = asyncio.Event()

        async def noise() -> None:
            while not stop.is_set():
                for _ in range(50):
                    busy.publish("noise", "n", 1)
                await asyncio.sleep(0)

        task = asyncio.ensure_future(noise())
        try:
            for i in range(10):
                async with Endpoint(f"late-{i}", hub.addresses) as late:
                    late.subscribe(f"late/{i}", lambda n, a, m: None)
                    await busy.wait_subscribed(f"late/{i}", timeout=3.0)
        finally:
            stop.set()
            await task

"""Reliable batch channel: kill -9 of the receiver, spill to disk, policies, resume, garbage."""

import asyncio
import os
import signal
import time

import msgpack
import pytest
import zmq

from broker import wire
from broker.endpoint import Overloaded
from broker.reliable import BatchReceiver, BatchSender
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)  # a hang fails fast, with stacks, instead of at 120 s




def read_records(path):
    with open(path, "rb") as f:
        return [tuple(line.split()) for line in f.read().splitlines()]


async def test_receiver_kill9_and_restart_loses_and_duplicates_nothing(tmp_path, procs):
    addr = f"ipc://{tmp_path}/rx"
    out = str(tmp_path / "out.txt")
    args = ("--bind", addr, "--state", str(tmp_path / "state"), "--out", out, "--slow", "0.002")
    rx, _ = procs.start("bus_receiver.py", *args)
    n_batches, per = 600, 20
    async with BatchSender("w1", addr, journal_dir=str(tmp_path / "j"), max_queue=50, ack_timeout=0.3) as tx:
        for b in range(n_batches):
            assert tx.put(msgpack.packb(list(range(b * per, (b + 1) * per))))
        await until(lambda: tx.stats()["acked"] >= n_batches // 4)
        os.kill(rx.pid, signal.SIGKILL)  # mid-stream, between arbitrary instructions
        rx.wait()
        acked_at_kill = tx.stats()["acked"]
        await asyncio.sleep(0.5)  # the sender keeps queueing/spilling meanwhile
        for b in range(n_batches, n_batches + 100):
            tx.put(msgpack.packb(list(range(b * per, (b + 1) * per))))
        rx2, info = procs.start("bus_receiver.py", *args)
        assert info["checkpoint"] is not None
        await tx.flush(30)
        st = tx.stats()
    total = (n_batches + 100) * per
    recs = read_records(out)
    ids = [int(r[2]) for r in recs]
    assert len(ids) == total, (len(ids), total)  # nothing lost, nothing twice ...
    assert ids == list(range(total))  # ... and in order
    assert {r[0] for r in recs} == {tx.stream.encode()}
    assert acked_at_kill < n_batches  # the kill really was mid-stream
    assert st["resent"] > 0 and st["acked"] == n_batches + 100


async def test_spill_keeps_memory_bounded_then_replays_in_order(tmp_path):
    addr = f"ipc://{tmp_path}/rx"
    blob = os.urandom(16_384)
    n = 3000  # ~48 MiB queued while nobody listens
    async with BatchSender(
        "w1", addr, journal_dir=str(tmp_path / "j"), max_queue=100, max_queue_bytes=1 << 20
    ) as tx:
        rss0 = _rss()
        for i in range(n):
            tx.put(i.to_bytes(4, "big") + blob)
        st = tx.stats()
        assert st["queued_bytes"] <= 1 << 20 and st["queued"] <= 100
        assert st["journal_pending"] >= n - 100 - tx.window and st["spilled"] >= n - 100 - tx.window
        assert _rss() - rss0 < 24 << 20, "queueing 48 MiB must not grow memory by that much"
        got = []

        def handle(b):
            got.append(int.from_bytes(b.data[:4], "big"))
            assert b.data[4:] == blob

        async with BatchReceiver("rx", addr, handle, state_dir=str(tmp_path / "rxstate"), fsync=False):
            await tx.flush(60)
        assert got == list(range(n))
        assert not [f for f in os.listdir(tmp_path / "j") if f.endswith(".jnl")]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_drop_and_block_policies(tmp_path):
    addr = f"ipc://{tmp_path}/nobody"
    tx = await BatchSender("w1", addr, policy="drop", max_queue=10, window=5).start()
    results = [tx.put(b"x") for _ in range(100)]
    st = tx.stats()
    assert st["dropped"] == results.count(False) > 0
    assert st["put"] + st["dropped"] == 100 and st["queued"] <= 10
    await tx.close(drain_timeout=0.1)
    tx = BatchSender("w2", addr, policy="block", max_queue=10, window=5)
    await tx.start()
    try:
        with pytest.raises(Overloaded):
            for _ in range(100):
                tx.put(b"x")
        waiter = asyncio.ensure_future(tx.send(b"y"))
        await asyncio.sleep(0.2)
        assert not waiter.done()  # blocked until a receiver takes some
        async with BatchReceiver("rx", addr, lambda b: None, state_dir=str(tmp_path / "rxstate"), fsync=False):
            await asyncio.wait_for(waiter, 10)
            await tx.flush(10)
    finally:
        await tx.close(0)


async def test_close_persists_unacked_and_resume_never_duplicates(tmp_path):
    addr = f"ipc://{tmp_path}/rx"
    jdir = str(tmp_path / "j")
    got = []
    rx = BatchReceiver("rx", addr, lambda b: got.append((b.stream, b.seq)), state_dir=str(tmp_path / "rxstate"), fsync=False)
    await rx.start()
    tx = BatchSender("w1", addr, journal_dir=jdir, max_queue=20)
    await tx.start()
    for i in range(50):
        tx.put(b"%d" % i)
    await tx.flush(10)
    await rx.close()  # receiver away; these stay unacked
    for i in range(50, 80):
        tx.put(b"%d" % i)
    await asyncio.sleep(0.3)
    stream = tx.stream
    await tx.close(drain_timeout=0.2)
    tx2 = BatchSender("w1", addr, journal_dir=jdir, max_queue=20)
    assert tx2.stream == stream and tx2.pending == 30  # resumed under the same de-dup key
    rx = BatchReceiver("rx", addr, lambda b: got.append((b.stream, b.seq)), state_dir=str(tmp_path / "rxstate"), fsync=False)
    await rx.start()
    await tx2.start()
    tx2.put(b"80")
    await tx2.flush(10)
    await tx2.close()
    await rx.close()
    assert got == [(stream, s) for s in range(1, 82)]
    assert BatchSender("w1", addr, journal_dir=jdir).stream != stream  # empty journal: fresh stream


async def test_handler_failure_is_retried_not_acked(tmp_path):
    addr = f"ipc://{tmp_path}/rx"
    calls = []

    def flaky(b):
        calls.append(b.seq)
        if b.seq == 3 and calls.count(3) < 3:
            raise RuntimeError("disk full")

    async with BatchReceiver("rx", addr, flaky, state_dir=str(tmp_path / "rxstate"), fsync=False) as rx:
        async with BatchSender("w1", addr, policy="drop", ack_timeout=0.2) as tx:
            for i in range(6):
                tx.put(b"%d" % i)
            await tx.flush(10)
        assert rx.stats()["handler_errors"] == 2 and rx.stats()["handled"] == 6
    assert [s for s in calls if s != 3] == [1, 2, 4, 5, 6] or sorted(set(calls)) == [1, 2, 3, 4, 5, 6]
    assert calls.count(3) == 3


async def test_malformed_frames_on_router_and_dealer(tmp_path):
    ctx = zmq.Context.instance()
    addr = f"ipc://{tmp_path}/rx"
    got = []
    async with BatchReceiver("rx", addr, lambda b: got.append(b.data), state_dir=str(tmp_path / "rxstate"), fsync=False) as rx:
        raw = ctx.socket(zmq.DEALER)
        raw.rcvtimeo = 5000  # read in an executor thread: never block it forever
        raw.connect(addr)
        sender = wire.sender_id("evil", "0123456789abcdef")
        topic = wire.topic_bytes("batch")
        bad = [
            [os.urandom(30)],
            [topic, sender, wire.FMT_BATCH],
            [topic, sender, wire.FMT_BATCH, b"\x94\xcb", b"extra"],
            [topic, sender, b"starling.batch.2", wire.encode_batch(1.0, 1, 1, b"x")],
            [topic, sender, wire.FMT_BATCH, b"\x94\xcb\x00"],  # truncated
            [topic, sender, wire.FMT_BATCH, b"\xdd\xff\xff\xff\xff"],  # huge declared length
            [topic, b"no-instance", wire.FMT_BATCH, wire.encode_batch(1.0, 1, 1, b"x")],
            [topic, sender, wire.FMT_BATCH, wire.encode_batch(1.0, 1, 2, b"x")],  # base > seq
            [topic, sender, wire.FMT_ACK, wire.encode_ack(1.0, "0123456789abcdef", 1)],
        ]
        for frames in bad:
            raw.send_multipart(frames)
        raw.send_multipart([topic, sender, wire.FMT_BATCH, wire.encode_batch(1.0, 1, 1, b"ok")])
        await until(lambda: got == [b"ok"], 5)
        assert rx.stats()["malformed"] == len(bad)
        reply = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, raw.recv_multipart), 5)
        assert wire.decode_ack(reply[3])[1:] == ("0123456789abcdef", 1)
        raw.close(0)

    # garbage coming back to a sender: a fake receiver answers with junk "acks"
    fake = ctx.socket(zmq.ROUTER)
    fake.rcvtimeo = 5000  # read in an executor thread: never block it forever
    fake.bind(f"ipc://{tmp_path}/fake")
    try:
        tx = await BatchSender("w1", f"ipc://{tmp_path}/fake", policy="drop", ack_timeout=5).start()
        try:
            tx.put(b"data")
            ident = (await asyncio.get_running_loop().run_in_executor(None, fake.recv_multipart))[0]
            for frames in (
                [b"x"],
                [topic, b"rx", wire.FMT_ACK, b"\xc1"],
                [topic, b"rx", wire.FMT_BATCH, b""],
                [topic, b"rx", wire.FMT_ACK, wire.encode_ack(1.0, "ffffffffffffffff", 1)],
            ):
                fake.send_multipart([ident, *frames])
            await until(lambda: tx.stats()["malformed"] == 3 and tx.stats()["stale_acks"] == 1, 5)
            assert tx.pending == 1  # nothing was taken as acknowledged
        finally:
            await tx.close(drain_timeout=0.1)
    finally:
        fake.close(0)


async def test_acks_are_read_while_the_sender_keeps_sending(tmp_path, procs):
    """Sending on the DEALER may consume the readiness edge an arrived ack raised; the sender must
    still read that ack at once.  With a 30 s ack timeout a missed ack shows as a stall (and any
    resend as a count): neither may happen while a receiver acknowledges everything."""
    addr = f"ipc://{tmp_path}/rx"
    out = str(tmp_path / "out.txt")
    procs.start("bus_receiver.py", "--bind", addr, "--state", str(tmp_path / "state"), "--out", out)
    async with BatchSender("w1", addr, policy="drop", window=8, ack_timeout=30.0, max_queue=100_000) as tx:
        n = 0
        t0 = time.monotonic()
        for _round in range(400):
            for _ in range(10):
                tx.put(msgpack.packb([n]))
                n += 1
            await asyncio.sleep(0)  # let the pump send while acks arrive
        await tx.flush(10)
        elapsed = time.monotonic() - t0
        st = tx.stats()
    assert [int(r[2]) for r in read_records(out)] == list(range(n))
    assert st["resent"] == 0 and st["acked"] == n
    assert elapsed < 10, f"acks were not read promptly: {elapsed:.1f} s for {n} batches"


async def test_close_is_prompt_when_a_wake_coincides_with_cancellation(tmp_path):
    """On 3.11 ``asyncio.wait_for`` may swallow a cancellation that races its inner future: close()
    must not depend on cancelling the pump (it once hung forever here)."""
    addr = f"ipc://{tmp_path}/nobody"
    for i in range(200):
        tx = await BatchSender(f"w{i}", addr, policy="drop", ack_timeout=0.2).start()
        await asyncio.sleep(0)
        tx.put(b"x")            # sets the wake event in the same loop turn as close() cancels
        await asyncio.wait_for(tx.close(drain_timeout=0), 5)

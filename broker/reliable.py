"""The reliable batch channel: opaque bulk payloads (e.g. log batches) from many senders to one
receiver, with nothing lost and nothing handled twice across a receiver crash.

Sockets: DEALER (sender, connects) -> ROUTER (receiver, binds).  DEALER/ROUTER rather than
PUSH/PULL because acknowledgements must flow back to the *same* sender: ROUTER addresses each
sender by its routing id over the one connection the data came on, where PUSH/PULL would need a
second socket pair and a way to match the two.  ``ZMQ_IMMEDIATE`` on the DEALER makes a send fail
fast while the receiver is away, so data stays in our own queue (bounded, spilling to disk)
instead of vanishing into a pipe that dies with the connection.

Protocol (go-back-N with cumulative acks, docs/wire-format.md):

* every batch of a sender stream gets the next sequence number; the stream id (16 hex digits) is
  new for each fresh sender and is reused when a sender resumes its on-disk journal;
* the sender keeps up to ``window`` batches in flight and resends all of them when no ack has
  advanced for ``ack_timeout`` (e.g. after the receiver restarted);
* the receiver handles only ``seq == last + 1``, records the new ``last`` (with the handler's
  checkpoint) in its :class:`~broker.journal.AckStore` and only then acknowledges; anything at or
  below ``last`` is a duplicate and is re-acknowledged, never handled again.  "Acked" therefore
  means "handled durably by the application".
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
import time
from collections import deque
from typing import Any, Callable, NamedTuple

import structlog
import zmq

from broker import wire
from broker.endpoint import Overloaded
from broker.journal import AckStore, Journal
from broker.sockets import async_socket
from broker.wire import WireError

log = structlog.get_logger(__name__)

_NOBLOCK = zmq.NOBLOCK
_EVENTS = zmq.EVENTS
_POLLIN = zmq.POLLIN
ACK_TOPIC = wire.topic_bytes("batch/ack")  # frame 1 of acknowledgements


class Batch(NamedTuple):
    sender: str  # sender's node name
    stream: str  # sender stream id (de-dup key together with seq)
    seq: int
    time: float  # send time at the sender
    data: bytes


class BatchSender:
    """Queue opaque byte batches for one receiver; see the module doc for the guarantees.

    ``policy``: ``"spill"`` (default; needs ``journal_dir``) writes to disk when the in-memory
    queue is full, ``"block"`` makes :meth:`send` wait (and :meth:`put` raise Overloaded),
    ``"drop"`` counts and discards.
    """

    def __init__(
        self,
        name: str,
        address: str,
        *,
        journal_dir: str | None = None,
        policy: str = "spill",
        channel: str = "batch",
        max_queue: int = 10_000,
        max_queue_bytes: int = 32 * 1024 * 1024,
        window: int = 64,
        window_bytes: int = 16 * 1024 * 1024,
        ack_timeout: float = 0.5,
        fsync: bool = False,
        context: zmq.Context | None = None,
    ) -> None:
        if policy not in ("spill", "block", "drop"):
            raise ValueError("policy must be 'spill', 'block' or 'drop'")
        if policy == "spill" and not journal_dir:
            raise ValueError("policy 'spill' needs journal_dir")
        self.name = wire.check_name(name)
        self.address = address
        self.policy = policy
        self.topic = wire.topic_bytes(channel)
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.window = window
        self.window_bytes = window_bytes
        self.ack_timeout = ack_timeout
        self._ctx = context or zmq.Context.instance()
        self._journal = Journal(journal_dir, fsync=fsync) if journal_dir else None
        if self._journal is not None and self._journal.stream and self._journal.pending:
            self.stream = self._journal.stream  # resume: replay under the same de-dup key
            self._next_seq = self._journal.max_seq + 1
        else:
            self.stream = secrets.token_hex(8)
            self._next_seq = 1
        self.sender = wire.sender_id(self.name, self.stream)
        self._mem: deque[tuple[int, bytes]] = deque()
        self._mem_bytes = 0
        self._inflight: deque[tuple[int, bytes]] = deque()
        self._inflight_bytes = 0
        self._acked = 0
        self._last_progress = time.monotonic()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._all_acked = asyncio.Event()
        self._stats = dict.fromkeys(
            ("put", "sent", "resent", "acked", "dropped", "spilled", "spilled_bytes", "malformed", "stale_acks"), 0
        )
        self._tasks: list[asyncio.Task] = []
        self._sock = None
        self._closed = False

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> "BatchSender":
        self._asock, s = async_socket(self._ctx, zmq.DEALER)
        s.linger = 0
        s.immediate = 1
        s.routing_id = self.sender
        s.sndhwm = max(1000, self.window * 2)
        s.rcvhwm = 10_000
        s.maxmsgsize = 64 * 1024
        s.reconnect_ivl = 100
        s.reconnect_ivl_max = 1000
        s.connect(self.address)
        self._sock = s
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._pump()), loop.create_task(self._ack_loop())]
        self._wake.set()
        log.debug("batch_sender_started", name=self.name, stream=self.stream, address=self.address)
        return self

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Wait up to ``drain_timeout`` for everything to be acked; persist the rest to the journal."""
        if self._closed or self._sock is None:
            return
        try:
            await self.flush(drain_timeout)
        except TimeoutError:
            pass
        self._closed = True  # the pump ends on this flag even if a cancellation is lost
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        left = list(self._inflight) + list(self._mem)
        if self._journal is not None:
            self._journal.write_segment(self.stream, left)
            self._journal.close()
        elif left or self.pending:
            log.warning("batch_sender_lost_on_close", name=self.name, batches=len(left))
        self._asock.close(linger=0)  # owner of the handle (broker/sockets.py)
        log.debug("batch_sender_closed", name=self.name, stream=self.stream, unacked=len(left))

    async def __aenter__(self) -> "BatchSender":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ---------------------------------------------------------------- queueing

    @property
    def pending(self) -> int:
        """Batches not yet acknowledged (in flight, in memory and on disk)."""
        return len(self._inflight) + len(self._mem) + (self._journal.pending if self._journal else 0)

    def _mem_full(self, n: int) -> bool:
        return len(self._mem) >= self.max_queue or self._mem_bytes + n > self.max_queue_bytes

    def put(self, data: bytes) -> bool:
        """Queue one batch without waiting.  False if dropped (policy ``"drop"``)."""
        if self._closed:
            raise ConnectionError("sender closed")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("batch payload must be bytes")
        data = bytes(data)
        if len(data) > wire.MAX_PAYLOAD - 64:
            raise ValueError("batch larger than the wire limit")
        j = self._journal
        if j is not None and j.pending > 0:
            to_disk = True  # keeps order: once spilling, everything goes via disk until drained
        elif self._mem_full(len(data)):
            if self.policy == "drop":
                self._stats["dropped"] += 1
                return False
            if self.policy == "block":
                raise Overloaded(f"{self.name}: batch queue full")
            to_disk = True
        else:
            to_disk = False
        seq = self._take_seq()
        if to_disk:
            j.append(self.stream, seq, data)
            self._stats["spilled"] += 1
            self._stats["spilled_bytes"] += len(data)
        else:
            self._mem.append((seq, data))
            self._mem_bytes += len(data)
        self._stats["put"] += 1
        self._all_acked.clear()
        self._wake.set()
        return True

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    async def send(self, data: bytes) -> bool:
        """Queue one batch; with policy ``"block"`` wait for room instead of raising."""
        while self.policy == "block" and self._mem_full(len(data)):
            self._room.clear()
            await self._room.wait()
        return self.put(data)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued batch has been acknowledged."""
        async with asyncio.timeout(timeout):
            while self.pending:
                self._all_acked.clear()
                await self._all_acked.wait()

    # ---------------------------------------------------------------- sending

    def _refill(self) -> None:
        j = self._journal
        if j is None or not j.pending or len(self._mem) > self.max_queue // 2:
            return
        room_items = self.max_queue - len(self._mem)
        room_bytes = self.max_queue_bytes - self._mem_bytes
        if room_items <= 0 or room_bytes <= 0:
            return
        for seq, data in j.read(room_items, room_bytes):
            self._mem.append((seq, data))
            self._mem_bytes += len(data)

    def _frame(self, seq: int, data: bytes) -> tuple:
        base = self._inflight[0][0] if self._inflight else seq
        return (self.topic, self.sender, wire.FMT_BATCH, wire.encode_batch(time.time(), seq, base, data))

    async def _pump(self) -> None:
        """Send what the window allows, resend after ``ack_timeout`` without progress.

        Ends on the ``_closed`` flag, not only by cancellation: on Python 3.11 ``wait_for`` can
        swallow a cancel that races the wake-up, which once made ``close()`` wait forever.
        """
        sock = self._sock
        while not self._closed:
            try:
                async with asyncio.timeout(self.ack_timeout / 2):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._closed:
                break
            self._wake.clear()
            self._read_acks()  # before judging progress: an ack may be waiting unnoticed
            now = time.monotonic()
            if self._inflight and now - self._last_progress > self.ack_timeout:
                try:
                    for seq, data in self._inflight:
                        sock.send_multipart(self._frame(seq, data), _NOBLOCK)
                        self._stats["resent"] += 1
                except zmq.Again:
                    pass  # receiver away: try again after the next timeout
                self._last_progress = now
            self._refill()
            blocked = False
            while self._mem and len(self._inflight) < self.window and self._inflight_bytes < self.window_bytes:
                seq, data = self._mem[0]
                try:
                    sock.send_multipart(self._frame(seq, data), _NOBLOCK)
                except zmq.Again:
                    blocked = True
                    break
                self._mem.popleft()
                self._mem_bytes -= len(data)
                if not self._inflight:
                    self._last_progress = now
                self._inflight.append((seq, data))
                self._inflight_bytes += len(data)
                self._stats["sent"] += 1
                self._room.set()
                self._refill()
            self._read_acks()  # a send may have consumed the edge of an ack that arrived meanwhile
            if blocked:
                await asyncio.sleep(0.02)
                self._wake.set()

    def _read_acks(self) -> None:
        """Read every ack that is waiting, if any.

        ZeroMQ signals readiness on an edge-triggered fd and *any* operation on the socket (our
        sends included) may consume that edge; the ack loop's poll would then sleep on an ack
        that has arrived.  Asking ``EVENTS`` after our own operations closes that gap.
        """
        if not self._closed and self._sock.get(_EVENTS) & _POLLIN:
            self._drain_acks()

    async def _ack_loop(self) -> None:
        while not self._closed:
            await self._asock.poll(None, zmq.POLLIN)
            self._drain_acks()

    def _drain_acks(self) -> None:
        """Receive with NOBLOCK until EAGAIN: only then will the next ack raise a new edge."""
        sock = self._sock
        while True:
            try:
                frames = sock.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            try:
                _topic, _sender, fmt, payload = wire.check_frames(frames)
                if fmt != wire.FMT_ACK:
                    raise WireError("unexpected_format")
                _t, stream, acked = wire.decode_ack(payload)
            except WireError as exc:
                self._stats["malformed"] += 1
                log.debug("malformed_frame", sender=self.name, reason=exc.reason)
                continue
            if stream != self.stream:
                self._stats["stale_acks"] += 1
                continue
            self._on_ack(acked)

    def _on_ack(self, acked: int) -> None:
        progressed = False
        while self._inflight and self._inflight[0][0] <= acked:
            _seq, data = self._inflight.popleft()
            self._inflight_bytes -= len(data)
            self._stats["acked"] += 1
            progressed = True
        if acked > self._acked:
            self._acked = acked
        if progressed:
            self._last_progress = time.monotonic()
            self._wake.set()
        if not self.pending:
            self._all_acked.set()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._stats)
        out.update(
            stream=self.stream,
            last_acked=self._acked,
            next_seq=self._next_seq,
            inflight=len(self._inflight),
            queued=len(self._mem),
            queued_bytes=self._mem_bytes,
            journal_pending=self._journal.pending if self._journal else 0,
            journal_bytes=self._journal.pending_bytes if self._journal else 0,
        )
        return out


Handler = Callable[[Batch], Any]


class BatchReceiver:
    """Bind a ROUTER, hand each new batch to ``handler`` in order, commit, then acknowledge.

    ``handler(batch)`` may be sync or async; whatever it returns is stored as the checkpoint
    with the acknowledgement state and is available after a restart as :attr:`checkpoint`
    (e.g. the byte offset of the application's output file after the batch was written).
    """

    def __init__(
        self,
        name: str,
        bind: str,
        handler: Handler,
        *,
        state_dir: str,
        fsync: bool = True,
        max_group: int = 256,
        context: zmq.Context | None = None,
    ) -> None:
        self.name = wire.check_name(name)
        self.instance = secrets.token_hex(8)
        self.sender = wire.sender_id(self.name, self.instance)
        self._bind = bind
        self._handler = handler
        self._store = AckStore(state_dir, fsync=fsync)
        self.max_group = max_group
        self._ctx = context or zmq.Context.instance()
        self._stats = dict.fromkeys(
            ("received", "handled", "duplicates", "out_of_order", "malformed", "handler_errors", "commits"), 0
        )
        self.malformed_reasons: dict[str, int] = {}
        self._sock = None
        self._task: asyncio.Task | None = None
        self.address = ""

    @property
    def checkpoint(self) -> Any:
        """The handler's return value for the last batch committed (survives restarts)."""
        return self._store.checkpoint

    @property
    def last_seq(self) -> dict[str, int]:
        """Last handled sequence number per sender stream."""
        return dict(self._store.last_seq)

    async def start(self) -> "BatchReceiver":
        self._asock, s = async_socket(self._ctx, zmq.ROUTER)
        s.linger = 0
        s.router_handover = 1  # a reconnecting sender with the same id takes over its route
        s.rcvhwm = 10_000
        s.maxmsgsize = wire.ZMQ_MAXMSGSIZE
        s.bind(self._bind)
        self.address = s.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = s
        self._task = asyncio.get_running_loop().create_task(self._loop())
        log.debug("batch_receiver_started", name=self.name, address=self.address)
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sock is not None:
            self._asock.close(linger=0)  # owner of the handle (broker/sockets.py)
            self._sock = None
        self._store.close()

    async def __aenter__(self) -> "BatchReceiver":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _malformed(self, reason: str) -> None:
        self._stats["malformed"] += 1
        self.malformed_reasons[reason] = self.malformed_reasons.get(reason, 0) + 1
        log.debug("malformed_frame", receiver=self.name, reason=reason)

    async def _loop(self) -> None:
        sock = self._sock
        while True:
            await self._asock.poll(None, zmq.POLLIN)
            while True:
                group = []
                while len(group) < self.max_group:
                    try:
                        group.append(sock.recv_multipart(_NOBLOCK))
                    except zmq.Again:
                        break
                if not group:
                    break
                await self._handle_group(group)

    async def _handle_group(self, group: list) -> None:
        last = self._store.last_seq
        updates: dict[str, int] = {}
        to_ack: dict[tuple[bytes, str], int] = {}
        checkpoint = self._store.checkpoint
        failed: set[str] = set()
        for frames in group:
            self._stats["received"] += 1
            try:
                if len(frames) != 5:
                    raise WireError("frame_count", str(len(frames)))
                ident = frames[0]
                _topic, sender, fmt, payload = wire.check_frames(frames[1:])
                if fmt != wire.FMT_BATCH:
                    raise WireError("unexpected_format")
                name, stream = wire.parse_sender(sender)
                t, seq, base, data = wire.decode_batch(payload)
            except WireError as exc:
                self._malformed(exc.reason)
                continue
            prev = updates.get(stream, last.get(stream))
            if prev is None:
                prev = base - 1  # first contact: the sender's oldest unacked batch starts us
            if stream in failed or seq > prev + 1:
                self._stats["out_of_order"] += 1
            elif seq <= prev:
                self._stats["duplicates"] += 1
            else:
                try:
                    result = self._handler(Batch(name, stream, seq, t, data))
                    if inspect.isawaitable(result):
                        result = await result
                except Exception:
                    self._stats["handler_errors"] += 1
                    log.exception("batch_handler_failed", receiver=self.name, stream=stream, seq=seq)
                    failed.add(stream)  # not acked: the sender will resend it
                else:
                    self._stats["handled"] += 1
                    updates[stream] = prev = seq
                    checkpoint = result
            to_ack[(ident, stream)] = prev
        if updates:
            self._store.commit(updates, checkpoint)
            self._stats["commits"] += 1
        now = time.time()
        for (ident, stream), seq in to_ack.items():
            try:
                self._sock.send_multipart(
                    (ident, ACK_TOPIC, self.sender, wire.FMT_ACK, wire.encode_ack(now, stream, seq)), _NOBLOCK
                )
            except zmq.ZMQError:
                pass  # sender gone or slow; it will resend and we re-ack

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._stats)
        out["streams"] = len(self._store.last_seq)
        out["malformed_reasons"] = dict(self.malformed_reasons)
        return out

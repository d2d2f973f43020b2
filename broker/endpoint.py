"""An Endpoint: one process's connection to the hub for pub/sub, membership and request/reply.

Two sockets, as in Zeek's ZeroMQ backend: an XPUB connected to the hub's XSUB side (we publish
through it, and because it is an XPUB we also *read* every subscription in the cluster from it:
presence), and a SUB connected to the hub's XPUB side (we receive through it).

Speed by design:

* ``publish`` is a plain method: one msgpack encode and one non-blocking send.  Only when the
  socket's high-water mark is hit does a frame go to a bounded backlog drained by a task
  (policy ``"drop"`` counts it instead once the backlog is full; ``"block"`` raises
  :class:`Overloaded` from ``publish`` and makes :meth:`apublish` wait).
* The receive loop awaits readiness once, then drains with ``NOBLOCK`` until ``EAGAIN``; each
  frame may carry a batch of events that share one sender/time header.

Every frame carries a per-(sender, topic) sequence number, so a receiver counts frames lost
anywhere on the way (including silent high-water-mark drops inside the hub) as ``gaps``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import secrets
import time
from collections import deque
from typing import Any, Awaitable, Callable, Iterable, NamedTuple

import structlog
import zmq

from broker import wire
from broker.hub import derive_addresses
from broker.membership import Membership, PeerEvent
from broker.sockets import async_socket
from broker.wire import WireError

log = structlog.get_logger(__name__)

_NOBLOCK = zmq.NOBLOCK
_RCVMORE = zmq.RCVMORE
_MORE = zmq.SNDMORE | zmq.NOBLOCK
_Again = zmq.Again
_now = time.time
_FMT_EVENT = wire.FMT_EVENT
_encode = wire.encode

NODE_TOPIC = "starling/node"
HEARTBEAT_TOPIC = "starling/heartbeat"
_NODE_PREFIX = b"starling/node/"
DRAIN_LIMIT = 4096  # frames handled per wake-up before yielding to other tasks ...
MAX_REMOTE_SUBS = 100_000  # distinct subscriptions remembered for wait_subscribed()
EVENT_BUDGET = 20_000  # ... or events (a frame may carry many), whichever comes first
# The loops wait on ZeroMQ's edge-triggered notification fd, but our sends and setsockopt calls
# go through the same sockets and may consume a pending edge: an XPUB that publishes a lot would
# then never wake for the subscriptions queued on it (presence, wait_subscribed) until some later
# edge.  So every wait also ends after this many ms and the loop drains regardless.
POLL_RECHECK_MS = 50


class Overloaded(RuntimeError):
    """A bounded queue is full and the channel's policy is not to drop."""


class RequestTimeout(TimeoutError):
    """No reply arrived in time."""


class RemoteError(RuntimeError):
    """The serving endpoint's handler raised; the message is its error text."""


class Meta:
    """Header shared by all events of one frame: who sent it, when, on which topic."""

    __slots__ = ("topic_bytes", "sender_bytes", "time", "seq")

    def __init__(self, topic_bytes: bytes, sender_bytes: bytes, time: float, seq: int) -> None:
        self.topic_bytes = topic_bytes
        self.sender_bytes = sender_bytes
        self.time = time
        self.seq = seq

    @property
    def topic(self) -> str:
        return self.topic_bytes.decode("utf-8", "replace").rstrip("/")

    @property
    def sender(self) -> str:
        """``name/instance`` of the publishing endpoint."""
        return self.sender_bytes.decode("utf-8", "replace")

    @property
    def sender_name(self) -> str:
        return self.sender.split("/", 1)[0]

    def __repr__(self) -> str:
        return f"Meta(topic={self.topic!r}, sender={self.sender!r}, time={self.time}, seq={self.seq})"


class Event(NamedTuple):
    name: str
    args: list
    meta: Meta


Handler = Callable[[str, list, Meta], Any]


class Subscription:
    """A prefix subscription: either calls ``handler`` or is consumed with ``async for``.

    Async handlers and iterators are fed through a bounded queue (``maxsize``); when it is full
    the event is dropped and counted in ``dropped`` (and the endpoint's ``stats()``).
    """

    def __init__(self, ep: "Endpoint", prefix: bytes, handler: Handler | None, batch: bool, maxsize: int):
        self._ep = ep
        self.prefix = prefix
        self.batch = batch
        self.dropped = 0
        self.closed = False
        self._handler = handler
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        if handler is None or inspect.iscoroutinefunction(handler):
            self._queue = asyncio.Queue(maxsize)
            if handler is not None:
                self._worker = asyncio.get_running_loop().create_task(self._run_async(handler))

    def _deliver(self, events: list, meta: Meta) -> None:
        h = self._handler
        if self._queue is None:
            if self.batch:
                try:
                    h(events, meta)
                except Exception:
                    self._ep._handler_failed(self.prefix)
            else:
                for name, args in events:
                    try:
                        h(name, args, meta)
                    except Exception:
                        self._ep._handler_failed(self.prefix)
            return
        q = self._queue
        items = [(events, meta)] if self.batch else [Event(n, a, meta) for n, a in events]
        room = q.maxsize - q.qsize() if q.maxsize > 0 else len(items)
        for item in items[:room]:
            q.put_nowait(item)
        if len(items) > room:
            self.dropped += len(items) - room
            self._ep._stats["dropped_in"] += len(items) - room

    async def _run_async(self, handler) -> None:
        q = self._queue
        while True:
            item = await q.get()
            try:
                if self.batch:
                    await handler(*item)
                else:
                    await handler(item.name, item.args, item.meta)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._ep._handler_failed(self.prefix)

    def __aiter__(self) -> "Subscription":
        if self._handler is not None:
            raise TypeError("this subscription has a handler; iterate a handler-less one")
        return self

    async def __anext__(self) -> Event:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:  # put by unsubscribe()
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        self._ep.unsubscribe(self)

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


class _Server:
    __slots__ = ("prefix", "handler")

    def __init__(self, prefix: bytes, handler: Callable) -> None:
        self.prefix = prefix
        self.handler = handler


class Endpoint:
    """Pub/sub, membership and request/reply over a :class:`~broker.hub.Hub`.

    ``hub`` is the hub's base address or an explicit ``(in_addr, out_addr)`` pair.
    """

    def __init__(
        self,
        name: str,
        hub: str | tuple[str, str],
        *,
        context: zmq.Context | None = None,
        instance: str | None = None,
        heartbeat_interval: float = 0.5,
        peer_timeout: float = 2.0,
        policy: str = "drop",
        backlog: int = 10_000,
        hwm: int = 100_000,
        receive_own: bool = False,
        max_pending_requests: int = 10_000,
        max_concurrent_requests: int = 1_000,
        peer_queue: int = 1_000,
    ) -> None:
        if policy not in ("drop", "block"):
            raise ValueError("policy must be 'drop' or 'block'")
        if not 0 < heartbeat_interval < peer_timeout:
            raise ValueError("need 0 < heartbeat_interval < peer_timeout")
        self.name = wire.check_name(name)
        self.instance = instance or secrets.token_hex(8)
        self.sender = wire.sender_id(self.name, self.instance)
        self.inbox = wire.topic_bytes(f"{NODE_TOPIC}/{self.name}/{self.instance}")
        self._in_addr, self._out_addr = derive_addresses(hub)
        self._ctx = context or zmq.Context.instance()
        self.heartbeat_interval = heartbeat_interval
        self.policy = policy
        self._backlog_max = backlog
        self._hwm = hwm
        self._receive_own = receive_own
        self._max_pending = max_pending_requests
        self._max_concurrent = max_concurrent_requests
        self.membership = Membership(peer_timeout)
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "published",
                "backlogged",
                "dropped_out",
                "received_frames",
                "received_events",
                "dropped_in",
                "gaps",
                "malformed",
                "handler_errors",
                "requests_sent",
                "request_timeouts",
                "late_replies",
                "requests_served",
                "requests_rejected",
            ),
            0,
        )
        self.malformed_reasons: dict[str, int] = {}
        self._subs: list[Subscription] = []
        self._servers: list[_Server] = []
        self._route_cache: dict[bytes, tuple[Subscription, ...]] = {}
        self._topic_cache: dict[str, bytes] = {}
        self._seq_out: dict[bytes, int] = {}
        self._seq_in: dict[bytes, dict[bytes, int]] = {}
        self._backlog: deque = deque()
        self._backlog_room = asyncio.Event()
        self._pending: dict[int, asyncio.Future] = {}
        self._rid = itertools.count(1)
        self._serving = 0
        self._remote_subs: set[bytes] = set()
        self._routed: set[bytes] = set()   # request topics a subscription was seen for (bounded)
        self._sub_waiters: list[tuple[bytes, asyncio.Future]] = []
        self._peer_handlers: list[Callable[[PeerEvent], Any]] = []
        self._peer_queues: list[asyncio.Queue] = []
        self._peer_queue_size = peer_queue
        self._peer_changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._pub = self._sub = None
        self._pub_send = self._send_part = self._not_running
        self._depth = None
        self._closed = False

    @staticmethod
    def _not_running(*_a) -> None:
        raise ConnectionError("endpoint is not running (use 'async with' or await start())")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> "Endpoint":
        ctx = self._ctx
        self._apub, pub = async_socket(ctx, zmq.XPUB)
        self._asub, sub = async_socket(ctx, zmq.SUB)
        for s in (pub, sub):
            s.linger = 0
            s.sndhwm = s.rcvhwm = self._hwm
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        pub.setsockopt(zmq.XPUB_NODROP, 1)  # HWM gives EAGAIN (counted) instead of a silent drop
        pub.maxmsgsize = wire.MAX_TOPIC + 2  # the hub only sends (un)subscriptions this way
        sub.maxmsgsize = wire.ZMQ_MAXMSGSIZE
        pub.connect(self._in_addr)
        sub.connect(self._out_addr)
        self._pub, self._sub = pub, sub
        self._pub_send = pub.send_multipart
        self._send_part = pub.send
        sub.setsockopt(zmq.SUBSCRIBE, self.inbox)
        sub.setsockopt(zmq.SUBSCRIBE, wire.topic_bytes(HEARTBEAT_TOPIC))
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._recv_loop(), name=f"starling-recv-{self.name}"),
            loop.create_task(self._presence_loop(), name=f"starling-presence-{self.name}"),
            loop.create_task(self._heartbeat_loop(), name=f"starling-heartbeat-{self.name}"),
        ]
        log.debug("endpoint_started", name=self.name, instance=self.instance)
        return self

    async def close(self) -> None:
        if self._closed or self._pub is None:
            return
        if self._backlog:  # give queued frames a short chance; what remains is counted
            try:
                await self.drain(1.0)
            except asyncio.TimeoutError:
                self._stats["dropped_out"] += len(self._backlog)
                self._backlog.clear()
        self._closed = True
        self._beat(wire.BEAT_BYE)
        for t in self._tasks:
            t.cancel()
        for s in self._subs:
            if s._worker:
                s._worker.cancel()
        await asyncio.gather(*self._tasks, *(s._worker for s in self._subs if s._worker), return_exceptions=True)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("endpoint closed"))
        # The asyncio sockets own the handles (see broker/sockets.py).
        self._apub.close(linger=200)  # give the bye a moment to leave
        self._asub.close(linger=0)
        self._pub_send = self._send_part = self._not_running
        log.debug("endpoint_closed", name=self.name, instance=self.instance)

    async def __aenter__(self) -> "Endpoint":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ------------------------------------------------------------------ publishing

    def _topic(self, topic: str) -> bytes:
        tb = self._topic_cache.get(topic)
        if tb is None:
            tb = wire.topic_bytes(topic)
            if len(self._topic_cache) > 4096:
                self._topic_cache.clear()
            self._topic_cache[topic] = tb
        return tb

    def _next_seq(self, tb: bytes) -> int:
        seq = self._seq_out.get(tb, 0) + 1
        self._seq_out[tb] = seq
        return seq

    def publish(self, topic: str, event_name: str, *args: Any) -> bool:
        """Send one event; never awaits.  False if it was dropped (policy ``"drop"``)."""
        tb = self._topic_cache.get(topic) or self._topic(topic)
        seq = self._seq_out.get(tb, 0) + 1
        self._seq_out[tb] = seq
        payload = _encode((_now(), seq, ((event_name, args),)))
        self._stats["published"] += 1
        if not self._backlog:
            # Four sends by hand: send_multipart re-checks types per part and costs ~2x.
            # With XPUB_NODROP, EAGAIN can only come on the first part (parts are atomic).
            send = self._send_part
            try:
                send(tb, _MORE)
            except _Again:
                pass
            else:
                send(self.sender, _MORE)
                send(_FMT_EVENT, _MORE)
                send(payload, _NOBLOCK)
                return True
        return self._enqueue((tb, self.sender, _FMT_EVENT, payload))

    def publish_batch(self, topic: str, events: Iterable[tuple[str, Iterable[Any]]]) -> bool:
        """Send many events in one frame with one sender/time header."""
        tb = self._topic_cache.get(topic) or self._topic(topic)
        events = events if isinstance(events, (list, tuple)) else list(events)
        if not events:
            return True
        if len(events) > wire.MAX_EVENTS:
            raise ValueError(f"more than {wire.MAX_EVENTS} events in one batch")
        payload = _encode((_now(), self._next_seq(tb), events))
        self._stats["published"] += len(events)
        return self._send((tb, self.sender, _FMT_EVENT, payload))

    async def apublish(self, topic: str, event_name: str, *args: Any) -> bool:
        """Like :meth:`publish` but waits for backlog room instead of dropping/raising."""
        while len(self._backlog) >= self._backlog_max:
            self._backlog_room.clear()
            await self._backlog_room.wait()
        return self.publish(topic, event_name, *args)

    def _send(self, frames) -> bool:
        if not self._backlog:
            try:
                self._pub_send(frames, _NOBLOCK)
                return True
            except _Again:
                pass
        return self._enqueue(frames)

    def _enqueue(self, frames) -> bool:
        if self._pub is None or self._closed:
            raise ConnectionError("endpoint is not running")
        if len(self._backlog) >= self._backlog_max:
            if self.policy == "block":
                raise Overloaded(f"{self.name}: publish backlog full ({self._backlog_max})")
            self._stats["dropped_out"] += 1
            return False
        self._backlog.append(frames)
        self._stats["backlogged"] += 1
        if len(self._backlog) == 1:
            self._tasks.append(asyncio.get_running_loop().create_task(self._flush_backlog()))
        return True

    async def _flush_backlog(self) -> None:
        # XPUB always reports POLLOUT, so wait by sleeping briefly when EAGAIN.
        bl = self._backlog
        try:
            while bl:
                try:
                    self._pub_send(bl[0], _NOBLOCK)
                    bl.popleft()
                    self._backlog_room.set()
                except _Again:
                    await asyncio.sleep(0.0005)
        finally:
            try:
                self._tasks.remove(asyncio.current_task())
            except ValueError:
                pass

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the publish backlog is empty (everything handed to ZeroMQ)."""
        async def _wait():
            while self._backlog:
                await asyncio.sleep(0.001)
        await asyncio.wait_for(_wait(), timeout)

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self, prefix: str, handler: Handler | None = None, *, batch: bool = False, maxsize: int = 100_000
    ) -> Subscription:
        """Deliver events whose topic starts with ``prefix`` (whole '/'-components; "" = all).

        ``handler(name, args, meta)`` (or ``handler(events, meta)`` with ``batch=True``) is
        called for each event; without a handler, iterate the returned subscription.
        """
        if self._sub is None or self._closed:
            raise ConnectionError("endpoint is not running (use 'async with' or await start())")
        pb = wire.prefix_bytes(prefix)
        s = Subscription(self, pb, handler, batch, maxsize)
        self._subs.append(s)
        self._route_cache.clear()
        self._sub.setsockopt(zmq.SUBSCRIBE, pb)
        return s

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.closed:
            return
        sub.closed = True
        try:
            self._subs.remove(sub)
        except ValueError:
            return
        self._route_cache.clear()
        if sub._worker:
            sub._worker.cancel()
        if self._sub is not None and not self._closed:
            self._sub.setsockopt(zmq.UNSUBSCRIBE, sub.prefix)
        if sub._queue is not None and sub._handler is None:
            try:
                sub._queue.put_nowait(None)  # wake an iterator so it can finish
            except asyncio.QueueFull:
                pass

    def _route(self, topic: bytes) -> tuple[Subscription, ...]:
        r = tuple(s for s in self._subs if topic.startswith(s.prefix))
        if len(self._route_cache) > 4096:
            self._route_cache.clear()
        self._route_cache[topic] = r
        return r

    async def wait_subscribed(self, topic: str, timeout: float = 5.0) -> None:
        """Wait until some peer subscribes to a prefix of ``topic`` (its frames would reach it)."""
        tb = wire.topic_bytes(topic)
        if any(tb.startswith(p) for p in self._remote_subs):
            return
        fut = asyncio.get_running_loop().create_future()
        self._sub_waiters.append((tb, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self._sub_waiters = [(t, f) for t, f in self._sub_waiters if f is not fut]

    # ------------------------------------------------------------------ receiving

    async def _recv_loop(self) -> None:
        # Frames are read one by one: pyzmq's recv_multipart asks RCVMORE after every part,
        # which costs more than the recv itself.  We ask once, after the 4th part: more parts
        # mean a malformed message, which is then drained to its end.  A message with fewer
        # than 4 parts makes us read into the next one; the check catches that too, at the cost
        # of that next message (counted as malformed; its sender's seq shows it as a gap).
        sock = self._sub
        recv = sock.recv
        more = sock.getsockopt
        poll = self._asub.poll
        handle = self._handle
        self._depth = wire.stack_depth() + 2  # _recv_loop -> _handle -> decode_events
        st = self._stats
        while True:
            await poll(POLL_RECHECK_MS, zmq.POLLIN)
            n = 0
            budget = st["received_events"] + EVENT_BUDGET
            drained = False
            while n < DRAIN_LIMIT and st["received_events"] < budget:
                try:
                    topic = recv(_NOBLOCK)
                except _Again:
                    drained = True
                    break
                n += 1
                try:
                    sender = recv(_NOBLOCK)
                    fmt = recv(_NOBLOCK)
                    payload = recv(_NOBLOCK)
                except _Again:
                    self._malformed("frame_count", "short message")
                    continue
                if more(_RCVMORE):
                    while more(_RCVMORE):
                        recv(_NOBLOCK)
                    self._malformed("frame_count", "too many parts")
                    continue
                handle(topic, sender, fmt, payload)
            st["received_frames"] += n
            if not drained:
                await asyncio.sleep(0)  # budget used up: let other tasks run, then drain on

    def _malformed(self, reason: str, detail: str = "") -> None:
        self._stats["malformed"] += 1
        self.malformed_reasons[reason] = self.malformed_reasons.get(reason, 0) + 1
        log.debug("malformed_frame", endpoint=self.name, reason=reason, detail=detail)

    def _handler_failed(self, prefix: bytes) -> None:
        self._stats["handler_errors"] += 1
        log.exception("handler_failed", endpoint=self.name, prefix=prefix.decode("utf-8", "replace"))

    def _handle(self, topic: bytes, sender: bytes, fmt: bytes, payload: bytes) -> None:
        """One 4-part message (counted in received_frames by the caller)."""
        try:
            if sender == self.sender and not self._receive_own:
                return
            if fmt == _FMT_EVENT:
                if len(topic) > wire.MAX_TOPIC or not 0 < len(sender) <= wire.MAX_SENDER or topic[-1:] != b"/":
                    raise WireError("bad_header")
                t, seq, events = wire.decode_events(payload, self._depth)
                d = self._seq_in.get(topic)  # inlined _check_seq: this is the hot path
                if d is not None:
                    prev = d.get(sender)
                    if prev is not None and seq > prev + 1:
                        self._stats["gaps"] += seq - prev - 1
                    d[sender] = seq
                else:
                    self._check_seq(topic, sender, seq)
                self._stats["received_events"] += len(events)
                subs = self._route_cache.get(topic)
                if subs is None:
                    subs = self._route(topic)
                if subs:
                    meta = Meta(topic, sender, t, seq)
                    for s in subs:
                        s._deliver(events, meta)
                return
            wire.check_frames((topic, sender, fmt, payload))
            if fmt == wire.FMT_BEAT:
                self._on_beat(sender, *wire.decode_beat(payload))
            elif fmt == wire.FMT_REQUEST:
                self._on_request(topic, sender, *wire.decode_request(payload))
            elif fmt == wire.FMT_REPLY:
                self._on_reply(topic, sender, *wire.decode_reply(payload))
            else:
                raise WireError("unexpected_format", fmt.decode("ascii", "replace"))
        except WireError as exc:
            self._malformed(exc.reason, str(exc))

    def _check_seq(self, topic: bytes, sender: bytes, seq: int) -> None:
        d = self._seq_in.get(topic)
        if d is None:
            if len(self._seq_in) > 10_000:
                self._seq_in.clear()
            d = self._seq_in[topic] = {}
        prev = d.get(sender)
        if prev is not None and seq > prev + 1:
            self._stats["gaps"] += seq - prev - 1
        d[sender] = seq

    # ------------------------------------------------------------------ membership

    def _beat(self, kind: int) -> None:
        tb = wire.topic_bytes(HEARTBEAT_TOPIC)
        payload = wire.encode_beat(_now(), self._next_seq(tb), kind, os.getpid(), self.heartbeat_interval)
        try:
            self._pub_send((tb, self.sender, wire.FMT_BEAT, payload), _NOBLOCK)
        except _Again:
            pass  # a beat that cannot go out now is worthless later

    def _hello_to(self, inbox: bytes) -> None:
        payload = wire.encode_beat(_now(), self._next_seq(inbox), wire.BEAT_HELLO, os.getpid(), self.heartbeat_interval)
        self._send((inbox, self.sender, wire.FMT_BEAT, payload))

    async def _heartbeat_loop(self) -> None:
        self._beat(wire.BEAT_HELLO)
        period = self.heartbeat_interval
        next_beat = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_beat:
                self._beat(wire.BEAT_HEARTBEAT)
                next_beat = now + period
            self._emit(self.membership.tick(now))
            await asyncio.sleep(min(period / 4, 0.1))

    def _on_beat(self, sender: bytes, t: float, seq: int, kind: int, pid: int, interval: float) -> None:
        name, instance = wire.parse_sender(sender)
        if kind == wire.BEAT_BYE:
            self._emit(self.membership.on_bye(name, instance))
        else:
            self._emit(self.membership.on_beat(name, instance, time.monotonic(), hello=kind == wire.BEAT_HELLO))

    async def _presence_loop(self) -> None:
        sock = self._pub
        poll = self._apub.poll
        while True:
            await poll(POLL_RECHECK_MS, zmq.POLLIN)
            while True:
                try:
                    frames = sock.recv_multipart(_NOBLOCK)
                except _Again:
                    break
                try:
                    self._on_subscription(*wire.decode_subscription(frames))
                except WireError as exc:
                    self._malformed(exc.reason, str(exc))

    def _on_subscription(self, up: bool, topic: bytes) -> None:
        if up:
            if len(self._remote_subs) < MAX_REMOTE_SUBS:  # bounded like every other table
                self._remote_subs.add(topic)
            if self._sub_waiters:
                for tb, fut in self._sub_waiters:
                    if tb.startswith(topic) and not fut.done():
                        fut.set_result(None)
        else:
            self._remote_subs.discard(topic)
        if not topic.startswith(_NODE_PREFIX) or topic == self.inbox:
            return
        parts = topic[len(_NODE_PREFIX):].split(b"/")
        if len(parts) != 3 or parts[2]:
            return  # some other subscription under starling/node/, not an inbox
        try:
            name, instance = wire.parse_sender(parts[0] + b"/" + parts[1])
        except WireError as exc:
            self._malformed(exc.reason)
            return
        if up and not self.membership.is_up(name):
            self._hello_to(topic)  # introduce ourselves at once instead of at the next beat
        self._emit(self.membership.on_presence(name, instance, up, time.monotonic()))

    def _emit(self, events: list[PeerEvent]) -> None:
        for ev in events:
            log.info("peer_" + ev.kind, endpoint=self.name, peer=ev.name, instance=ev.instance, reason=ev.reason)
            for h in self._peer_handlers:
                try:
                    h(ev)
                except Exception:
                    self._stats["handler_errors"] += 1
                    log.exception("peer_handler_failed", endpoint=self.name)
            for q in self._peer_queues:
                try:
                    q.put_nowait(ev)
                except asyncio.QueueFull:
                    self._stats["dropped_in"] += 1
        if events:
            self._peer_changed.set()
            self._peer_changed = asyncio.Event()

    def on_peer(self, handler: Callable[[PeerEvent], Any]) -> None:
        """Call ``handler(PeerEvent)`` on every peer up/down."""
        self._peer_handlers.append(handler)

    async def peer_events(self):
        """Async iterator of PeerEvents from now on (bounded; overflow counted as dropped_in)."""
        q: asyncio.Queue = asyncio.Queue(self._peer_queue_size)
        self._peer_queues.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._peer_queues.remove(q)

    def peers(self) -> dict[str, str]:
        """Live peers: name -> instance id."""
        return self.membership.peers()

    async def wait_for_peers(self, names: Iterable[str], timeout: float = 10.0) -> None:
        names = set(names)

        async def _wait():
            while not names <= set(self.membership.peers()):
                await self._peer_changed.wait()

        await asyncio.wait_for(_wait(), timeout)

    # ------------------------------------------------------------------ request / reply

    def serve(self, prefix: str, handler: Callable[[str, list, Meta], Any]) -> None:
        """Answer requests sent to topics under ``prefix``; ``handler`` may be sync or async."""
        if self._sub is None or self._closed:
            raise ConnectionError("endpoint is not running (use 'async with' or await start())")
        pb = wire.prefix_bytes(prefix)
        self._servers.append(_Server(pb, handler))
        self._sub.setsockopt(zmq.SUBSCRIBE, pb)

    async def request(self, topic: str, event_name: str, *args: Any, timeout: float = 5.0) -> Any:
        """Send a request to whoever serves ``topic`` and return the first reply's value.

        The first request to a topic waits (within ``timeout``) until the hub has shown us both a
        server's subscription and our own inbox's: before that, ZeroMQ's publishers would silently
        drop the request or its reply, and a brand-new endpoint's first request would time out.
        """
        if len(self._pending) >= self._max_pending:
            raise Overloaded(f"{self.name}: {self._max_pending} requests outstanding")
        tb = self._topic(topic)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if tb not in self._routed:
            await self._await_route(topic, tb, timeout)
        rid = next(self._rid)
        fut = loop.create_future()
        self._pending[rid] = fut
        payload = wire.encode_request(_now(), self._next_seq(tb), rid, self.inbox, event_name, args)
        self._stats["requests_sent"] += 1
        try:
            if not self._send((tb, self.sender, wire.FMT_REQUEST, payload)):
                raise Overloaded(f"{self.name}: request dropped, publish backlog full")
            return await asyncio.wait_for(fut, max(deadline - loop.time(), 0.001))
        except asyncio.TimeoutError:
            self._stats["request_timeouts"] += 1
            raise RequestTimeout(f"no reply to {event_name!r} on {topic!r} within {timeout}s") from None
        finally:
            self._pending.pop(rid, None)

    async def _await_route(self, topic: str, tb: bytes, timeout: float) -> None:
        """Wait (bounded) until our inbox's and a server's subscriptions have come back through
        the hub; on timeout the request goes anyway (the caller's own timeout then decides)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        try:
            await self.wait_subscribed(topic, timeout)
        except asyncio.TimeoutError:
            return
        while self.inbox not in self._remote_subs:   # exactly ours: a broader one is someone else's
            if loop.time() >= end:
                return
            await asyncio.sleep(0.005)
        if len(self._routed) >= 4096:
            self._routed.clear()
        self._routed.add(tb)

    def _on_request(self, topic: bytes, sender: bytes, t: float, seq: int, rid: int, reply_to: bytes, name: str, args: list) -> None:
        self._check_seq(topic, sender, seq)
        server = next((s for s in self._servers if topic.startswith(s.prefix)), None)
        if server is None:
            return
        meta = Meta(topic, sender, t, seq)
        if self._serving >= self._max_concurrent:
            self._stats["requests_rejected"] += 1
            self._reply(reply_to, rid, False, "overloaded")
            return
        try:
            result = server.handler(name, args, meta)
        except Exception as exc:
            self._reply(reply_to, rid, False, f"{type(exc).__name__}: {exc}")
            return
        if inspect.isawaitable(result):
            self._serving += 1
            task = asyncio.get_running_loop().create_task(self._finish_request(reply_to, rid, result))
            self._tasks.append(task)
            task.add_done_callback(self._tasks_discard)
        else:
            self._reply(reply_to, rid, True, result)

    def _tasks_discard(self, task: asyncio.Task) -> None:
        try:
            self._tasks.remove(task)
        except ValueError:
            pass

    async def _finish_request(self, reply_to: bytes, rid: int, aw: Awaitable) -> None:
        try:
            value = await aw
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._reply(reply_to, rid, False, f"{type(exc).__name__}: {exc}")
        else:
            self._reply(reply_to, rid, True, value)
        finally:
            self._serving -= 1

    def _reply(self, reply_to: bytes, rid: int, ok: bool, value: Any) -> None:
        try:
            payload = wire.encode_reply(_now(), self._next_seq(reply_to), rid, ok, value)
        except (TypeError, OverflowError) as exc:
            payload = wire.encode_reply(_now(), self._next_seq(reply_to), rid, False, f"unencodable reply: {exc}")
        self._stats["requests_served"] += 1
        self._send((reply_to, self.sender, wire.FMT_REPLY, payload))

    def _on_reply(self, topic: bytes, sender: bytes, t: float, seq: int, rid: int, ok: bool, value: Any) -> None:
        self._check_seq(topic, sender, seq)
        fut = self._pending.get(rid)
        if topic != self.inbox or fut is None or fut.done():
            self._stats["late_replies"] += 1
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(RemoteError(str(value)))

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        """Counters (every drop is counted here), queue depths and live peers."""
        out: dict[str, Any] = dict(self._stats)
        out["backlog"] = len(self._backlog)
        out["pending_requests"] = len(self._pending)
        out["malformed_reasons"] = dict(self.malformed_reasons)
        out["subscription_queues"] = sum(s._queue.qsize() for s in self._subs if s._queue is not None)
        out["peers"] = self.peers()
        return out

"""The one place that knows how Starling bus frames look on the wire.

Everything that comes off a socket is untrusted until it has passed through a ``decode_*``
function here; they raise :class:`WireError` (never anything else) so a receive loop can count
and drop a bad frame with a single ``except``.  The layout is documented for non-Python peers in
``docs/wire-format.md``; keep the two in step.

Codec: msgspec's msgpack encoder/decoder, chosen by measurement (docs/bus.md): it encodes a
typical event ~2.8x and a 1000-event batch ~5x faster than the ``msgpack`` package and decodes
at the same speed.  Both speak plain msgpack, so the choice is invisible on the wire.
"""

from __future__ import annotations

import operator
import re
import struct
import sys
from typing import Any

import msgspec

# --- format names (frame 3).  The trailing number is the version of the payload layout. ---
FMT_EVENT = b"starling.ev.1"  # pub/sub: a batch of events
FMT_BEAT = b"starling.hb.1"  # pub/sub: hello / heartbeat / bye
FMT_REQUEST = b"starling.req.1"  # pub/sub: request expecting one reply
FMT_REPLY = b"starling.rep.1"  # pub/sub: reply to a request
FMT_BATCH = b"starling.batch.1"  # reliable channel: opaque bulk bytes with sequence number
FMT_ACK = b"starling.ack.1"  # reliable channel: cumulative acknowledgement
FORMATS = frozenset({FMT_EVENT, FMT_BEAT, FMT_REQUEST, FMT_REPLY, FMT_BATCH, FMT_ACK})

BEAT_HELLO, BEAT_HEARTBEAT, BEAT_BYE = 0, 1, 2

# --- limits ---
MAX_TOPIC = 1024  # bytes, frame 1
MAX_SENDER = 128  # bytes, frame 2
MAX_PAYLOAD = 64 * 1024 * 1024  # bytes, frame 4 (log batches can be big)
MAX_EVENTS = 1_000_000  # events in one starling.ev.1 frame
MAX_DEPTH = 32  # nesting of arrays/maps inside event arguments and reply values
# libzmq drops a connection that sends a larger message part (ZMQ_MAXMSGSIZE).
ZMQ_MAXMSGSIZE = MAX_PAYLOAD + 4096

TOPIC_SEP = "/"
_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_INSTANCE_RE = re.compile(r"[0-9a-f]{16}\Z")


class WireError(ValueError):
    """A frame that does not follow docs/wire-format.md.  ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _ext_hook(code: int, data: memoryview) -> Any:
    raise WireError("ext_type", f"msgpack extension type {code} not allowed")


_enc = msgspec.msgpack.Encoder()
encode = _enc.encode  # plain msgpack of Python values (lists, dicts, str, bytes, numbers)
_dec = msgspec.msgpack.Decoder(ext_hook=_ext_hook)
_raw_decode = _dec.decode
_NESTED = (list, dict)


def decode(payload: bytes) -> Any:
    """msgpack -> Python, with size check and every decoder failure mapped to WireError."""
    if len(payload) > MAX_PAYLOAD:
        raise WireError("too_large", f"{len(payload)} bytes")
    try:
        return _raw_decode(payload)
    except WireError:
        raise
    except RecursionError:
        raise WireError("too_deep") from None
    except Exception as exc:  # msgspec.DecodeError, and anything an ext_hook raised
        raise WireError("bad_msgpack", str(exc)[:200]) from None


def _depth(obj: Any, limit: int) -> bool:
    """True if ``obj`` nests deeper than ``limit`` containers."""
    if limit < 0:
        return True
    if obj.__class__ is list:
        return any(o.__class__ in _NESTED and _depth(o, limit - 1) for o in obj)
    if obj.__class__ is dict:
        return any(o.__class__ in _NESTED and _depth(o, limit - 1) for o in obj.values())
    return False


def check_depth(values: list, limit: int = MAX_DEPTH) -> None:
    """Only values that are containers are walked, so flat argument lists cost one type test."""
    for v in values:
        if v.__class__ in _NESTED and _depth(v, limit - 1):
            raise WireError("too_deep")


# --- identities ---


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"bad node name {name!r}: want 1-64 of [A-Za-z0-9_.:-]")
    return name


def sender_id(name: str, instance: str) -> bytes:
    """Frame 2: ``<name>/<instance>`` (instance = 16 lowercase hex digits, new per process start)."""
    check_name(name)
    if not _INSTANCE_RE.match(instance):
        raise ValueError(f"bad instance id {instance!r}")
    return f"{name}/{instance}".encode()


def parse_sender(sender: bytes) -> tuple[str, str]:
    try:
        name, instance = sender.decode().split("/")
    except (UnicodeDecodeError, ValueError):
        raise WireError("bad_sender", repr(sender[:80])) from None
    if not _NAME_RE.match(name) or not _INSTANCE_RE.match(instance):
        raise WireError("bad_sender", repr(sender[:80]))
    return name, instance


# --- topics ---


def topic_bytes(topic: str) -> bytes:
    """Normalise a topic for the wire: '/'-separated non-empty components plus a trailing '/'.

    The trailing separator is what makes ZeroMQ's byte-prefix filtering match whole
    components: subscription ``node/worker-1/`` is not a prefix of ``node/worker-10/``.
    """
    if not isinstance(topic, str):
        raise TypeError("topic must be str")
    t = topic.strip(TOPIC_SEP)
    if not t:
        raise ValueError("empty topic")
    if "//" in t or "\x00" in t:
        raise ValueError(f"bad topic {topic!r}: empty component or NUL")
    b = (t + TOPIC_SEP).encode()
    if len(b) > MAX_TOPIC:
        raise ValueError("topic too long")
    return b


def prefix_bytes(prefix: str) -> bytes:
    """Like :func:`topic_bytes` but ``""`` (everything) is allowed."""
    return b"" if prefix.strip(TOPIC_SEP) == "" else topic_bytes(prefix)


# --- frames ---


def check_frames(frames: list) -> tuple[bytes, bytes, bytes, bytes]:
    """Validate the 4-frame envelope; return (topic, sender, format, payload)."""
    if len(frames) != 4:
        raise WireError("frame_count", str(len(frames)))
    topic, sender, fmt, payload = frames
    if len(topic) > MAX_TOPIC or not topic.endswith(b"/"):
        raise WireError("bad_topic", repr(bytes(topic[:80])))
    if not sender or len(sender) > MAX_SENDER:
        raise WireError("bad_sender", repr(bytes(sender[:80])))
    if fmt not in FORMATS:
        raise WireError("unknown_format", repr(bytes(fmt[:80])))
    return topic, sender, fmt, payload


def encode_events(time: float, seq: int, events: list | tuple) -> bytes:
    return _enc.encode((time, seq, events))


_ev_dec = msgspec.msgpack.Decoder(tuple[float, int, list[tuple[str, list[Any]]]], ext_hook=_ext_hook)
_ev_raw = _ev_dec.decode
_setlimit = sys.setrecursionlimit
_getlimit = sys.getrecursionlimit


_DEPTH_RE = re.compile(r"recursion depth (\d+)")


def stack_depth() -> int:
    """The interpreter's recursion depth at the caller's frame (what the limit is checked
    against; frames of C calls count too, so walking ``f_back`` would be wrong).  It costs an
    exception, so hot loops compute it once and pass it on."""
    old = _getlimit()
    try:
        _setlimit(1)  # always refused (we are deeper than 1); the refusal names the depth
    except RecursionError as exc:
        m = _DEPTH_RE.search(str(exc))
        if m:
            return int(m.group(1)) - 1
    else:
        _setlimit(old)
    return -1  # interpreter without this message: the guard is disabled by _calibrate()


# Bytes that can start a msgpack array or map: fixmap, fixarray, array16/32, map16/32.
_CONTAINER_HEADER = bytes(range(0x80, 0xA0)) + b"\xdc\xdd\xde\xdf"
_HEADER_TABLE = bytes(1 if b in _CONTAINER_HEADER else 0 for b in range(256))  # for translate
_HEADERS_OK = MAX_DEPTH + 4  # the event envelope itself uses 4 levels
_call = operator.call
_GUARD_FUNCS = (_setlimit, _ev_raw, _setlimit)


def _guarded(payload: bytes, depth: int) -> Any:
    # msgspec guards its recursion with the interpreter's recursion limit.  Lowering that limit
    # to "caller's depth + envelope + MAX_DEPTH" for the duration of the decode makes the C
    # decoder itself enforce MAX_DEPTH, with no per-argument Python work.  The limit is
    # process-wide, so the three calls (lower, decode, restore) are chained from C via
    # map(operator.call, ...): no bytecode runs in between, hence no GIL hand-over, hence no
    # other thread ever runs while the limit is lowered.
    old = _getlimit()
    try:
        return list(map(_call, _GUARD_FUNCS, (depth + _GUARD_K, payload, old)))[1]
    except BaseException:
        _setlimit(old)  # the decode raised before the restore
        raise


def _calibrate() -> int | None:
    """Find the recursion-limit slack that admits exactly MAX_DEPTH; None if not enforceable."""
    global _GUARD_K

    def nested(d: int) -> bytes:
        arg: Any = 1
        for _ in range(d):
            arg = [arg]
        # padding with empty arrays pushes the payload past the header-count shortcut, so the
        # guarded path is the one calibrated
        return _enc.encode((0.0, 1, [("e", [arg] + [[]] * (_HEADERS_OK + 1))]))

    ok, bad = nested(MAX_DEPTH), nested(MAX_DEPTH + 1)
    if stack_depth() < 0:
        return None
    for k in range(4, 64):  # through the public path, so the calibration matches real calls
        _GUARD_K = k
        try:
            decode_events(ok)
        except WireError:
            continue
        try:
            decode_events(bad)
        except WireError:
            return k
        return None
    return None


_GUARD_K: int | None = 0


def decode_events(payload: bytes, depth: int | None = None) -> tuple[float, int, list]:
    """starling.ev.1 -> (time, seq, [(name, args), ...]).

    Shape is validated by a typed msgspec decoder in C; nesting of arguments beyond MAX_DEPTH
    is refused by the recursion guard (see ``_guarded``).  ``depth`` is the caller's
    :func:`stack_depth` + 1; hot loops compute it once and pass it in.
    """
    if len(payload) > MAX_PAYLOAD:
        raise WireError("too_large", f"{len(payload)} bytes")
    if payload.__class__ is not bytes:
        payload = bytes(payload)
    try:
        if payload.translate(_HEADER_TABLE).count(1) <= _HEADERS_OK:
            # Too few bytes that could even be array/map headers to nest past MAX_DEPTH (each
            # level needs one): the plain typed decode is exact here, and this is the common
            # case for small frames.  (msgspec's own guard still stops runaway recursion.)
            t, seq, events = _ev_raw(payload)
        elif _GUARD_K is None:  # interpreter where the guard cannot be tuned: walk in Python
            t, seq, events = _ev_raw(payload)
            for _name, args in events:
                check_depth(args)
        else:
            t, seq, events = _guarded(payload, stack_depth() if depth is None else depth)
    except WireError:
        raise
    except RecursionError:
        raise WireError("too_deep") from None
    except msgspec.ValidationError as exc:
        raise WireError("bad_shape", str(exc)[:200]) from None
    except Exception as exc:
        raise WireError("bad_msgpack", str(exc)[:200]) from None
    if not 0 < len(events) <= MAX_EVENTS:
        raise WireError("bad_shape", "event count")
    return t, seq, events


_GUARD_K = _calibrate()


def encode_beat(time: float, seq: int, kind: int, pid: int, interval: float) -> bytes:
    return _enc.encode((time, seq, kind, pid, interval))


def decode_beat(payload: bytes) -> tuple[float, int, int, int, float]:
    obj = decode(payload)
    try:
        t, seq, kind, pid, interval = obj
    except (TypeError, ValueError):
        raise WireError("bad_shape", "beat") from None
    if not (
        isinstance(t, float)
        and type(seq) is int
        and kind in (BEAT_HELLO, BEAT_HEARTBEAT, BEAT_BYE)
        and type(pid) is int
        and isinstance(interval, (int, float))
    ):
        raise WireError("bad_shape", "beat")
    return t, seq, kind, pid, float(interval)


def encode_request(time: float, seq: int, req_id: int, reply_to: bytes, name: str, args) -> bytes:
    return _enc.encode((time, seq, req_id, reply_to.decode(), name, args))


def decode_request(payload: bytes) -> tuple[float, int, int, bytes, str, list]:
    obj = decode(payload)
    try:
        t, seq, req_id, reply_to, name, args = obj
    except (TypeError, ValueError):
        raise WireError("bad_shape", "request") from None
    if not (
        isinstance(t, float)
        and type(seq) is int
        and type(req_id) is int
        and isinstance(reply_to, str)
        and isinstance(name, str)
        and isinstance(args, list)
    ):
        raise WireError("bad_shape", "request")
    rt = reply_to.encode()
    if not rt.endswith(b"/") or len(rt) > MAX_TOPIC:
        raise WireError("bad_shape", "reply_to")
    check_depth(args)
    return t, seq, req_id, rt, name, args


def encode_reply(time: float, seq: int, req_id: int, ok: bool, value: Any) -> bytes:
    return _enc.encode((time, seq, req_id, ok, value))


def decode_reply(payload: bytes) -> tuple[float, int, int, bool, Any]:
    obj = decode(payload)
    try:
        t, seq, req_id, ok, value = obj
    except (TypeError, ValueError):
        raise WireError("bad_shape", "reply") from None
    if not (isinstance(t, float) and type(seq) is int and type(req_id) is int and type(ok) is bool):
        raise WireError("bad_shape", "reply")
    check_depth([value])
    return t, seq, req_id, ok, value


def encode_batch(time: float, seq: int, base: int, data: bytes) -> bytes:
    return _enc.encode((time, seq, base, data))


def decode_batch(payload: bytes) -> tuple[float, int, int, bytes]:
    obj = decode(payload)
    try:
        t, seq, base, data = obj
    except (TypeError, ValueError):
        raise WireError("bad_shape", "batch") from None
    if not (
        isinstance(t, float)
        and type(seq) is int
        and type(base) is int
        and isinstance(data, bytes)
        and 1 <= base <= seq
    ):
        raise WireError("bad_shape", "batch")
    return t, seq, base, data


def encode_ack(time: float, stream: str, acked: int) -> bytes:
    return _enc.encode((time, stream, acked))


def decode_ack(payload: bytes) -> tuple[float, str, int]:
    obj = decode(payload)
    try:
        t, stream, acked = obj
    except (TypeError, ValueError):
        raise WireError("bad_shape", "ack") from None
    if not (isinstance(t, float) and isinstance(stream, str) and type(acked) is int and acked >= 0):
        raise WireError("bad_shape", "ack")
    return t, stream, acked


# --- presence notifications (what an XPUB socket reads: b"\x01topic" / b"\x00topic") ---


def decode_subscription(frames: list) -> tuple[bool, bytes]:
    if len(frames) != 1 or len(frames[0]) < 1 or frames[0][0] not in (0, 1):
        raise WireError("bad_subscription")
    f = frames[0]
    if len(f) > MAX_TOPIC + 1:
        raise WireError("bad_subscription", "too long")
    return f[0] == 1, bytes(f[1:])


# --- on-disk record framing shared by the journal and the receiver's store ---

REC_HEADER = struct.Struct("<II")  # payload length, crc32 of payload

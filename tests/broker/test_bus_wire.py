"""broker.wire: topic rule, round trips, limits; every malformed input is a WireError."""

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import wire
from broker.wire import WireError


def test_topic_components_not_byte_prefixes():
    sub = wire.prefix_bytes("node/worker-1")
    assert wire.topic_bytes("node/worker-1").startswith(sub)
    assert wire.topic_bytes("node/worker-1/x").startswith(sub)
    assert not wire.topic_bytes("node/worker-10").startswith(sub)
    assert not wire.topic_bytes("node/worker-1x/y").startswith(sub)
    assert wire.prefix_bytes("") == b""
    assert wire.topic_bytes("/a/b/") == b"a/b/"  # separators at the ends are insignificant


@pytest.mark.parametrize("bad", ["", "/", "a//b", "a\x00b", "x" * 2000])
def test_bad_topics_refused(bad):
    with pytest.raises(ValueError):
        wire.topic_bytes(bad)


def test_sender_ids():
    s = wire.sender_id("worker-1", "0123456789abcdef")
    assert wire.parse_sender(s) == ("worker-1", "0123456789abcdef")
    for bad in (b"worker-1", b"a/b/c", b"w/0123", b"\xff\xfe/0123456789abcdef", b"x y/0123456789abcdef"):
        with pytest.raises(WireError):
            wire.parse_sender(bad)
    with pytest.raises(ValueError):
        wire.sender_id("bad name", "0123456789abcdef")


def test_event_round_trip():
    events = [("conn_seen", [1, "10.0.0.1", 443, 1.5, True, None, b"\x00\xff", {"k": [1, 2]}]), ("x", [])]
    t, seq, evs = wire.decode_events(wire.encode_events(12.5, 7, events))
    assert (t, seq) == (12.5, 7)
    assert [(n, a) for n, a in evs] == [(n, list(a)) for n, a in events]


def nested(d):
    v = 1
    for _ in range(d):
        v = [v]
    return v


@pytest.mark.parametrize("padding", [0, 100])  # 100 empty arrays: past the header-count shortcut
def test_depth_limit_exact(padding):
    pad = [[]] * padding
    ok = wire.encode_events(1.0, 1, [("e", [nested(wire.MAX_DEPTH), *pad])])
    bad = wire.encode_events(1.0, 1, [("e", [nested(wire.MAX_DEPTH + 1), *pad])])
    assert wire.decode_events(ok)[2][0][1][0] == nested(wire.MAX_DEPTH)
    with pytest.raises(WireError) as e:
        wire.decode_events(bad)
    assert e.value.reason == "too_deep"
    # in a batch, a deep event anywhere spoils the frame
    batch = [("e", [i, {"k": [1, 2]}]) for i in range(200)] + [("e", [nested(wire.MAX_DEPTH + 1)])]
    with pytest.raises(WireError):
        wire.decode_events(wire.encode_events(1.0, 1, batch))
    # a nesting bomb far beyond the interpreter's own limit
    bomb = b"\x93\xcb" + b"\0" * 8 + b"\x01\x91\x92\xa1e\x91" + b"\x91" * 200_000 + b"\x01"
    with pytest.raises(WireError):
        wire.decode_events(bomb)
    with pytest.raises(WireError):
        wire.decode_reply(wire.encode((1.0, 1, 1, True, nested(wire.MAX_DEPTH + 1))))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        b"\x93\xcb",  # truncated
        b"\xdd\xff\xff\xff\xff",  # array declaring 4 billion elements
        b"\xdb\xff\xff\xff\xf0abc",  # str declaring ~4 GiB
        b"\xc6\x7f\xff\xff\xff",  # bin declaring 2 GiB
        b"\x93\xcb\x00\x00\x00\x00\x00\x00\x00\x00\x01\x90",  # no events
        b"\x92\x01\x02",  # wrong arity
        b"\x93\xa1x\x01\x91\x92\xa1e\x90",  # time is a string
        b"\x93\xcb\x00\x00\x00\x00\x00\x00\x00\x00\x01\x91\x92\x01\x90",  # name not a string
        b"\xd6\x05\x00\x00\x00\x01",  # unknown ext type
    ],
)
def test_malformed_event_payloads(payload):
    with pytest.raises(WireError):
        wire.decode_events(payload)


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_escape_as_other_errors(data):
    for dec in (
        wire.decode_events,
        wire.decode_beat,
        wire.decode_request,
        wire.decode_reply,
        wire.decode_batch,
        wire.decode_ack,
    ):
        try:
            dec(data)
        except WireError:
            pass


@given(st.lists(st.binary(max_size=40), max_size=6))
@settings(max_examples=200, deadline=None)
def test_random_frames(frames):
    try:
        topic, sender, fmt, payload = wire.check_frames(frames)
    except WireError:
        return
    assert fmt in wire.FORMATS and topic.endswith(b"/")


def test_frame_checks():
    good = [b"a/", b"n/0123456789abcdef", wire.FMT_EVENT, b""]
    assert wire.check_frames(good)
    for frames, reason in (
        (good[:3], "frame_count"),
        (good + [b""], "frame_count"),
        ([b"a"] + good[1:], "bad_topic"),
        ([b"a/", b"", wire.FMT_EVENT, b""], "bad_sender"),
        ([b"a/", good[1], b"starling.ev.2", b""], "unknown_format"),
        ([b"a/", good[1], b"starling.ev", b""], "unknown_format"),
    ):
        with pytest.raises(WireError) as e:
            wire.check_frames(frames)
        assert e.value.reason == reason


def test_payload_size_limit(monkeypatch):
    monkeypatch.setattr(wire, "MAX_PAYLOAD", 100)
    with pytest.raises(WireError) as e:
        wire.decode_events(wire.encode_events(1.0, 1, [("e", ["x" * 200])]))
    assert e.value.reason == "too_large"


def test_control_formats_round_trip():
    assert wire.decode_beat(wire.encode_beat(1.0, 2, wire.BEAT_HELLO, 42, 0.5)) == (1.0, 2, 0, 42, 0.5)
    assert wire.decode_request(wire.encode_request(1.0, 2, 3, b"r/", "f", [1])) == (1.0, 2, 3, b"r/", "f", [1])
    assert wire.decode_reply(wire.encode_reply(1.0, 2, 3, False, "boom")) == (1.0, 2, 3, False, "boom")
    assert wire.decode_batch(wire.encode_batch(1.0, 5, 3, b"\x00data")) == (1.0, 5, 3, b"\x00data")
    assert wire.decode_ack(wire.encode_ack(1.0, "0123456789abcdef", 9)) == (1.0, "0123456789abcdef", 9)
    with pytest.raises(WireError):
        wire.decode_batch(wire.encode_batch(1.0, 2, 3, b""))  # base above seq
    with pytest.raises(WireError):
        wire.decode_beat(wire.encode_beat(1.0, 2, 7, 42, 0.5))  # unknown beat kind


def test_codec_is_plain_msgpack():
    """Another msgpack implementation reads what we write (non-Python peers can join)."""
    import msgpack

    payload = wire.encode_events(3.5, 9, [("e", [1, "a", b"b", 2.5, None])])
    assert msgpack.unpackb(payload) == [3.5, 9, [["e", [1, "a", b"b", 2.5, None]]]]
    assert wire.decode_events(msgpack.packb([3.5, 9, [["e", [1]]]]))[2][0][1] == [1]
    assert isinstance(msgspec.msgpack.decode(payload), list)

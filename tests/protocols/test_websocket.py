"""WebSocket after an HTTP upgrade: frame parsing, websocket.log, the protocol inside."""

from __future__ import annotations

import json
import os

import pytest
from harness import CORPUS, Conn, Recorder, run_trace

from analysis.protocols.http import HTTPAnalyzer
from analysis.protocols.websocket import Close, Frame, FrameParser, Payload, WebSocketAnalyzer

HANDSHAKE = (b"GET /chat HTTP/1.1\r\nHost: h:8888\r\nUser-Agent: ua\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Protocol: v1, v2\r\n"
             b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
ACCEPT = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Protocol: v1\r\n\r\n")


def frame(payload: bytes, opcode=2, mask: bytes | None = None, fin=True) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    m = 0x80 if mask else 0
    if n < 126:
        hdr = bytes([b0, m | n])
    elif n < 65536:
        hdr = bytes([b0, m | 126]) + n.to_bytes(2, "big")
    else:
        hdr = bytes([b0, m | 127]) + n.to_bytes(8, "big")
    if mask:
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        hdr += mask
    return hdr + payload


def test_frames_masked_split_and_control():
    p = FrameParser()
    data = frame(b"hello", mask=b"\x01\x02\x03\x04") + frame(b"x" * 300, opcode=1) \
        + frame(b"\x03\xe8bye", opcode=8, mask=b"abcd")
    evs = []
    for i in range(0, len(data), 7):            # awkward segmentation
        evs += p.data(True, data[i:i + 7])
    payload = b"".join(e.data for e in evs if type(e) is Payload)
    assert payload == b"hello" + b"x" * 300
    frames = [e for e in evs if type(e) is Frame]
    assert [(f.opcode, f.length, f.masked) for f in frames] == [(2, 5, True), (1, 300, False), (8, 5, True)]
    assert [e for e in evs if type(e) is Close] == [Close(True, 1000, "bye")]


def test_large_frame_length():
    p = FrameParser()
    evs = p.data(False, frame(b"y" * 70000))
    assert evs[0] == Frame(False, True, 2, 70000, False)
    assert sum(len(e.data) for e in evs[1:]) == 70000


def _upgrade(*after, attach=True):
    ctx = Recorder(Conn("Cws", "127.0.0.1", 5000, "127.0.0.1", 8888, start_time=0.0))
    children = []
    if attach:
        def attach_child(name):
            child_ctx = Recorder(ctx.conn)
            child = WebSocketAnalyzer(child_ctx) if name == "websocket" else None
            children.append((name, child_ctx, child))
            return child
    else:
        def attach_child(name):
            return None
    ctx.attach_child = attach_child
    a = HTTPAnalyzer(ctx)
    a.data(True, HANDSHAKE, 1.0)
    a.data(False, ACCEPT, 1.1)
    for is_orig, data in after:
        a.data(is_orig, data, 1.2)
    a.eof(True, 2.0)
    a.eof(False, 2.0)
    a.done(3.0)
    return ctx, children


def test_upgrade_logs_websocket_and_parses_inner_http():
    ctx, children = _upgrade((True, frame(b"GET / HTTP/1.1\r\nHost: inner\r\n\r\n", mask=b"\x00\x11\x22\x33")),
                             (False, frame(b"HTTP/1.1 301 Moved\r\nContent-Length: 0\r\n\r\n")))
    [(name, wctx, _ws)] = children
    assert name == "websocket" and wctx.confirmed == 1
    [row] = wctx.rows("websocket")
    assert (row.host, row.uri, row.user_agent, row.subprotocol) == ("h:8888", "/chat", "ua", "v1")
    assert row.client_protocols == ["v1", "v2"]
    assert row.client_extensions == ["permessage-deflate; client_max_window_bits"]
    # the inner HTTP shares the transaction state: its reply lands on the 101 row (Zeek 9)
    rows = sorted(ctx.rows("http"), key=lambda r: r.trans_depth)
    assert [(r.host, r.uri, r.status_code) for r in rows] == [("h:8888", "/chat", 301), ("inner", "/", None)]


def test_disabled_websocket_stops_parsing():
    ctx, children = _upgrade((True, frame(b"GET / HTTP/1.1\r\nHost: inner\r\n\r\n")), attach=False)
    assert children == []
    [row] = ctx.rows("http")
    assert (row.uri, row.status_code) == ("/chat", 101)
    assert ctx.rows("websocket") == []


def _ws_cases():
    f = CORPUS / "zeek" / "cases.json"
    if not f.exists():
        return []
    return [c for c in json.loads(f.read_text())["cases"] if "websocket.log" in c["baselines"]]


@pytest.mark.parametrize("case", _ws_cases(), ids=lambda c: c["test"])
def test_websocket_log_conformance(case, tmp_path):
    import sys
    sys.path.insert(0, str(CORPUS))
    from compare_logs import compare_logs

    from analysis.logs.files import DirectoryLogSink
    sink = DirectoryLogSink(tmp_path, "tsv")
    for ctx in run_trace(HTTPAnalyzer, CORPUS / "zeek" / case["trace"], udp=False, marks=True, detach=False):
        for path, rec in ctx.logs:
            sink.write(path, rec)
    sink.flush()
    sink.close()
    assert os.path.exists(tmp_path / "websocket.log")
    res = compare_logs(CORPUS / "zeek" / case["baselines"]["websocket.log"], tmp_path / "websocket.log")
    assert res.passed, json.dumps(res.to_dict(), default=str)[:1500]

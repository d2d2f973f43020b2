"""DCE/RPC analyzer: PDU framing, auth-trailer weirds, fragment reassembly caps with Zeek's skip
semantics, DPD pattern, confirmation/violation, the corpus netlogon case and fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from analysis.protocols.base import REGISTRY
from analysis.protocols.dce_rpc import (
    BIND, REQUEST, RESPONSE, DCERPCAnalyzer, DCERPCOptions, DCERPCParser, Error, Request, Weird,
    uuid_to_string)
from harness import ZEEK, case, compare, recording

make_ctx, run_trace, fuzz = recording(pack_args=True, with_source=True)   # events (name, args), weirds with source

CASE = "scripts.base.protocols.dce-rpc.dce_rpc_netlogon"
NETLOGON = bytes.fromhex("78563412341234cdabef000123456789cffb".replace("cdab", "abcd")[:32])


def pdu(ptype: int, body: bytes, call_id: int = 1, flags: int = 3, auth: bytes = b"", auth_type: int = 0x0A,
        big_endian: bool = False) -> bytes:
    bo = ">" if big_endian else "<"
    trailer = bytes([auth_type, 2, 0, 0]) + b"\0\0\0\0" + auth if auth else b""
    frag_len = 16 + len(body) + len(trailer)
    drep = b"\x00\x00\x00\x00" if big_endian else b"\x10\x00\x00\x00"
    return bytes([5, 0, ptype, flags]) + drep + struct.pack(bo + "HHI", frag_len, len(auth), call_id) + body + trailer


def request(opnum: int, stub: bytes = b"x" * 8, **kw) -> bytes:
    return pdu(REQUEST, struct.pack("<IHH", len(stub), 0, opnum) + stub, **kw)


def test_uuid_to_string():
    u = bytes.fromhex("78563412" "3412" "cdab" "ef000123456789cf") + b""
    assert uuid_to_string(u[:16].ljust(16, b"\0")).startswith("12345678-1234-abcd-ef00-")


def test_request_split_across_deliveries():
    p = DCERPCParser(True)
    data = request(45, b"s" * 24)
    assert p.feed(data[:10]) == []
    evs = p.feed(data[10:])
    assert Request(0, 45, 24) in evs
    assert p.buf == bytearray()


def test_big_endian_header():
    evs = DCERPCParser(False).feed(pdu(RESPONSE, struct.pack(">IHBB", 4, 7, 0, 0) + b"abcd", big_endian=True))
    assert any(type(e).__name__ == "Response" and e.ctx_id == 7 and e.stub_len == 4 for e in evs)


@pytest.mark.parametrize("auth_type, name", [(0x44, "netlogon_dce_rpc_auth_type"), (0x0E, "tls_dce_rpc_auth_type"),
                                             (0x99, "unknown_dce_rpc_auth_type")])
def test_auth_type_weirds(auth_type, name):
    evs = DCERPCParser(True).feed(request(1, auth=b"A" * 16, auth_type=auth_type))
    assert Weird(name, str(auth_type)) in evs


@pytest.mark.parametrize("auth_type", [0x09, 0x0A, 0x10])
def test_forwarded_auth_types_are_not_weird(auth_type):
    evs = DCERPCParser(True).feed(request(1, auth=b"A" * 16, auth_type=auth_type))
    assert not any(isinstance(e, Weird) for e in evs)


def test_fragment_reassembly():
    p = DCERPCParser(True)
    body = struct.pack("<IHH", 0, 0, 9) + b"A" * 8
    evs = p.feed(pdu(REQUEST, body[:10], call_id=5, flags=1))
    assert not any(isinstance(e, Request) for e in evs) and 5 in p.frags
    evs = p.feed(pdu(REQUEST, body[10:], call_id=5, flags=2))
    assert Request(0, 9, 8) in evs and p.frags == {}


def test_too_many_fragmented_messages_skips_analyzer():
    ctx = make_ctx(DCERPCOptions(max_cmd_reassembly=3))
    a = DCERPCAnalyzer(ctx)
    stream = b"".join(pdu(REQUEST, b"", call_id=i, flags=1) for i in range(10))
    a.data(True, stream, 1.0)
    # as in Zeek, skipping starts with the next delivery: this chunk's PDUs 4..10 each exceed
    assert ctx.weirds == [("too_many_dce_rpc_msgs_in_reassembly", "", "DCE_RPC")] * 7
    n = len(ctx.events)
    a.data(True, pdu(REQUEST, b"", call_id=99, flags=1), 1.1)        # skipped: nothing more happens
    assert len(ctx.events) == n and len(a.session.parsers[True].frags) == 10


def test_too_much_fragment_data():
    ctx = make_ctx(DCERPCOptions(max_frag_data=100))
    a = DCERPCAnalyzer(ctx)
    a.data(True, pdu(REQUEST, b"B" * 80, call_id=1, flags=1) + pdu(REQUEST, b"B" * 80, call_id=1, flags=0), 1.0)
    assert ctx.weirds == [("too_much_dce_rpc_fragment_data", "", "DCE_RPC")]


def test_multiple_first_fragments():
    ctx = make_ctx()
    a = DCERPCAnalyzer(ctx)
    a.data(True, pdu(REQUEST, b"", call_id=1, flags=1) * 2, 1.0)
    assert ctx.weirds == [("multiple_first_fragments_in_dce_rpc_reassembly", "", "DCE_RPC")]


def test_confirm_and_violation():
    ctx = make_ctx(resp_p=135)
    a = DCERPCAnalyzer(ctx)
    a.data(True, request(3), 1.0)
    assert ctx.confirmed == 1 and ("dce_rpc_request", (ctx.conn, 0, 0, 3, 8)) in ctx.events
    ctx2 = make_ctx(resp_p=135)
    DCERPCAnalyzer(ctx2).data(True, b"\x16\x03\x01" + b"\0" * 40, 1.0)
    assert ctx2.violations and ctx2.confirmed == 0
    p = DCERPCParser(True)
    good = request(1)
    evs = p.feed(good + bytes([5, 0, 0, 3, 0x10, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0]))   # then frag_len < 16
    assert Request(0, 1, 8) in evs and type(evs[-1]) is Error        # the PDU before the error stands
    assert p.feed(good) == []                                         # nothing after it


def test_bind_event_and_dpd():
    ctx_el = struct.pack("<HBB", 0, 1, 0) + NETLOGON.ljust(16, b"\0") + struct.pack("<HH", 1, 0) + b"\0" * 20
    bind = pdu(BIND, struct.pack("<HHIB3x", 4280, 4280, 0, 1) + ctx_el, flags=7)
    ctx = make_ctx()
    DCERPCAnalyzer(ctx).data(True, bind, 1.0)
    assert [e[0] for e in ctx.events] == ["dce_rpc_message", "dce_rpc_bind"]
    spec = REGISTRY["dce_rpc"]
    assert any(p.match(bind) for p in spec.dpd_orig)
    assert not any(p.match(b"\x05\x00\x0b\x01") for p in spec.dpd_orig)
    assert not any(p.match(b"GET / HTTP/1.1") for p in spec.dpd_orig)


def test_corpus_weird_log(tmp_path):
    c = case(CASE)
    run_trace(DCERPCAnalyzer, ZEEK / c["trace"], logdir=tmp_path)
    report = compare(ZEEK / c["baselines"]["weird.log"], tmp_path / "weird.log")
    assert report["passed"], report


def test_fuzz():
    c = case(CASE)

    def bounded(a):
        for p in a.session.parsers.values():
            assert len(p.frags) <= 21 and len(p.buf) <= 1 << 16

    assert fuzz(ZEEK / c["trace"], DCERPCAnalyzer, rounds=1500, check=bounded) >= 1500



@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=6))
def test_parser_never_raises(chunks):
    p = DCERPCParser(True, max_msgs=4, max_data=200)
    for c in chunks:
        evs = p.feed(b"\x05\x00" + c)
        assert all(type(e) is not Error for e in evs[:-1])     # an error is always the last event
    assert len(p.frags) <= 4 + sum(len(c) for c in chunks) // 16 + 1

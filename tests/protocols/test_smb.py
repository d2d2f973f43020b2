"""SMB analyzer: NBSS framing, SMB1 AndX chain checks, named-pipe DCE/RPC delivery with the
DCE-RPC caps and skip semantics, SMB2 headers, violation/resync, corpus cases and fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from analysis.protocols.base import REGISTRY
from analysis.protocols.smb import Error, SMBAnalyzer, SMBOptions, SMBParser
from harness import ZEEK, case, compare, recording

make_ctx, run_trace, fuzz = recording(pack_args=True, with_source=True)   # events (name, args), weirds with source

PIPE_CASE = "scripts.base.protocols.smb.named-pipe-fragment"
ANDX_CASE = "scripts.base.protocols.smb.smb1-non-advancing-andx-offset"


def smb1(cmd: int, params: bytes, mid: int = 1, status: int = 0, flags2: int = 0) -> bytes:
    hdr = b"\xffSMB" + struct.pack("<BIBHH8sHHHHH", cmd, status, 0x18, flags2, 0, bytes(8), 0, 1, 1, 1, mid)
    msg = hdr + params
    return b"\x00" + len(msg).to_bytes(3, "big") + msg


def logoff(andx_cmd: int, andx_off: int) -> bytes:
    return bytes([2, andx_cmd, 0]) + struct.pack("<HH", andx_off, 0)


def trans_request(pipe_data: bytes, mid: int = 1, name: bytes = b"\\PIPE\\\x00") -> bytes:
    data_offset = 32 + 29 + 2 + len(name)
    words = struct.pack("<BHHHHBBHIHHHHHBB", 14, 0, len(pipe_data), 0, 0xFFFF, 0, 0, 0, 0, 0, 0, 0,
                        len(pipe_data), data_offset, 0, 0)
    return smb1(0x25, words + struct.pack("<H", len(name) + len(pipe_data)) + name + pipe_data, mid)


def dce_first_frag(call_id: int) -> bytes:
    return struct.pack("<BBBB4sHHI", 5, 0, 0, 1, b"\x10\0\0\0", 16, 0, call_id)


def test_andx_offset_not_advancing():
    p = SMBParser(True)
    evs = p.feed(smb1(0x74, logoff(0x74, 0)))
    assert [type(e).__name__ for e in evs] == ["Message", "Weird"]
    assert evs[1].name == "smb_andx_offset_not_advancing"


def test_andx_chain_forward_is_fine_and_depth_capped():
    # LOGOFF -> LOGOFF (at offset 39) -> end
    body = logoff(0x74, 39) + logoff(0xFF, 0)
    assert [type(e).__name__ for e in SMBParser(True).feed(smb1(0x74, body))] == ["Message"]
    # a long forward-moving chain hits the depth cap
    chain = b"".join(logoff(0x74, 32 + 7 * (i + 1)) for i in range(40)) + logoff(0xFF, 0)
    evs = SMBParser(True).feed(smb1(0x74, chain))
    assert evs[-1].name == "smb_andx_depth_exceeded"


def test_named_pipe_transaction_feeds_dce_rpc_and_honours_skip():
    ctx = make_ctx(SMBOptions(max_cmd_reassembly=5))
    a = SMBAnalyzer(ctx)
    a.data(True, trans_request(b"".join(dce_first_frag(i) for i in range(8)), mid=1), 1.0)
    assert ctx.confirmed == 1
    assert ctx.weirds == [("too_many_dce_rpc_msgs_in_reassembly", "", "DCE_RPC")] * 3
    a.data(True, trans_request(b"".join(dce_first_frag(i) for i in range(8, 16)), mid=2), 1.1)
    assert len(ctx.weirds) == 3                      # skipped after the first transaction
    assert len(a.pipes[0].parsers[True].frags) == 8


def test_non_pipe_transaction_is_not_dce_rpc():
    ctx = make_ctx()
    a = SMBAnalyzer(ctx)
    a.data(True, trans_request(dce_first_frag(1), name=b"\\MAILSLOT\\BROWSE\x00"), 1.0)
    assert a.pipes == {}


def test_smb2_header_confirms():
    hdr = b"\xfeSMB" + struct.pack("<HHIHHIIQ", 64, 0, 0, 0, 1, 0, 0, 7) + bytes(28) + b"body"
    ctx = make_ctx()
    SMBAnalyzer(ctx).data(True, b"\x00" + len(hdr).to_bytes(3, "big") + hdr, 1.0)
    assert ctx.confirmed == 1 and ctx.events[0][0] == "smb2_message"


def test_violation_before_confirmation_and_resync_after():
    ctx = make_ctx()
    SMBAnalyzer(ctx).data(True, b"\x00\x00\x00\x05HELLO", 1.0)
    assert ctx.violations and ctx.confirmed == 0
    ctx = make_ctx()
    a = SMBAnalyzer(ctx)
    a.data(True, smb1(0x74, logoff(0xFF, 0)), 1.0)
    a.data(True, b"\x00\x00\x00\x05HELLO", 1.1)          # garbage after confirmation: resync
    a.data(True, b"more garbage", 1.2)
    a.data(True, smb1(0x74, logoff(0x74, 0)), 1.3)       # a real message again
    assert ctx.violations == [] and ctx.weirds[-1][0] == "smb_andx_offset_not_advancing"
    assert type(SMBParser(True).feed(b"\x00\x00\x00\x03\xffSM")[-1]) is Error


def smb2(cmd: int, body: bytes, mid: int, tree: int = 5, response: bool = False, status: int = 0) -> bytes:
    hdr = b"\xfeSMB" + struct.pack("<HHIHHIIQIIQ16s", 64, 0, status, cmd, 1, 1 if response else 0, 0, mid, 0, tree, 9,
                                     bytes(16))
    msg = hdr + body
    return b"\x00" + len(msg).to_bytes(3, "big") + msg


def test_smb2_pipe_write_read_and_ioctl_feed_dce_rpc():
    from test_dce_rpc import request, pdu

    fid = struct.pack("<QQ", 7, 3)                      # file id 10
    ctx = make_ctx()
    a = SMBAnalyzer(ctx)
    # tree connect response: ShareType PIPE
    a.data(True, smb2(0x03, struct.pack("<HHHH", 9, 0, 0, 0) + b"\\srv\\IPC$", 1), 1.0)
    a.data(False, smb2(0x03, struct.pack("<HBBIII", 16, 2, 0, 0, 0, 0), 1, response=True), 1.1)
    req = request(45, b"q" * 8)
    a.data(True, smb2(0x09, struct.pack("<HHIQ", 49, 64 + 48, len(req), 0) + fid + bytes(16) + req, 2), 1.2)
    a.data(True, smb2(0x08, struct.pack("<HBBIQ", 49, 0, 0, 1024, 0) + fid + bytes(17), 3), 1.3)
    resp = pdu(2, struct.pack("<IHBB", 4, 0, 0, 0) + b"rrrr")
    a.data(False, smb2(0x08, struct.pack("<HBBIII", 17, 64 + 16, 0, len(resp), 0, 0) + resp, 3, response=True), 1.4)
    ioctl_in = request(3, b"i" * 8, call_id=2)
    a.data(True, smb2(0x0B, struct.pack("<HHI", 57, 0, 0x0011C017) + fid +
                      struct.pack("<IIIIIIII", 64 + 56, len(ioctl_in), 0, 0, 0, 1024, 1, 0) + ioctl_in, 4), 1.5)
    names = [e[0] for e in ctx.events if e[0].startswith("dce_rpc")]
    assert names == ["dce_rpc_message", "dce_rpc_request", "dce_rpc_message", "dce_rpc_response",
                     "dce_rpc_message", "dce_rpc_request"]
    assert set(a.pipes) == {10}
    assert ("dce_rpc_response", (ctx.conn, 10, 0, 45, 4)) in ctx.events      # opnum of the context's request
    assert ("smb2_message", (ctx.conn, (9, 0, 2), True)) in ctx.events
    # a write on a tree that is not a pipe is file data, not DCE/RPC
    a.data(True, smb2(0x09, struct.pack("<HHIQ", 49, 64 + 48, len(req), 0) + fid + bytes(16) + req, 5, tree=6), 1.6)
    assert len([e for e in ctx.events if e[0] == "dce_rpc_request"]) == 2


def test_pipes_closed_and_discarded():
    from test_dce_rpc import request

    ctx = make_ctx(SMBOptions(max_dce_rpc_analyzers=3))
    a = SMBAnalyzer(ctx)
    a.data(False, smb2(0x03, struct.pack("<HBBIII", 16, 2, 0, 0, 0, 0), 1, response=True), 1.0)
    req = request(1)
    mid = 10

    def write(fid):
        nonlocal mid
        mid += 1
        a.data(True, smb2(0x09, struct.pack("<HHIQ", 49, 64 + 48, len(req), 0) + struct.pack("<QQ", fid, 0)
                          + bytes(16) + req, mid), 1.1)

    def close(fid):
        nonlocal mid
        mid += 1
        a.data(True, smb2(0x06, struct.pack("<HHI", 24, 0, 0) + struct.pack("<QQ", fid, 0), mid), 1.2)

    for fid in range(1, 6):          # closed properly: never more than one open
        write(fid)
        close(fid)
    assert a.pipes == {} and ctx.weirds == []
    for fid in range(10, 14):        # never closed: the 4th discards the table
        write(fid)
    assert ctx.weirds == [("SMB_discarded_dce_rpc_analyzers", "", "SMB")] and set(a.pipes) == {13}
    assert ("smb_discarded_dce_rpc_analyzers", (ctx.conn,)) in ctx.events


def test_smb1_write_andx_on_ipc_tree():
    from test_dce_rpc import request

    ctx = make_ctx()
    a = SMBAnalyzer(ctx)
    a.data(False, smb1(0x75, bytes([3, 0xFF, 0, 0, 0, 0, 0]) + struct.pack("<H", 4) + b"IPC\0"), 1.0)
    req = request(9)
    words = bytes([12, 0xFF, 0, 0, 0]) + struct.pack("<HIIHHHHH", 0x4000, 0, 0, 0, 0, 0, len(req), 60)
    a.data(True, smb1(0x2F, words + struct.pack("<H", len(req) + 1) + b"\0" + req), 1.1)
    assert ("dce_rpc_request", (ctx.conn, 0, 0, 9, 8)) in ctx.events


def test_oversized_frame_is_not_buffered():
    assert type(SMBParser(True).feed(b"\x00\xff\xff\xff\xfeSMB")[-1]) is Error


def test_nbss_keepalive_ignored():
    assert SMBParser(True).feed(b"\x85\x00\x00\x00") == []


def test_registered_with_dce_rpc_option_names():
    spec = REGISTRY["smb"]
    assert (445, "tcp") in spec.ports
    names = {f.metadata.get("zeek") for f in spec.options.__dataclass_fields__.values()}
    assert "DCE_RPC::max_cmd_reassembly" in names


@pytest.mark.parametrize("name, opts", [(PIPE_CASE, SMBOptions(max_cmd_reassembly=24)), (ANDX_CASE, SMBOptions())])
def test_corpus_weird_log(tmp_path, name, opts):
    c = case(name)
    run_trace(SMBAnalyzer, ZEEK / c["trace"], options=opts, logdir=tmp_path,
              do_not_ignore_repeats={"too_many_dce_rpc_msgs_in_reassembly"})
    report = compare(ZEEK / c["baselines"]["weird.log"], tmp_path / "weird.log")
    assert report["passed"], report


@pytest.mark.parametrize("name", [PIPE_CASE, ANDX_CASE])
def test_fuzz(name):
    c = case(name)

    def bounded(a):
        assert len(a.pipes) <= 1000
        for p in a.parsers.values():
            assert len(p.buf) <= 10 * 1024 * 1024 + 4 and len(p.st.pipe_mids) <= 1000 and len(p.st.reads) <= 1000

    assert fuzz(ZEEK / c["trace"], SMBAnalyzer, rounds=500, check=bounded) >= 500


def test_dpd_pattern():
    pats = REGISTRY["smb"].dpd_orig
    assert any(p.match(smb1(0x72, b"\x00\x00\x00")) for p in pats)
    assert not any(p.match(b"\x00\x00\x00\x10GET / HTTP/1.1") for p in pats)



@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=160), max_size=6), st.booleans())
def test_parser_never_raises(chunks, is_orig):
    p = SMBParser(is_orig)
    for c in chunks:
        evs = p.feed(b"\x00\x00\x00" + bytes([len(c) + 4]) + b"\xffSMB" + c)
        assert all(type(e) is not Error for e in evs[:-1])

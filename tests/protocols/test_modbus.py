"""Modbus/TCP analyzer: MBAP framing, Zeek's enforced protocol id (violation), confirmation,
modbus.log rows (incl. exceptions), the corpus case and fuzzing."""

from __future__ import annotations

import struct

from analysis.logs.files import DirectoryLogSink
from analysis.protocols.modbus import ModbusAnalyzer, ModbusParser, func_name
from harness import ZEEK, case, compare, recording

make_ctx, run_trace, fuzz = recording(pack_args=True, with_source=True)   # events (name, args), weirds with source

CASE = "scripts.base.protocols.modbus.modbus_and_non_modbus_on_port_502"


def mbap(tid: int, fc: int, body: bytes, pid: int = 0, unit: int = 1) -> bytes:
    return struct.pack(">HHHBB", tid, pid, len(body) + 2, unit, fc) + body


def test_func_names():
    assert func_name(3) == "READ_HOLDING_REGISTERS"
    assert func_name(0x83) == "READ_HOLDING_REGISTERS_EXCEPTION"
    assert func_name(0x42) == "unknown-66" and func_name(0xC2) == "unknown-194"


def test_split_pdu_and_log_rows():
    ctx = make_ctx(resp_p=502)
    a = ModbusAnalyzer(ctx)
    req = mbap(7, 3, b"\x00\x05\x00\x02")
    a.data(True, req[:5], 1.0)
    assert ctx.logs == [] and ctx.confirmed == 0
    a.data(True, req[5:], 1.1)
    a.data(False, mbap(7, 0x83, b"\x02"), 1.2)
    assert ctx.confirmed == 1
    rows = [(r.tid, r.func, r.pdu_type, r.exception) for _, r in ctx.logs]
    assert rows == [(7, "READ_HOLDING_REGISTERS", "REQ", None),
                    (7, "READ_HOLDING_REGISTERS_EXCEPTION", "RESP", "ILLEGAL_DATA_ADDRESS")]
    assert ("modbus_exception", (ctx.conn, (7, 0, 1, 0x83), 2)) in ctx.events


def test_nonzero_protocol_id_is_violation():
    ctx = make_ctx(resp_p=502)
    a = ModbusAnalyzer(ctx)
    a.data(True, b"\x16\x03\x01\x00\x85\x01\x00\x00\x81\x03\x03", 1.0)
    assert ctx.violations and "ModbusTCP_TransportHeader:pid" in ctx.violations[0]
    a.data(True, mbap(1, 3, b"\x00\x00\x00\x01"), 1.1)     # detached: ignored
    assert ctx.logs == []


def test_checks_enforced():
    ctx = make_ctx(resp_p=502)
    ModbusAnalyzer(ctx).data(True, mbap(1, 3, b"\x00\x00\x01\x00"), 1.0)     # 256 registers > 125
    assert ctx.violations
    ctx = make_ctx(resp_p=502)
    ModbusAnalyzer(ctx).data(True, mbap(1, 5, b"\x00\x01\x12\x34"), 1.0)     # coil value not 0/FF00
    assert ctx.violations


def test_buffer_bounded_by_length_field():
    p = ModbusParser(True)
    assert p.feed(struct.pack(">HHHBB", 1, 0, 0xFFFF, 1, 3) + b"x" * 100) == ([], None)
    assert len(p.buf) < 0xFFFF + 6


def test_pdus_before_an_error_stand():
    p = ModbusParser(True)
    pdus, err = p.feed(mbap(1, 6, b"\x00\x01\x00\x02") + b"\x00\x02\x00\x07\x00\x06")
    assert [x.fc for x in pdus] == [6] and "pid" in err
    assert p.feed(mbap(2, 6, b"\x00\x01\x00\x02")) == ([], None)


def test_corpus_modbus_log(tmp_path):
    c = case(CASE)
    ctxs = run_trace(ModbusAnalyzer, ZEEK / c["trace"])
    sink = DirectoryLogSink(tmp_path)
    for ctx in ctxs:
        for path, rec in ctx.logs:
            sink.write(path, rec)
    sink.close()
    report = compare(ZEEK / c["baselines"]["modbus.log"], tmp_path / "modbus.log")
    assert report["passed"], report
    confirmed = {(x.conn.orig_h, x.conn.orig_p) for x in ctxs if x.confirmed}
    violated = {(x.conn.orig_h, x.conn.orig_p) for x in ctxs if x.violations}
    assert confirmed == {("10.0.0.9", 3082)}
    assert ("87.236.176.106", 38129) in violated      # the DCE-RPC bind on port 502


def test_fuzz():
    c = case(CASE)
    assert fuzz(ZEEK / c["trace"], ModbusAnalyzer, rounds=300) >= 300

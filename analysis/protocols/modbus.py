"""Modbus/TCP (port 502): framing, the checks Zeek enforces, confirmation and modbus.log.

Parser (sans-I/O, per direction, after Zeek's ``modbus-protocol.pac``): each PDU is the MBAP
header (transaction id, protocol id, length, unit id, function code) and ``length - 2`` bytes of
function data.  The protocol id must be 0 (Zeek's ``&enforce``): anything else is a violation —
which is how the non-Modbus services people run on port 502 get the analyzer removed and
another one (found by DPD) confirmed.  The first whole PDU confirms Modbus.

Analyzer: ``base/protocols/modbus/main.zeek`` — one modbus.log row per PDU, exceptions logged
with their exception name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from analysis.logs.schema import ConnIdRecord, Count, String, log_stream
from analysis.protocols.base import Analyzer, AnalyzerSpec, register

MBAP = 8   # header bytes up to and including the function code

FUNCTION_CODES = {
    0x01: "READ_COILS", 0x02: "READ_DISCRETE_INPUTS", 0x03: "READ_HOLDING_REGISTERS",
    0x04: "READ_INPUT_REGISTERS", 0x05: "WRITE_SINGLE_COIL", 0x06: "WRITE_SINGLE_REGISTER",
    0x07: "READ_EXCEPTION_STATUS", 0x08: "DIAGNOSTICS", 0x0B: "GET_COMM_EVENT_COUNTER",
    0x0C: "GET_COMM_EVENT_LOG", 0x0F: "WRITE_MULTIPLE_COILS", 0x10: "WRITE_MULTIPLE_REGISTERS",
    0x11: "REPORT_SLAVE_ID", 0x14: "READ_FILE_RECORD", 0x15: "WRITE_FILE_RECORD",
    0x16: "MASK_WRITE_REGISTER", 0x17: "READ_WRITE_MULTIPLE_REGISTERS", 0x18: "READ_FIFO_QUEUE",
    0x2B: "ENCAP_INTERFACE_TRANSPORT", 0x5B: "OBJECT_MESSAGING",
    0x09: "PROGRAM_484", 0x0A: "POLL_484", 0x0D: "PROGRAM_584_984", 0x0E: "POLL_584_984",
    0x12: "PROGRAM_884_U84", 0x13: "RESET_COMM_LINK_884_U84", 0x28: "PROGRAM_CONCEPT",
    0x29: "MULTIPLE_FUNCTION_CODES", 0x5A: "PROGRAM_UNITY", 0x7D: "FIRMWARE_REPLACEMENT",
    0x7E: "PROGRAM_584_984_2", 0x7F: "REPORT_LOCAL_ADDRESS",
}
EXCEPTION_CODES = {
    0x01: "ILLEGAL_FUNCTION", 0x02: "ILLEGAL_DATA_ADDRESS", 0x03: "ILLEGAL_DATA_VALUE",
    0x04: "SLAVE_DEVICE_FAILURE", 0x05: "ACKNOWLEDGE", 0x06: "SLAVE_DEVICE_BUSY",
    0x08: "MEMORY_PARITY_ERROR", 0x0A: "GATEWAY_PATH_UNAVAILABLE",
    0x0B: "GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND",
}
# Response function codes whose body is the one-byte exception code.
_EXCEPTIONS = frozenset({0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x8F, 0x90, 0x94, 0x95, 0x96, 0x97, 0x98})


def func_name(fc: int) -> str:
    """main.zeek's ``build_func``: exceptions are the masked name plus ``_EXCEPTION``."""
    masked = fc & 0x7F
    if fc in FUNCTION_CODES or masked not in FUNCTION_CODES:
        return FUNCTION_CODES.get(fc, f"unknown-{fc}")
    return FUNCTION_CODES[masked] + ("_EXCEPTION" if fc & 0x80 else "")


class ModbusError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PDU:
    is_orig: bool
    tid: int
    pid: int
    unit: int
    fc: int
    data: bytes
    exception: int | None = None    # exception code of an exception response


def _check_body(is_orig: bool, fc: int, d: bytes) -> None:
    """Zeek's ``&check``/``&enforce`` conditions for the common function codes."""
    n = len(d)
    if is_orig:
        if fc in (1, 2) and n >= 4 and int.from_bytes(d[2:4], "big") > 2000:
            raise ModbusError("binpac exception: &check failed: quantity")
        if fc in (3, 4) and n >= 4 and int.from_bytes(d[2:4], "big") > 125:
            raise ModbusError("binpac exception: &check failed: quantity")
        if fc in (1, 2, 3, 4, 5, 6) and n < 4:
            raise ModbusError("binpac exception: out_of_bound: request body")
    else:
        if fc in (3, 4) and n and d[0] % 2:
            raise ModbusError(f"invalid value for modbus read register response byte count {d[0]}")
        if fc in (1, 2, 3, 4) and (not n or n < 1 + d[0]):
            raise ModbusError("binpac exception: out_of_bound: response body")
    if fc == 5 and n >= 4 and int.from_bytes(d[2:4], "big") not in (0, 0xFF00):
        raise ModbusError("binpac exception: &check failed: value")


class ModbusParser:
    """One direction of a Modbus/TCP stream (sans-I/O)."""

    __slots__ = ("is_orig", "buf", "failed")

    def __init__(self, is_orig: bool) -> None:
        self.is_orig = is_orig
        self.buf = bytearray()
        self.failed = False

    def feed(self, data: bytes) -> tuple[list[PDU], str | None]:
        """Consume stream bytes: the complete PDUs, and the reason when the bytes stopped being
        Modbus (the PDUs before that point stand; the parser then accepts nothing more)."""
        if self.failed:
            return [], None
        self.buf += data
        buf = self.buf
        out: list[PDU] = []
        pos = 0
        n = len(buf)
        try:
            while n - pos >= 6:
                tid, pid, length = struct.unpack_from(">HHH", buf, pos)
                if pid != 0:
                    raise ModbusError("Binpac exception: binpac exception: &enforce violation : "
                                      "ModbusTCP_TransportHeader:pid")
                if length < 2:
                    raise ModbusError("Binpac exception: binpac exception: &enforce violation : "
                                      "ModbusTCP_TransportHeader:len")
                if n - pos < length + 6:
                    break
                unit, fc = buf[pos + 6], buf[pos + 7]
                body = bytes(buf[pos + MBAP:pos + 6 + length])
                pos += length + 6
                exc = None
                if not self.is_orig and fc in _EXCEPTIONS:
                    if not body:
                        raise ModbusError("binpac exception: out_of_bound: Exception:code")
                    exc = body[0]
                else:
                    _check_body(self.is_orig, fc, body)
                out.append(PDU(self.is_orig, tid, pid, unit, fc, body, exc))
        except ModbusError as e:
            self.failed = True
            self.buf = bytearray()
            return out, str(e)
        if pos:
            del buf[:pos]
        return out, None


@log_stream("modbus")
class ModbusInfo(ConnIdRecord, kw_only=True):
    tid: Count | None = None
    unit: Count | None = None
    func: String | None = None
    pdu_type: String | None = None
    exception: String | None = None


class ModbusAnalyzer(Analyzer):
    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.parsers = {True: ModbusParser(True), False: ModbusParser(False)}
        self.confirmed = False
        self.dead = False

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self.dead:
            return
        ctx = self.ctx
        pdus, err = self.parsers[is_orig].feed(payload)
        c = ctx.conn
        for p in pdus:
            header = (p.tid, p.pid, p.unit, p.fc)
            ctx.event("modbus_message", header, p.is_orig)
            rec = ModbusInfo(ts=ts, uid=c.uid, orig_h=c.orig_h, orig_p=c.orig_p, resp_h=c.resp_h,
                             resp_p=c.resp_p, tid=p.tid, unit=p.unit, func=func_name(p.fc),
                             pdu_type="REQ" if p.is_orig else "RESP")
            if p.exception is not None:
                ctx.event("modbus_exception", header, p.exception)
                rec.exception = EXCEPTION_CODES.get(p.exception, f"unknown-{p.exception}")
                ctx.write_log("modbus", rec)
            elif p.fc < 0x80:
                ctx.write_log("modbus", rec)
            if not self.confirmed:
                self.confirmed = True
                ctx.confirm()
        if err is not None:
            self.dead = True
            ctx.violation(err)

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        # binpac's NewGap: the framing of this direction is lost
        self.parsers[is_orig].buf = bytearray()


SPEC = register(AnalyzerSpec(
    name="modbus",
    factory=ModbusAnalyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset({(502, "tcp")}),
    zeek_scripts=("base/protocols/modbus",),
    logs=("modbus",),
    events=("modbus_message", "modbus_exception"),
))

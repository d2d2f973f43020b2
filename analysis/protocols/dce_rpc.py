"""DCE/RPC (connection-oriented, MS-RPCE) over TCP and inside SMB named pipes.

Parser (sans-I/O, one per direction, like Zeek's ``DCE_RPC_Flow``): PDUs are framed by the
16-byte common header (``rpc_vers`` must be 5, byte order from ``packed_drep``,
``frag_length``); the optional auth trailer is read from the end of the PDU; fragments of one
``call_id`` are reassembled (first frag opens a buffer, last frag closes it) under Zeek's caps
``DCE_RPC::max_cmd_reassembly`` (open buffers) and ``DCE_RPC::max_frag_data`` (bytes per
buffer).  Hitting a cap is a weird plus *skip*: Zeek's ``SetSkip(true)`` — the analyzer stays
but ignores all further data.

Weirds (source ``DCE_RPC``, names as in Zeek's ``dce_rpc-auth.pac``/``dce_rpc-protocol.pac``):
``netlogon_dce_rpc_auth_type`` (auth type 0x44), ``tls_dce_rpc_auth_type`` (0x0e),
``unknown_dce_rpc_auth_type`` (anything but GSSAPI 0x09, NTLM 0x0a, Kerberos 0x10),
``multiple_first_fragments_in_dce_rpc_reassembly``, ``too_many_dce_rpc_msgs_in_reassembly``,
``too_much_dce_rpc_fragment_data``.  A whole PDU that parses confirms the protocol.
dce_rpc.log is not written (it needs Zeek's UUID/operation name tables).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from analysis.protocols.base import Analyzer, AnalyzerSpec, register

HEADER = 16
REQUEST, RESPONSE, BIND, BIND_ACK, ALTER_CONTEXT, ALTER_CONTEXT_RESP = 0, 2, 11, 12, 14, 15
#: Resource cap: context elements decoded per bind.
MAX_CONTEXTS = 64

_AUTH_WEIRDS = {0x0E: "tls_dce_rpc_auth_type", 0x44: "netlogon_dce_rpc_auth_type"}
_AUTH_FORWARDED = frozenset({0x09, 0x0A, 0x10})   # GSSAPI, NTLM, Kerberos (sub-analyzers)


@dataclass
class DCERPCOptions:
    max_cmd_reassembly: int = field(default=20, metadata={"zeek": "DCE_RPC::max_cmd_reassembly"})
    max_frag_data: int = field(default=30000, metadata={"zeek": "DCE_RPC::max_frag_data"})


class DCERPCError(ValueError):
    """The bytes are not DCE/RPC (a binpac exception in Zeek)."""


# -- events out of the parser -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PDU:
    is_orig: bool
    ptype: int
    call_id: int
    flags: int


@dataclass(frozen=True, slots=True)
class Weird:
    name: str
    addl: str = ""
    skip: bool = False      # Zeek calls SetSkip(true) after it


@dataclass(frozen=True, slots=True)
class Bind:
    ptype: int              # BIND or ALTER_CONTEXT
    contexts: tuple[tuple[int, bytes, int, int], ...]   # (ctx_id, uuid, ver_major, ver_minor)


@dataclass(frozen=True, slots=True)
class BindAck:
    ptype: int              # BIND_ACK or ALTER_CONTEXT_RESP
    sec_addr: bytes


@dataclass(frozen=True, slots=True)
class Request:
    ctx_id: int
    opnum: int
    stub_len: int


@dataclass(frozen=True, slots=True)
class Response:
    ctx_id: int
    stub_len: int


@dataclass(frozen=True, slots=True)
class Confirm:
    pass


@dataclass(frozen=True, slots=True)
class Error:
    """Not DCE/RPC (any more): a violation."""

    reason: str


CONFIRM = Confirm()


def uuid_to_string(u: bytes) -> str:
    """Zeek's ``uuid_to_string`` (the first three fields little-endian, as on the wire in NDR)."""
    a, b, c = struct.unpack_from("<IHH", u)
    rest = u[8:].hex()
    return f"{a:08x}-{b:04x}-{c:04x}-{rest[:4]}-{rest[4:]}"


class DCERPCParser:
    """One direction of a DCE/RPC byte stream (sans-I/O)."""

    __slots__ = ("is_orig", "buf", "frags", "max_msgs", "max_data", "failed")

    def __init__(self, is_orig: bool, max_msgs: int = 20, max_data: int = 30000) -> None:
        self.is_orig = is_orig
        self.failed = False
        self.buf = bytearray()
        self.frags: dict[int, bytearray] = {}
        self.max_msgs = max_msgs
        self.max_data = max_data

    def feed(self, data: bytes) -> list:
        """Consume stream bytes; return the events of every complete PDU.

        Bytes that cannot be DCE/RPC end the list with an :class:`Error` (binpac's exception:
        the events of the PDUs before it stand) and the parser accepts nothing more.
        """
        if self.failed:
            return []
        self.buf += data
        out: list = []
        buf = self.buf
        pos = 0
        n = len(buf)
        try:
            while n - pos >= HEADER:
                if buf[pos] != 5:
                    raise DCERPCError("binpac exception: &enforce violation : DCE_RPC_Header:rpc_vers")
                bo = "<" if buf[pos + 4] >> 4 else ">"
                frag_len, auth_len, call_id = struct.unpack_from(bo + "HHI", buf, pos + 8)
                if frag_len < HEADER:
                    raise DCERPCError("binpac exception: DCE_RPC frag_length shorter than its header")
                if n - pos < frag_len:
                    break
                # Zeek's SetSkip takes effect at the next delivery: the rest of this chunk is parsed
                self._pdu(bytes(buf[pos:pos + frag_len]), bo, frag_len, auth_len, call_id, out)
                pos += frag_len
        except DCERPCError as e:
            self.failed = True
            self.buf = bytearray()
            self.frags.clear()
            out.append(Error(str(e)))
            return out
        if pos:
            del buf[:pos]
        return out

    def _pdu(self, pdu: bytes, bo: str, frag_len: int, auth_len: int, call_id: int, out: list) -> None:
        ptype, flags = pdu[2], pdu[3]
        out.append(PDU(self.is_orig, ptype, call_id, flags))
        body_len = frag_len - HEADER - auth_len - (8 if auth_len else 0)
        if body_len < 0:
            raise DCERPCError("DCE_RPC auth_length larger than the PDU")
        frag = pdu[HEADER:HEADER + body_len]
        if auth_len:
            a = HEADER + body_len
            if a + 8 + auth_len > frag_len:
                raise DCERPCError("DCE_RPC auth trailer out of bounds")
            t = pdu[a]
            if t not in _AUTH_FORWARDED:
                out.append(Weird(_AUTH_WEIRDS.get(t, "unknown_dce_rpc_auth_type"), str(t)))
        body = self._reassemble(flags, call_id, frag, out)
        if body is not None:
            self._body(ptype, flags, body, bo, out)
        out.append(CONFIRM)

    def _reassemble(self, flags: int, call_id: int, frag: bytes, out: list) -> bytes | None:
        first, last = flags & 1, flags & 2
        fb = self.frags
        if first:
            if call_id in fb:
                out.append(Weird("multiple_first_fragments_in_dce_rpc_reassembly", skip=True))
                return None
            if last:
                return frag
            buf = fb[call_id] = bytearray(frag)
            if len(fb) > self.max_msgs:
                out.append(Weird("too_many_dce_rpc_msgs_in_reassembly", skip=True))
            if len(buf) > self.max_data:
                out.append(Weird("too_much_dce_rpc_fragment_data", skip=True))
            return None
        buf = fb.get(call_id)
        if buf is None:
            return None
        buf += frag
        if len(buf) > self.max_data:
            out.append(Weird("too_much_dce_rpc_fragment_data", skip=True))
        if last:
            del fb[call_id]
            return bytes(buf)
        return None

    @staticmethod
    def _body(ptype: int, flags: int, b: bytes, bo: str, out: list) -> None:
        try:
            if ptype == REQUEST:
                ctx_id, opnum = struct.unpack_from(bo + "HH", b, 4)
                stub = 8 + (16 if flags & 0x80 else 0)
                stub = (stub + 7) & ~7
                out.append(Request(ctx_id, opnum, max(0, len(b) - stub)))
            elif ptype == RESPONSE:
                (ctx_id,) = struct.unpack_from(bo + "H", b, 4)
                out.append(Response(ctx_id, max(0, len(b) - 8)))
            elif ptype in (BIND, ALTER_CONTEXT):
                num = b[8]
                if num > MAX_CONTEXTS:
                    raise DCERPCError("too many DCE_RPC contexts")
                p = 12
                ctxs = []
                for _ in range(num):
                    cid, nsyn = struct.unpack_from(bo + "HB", b, p)
                    uuid = b[p + 4:p + 20]
                    vmaj, vmin = struct.unpack_from(bo + "HH", b, p + 20)
                    if len(uuid) != 16:
                        raise DCERPCError("truncated DCE_RPC bind")
                    ctxs.append((cid, uuid, vmaj, vmin))
                    p += 24 + 20 * nsyn
                out.append(Bind(ptype, tuple(ctxs)))
            elif ptype in (BIND_ACK, ALTER_CONTEXT_RESP):
                (n,) = struct.unpack_from(bo + "H", b, 8)
                sec = b[10:10 + n]
                if len(sec) != n:
                    raise DCERPCError("truncated DCE_RPC bind_ack")
                if sec.endswith(b"\0"):
                    sec = sec[:-1]
                out.append(BindAck(ptype, sec))
        except (struct.error, IndexError):
            raise DCERPCError(f"truncated DCE_RPC body (ptype {ptype})") from None


class DCERPCSession:
    """Parsers for both directions of one DCE/RPC stream, turning parser events into ``ctx``
    calls.  Used by the TCP analyzer below and by the SMB analyzer for each named pipe
    (``fid``), as Zeek's SMB analyzer hosts one DCE_RPC child analyzer per pipe."""

    __slots__ = ("ctx", "fid", "parsers", "skip", "confirmed", "failed", "opnums")

    def __init__(self, ctx, fid: int = 0, options: DCERPCOptions | None = None) -> None:
        o = options or DCERPCOptions()
        self.ctx = ctx
        self.fid = fid
        self.parsers = {True: DCERPCParser(True, o.max_cmd_reassembly, o.max_frag_data),
                        False: DCERPCParser(False, o.max_cmd_reassembly, o.max_frag_data)}
        self.skip = False
        self.confirmed = False
        self.failed = ""
        self.opnums: dict[int, int] = {}    # context id -> opnum of its last request (Zeek's map)

    def deliver(self, is_orig: bool, data: bytes) -> None:
        if self.skip:
            return
        ctx = self.ctx
        events = self.parsers[is_orig].feed(data)
        err = None
        fid = self.fid
        for ev in events:
            t = type(ev)
            if t is PDU:
                ctx.event("dce_rpc_message", ev.is_orig, fid, ev.ptype)
            elif t is Weird:
                ctx.weird(ev.name, ev.addl, source="DCE_RPC")
                if ev.skip:
                    self.skip = True
            elif t is Confirm:
                if not self.confirmed:
                    self.confirmed = True
                    self.on_confirm()
            elif t is Request:
                if ev.ctx_id in self.opnums or len(self.opnums) < 0x10000:   # ctx ids are 16-bit
                    self.opnums[ev.ctx_id] = ev.opnum
                ctx.event("dce_rpc_request", fid, ev.ctx_id, ev.opnum, ev.stub_len)
            elif t is Response:
                ctx.event("dce_rpc_response", fid, ev.ctx_id, self.opnums.get(ev.ctx_id, 0), ev.stub_len)
            elif t is Bind:
                name = "dce_rpc_bind" if ev.ptype == BIND else "dce_rpc_alter_context"
                for cid, uuid, vmaj, vmin in ev.contexts:
                    ctx.event(name, fid, cid, uuid, vmaj, vmin)
            elif t is BindAck:
                if ev.ptype == BIND_ACK:
                    ctx.event("dce_rpc_bind_ack", fid, ev.sec_addr.decode("utf-8", "surrogateescape"))
                else:
                    ctx.event("dce_rpc_alter_context_resp", fid)
            elif t is Error:
                err = ev.reason
        if err is not None:
            self.failed = err
            self.skip = True
            self.on_violation(err)

    def on_confirm(self) -> None:
        self.ctx.confirm()

    def on_violation(self, reason: str) -> None:
        self.ctx.violation(f"Binpac exception: {reason}")


class DCERPCAnalyzer(Analyzer):
    """DCE/RPC directly over TCP (port 135 and, by DPD, the dynamic endpoint ports)."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.session = DCERPCSession(ctx, 0, ctx.options)

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        self.session.deliver(is_orig, payload)

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        # Zeek stops delivering after any content gap (had_gap)
        self.session.skip = True


# Zeek's dpd.sig: version 5, minor 0/1, a known PDU type, then pfc_flags with FIRST_FRAG and
# LAST_FRAG set.  Windows binds also set PFC_SUPPORT_HEADER_SIGN (0x04: flags 0x07) and Zeek 9
# attaches to those (corpus: dce_rpc_netlogon), so any flags byte with both low bits set matches.
_DPD = re.compile(rb"\x05[\x00\x01][\x00-\x13][" + b"".join(re.escape(bytes([b])) for b in range(256) if b & 3 == 3) + rb"]", re.S)

SPEC = register(AnalyzerSpec(
    name="dce_rpc",
    factory=DCERPCAnalyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset({(135, "tcp")}),
    dpd_orig=(_DPD,),
    zeek_scripts=("base/protocols/dce-rpc",),
    options=DCERPCOptions,
    events=("dce_rpc_message", "dce_rpc_bind", "dce_rpc_alter_context", "dce_rpc_bind_ack",
            "dce_rpc_alter_context_resp", "dce_rpc_request", "dce_rpc_response"),
))

"""SMB (SMB1 and SMB2/3 over NetBIOS session framing, TCP 139/445): framing, AndX chains and
named-pipe transport of DCE/RPC.

What is implemented, after Zeek's ``smb*.pac``:

* NBSS framing (type byte + 24-bit length); every message must carry an SMB protocol id
  (``\\xffSMB``, ``\\xfeSMB``, ``\\xfdSMB``).  A frame that is not SMB before the protocol was
  confirmed is a violation; after confirmation Zeek resynchronises, so we drop the stream until a
  delivered chunk starts with an NBSS header and an SMB marker again.
* SMB1 AndX chains: a chained command whose ``andx_offset`` does not move forward raises
  ``smb_andx_offset_not_advancing`` (source ``SMB``) and ends the chain; the chain depth is capped.
* Named pipes carry DCE/RPC, delivered as a stream to one
  :class:`analysis.protocols.dce_rpc.DCERPCSession` per file id — with DCE-RPC's own caps and
  weirds (``too_many_dce_rpc_msgs_in_reassembly``...) and Zeek's skip semantics (a skipped
  session receives nothing more): SMB1 TRANSACTION on ``\\PIPE\\`` (request and response paired
  by ``mid``), SMB1 WRITE_ANDX/READ_ANDX on an ``IPC`` tree, SMB2 WRITE/READ/IOCTL (pipe
  transceive) on a PIPE share.
* SMB2: header validation (confirmation); compound chains are followed with a cap.

smb_files.log / smb_mapping.log are not written.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from analysis.protocols.base import Analyzer, AnalyzerSpec, register
from analysis.protocols.dce_rpc import DCERPCOptions, DCERPCSession

SMB1_HEADER = 32
#: SMB1 commands whose parameter block starts with an AndX block.
ANDX_COMMANDS = frozenset({0x24, 0x2D, 0x2E, 0x2F, 0x73, 0x74, 0x75, 0xA2})
SMB_COM_TRANSACTION = 0x25
_SMB1_PIPE_IO = frozenset({0x75, 0x2F, 0x2E})    # TREE_CONNECT_ANDX, WRITE_ANDX, READ_ANDX
_SMB2_PIPE_IO = frozenset({0x03, 0x06, 0x08, 0x09, 0x0B})   # TREE_CONNECT, CLOSE, READ, WRITE, IOCTL
FSCTL_PIPE_TRANSCEIVE = 0x0011C017
# NBSS: session message, session request / positive / negative response, retarget, keep-alive
_NBSS_TYPES = frozenset({0x00, 0x81, 0x82, 0x83, 0x84, 0x85})
#: Resource caps.
MAX_ANDX_DEPTH = 32            # chained AndX commands followed per message
MAX_COMPOUND = 64              # SMB2 compound messages followed per frame
MAX_MESSAGE = 10 * 1024 * 1024  # BinPAC::flowbuffer_capacity_max: a bigger frame is not buffered


@dataclass
class SMBOptions:
    max_dce_rpc_analyzers: int = field(default=1000, metadata={"zeek": "SMB::max_dce_rpc_analyzers"})
    max_pending_messages: int = field(default=1000, metadata={"zeek": "SMB::max_pending_messages"})
    # SMB hosts DCE-RPC: the DCE-RPC caps apply to its named pipes too.
    max_cmd_reassembly: int = field(default=20, metadata={"zeek": "DCE_RPC::max_cmd_reassembly"})
    max_frag_data: int = field(default=30000, metadata={"zeek": "DCE_RPC::max_frag_data"})


class SMBError(ValueError):
    pass


# -- parser events ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Message:
    is_orig: bool
    version: int          # 1 or 2
    command: int
    status: int
    mid: int


@dataclass(frozen=True, slots=True)
class Weird:
    name: str
    addl: str = ""


@dataclass(frozen=True, slots=True)
class Error:
    """The stream is not SMB here (binpac exception)."""

    reason: str


@dataclass(frozen=True, slots=True)
class PipeClosed:
    """An SMB2 CLOSE of a file id on a pipe share: its DCE/RPC session ends."""

    fid: int


@dataclass(frozen=True, slots=True)
class PipeData:
    """DCE/RPC bytes written to / read from a named pipe."""

    is_orig: bool
    fid: int
    data: bytes


class Bounded(dict):
    """A dict that forgets its oldest entries beyond ``cap`` (pending requests, trees)."""

    __slots__ = ("cap",)

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def __setitem__(self, k, v) -> None:
        if k not in self and len(self) >= self.cap:
            del self[next(iter(self))]
        super().__setitem__(k, v)


class SMBState:
    """What both directions share: which requests, trees and files are named pipes."""

    __slots__ = ("pipe_mids", "pipe_tids", "pipe_trees", "reads")

    def __init__(self, max_pending: int = 1000) -> None:
        self.pipe_mids = Bounded(max_pending)    # SMB1 transaction mid -> is a pipe
        self.pipe_tids = Bounded(max_pending)    # SMB1 tid -> True (tree connected to IPC)
        self.pipe_trees = Bounded(max_pending)   # SMB2 tree id -> True (share type PIPE)
        self.reads = Bounded(max_pending)        # SMB2 READ/IOCTL message id -> file id of a pipe


class SMBParser:
    """One direction of an SMB-over-TCP stream (sans-I/O)."""

    __slots__ = ("is_orig", "buf", "need_sync", "st")

    def __init__(self, is_orig: bool, state: SMBState | None = None) -> None:
        self.is_orig = is_orig
        self.buf = bytearray()
        self.need_sync = False
        self.st = state if state is not None else SMBState()

    def feed(self, data: bytes) -> list:
        """Consume stream bytes; return events.  A frame that is not SMB ends the list with an
        :class:`Error` (the events before it stand); the parser then waits for resync."""
        if self.need_sync:
            if len(data) < 8 or data[5:8] != b"SMB" or data[4] not in (0xFF, 0xFE, 0xFD):
                return []
            self.need_sync = False
        self.buf += data
        buf = self.buf
        out: list = []
        pos = 0
        n = len(buf)
        try:
            while n - pos >= 4:
                if buf[pos] not in _NBSS_TYPES:
                    raise SMBError(f"not an NBSS message type: {buf[pos]:#x}")
                length = int.from_bytes(buf[pos + 1:pos + 4], "big")
                if length > MAX_MESSAGE:
                    raise SMBError("SMB message larger than the flow buffer")
                if n - pos - 4 < length:
                    break
                msg = bytes(buf[pos + 4:pos + 4 + length])
                pos += 4 + length
                if buf[pos - 4 - length] != 0:
                    continue        # NBSS control messages (session request, keep-alive, ...)
                self._message(msg, out)
        except (SMBError, struct.error, IndexError) as e:     # the last two: a field cut short
            self.buf = bytearray()
            self.need_sync = True
            out.append(Error(str(e)))
            return out
        del buf[:pos]
        return out

    def _message(self, m: bytes, out: list) -> None:
        if len(m) < 4 or m[1:4] != b"SMB":
            raise SMBError("binpac exception: &check failed: SMB protocol identifier")
        if m[0] == 0xFF:
            self._smb1(m, out)
        elif m[0] == 0xFE:
            self._smb2(m, out)
        elif m[0] == 0xFD:
            if len(m) < 52:
                raise SMBError("truncated SMB2 transform header")
            out.append(Message(self.is_orig, 2, -1, 0, 0))       # encrypted
        else:
            raise SMBError("binpac exception: &check failed: SMB protocol identifier")

    # -- SMB1 ------------------------------------------------------------------------------------
    def _smb1(self, m: bytes, out: list) -> None:
        if len(m) < SMB1_HEADER:
            raise SMBError("truncated SMB1 header")
        cmd = m[4]
        (status,) = struct.unpack_from("<I", m, 5)
        (mid,) = struct.unpack_from("<H", m, 30)
        flags2 = struct.unpack_from("<H", m, 10)[0]
        (tid,) = struct.unpack_from("<H", m, 24)
        out.append(Message(self.is_orig, 1, cmd, status, mid))
        off = SMB1_HEADER
        depth = 0
        while True:
            if cmd == SMB_COM_TRANSACTION:
                self._transaction(m, off, mid, flags2, status, out)
            elif cmd in _SMB1_PIPE_IO and not status:
                self._smb1_pipe_io(cmd, m, off, tid, mid, out)
            if cmd not in ANDX_COMMANDS or off >= len(m) or m[off] == 0:
                return
            if (not self.is_orig) and status:
                return              # error responses carry no AndX block to follow
            if off + 5 > len(m):
                raise SMBError("truncated SMB1 AndX block")
            nxt = m[off + 1]
            (andx_off,) = struct.unpack_from("<H", m, off + 3)
            if nxt == 0xFF:
                return
            if andx_off <= off:
                out.append(Weird("smb_andx_offset_not_advancing"))
                return
            depth += 1
            if depth >= MAX_ANDX_DEPTH:
                out.append(Weird("smb_andx_depth_exceeded"))
                return
            if andx_off >= len(m):
                raise SMBError("SMB1 AndX offset beyond the message")
            cmd, off = nxt, andx_off

    def _transaction(self, m: bytes, off: int, mid: int, flags2: int, status: int, out: list) -> None:
        if off >= len(m):
            return
        wc = m[off]
        if self.is_orig:
            if wc < 14 or off + 1 + 2 * wc + 2 > len(m):
                raise SMBError("truncated SMB1 transaction request")
            data_count, data_offset = struct.unpack_from("<HH", m, off + 23)
            setup_count = m[off + 27]
            p = off + 29 + 2 * setup_count + 2          # after byte_count
            name = self._string(m, p, bool(flags2 & 0x8000))
            is_pipe = name.upper().startswith("\\PIPE\\") and name.upper() != "\\PIPE\\LANMAN"
            self.st.pipe_mids[mid] = is_pipe
        else:
            if status or wc < 10 or off + 1 + 2 * wc + 2 > len(m):
                return
            data_count, data_offset = struct.unpack_from("<HH", m, off + 13)
            is_pipe = self.st.pipe_mids.pop(mid, False)
        if is_pipe and data_count:
            data = m[data_offset:data_offset + data_count]
            if len(data) != data_count:
                raise SMBError("SMB1 transaction data out of bounds")
            out.append(PipeData(self.is_orig, 0, data))

    def _smb1_pipe_io(self, cmd: int, m: bytes, off: int, tid: int, mid: int, out: list) -> None:
        """TREE_CONNECT_ANDX to IPC, then WRITE_ANDX / READ_ANDX on that tree carry DCE/RPC
        (Zeek forwards them with file id 0, like transactions)."""
        if off >= len(m):
            return
        wc = m[off]
        st = self.st
        if cmd == 0x75:                             # TREE_CONNECT_ANDX response: service "IPC"
            if not self.is_orig and wc >= 3:
                p = off + 1 + 2 * wc + 2
                if m[p:p + 4] == b"IPC\0":
                    st.pipe_tids[tid] = True
        elif cmd == 0x2F:                           # WRITE_ANDX request
            if self.is_orig and wc >= 12 and tid in st.pipe_tids and off + 25 <= len(m):
                hi, lo, doff = struct.unpack_from("<HHH", m, off + 19)
                n = (hi << 16) | lo
                data = m[doff:doff + n]
                if n and len(data) == n:
                    out.append(PipeData(True, 0, data))
        elif cmd == 0x2E:                           # READ_ANDX response
            if not self.is_orig and wc >= 12 and tid in st.pipe_tids and off + 17 <= len(m):
                lo, doff, hi = struct.unpack_from("<HHH", m, off + 11)
                n = (hi << 16) | lo
                data = m[doff:doff + n]
                if n and len(data) == n:
                    out.append(PipeData(False, 0, data))

    @staticmethod
    def _string(m: bytes, p: int, unicode: bool) -> str:
        if unicode:
            if p & 1:
                p += 1                                   # UTF-16 strings are 2-byte aligned
            end = p
            while end + 1 < len(m) and (m[end] or m[end + 1]):
                end += 2
            return m[p:end].decode("utf-16-le", "replace")
        end = m.find(b"\0", p)
        return m[p:end if end >= 0 else len(m)].decode("latin-1")

    # -- SMB2 ------------------------------------------------------------------------------------
    def _smb2(self, m: bytes, out: list) -> None:
        off = 0
        for _ in range(MAX_COMPOUND):
            if len(m) - off < 64:
                raise SMBError("truncated SMB2 header")
            (hlen,) = struct.unpack_from("<H", m, off + 4)
            if hlen != 64:
                raise SMBError("bad SMB2 header length")
            status, cmd = struct.unpack_from("<IH", m, off + 8)
            flags, nxt, mid = struct.unpack_from("<IIQ", m, off + 16)
            out.append(Message(self.is_orig, 2, cmd, status, mid & 0xFFFF))
            if cmd in _SMB2_PIPE_IO and not flags & 2:       # async messages carry no tree id
                end = off + nxt if nxt else len(m)
                self._smb2_pipe_io(cmd, m, off, min(end, len(m)), status, mid, out)
            if nxt == 0:
                return
            if nxt < 64:
                raise SMBError("SMB2 next command offset not advancing")
            off += nxt
            if off + 4 > len(m) or m[off:off + 4] != b"\xfeSMB":
                return
        out.append(Weird("smb2_too_many_compound_messages"))


    def _smb2_pipe_io(self, cmd: int, m: bytes, h: int, end: int, status: int, mid: int, out: list) -> None:
        """TREE_CONNECT to a PIPE share, then WRITE / READ / IOCTL(FSCTL_PIPE_TRANSCEIVE) on it
        carry DCE/RPC, one stream per file id (persistent + volatile, as Zeek keys it)."""
        st = self.st
        (tree,) = struct.unpack_from("<I", m, h + 36)
        b = h + 64
        if cmd == 0x03:                                   # TREE_CONNECT response: ShareType
            if not self.is_orig and not status and b + 3 <= end and m[b + 2] == 0x02:
                st.pipe_trees[tree] = True
        elif cmd == 0x06:                                 # CLOSE request
            if self.is_orig and tree in st.pipe_trees and b + 24 <= end:
                out.append(PipeClosed(_fid(m, b + 8)))
        elif cmd == 0x09:                                 # WRITE request
            if self.is_orig and tree in st.pipe_trees and b + 32 <= end:
                doff, n = struct.unpack_from("<HI", m, b + 2)
                fid = _fid(m, b + 16)
                data = m[h + doff:h + doff + n]
                if n and len(data) == n and h + doff + n <= end:
                    out.append(PipeData(True, fid, data))
        elif cmd == 0x08:                                 # READ: request names the file
            if self.is_orig:
                if tree in st.pipe_trees and b + 32 <= end:
                    st.reads[mid] = _fid(m, b + 16)
            else:
                fid = st.reads.pop(mid, None)
                if fid is not None and not status and b + 8 <= end:
                    doff, n = m[b + 2], struct.unpack_from("<I", m, b + 4)[0]
                    data = m[h + doff:h + doff + n]
                    if n and len(data) == n:
                        out.append(PipeData(False, fid, data))
        elif cmd == 0x0B and b + 48 <= end:               # IOCTL
            ctl, = struct.unpack_from("<I", m, b + 4)
            if ctl != FSCTL_PIPE_TRANSCEIVE:
                return
            fid = _fid(m, b + 8)
            if self.is_orig:
                ioff, n = struct.unpack_from("<II", m, b + 24)
                st.reads[mid] = fid
            else:
                if st.reads.pop(mid, None) is None or status:
                    return
                ioff, n = struct.unpack_from("<II", m, b + 32)
            data = m[h + ioff:h + ioff + n]
            if n and len(data) == n:
                out.append(PipeData(self.is_orig, fid, data))


def _fid(m: bytes, p: int) -> int:
    a, b = struct.unpack_from("<QQ", m, p)
    return a + b


class _PipeSession(DCERPCSession):
    """A DCE-RPC session inside SMB.  Its confirmation would add ``dce_rpc`` to conn.service in
    Zeek (a child analyzer); the analyzer context has no call for a child service yet, so it is
    only recorded.  Violations of the child are ignored (``DPD::ignore_violations``)."""

    __slots__ = ()

    def on_confirm(self) -> None:
        pass

    def on_violation(self, reason: str) -> None:
        pass


class SMBAnalyzer(Analyzer):
    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.opts = o = ctx.options if ctx.options is not None else SMBOptions()
        state = SMBState(max(1, o.max_pending_messages))
        self.parsers = {True: SMBParser(True, state), False: SMBParser(False, state)}
        self.pipes: dict[int, _PipeSession] = {}
        self.confirmed = False
        self.dead = False

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self.dead:
            return
        ctx = self.ctx
        for ev in self.parsers[is_orig].feed(bytes(payload)):
            t = type(ev)
            if t is Message:
                if not self.confirmed:
                    self.confirmed = True
                    ctx.confirm()
                ctx.event("smb1_message" if ev.version == 1 else "smb2_message",
                          (ev.command, ev.status, ev.mid), ev.is_orig)
            elif t is Weird:
                ctx.weird(ev.name, ev.addl, source="SMB")
            elif t is PipeData:
                self._pipe(ev.fid).deliver(ev.is_orig, ev.data)
            elif t is PipeClosed:
                self.pipes.pop(ev.fid, None)
            elif t is Error and not self.confirmed:
                # after confirmation Zeek resynchronises instead (the parser waits for a marker)
                self.dead = True
                ctx.violation(ev.reason)
                return

    def _pipe(self, fid: int) -> DCERPCSession:
        s = self.pipes.get(fid)
        if s is None:
            o = self.opts
            if len(self.pipes) >= o.max_dce_rpc_analyzers:
                # Zeek: smb_discarded_dce_rpc_analyzers, whose handler raises this weird
                self.ctx.event("smb_discarded_dce_rpc_analyzers")
                self.ctx.weird("SMB_discarded_dce_rpc_analyzers", "", source="SMB")
                self.pipes.clear()
            s = self.pipes[fid] = _PipeSession(self.ctx, fid, DCERPCOptions(o.max_cmd_reassembly, o.max_frag_data))
        return s

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        # Lost bytes desynchronise the framing: wait for the next chunk that starts a message.
        p = self.parsers[is_orig]
        p.buf = bytearray()
        p.need_sync = True


SPEC = register(AnalyzerSpec(
    name="smb",
    factory=SMBAnalyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset({(139, "tcp"), (445, "tcp")}),
    dpd_orig=(re.compile(rb"....[\xfe\xff]SMB", re.S),),    # Zeek's dpd_smb
    zeek_scripts=("base/protocols/smb",),
    options=SMBOptions,
    events=("smb1_message", "smb2_message", "smb_discarded_dce_rpc_analyzers"),
))

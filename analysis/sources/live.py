"""Live capture from a network interface: AF_PACKET with PACKET_FANOUT, the kernel frontend.

Several worker processes open a ``LiveSource`` on the same interface with the same
``fanout_group``; the kernel then hands each packet to exactly one of them.  In ``"hash"`` mode it
picks the member by a *symmetric* flow hash, so both directions of a connection reach the same
worker -- what Zeek's cluster gets from AF_PACKET/PF_RING frontends.  ``PACKET_FANOUT_FLAG_DEFRAG``
is set in hash mode so IPv4 fragments are reassembled before hashing (fragments carry no ports).

Only the standard library is used.  Two ways to take packets from the kernel, same output:

* ``ring=True`` (default): a TPACKET_V3 receive ring mapped into our memory, as libpcap does.
  The kernel fills blocks of packets and hands a whole block over at once; reading a packet is
  one ``struct.unpack_from`` and one copy, no system call per packet.
* ``ring=False`` (or if the ring cannot be set up): ``recvmsg_into`` until ``EAGAIN``, with the
  kernel timestamp (``SO_TIMESTAMPNS``) and true length (``PACKET_AUXDATA``) as ancillary data.

Batches are ``(LINKTYPE, [(ts, wire_len, data), ...])`` per the source contract; ``ts`` is the
kernel's receive time; a VLAN tag the driver stripped is re-inserted, as libpcap does.  Needs
root or CAP_NET_RAW; every failure to open becomes a :class:`SourceError` with a clear message.

For event loops: ``fileno()`` + ``read_batch()`` (non-blocking); for simple loops: ``batches()``,
which polls with ``timeout`` so ``stop()`` (safe from signal handlers and other threads) takes
effect within that time.
"""

from __future__ import annotations

import errno
import mmap
import select
import socket
import struct
from collections.abc import Iterator

from analysis.sources.base import Batch, RawPacket, SourceError

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_USER = 1
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33

FANOUT_MODES = {"hash": 0, "lb": 1, "cpu": 2, "rollover": 3, "rnd": 4, "qm": 5}
PACKET_FANOUT_FLAG_ROLLOVER = 0x1000
PACKET_FANOUT_FLAG_DEFRAG = 0x8000

TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6

# ARPHRD -> pcap LINKTYPE for the link layers whose frames we can hand on unchanged.
_LINKTYPES = {1: 1, 772: 1, 65534: 101}  # Ethernet, loopback (Ethernet framing), none (raw IP, e.g. tun)

_AUX = struct.Struct("=IIIHHHH")   # struct tpacket_auxdata
_TIMESPEC = struct.Struct("=qq")
_STATS = struct.Struct("=II")      # struct tpacket_stats (the V3 ring adds a third counter)
_REQ3 = struct.Struct("=7I")       # struct tpacket_req3
# struct tpacket3_hdr up to hv1.tp_vlan_tpid: next_offset, sec, nsec, snaplen, len, status, mac, net,
# rxhash, vlan_tci, vlan_tpid
_V3HDR = struct.Struct("=IIIIIIHHIIH")
_U32 = struct.Struct("=I")
_BLOCK_NUM = struct.Struct("=II")  # tpacket_hdr_v1.num_pkts, offset_to_first_pkt (block offset 12)
_BLOCK_SIZE = 1 << 20
_FRAME_SIZE = 2048
_MSG_TRUNC = socket.MSG_TRUNC
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUX.size)


class LiveSource:
    """Packets from ``interface`` (a member of fanout group ``fanout_group`` when given)."""

    def __init__(self, interface: str, fanout_group: int | None = None, fanout_mode: str = "hash",
                 snaplen: int = 65535, timeout: float = 0.1, buffer_size: int = 32 << 20,
                 outgoing: bool = True, ring: bool = True) -> None:
        if fanout_mode not in FANOUT_MODES:
            raise SourceError(f"unknown fanout mode {fanout_mode!r} (one of {', '.join(FANOUT_MODES)})")
        if fanout_group is not None and not 0 <= fanout_group <= 0xFFFF:
            raise SourceError(f"fanout group must be 0..65535, not {fanout_group}")
        if not 0 < snaplen <= 262144:
            raise SourceError(f"snaplen must be 1..262144, not {snaplen}")
        if not hasattr(socket, "AF_PACKET"):
            raise SourceError("live capture needs Linux AF_PACKET sockets")
        self.interface = interface
        self.snaplen = snaplen
        self.timeout = timeout
        self._stopped = False
        self._bytes = 0
        self._kernel = [0, 0]
        self._buf = bytearray(snaplen)
        self._view = memoryview(self._buf)
        self._mm: mmap.mmap | None = None
        self.mode = "recvmsg"
        self._blk = self._left = self._off = 0
        self._block_nr = 0
        try:
            # Protocol 0: the socket receives nothing until bind() names the interface, so no
            # packet from another interface can slip in between socket() and bind().
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise SourceError(f"capturing on {interface!r} needs root or CAP_NET_RAW") from None
        except OSError as e:
            raise SourceError(f"cannot open a packet socket: {e.strerror}") from None
        try:
            self._setup(fanout_group, fanout_mode, buffer_size, outgoing, ring)
        except BaseException:
            self.close()
            raise

    def _setup(self, group: int | None, mode: str, buffer_size: int, outgoing: bool, ring: bool) -> None:
        s = self._sock
        iface = self.interface
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_size)
        except OSError:  # not privileged enough for FORCE: take what rmem_max allows
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        if not outgoing:
            try:
                s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                raise SourceError("this kernel cannot ignore outgoing packets (needs Linux >= 4.20)") from None
        try:
            s.bind((iface, ETH_P_ALL))
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENXIO) or isinstance(e, socket.gaierror):
                raise SourceError(f"no such interface: {iface!r}") from None
            raise SourceError(f"cannot capture on {iface!r}: {e.strerror or e}") from None
        hatype = s.getsockname()[3]
        if hatype not in _LINKTYPES:
            raise SourceError(f"interface {iface!r} has unsupported link type (ARPHRD {hatype})")
        self.link_type = _LINKTYPES[hatype]
        if ring:
            self._setup_ring(buffer_size)
        if group is not None:
            kind = FANOUT_MODES[mode]
            if mode == "hash":
                kind |= PACKET_FANOUT_FLAG_DEFRAG
            try:
                s.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", group | kind << 16))
            except OSError as e:
                raise SourceError(f"cannot join fanout group {group} on {iface!r} in mode {mode!r}: "
                                  f"{e.strerror} (a group exists with another mode, or it is bound "
                                  f"to another interface?)") from None
        s.setblocking(False)

    def _setup_ring(self, buffer_size: int) -> None:
        """Map a TPACKET_V3 ring; on failure (old kernel, no memory) stay in recvmsg mode."""
        s = self._sock
        nblocks = max(2, buffer_size // _BLOCK_SIZE)
        tov_ms = max(1, min(1000, int(self.timeout * 1000)))  # a partly filled block is handed over after this
        req = _REQ3.pack(_BLOCK_SIZE, nblocks, _FRAME_SIZE, nblocks * (_BLOCK_SIZE // _FRAME_SIZE), tov_ms, 0, 0)
        try:
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self._mm = mmap.mmap(s.fileno(), _BLOCK_SIZE * nblocks, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            return
        self._block_nr = nblocks
        self.mode = "ring"

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_batch(self, max_batch: int = 1024) -> list[RawPacket]:
        """Whatever is queued right now, up to ``max_batch`` packets; never blocks.

        Raises :class:`SourceError` if the capture itself fails (e.g. the interface went away).
        """
        if self._mm is not None:
            return self._read_ring(max_batch)
        return self._read_recvmsg(max_batch)

    def _read_ring(self, max_batch: int) -> list[RawPacket]:
        out: list[RawPacket] = []
        mm = self._mm
        hdr = _V3HDR.unpack_from
        u32 = _U32.unpack_from
        snap = self.snaplen
        vlan_ok = self.link_type == 1
        left, off, blk = self._left, self._off, self._blk
        base = blk * _BLOCK_SIZE
        nbytes = 0
        while len(out) < max_batch:
            if left == 0:
                if not u32(mm, base + 8)[0] & TP_STATUS_USER:  # tpacket_hdr_v1.block_status
                    break
                left, first = _BLOCK_NUM.unpack_from(mm, base + 12)
                off = base + first
                if left == 0:
                    _U32.pack_into(mm, base + 8, 0)  # back to the kernel
                    blk = (blk + 1) % self._block_nr
                    base = blk * _BLOCK_SIZE
                    continue
            nxt, sec, nsec, caplen, wire, status, mac, _net, _hash, tci, tpid = hdr(mm, off)
            if caplen > snap:
                caplen = snap
            data = mm[off + mac:off + mac + caplen]
            if status & TP_STATUS_VLAN_VALID and vlan_ok and caplen >= 12:
                if not status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = 0x8100
                data = (data[:12] + struct.pack("!HH", tpid, tci & 0xFFFF) + data[12:])[:snap]
                wire += 4
            out.append((sec + nsec * 1e-9, wire, data))
            nbytes += wire
            left -= 1
            off += nxt
            if left == 0:
                _U32.pack_into(mm, base + 8, 0)  # TP_STATUS_KERNEL: the kernel may refill the block
                blk = (blk + 1) % self._block_nr
                base = blk * _BLOCK_SIZE
        self._left, self._off, self._blk = left, off, blk
        self._bytes += nbytes
        return out

    def _read_recvmsg(self, max_batch: int) -> list[RawPacket]:
        out: list[RawPacket] = []
        recv = self._sock.recvmsg_into
        bufs = [self._view]
        snap = self.snaplen
        view = self._view
        aux_unpack = _AUX.unpack
        ts_unpack = _TIMESPEC.unpack
        nbytes = 0
        while len(out) < max_batch:
            try:
                n, anc, _flags, _addr = recv(bufs, _ANC_SIZE, _MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.ENETDOWN:  # interface went down: report, keep the socket
                    raise SourceError(f"interface {self.interface!r} went down") from None
                raise SourceError(f"capture on {self.interface!r} failed: {e.strerror}") from None
            caplen = n if n < snap else snap
            data = bytes(view[:caplen])
            wire = n
            ts = 0.0
            for level, typ, cdata in anc:
                if typ == SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
                    sec, nsec = ts_unpack(cdata[:16])
                    ts = sec + nsec * 1e-9
                elif typ == PACKET_AUXDATA and level == SOL_PACKET:
                    status, tp_len, _snap, _mac, _net, tci, tpid = aux_unpack(cdata[:_AUX.size])
                    wire = tp_len
                    if status & TP_STATUS_VLAN_VALID and self.link_type == 1 and caplen >= 12:
                        if not status & TP_STATUS_VLAN_TPID_VALID:
                            tpid = 0x8100
                        data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
                        data = data[:snap]
                        wire += 4
            out.append((ts, wire, data))
            nbytes += wire
        self._bytes += nbytes
        return out

    def batches(self, max_batch: int = 1024) -> Iterator[Batch]:
        """Batches until :meth:`stop`; waits at most ``timeout`` between checks of the stop flag."""
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        wait_ms = max(1, int(self.timeout * 1000))
        lt = self.link_type
        while not self._stopped:
            batch = self.read_batch(max_batch)
            if batch:
                yield lt, batch
                continue
            try:
                poller.poll(wait_ms)
            except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
                pass

    def stop(self) -> None:
        """Make :meth:`batches` end soon; callable from signal handlers and other threads."""
        self._stopped = True

    def stats(self) -> dict[str, int]:
        """Kernel counters since open: packets queued to this socket and packets it dropped."""
        try:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            got, dropped = _STATS.unpack_from(raw)
        except (OSError, struct.error):
            got = dropped = 0
        self._kernel[0] += got  # the kernel resets its counters on every read
        self._kernel[1] += dropped
        return {"packets": self._kernel[0], "dropped": self._kernel[1]}

    def progress(self) -> tuple[int, int | None]:
        return self._bytes, None

    def close(self) -> None:
        self._stopped = True
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self._sock.close()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

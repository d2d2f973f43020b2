"""Frame -> Packet decoding with Zeek's packet-analysis semantics.

Two paths:

* ``decode_batch`` runs an inlined fast path for the bulk of real traffic — Ethernet, at most one
  802.1Q tag, IPv4 without options or fragmentation or IPv6 without extension headers, carrying
  TCP, ICMP or UDP that is no tunnel candidate — with precompiled structs, cached address text
  and one vectorised checksum pass per batch (``checksum.py``).  Anything
  else, and anything odd, falls through to the general path.
* The general path (``decode``) follows Zeek's analyzer chain: link layer (``link.py``), IP and
  transport (``ip.py``: Zeek's header checks in Zeek's order, IPv6 extension headers, fragment
  reassembly) and tunnels (``tunnels.py``: IP-in-IP, GRE incl. PPTP, ERSPAN, Aruba; UDP:
  VXLAN, Geneve, GTPv1, Teredo, AYIYA).  Weirds carry Zeek's names and sources
  (analyzer names upper-cased as Zeek canonicalises them), with Zeek's ``_in_tunnel`` suffix for
  packet weirds inside a tunnel, and are *flow* weirds once the IP addresses are known.

Transport checksums are verified here but a bad one does not drop the packet: Zeek creates the
connection, logs ``bad_TCP_checksum``/``bad_UDP_checksum``/``bad_ICMP_checksum`` as a
*connection* weird and adds history ``C``/``c``; so the packet is emitted with
``bad_checksum=True`` and the connection table does exactly that.  A bad IPv4 header checksum
is dropped here with ``bad_IP_checksum``, as in Zeek.
"""

from __future__ import annotations

import struct
from socket import inet_ntoa as _ntoa

from analysis.decode.addrs import AddrCache
from analysis.decode.checksum import failed_checksums
from analysis.decode.fragments import FragmentTable
from analysis.decode.ip import IPLayer
from analysis.decode.link import LinkLayer
from analysis.decode.options import DecoderOptions
from analysis.decode.tunnels import Tunnels
from analysis.decode.wire import (
    LT_ETHERNET,
    MAX_PAIRS,
    NO_MACS,
    PAD4,
    ZERO12,
    from_bytes,
    ipv4_hdr,
    tcp_hdr,
    udp_hdr,
)
from analysis.packet import Packet

from analysis.weird import WeirdReporter


class Decoder(LinkLayer, IPLayer, Tunnels):
    """Decodes frames into :class:`Packet` objects; see the module docstring."""

    def __init__(self, options: DecoderOptions | None = None, weirds: WeirdReporter | None = None) -> None:
        self.options = options = options or DecoderOptions()
        self.weirds = weirds
        self.stats: dict[str, int] = {
            "frames": 0, "packets": 0, "fast_path": 0, "weirds": 0, "bad_checksum": 0,
            "dropped_bad_ip_checksum": 0, "fragments": 0, "reassembled": 0, "tunnelled": 0,
            "non_ip": 0, "decoder_errors": 0,
        }
        self.addrs = AddrCache()
        self.fragments = FragmentTable(self._frag_weird, timeout=options.frag_timeout,
                                       max_datagrams=options.max_frag_datagrams,
                                       max_bytes=options.max_frag_bytes)
        self._ts = 0.0
        self._wire = 0
        self._pairs: dict[bytes, tuple[str, str]] = {}     # packed src+dst -> texts (fast path)
        self._macpairs: dict[bytes, tuple[str, str]] = {}  # dst+src MACs -> (src, dst) texts
        ports: dict[int, str] = {}
        for kind, enabled, plist in (
                ("AYIYA", options.enable_ayiya, options.ayiya_ports),
                ("TEREDO", options.enable_teredo, options.teredo_ports),
                ("GTPV1", options.enable_gtpv1, options.gtpv1_ports),
                ("GENEVE", True, options.geneve_ports),
                ("VXLAN", True, options.vxlan_ports)):
            for p in plist:
                ports[p] = kind if enabled else ""
        self._udp_ports = ports
        self._slow_ports = frozenset(ports)

    # ------------------------------------------------------------------ weirds

    def _w(self, name: str, encap: tuple, source: str = "", src: str | None = None,
           dst: str | None = None, addl: str = "") -> None:
        """A weird raised for a packet (Zeek's session Weird(name, packet))."""
        if encap:
            name += "_in_tunnel"
        self._report(name, source, src, dst, addl)

    def _report(self, name: str, source: str = "", src: str | None = None, dst: str | None = None,
                addl: str = "") -> None:
        self.stats["weirds"] += 1
        w = self.weirds
        if w is None:
            return
        if src is None:
            w.net(name, self._ts, addl, source)
        else:
            w.flow(name, self._ts, src, dst, addl, source)

    def _frag_weird(self, name: str, src: str, dst: str) -> None:
        self._report(name, "", src, dst)

    # ------------------------------------------------------------------ entry points

    def decode(self, link_type: int, ts: float, wire_len: int, data: bytes, emit) -> None:
        """Decode one frame; ``emit(packet)`` per Packet (outer UDP tunnel packet first)."""
        self.stats["frames"] += 1
        self._decode(link_type, ts, wire_len, data, emit)

    def _decode(self, link_type: int, ts: float, wire_len: int, data: bytes, emit) -> None:
        self._ts = ts
        self._wire = wire_len
        cut = wire_len - len(data)
        if cut < 0:
            cut = 0
        try:
            self._frame(link_type, data, 0, len(data), ts, cut, (), emit)
        except (IndexError, struct.error) as exc:
            # A bounds check this decoder missed: report it instead of crashing the engine.
            self.stats["decoder_errors"] += 1
            self._report("starling_decoder_error", "STARLING", addl=f"{type(exc).__name__}: {exc}")

    def flush(self) -> None:
        """Drop partial state (incomplete fragments) at the end of input."""
        self.fragments.clear()

    def decode_batch(self, batch, emit) -> None:
        """Decode a whole ``(link_type, [(ts, wire_len, data), ...])`` batch (the hot loop).

        The fast path takes Ethernet (+ one 802.1Q tag) with IPv4 (no options, not a
        fragment) or IPv6 (no extension headers) carrying TCP, UDP (no tunnel candidate) or
        ICMP/ICMPv6.  Pass 1 parses those into Packets and gathers their IP+transport bytes;
        the IPv4 header and transport checksums of all of them are then verified in one
        vectorised step; pass 2 emits everything in capture order, decoding other frames on
        the general path in place (as well as frames whose IPv4 header checksum failed, so
        that path drops them with Zeek's weird).  With checksums ignored there is no pass 2.
        """
        link_type, pkts = batch
        stats = self.stats
        stats["frames"] += len(pkts)
        slow = self._decode
        if link_type != LT_ETHERNET:
            for ts, wire_len, data in pkts:
                slow(link_type, ts, wire_len, data, emit)
            return
        verify = not self.options.ignore_checksums
        want_l2 = self.options.l2_addrs
        slow_ports = self._slow_ports
        pairs = self._pairs
        macpairs = self._macpairs
        ip6text = self.addrs.ip6
        iph = ipv4_hdr
        tcph = tcp_hdr
        udph = udp_hdr
        new = Packet.__new__
        items: list = []
        add = items.append
        regions: list = []   # per checked packet: IP header + transport bytes (+ padding)
        radd = regions.append
        totals: list = []    # IP total length of each checked packet
        tadd = totals.append
        extra: list = []     # pseudo-header protocol + length; -1: transport not checked here
        eadd = extra.append
        checked: list = []   # the checked Packets and their frames
        cadd = checked.append
        cframes: list = []
        fadd = cframes.append
        v6: list = []        # checked packets that are IPv6 (no header checksum)
        fast = 0
        for frame in pkts:
            if not verify and items:  # only general-path frames are deferred: keep order
                for it in items:
                    slow(link_type, it[0], it[1], it[2], emit)
                items.clear()
            ts, wire_len, data = frame
            n = len(data)
            if n < 42 or wire_len != n:
                add(frame)
                continue
            e0 = data[12]
            e1 = data[13]
            if e0 == 0x81 and e1 == 0:
                vlan = ((data[14] << 8) | data[15]) & 0xFFF
                e0 = data[16]
                e1 = data[17]
                off = 18
            else:
                vlan = None
                off = 14
            if e0 == 8 and e1 == 0:
                vhl, total, ff, ttl, proto, addrs = iph(data, off)
                ipend = off + total
                if vhl != 0x45 or ff & 0x3FFF or total < 28 or ipend > n:
                    add(frame)
                    continue
                t = off + 20
                pair = None          # address text: looked up only when a Packet is built
                ipv = 4
            elif e0 == 0x86 and e1 == 0xDD and n >= off + 48 and data[off] >> 4 == 6:
                total = 40 + ((data[off + 4] << 8) | data[off + 5])
                proto = data[off + 6]
                ttl = data[off + 7]
                ipend = off + total
                t = off + 40
                if ipend > n:
                    add(frame)
                    continue
                addrs = data[off + 8:t]
                pair = pairs.get(addrs)
                if pair is None:
                    pair = pairs[addrs] = (ip6text(addrs[:16]), ip6text(addrs[16:]))
                ipv = 6
            else:
                add(frame)
                continue
            bad = False
            if proto == 6:
                if ipend - t < 20:
                    add(frame)
                    continue
                sport, dport, seq, ack, thl, flags, win = tcph(data, t)
                thl = (thl >> 4) << 2
                if thl < 20 or thl > ipend - t:
                    add(frame)
                    continue
                payload = data[t + thl:ipend]
                plen = ipend - t - thl
                check = verify
            elif proto == 17:
                sport, dport, ulen, csum = udph(data, t)
                u = t + 8
                if (sport in slow_ports or dport in slow_ports
                        or (ipend - u >= 3 and data[u + 1] == 0x52 and data[u + 2] == 0x11)
                        or (ipend - u >= 40 and ((data[u] >> 4) == 6 or (data[u] == 0 and data[u + 1] < 2)))):
                    add(frame)
                    continue
                payload = data[u:ipend]
                plen = ulen - 8
                flags = seq = ack = win = 0
                check = verify and (csum or ipv == 6)
            elif proto == 1 and ipv == 4 or proto == 58 and ipv == 6:
                if ipend - t < 8:
                    add(frame)
                    continue
                sport = data[t]
                dport = data[t + 1]
                payload = data[t + 8:ipend]
                plen = ipend - t - 8
                flags = seq = ack = win = 0
                check = verify
                if check and ipv == 4:  # ICMPv4 has no pseudo-header: checked here
                    bad = (from_bytes(data[t:ipend], "big") << (8 * ((ipend - t) & 1))) % 0xFFFF != 0
                    check = False
            else:
                add(frame)
                continue
            if pair is None:
                pair = pairs.get(addrs)
                if pair is None:
                    pair = pairs[addrs] = (_ntoa(addrs[:4]), _ntoa(addrs[4:]))
            if want_l2:
                mb = data[0:12]
                macs = macpairs.get(mb)
                if macs is None:
                    macs = macpairs[mb] = (mb[6:].hex(":"), mb[:6].hex(":"))
            else:
                macs = NO_MACS
            p = new(Packet)
            p.ts = ts
            p.ip_version = ipv
            p.src, p.dst = pair
            p.proto = proto
            p.sport = sport
            p.dport = dport
            p.ip_len = total
            p.payload_len = plen
            p.payload = payload
            p.tcp_flags = flags
            p.seq = seq
            p.ack = ack
            p.win = win
            p.ttl = ttl
            p.src_mac, p.dst_mac = macs
            p.vlan = vlan
            p.inner_vlan = None
            p.encap = ()
            p.bad_checksum = bad
            p.wire_len = wire_len
            if not verify:
                emit(p)
                fast += 1
                continue
            if bad:
                stats["bad_checksum"] += 1
            add(p)
            cadd(p)
            fadd(frame)
            tadd(total)
            if ipv == 4:
                radd(data[off:ipend])
                eadd(proto + total - 20 if check else -1)
            else:
                v6.append(len(extra))
                radd(ZERO12)
                radd(data[off + 8:ipend])
                eadd(proto + total - 40 if check else -1)
            if total & 3:
                radd(PAD4[total & 3])
        if checked:
            bad_ip, bad_l4 = failed_checksums(regions, totals, extra, v6)
            for i in bad_l4:
                p = checked[i]
                p.bad_checksum = True
                stats["bad_checksum"] += 1
            for i in bad_ip:  # let the general path drop it with bad_IP_checksum
                p = checked[i]
                if p.bad_checksum:
                    stats["bad_checksum"] -= 1
                for j, it in enumerate(items):
                    if it is p:
                        items[j] = cframes[i]
                        break
        for it in items:
            if it.__class__ is Packet:
                fast += 1
                emit(it)
            else:
                slow(link_type, it[0], it[1], it[2], emit)
        stats["fast_path"] += fast
        stats["packets"] += fast
        if len(pairs) > MAX_PAIRS:
            pairs.clear()
        if len(macpairs) > MAX_PAIRS:
            macpairs.clear()

    def _packet(self, emit, ts, v, src, dst, proto, sport, dport, ip_len, plen, payload, flags, seq, ack,
                win, ttl, ctx, encap, bad) -> None:
        p = Packet()
        p.ts = ts
        p.ip_version = v
        p.src = src
        p.dst = dst
        p.proto = proto
        p.sport = sport
        p.dport = dport
        p.ip_len = ip_len
        p.payload_len = plen
        p.payload = payload
        p.tcp_flags = flags
        p.seq = seq
        p.ack = ack
        p.win = win
        p.ttl = ttl
        if ctx is not None:
            p.src_mac, p.dst_mac, p.vlan, p.inner_vlan = ctx
            if not self.options.l2_addrs:
                p.src_mac = p.dst_mac = None
        p.encap = encap
        p.bad_checksum = bad
        p.wire_len = self._wire  # the whole captured frame's wire length, also for inner packets
        stats = self.stats
        stats["packets"] += 1
        if bad:
            stats["bad_checksum"] += 1
        if encap:
            stats["tunnelled"] += 1
        emit(p)

"""IP and transport decoding: Zeek's IP header checks in Zeek's order, IPv6 extension headers
(routing, destination options with the Mobile IPv6 home address), fragment reassembly, and
TCP/UDP/ICMP headers and checksums.

A mixin of :class:`~analysis.decode.decoder.Decoder` (uses its ``fragments``, ``addrs``,
``options``, ``_w``/``_report`` and ``_packet``; hands tunnels to the Tunnels mixin).
"""

from __future__ import annotations

from analysis.decode.checksum import ipv4_header_ok, plain_ok, transport_ok
from analysis.decode.wire import (
    IPV6_EXT,
    TRANSPORT_SOURCE,
    V6_STOP,
    tcp_ports_seq,
    u16,
    u32,
    udp_hdr,
)


class IPLayer:
    """Decoder mixin: IP and transport layers (see the module docstring)."""

    def _v6_chain(self, data: bytes, off: int, end: int):
        """Walk IPv6 extension headers as Zeek's IPv6_Hdr_Chain does.

        Returns (header length, last header type, next protocol, src bytes, dst bytes,
        fragment header offset or -1, offset of the byte naming the last header).
        Raises Zeek's routing/destination-option weirds along the way.
        """
        nxt = data[off + 6]
        pos = off + 40
        cur = 41
        home = final = None
        frag_at = -1
        next_ptr = off + 6
        hsrc = data[off + 8:off + 24]
        hdst = data[off + 24:off + 40]
        a6 = self.addrs.ip6
        while cur not in V6_STOP and nxt in IPV6_EXT:
            left = end - pos
            if left < 2:
                break
            t = nxt
            if t == 44 or t == 50:
                clen = 8
            elif t == 51:
                clen = 8 + 4 * data[pos + 1]
            else:
                clen = 8 + 8 * data[pos + 1]
            if clen > left:
                break
            cur = t
            if t == 43:
                if final is not None:
                    self._report("multiple_routing_headers", "", a6(home or hsrc), a6(final))
                else:
                    rlen, rtype, segleft = data[pos + 1], data[pos + 2], data[pos + 3]
                    addr = data[pos + clen - 16:pos + clen]
                    if rtype == 0:
                        if segleft > 0 and rlen >= 2:
                            if rlen % 2 == 0:
                                final = addr
                            else:
                                self._report("odd_routing0_len", "", a6(home or hsrc), a6(hdst))
                        self._report("routing0_hdr", "", a6(home or hsrc), a6(final or hdst))
                    elif rtype == 2:
                        if segleft > 0:
                            if rlen == 2:
                                final = addr
                            else:
                                self._report("bad_routing2_len", "", a6(home or hsrc), a6(hdst))
                    else:
                        self._report("unknown_routing_type", "", a6(home or hsrc), a6(final or hdst),
                                     str(rtype))
            elif t == 60:
                p = pos + 2
                rem = clen - 2
                while rem > 0:
                    ot = data[p]
                    if ot == 0:
                        p += 1
                        rem -= 1
                        continue
                    if rem < 2 or rem < 2 + data[p + 1]:
                        self._report("bad_ipv6_dest_opt_len", "", a6(home or hsrc), a6(final or hdst))
                        break
                    olen = data[p + 1]
                    if ot == 201:
                        if olen == 16:
                            if home is not None:
                                self._report("multiple_home_addr_opts", "", a6(home), a6(final or hdst))
                            else:
                                home = data[p + 2:p + 18]
                        else:
                            self._report("bad_home_addr_len", "", a6(home or hsrc), a6(final or hdst))
                    p += 2 + olen
                    rem -= 2 + olen
            elif t == 44:
                frag_at = pos
            next_ptr = pos
            nxt = data[pos] if t != 50 else 0
            pos += clen
        return pos - off, cur, nxt, home or hsrc, final or hdst, frag_at, next_ptr

    def _ip(self, data: bytes, off: int, end: int, ts: float, cut: int, encap: tuple, emit, ctx,
            reassembled: bool = False) -> None:
        caplen = end - off
        if caplen < 20:
            self._w("truncated_IP", encap, "IP")
            return
        v = data[off] >> 4
        if v == 4:
            hl = (data[off] & 0x0F) << 2
            total = (data[off + 2] << 8) | data[off + 3]
        elif v == 6:
            if caplen < 40:
                self._w("truncated_IP", encap, "IP")
                return
            hl, last, proto, sb, db, frag_at, next_ptr = self._v6_chain(data, off, end)
            total = 40 + ((data[off + 4] << 8) | data[off + 5])
        else:
            self._w("unknown_ip_version", encap, "IP")
            return
        if total == 0:
            self._w("ip_hdr_len_zero", encap, "IP")
            if not self.options.ignore_checksums:
                return
            total = caplen
        if caplen + cut < total:
            self._w("truncated_IP_len", encap, "IP")
            return
        if hl > total:
            self._w("invalid_IP_header_size", encap, "IP")
            return
        if hl > caplen:
            self._w("internally_truncated_header", encap, "IP")
            return
        if v == 4:
            if hl < 20:
                self._w("IPv4_min_header_size", encap, "IP")
                return
            sb = data[off + 12:off + 16]
            db = data[off + 16:off + 20]
            a4 = self.addrs.ip4
            src, dst = a4(sb), a4(db)
            proto = data[off + 9]
            if not reassembled and not self.options.ignore_checksums and not ipv4_header_ok(data, off, hl):
                self.stats["dropped_bad_ip_checksum"] += 1
                self._w("bad_IP_checksum", encap, "IP", src, dst)
                return
            ff = (data[off + 6] << 8) | data[off + 7]
            is_frag = not reassembled and (ff & 0x3FFF) != 0
        else:
            a6 = self.addrs.ip6
            src, dst = a6(sb), a6(db)
            is_frag = not reassembled and last == 44
        ipend = off + total
        if is_frag:
            self.stats["fragments"] += 1
            if caplen < total:
                self._w("incompletely_captured_fragment", encap, "IP", src, dst)
                foff = (ff & 0x1FFF) * 8 if v == 4 else u16(data, frag_at + 2)[0] & 0xFFF8
                if foff != 0:
                    return
            else:
                if v == 4:
                    res = self.fragments.add(ts, (4, sb, db, u16(data, off + 4)[0]), src, dst,
                                             data[off:off + hl], proto, (ff & 0x1FFF) * 8, bool(ff & 0x2000),
                                             bool(ff & 0x4000), total, data[off + hl:ipend])
                    if res is None:
                        return
                    hdr, proto, payload = res
                    hdr = bytearray(hdr)
                    n = len(hdr) + len(payload)
                    hdr[2] = (n >> 8) & 0xFF
                    hdr[3] = n & 0xFF
                    hdr[6] &= 0x40
                    hdr[7] = 0
                    hdr[9] = proto
                else:
                    offlg = u16(data, frag_at + 2)[0]
                    res = self.fragments.add(ts, (6, sb, db, u32(data, frag_at + 4)[0]), src, dst,
                                             data[off:frag_at], data[frag_at], offlg & 0xFFF8, bool(offlg & 1),
                                             False, total, data[frag_at + 8:ipend])
                    if res is None:
                        return
                    hdr, proto, payload = res
                    hdr = bytearray(hdr)
                    # Point the header that named the fragment header at the real next protocol.
                    ptr, pos, nxt = 6, 40, hdr[6]
                    while pos < len(hdr):
                        ptr = pos
                        pos += 8 if nxt in (44, 50) else (8 + 4 * hdr[pos + 1] if nxt == 51 else 8 + 8 * hdr[pos + 1])
                        nxt = hdr[ptr]
                    hdr[ptr] = proto
                    plen = len(hdr) - 40 + len(payload)
                    hdr[4] = (plen >> 8) & 0xFF
                    hdr[5] = plen & 0xFF
                self.stats["reassembled"] += 1
                buf = bytes(hdr) + payload
                self._ip(buf, 0, len(buf), ts, 0, encap, emit, ctx, reassembled=True)
                return
        if v == 6:
            if last == 50:
                return  # ESP: the rest is encrypted
            if last == 135:
                self._mobility(data, off + hl - self._last_len(data, off, hl), ipend, end, sb, db, src, dst)
                return
        elif proto == 50:
            return
        if proto == 59:
            if not (encap and encap[-1].tunnel_type == "TEREDO"):
                self._w("ipv6_no_next", encap, "IP", src, dst)
            return
        ttl = data[off + 8] if v == 4 else data[off + 7]
        if proto == 6 or proto == 17 or proto == 1 or proto == 58:
            self._transport(data, off, hl, total, end, ts, cut, encap, emit, ctx, v, src, dst, sb + db,
                            proto, ttl)
        elif proto == 4 or proto == 41:
            if self.options.enable_ip:
                self._ip_tunnel(data, off + hl, end, ts, encap, emit, src, dst, proto, "IP")
        elif proto == 47:
            if self.options.enable_gre:
                self._gre(data, off + hl, end, ts, encap, emit, src, dst)
        elif proto == 2:
            self._igmp(data, off + hl, min(end, ipend), src, dst)
        else:
            pend = min(end, ipend)
            self._packet(emit, ts, v, src, dst, proto, 0, 0, total, total - hl, data[off + hl:pend], 0, 0, 0, 0,
                         ttl, ctx, encap, False)

    @staticmethod
    def _last_len(data: bytes, off: int, hl: int) -> int:
        """Length of the last header of an IPv6 chain (used to find a trailing mobility header)."""
        pos, nxt, last = off + 40, data[off + 6], 40
        while pos < off + hl:
            last = 8 if nxt in (44, 50) else (8 + 4 * data[pos + 1] if nxt == 51 else 8 + 8 * data[pos + 1])
            nxt = data[pos]
            pos += last
        return last

    def _mobility(self, data: bytes, mh: int, ipend: int, end: int, sb: bytes, db: bytes, src: str, dst: str) -> None:
        """Mobile IPv6 header: Zeek checks its checksum and notes piggybacked payloads; no conn."""
        mend = min(ipend, end)
        if not self.options.ignore_checksums and mend == ipend:
            if not transport_ok(data, mh, mend, sb + db, 135):
                self._report("bad_MH_checksum", "IP", src, dst)
                return
        if data[mh] != 59:
            self._report("mobility_piggyback", "IP", src, dst)

    def _igmp(self, data: bytes, start: int, end: int, src: str, dst: str) -> None:
        """IGMP is a packet analyzer in Zeek 9 (no connection); a bad checksum is a weird."""
        if end - start >= 4 and not plain_ok(data, start, end):
            self._report("igmp_invalid_checksum", "IGMP", src, dst)

    # ------------------------------------------------------------------ transport

    def _transport(self, data: bytes, off: int, hl: int, total: int, end: int, ts: float, cut: int,
                   encap: tuple, emit, ctx, v: int, src: str, dst: str, addrs: bytes, proto: int,
                   ttl: int) -> None:
        t = off + hl
        plen = total - hl
        remaining = end - t
        source = TRANSPORT_SOURCE[proto]
        minlen = 20 if proto == 6 else 8
        if plen and plen < minlen:
            self._w("truncated_header", encap, source, src, dst)
            return
        if remaining < minlen:
            self._w("internally_truncated_header", encap, source, src, dst)
            return
        ignore = self.options.ignore_checksums
        ipend = off + total
        pend = ipend if ipend < end else end
        if proto == 6:
            sport, dport, seq, ack = tcp_ports_seq(data, t)
            thl = (data[t + 12] >> 4) << 2
            if thl < 20:
                self._w("bad_TCP_header_len", encap, "", src, dst)
                return
            if thl > plen or thl > remaining:
                self._w("truncated_header", encap, "", src, dst)
                return
            bad = not ignore and remaining >= plen and not transport_ok(data, t, t + plen, addrs, 6)
            self._packet(emit, ts, v, src, dst, 6, sport, dport, total, plen - thl, data[t + thl:pend],
                         data[t + 13], seq, ack, u16(data, t + 14)[0], ttl, ctx, encap, bad)
            return
        if proto == 17:
            sport, dport, ulen, csum = udp_hdr(data, t)
            length = plen or remaining
            validate = not ignore and remaining >= length and cut == 0
            if (validate and length > 30 and data[t + 8] & 0x08
                    and dport in self.options.vxlan_ports):
                validate = self.options.validate_vxlan_checksums if csum else False
            bad = False
            if validate and (csum or v == 6):
                bad = not transport_ok(data, t, t + length, addrs, 17)
            uend = t + length if t + length < end else end
            self._packet(emit, ts, v, src, dst, 17, sport, dport, total, ulen - 8, data[t + 8:uend],
                         0, 0, 0, 0, ttl, ctx, encap, bad)
            if not bad:
                self._udp_tunnels(data, t + 8, uend, ts, cut, encap, emit, v, src, dst, sport, dport)
            return
        # ICMP / ICMPv6: Zeek's ports are type and code
        length = plen or remaining
        bad = False
        if not ignore and remaining >= length:
            if proto == 1:
                bad = not plain_ok(data, t, t + length)
            else:
                bad = not transport_ok(data, t, t + length, addrs, 58)
        self._packet(emit, ts, v, src, dst, proto, data[t], data[t + 1], total, length - 8, data[t + 8:pend],
                     0, 0, 0, 0, ttl, ctx, encap, bad)

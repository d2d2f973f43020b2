"""Link layers, as Zeek's packet analyzers chain them: Ethernet (FabricPath, VLAN/QinQ, MPLS,
PPPoE, PBB, VNTag), 802.11 (+ radiotap, A-MSDU), Linux SLL/SLL2, null/loopback, NFLOG, raw IP.

A mixin of :class:`~analysis.decode.decoder.Decoder`: it hands IP headers to ``self._ip`` and
reports through ``self._w``.
"""

from __future__ import annotations

from analysis.decode.wire import (
    EMPTY_MAC,
    ETH_ARP,
    ETH_IP4,
    ETH_IP6,
    ETH_MPLS,
    ETH_PBB,
    ETH_PPPOE,
    ETH_RARP,
    ETH_VLAN,
    ETH_VNTAG,
    LT_ETHERNET,
    LT_IEEE802_11,
    LT_LINUX_SLL,
    LT_LINUX_SLL2,
    LT_LOOP,
    LT_NFLOG,
    LT_NULL,
    LT_RADIOTAP,
    NULL_AF_IP,
    u16,
    u16le,
    u32,
    u32le,
)


class LinkLayer:
    """Decoder mixin: the link layers (see the module docstring)."""

    def _frame(self, lt: int, data: bytes, off: int, end: int, ts: float, cut: int, encap: tuple, emit) -> None:
        if lt == LT_ETHERNET:
            self._ether(data, off, end, ts, cut, encap, emit, [None, None, None, None])
        elif lt == LT_IEEE802_11:
            self._ieee80211(data, off, end, ts, cut, encap, emit)
        elif lt == LT_RADIOTAP:
            if end - off <= 3:
                self._w("truncated_radiotap_header", encap, "IEEE802_11_RADIO")
                return
            rlen = data[off + 2] | (data[off + 3] << 8)
            if rlen >= end - off:
                self._w("truncated_radiotap_header", encap, "IEEE802_11_RADIO")
                return
            self._ieee80211(data, off + rlen, end, ts, cut, encap, emit)
        elif lt == LT_LINUX_SLL:
            if end - off <= 16:
                self._w("truncated_Linux_SLL_header", encap, "LINUXSLL")
                return
            ctx = [self.addrs.ether(data[off + 6:off + 12]), EMPTY_MAC, None, None]
            self._ethertype(u16(data, off + 14)[0], data, off + 16, end, ts, cut, encap, emit, ctx)
        elif lt == LT_LINUX_SLL2:
            if end - off <= 20:
                self._w("truncated_Linux_SLL2_header", encap, "LINUXSLL2")
                return
            ctx = [self.addrs.ether(data[off + 12:off + 18]), EMPTY_MAC, None, None]
            self._ethertype(u16(data, off)[0], data, off + 20, end, ts, cut, encap, emit, ctx)
        elif lt == LT_NULL or lt == LT_LOOP:
            if end - off <= 4:
                self._w("null_analyzer_failed", encap)
                return
            af = u32le(data, off)[0] if lt == LT_NULL else u32(data, off)[0]
            if af > 0xFFFF:  # written on a host of the other byte order
                af = u32(data, off)[0] if lt == LT_NULL else u32le(data, off)[0]
            if af in NULL_AF_IP:
                self._ip(data, off + 4, end, ts, cut, encap, emit, None)
            else:
                self.stats["non_ip"] += 1
        elif lt == LT_NFLOG:
            self._nflog(data, off, end, ts, cut, encap, emit)
        else:
            # Raw IP link types (12, 14, 101, 228, 229) and, like Zeek's root analyzer,
            # any link type it has no analyzer for.
            self._ip(data, off, end, ts, cut, encap, emit, None)

    def _nflog(self, data: bytes, off: int, end: int, ts: float, cut: int, encap: tuple, emit) -> None:
        n = end - off
        if n <= 4:
            self._w("truncated_nflog_header", encap, "NFLOG")
            return
        family = data[off]
        if data[off + 1] != 0:
            self._w("unknown_nflog_version", encap, "NFLOG")
            return
        off += 4
        n -= 4
        while True:
            if n <= 4:
                self._w("nflog_no_pcap_payload", encap, "NFLOG")
                return
            tlv_len = u16le(data, off)[0]  # host byte order, normally little-endian
            tlv_type = u16le(data, off + 2)[0]
            if tlv_type == 9:  # NFULA_PAYLOAD
                off += 4
                n -= 4
                break
            if tlv_len < 4:
                self._w("nflog_bad_tlv_len", encap, "NFLOG")
                return
            if tlv_len % 4:
                tlv_len += 4 - tlv_len % 4
            if tlv_len > n:
                self._w("nflog_bad_tlv_len", encap, "NFLOG", addl=f"({tlv_len} > {n})")
                return
            off += tlv_len
            n -= tlv_len
        if family in (2, 10):
            self._ip(data, off, end, ts, cut, encap, emit, None)
        else:
            self.stats["non_ip"] += 1

    def _ether(self, data: bytes, off: int, end: int, ts: float, cut: int, encap: tuple, emit, ctx: list) -> None:
        n = end - off
        if n <= 16:
            self._w("truncated_ethernet_frame", encap, "ETHERNET")
            return
        if data[off + 12] == 0x89 and data[off + 13] == 0x03:  # Cisco FabricPath
            if 30 >= n:
                self._w("truncated_link_header_cfp", encap, "ETHERNET")
                return
            off += 16
            n -= 16
        et = (data[off + 12] << 8) | data[off + 13]
        addrs = self.addrs
        ctx[0] = addrs.ether(data[off + 6:off + 12])
        ctx[1] = addrs.ether(data[off:off + 6])
        if et >= 1536:
            self._ethertype(et, data, off + 14, end, ts, cut, encap, emit, ctx)
        elif et <= 1500:
            if n - 14 < et:
                self._w("truncated_ethernet_frame", encap, "ETHERNET")
                return
            self.stats["non_ip"] += 1  # 802.3 + LLC/SNAP/Novell: nothing Zeek logs from these
        else:
            self._w("undefined_ether_type", encap, "ETHERNET")

    def _ethertype(self, et: int, data: bytes, off: int, end: int, ts: float, cut: int, encap: tuple,
                   emit, ctx: list) -> None:
        while True:
            if et == ETH_IP4 or et == ETH_IP6:
                self._ip(data, off, end, ts, cut, encap, emit, ctx)
                return
            if et in ETH_VLAN:
                if end - off <= 4:
                    self._w("truncated_VLAN_header", encap, "VLAN")
                    return
                vid = u16(data, off)[0] & 0xFFF
                if ctx[2] is None:
                    ctx[2] = vid
                else:
                    if ctx[3] is not None:
                        self._w("triple_tagged_vlan_unsupported", encap, "VLAN",
                                addl="inner VLAN tag overwritten")
                    ctx[3] = vid
                proto = u16(data, off + 2)[0]
                if proto >= 1536:
                    et = proto
                    off += 4
                    continue
                if proto > 1500:
                    self._w("undefined_vlan_protocol", encap, "VLAN")
                elif end - off - 4 < 2:
                    self._w("truncated_VLAN_header", encap, "VLAN")
                else:
                    self.stats["non_ip"] += 1
                return
            if et == ETH_MPLS:
                while True:
                    if end - off <= 4:
                        self._w("truncated_link_header", encap, "MPLS")
                        return
                    bottom = data[off + 2] & 1
                    off += 4
                    if bottom:
                        break
                self._ip(data, off, end, ts, cut, encap, emit, ctx)
                return
            if et == ETH_PPPOE:
                if end - off <= 8:
                    self._w("truncated_pppoe_header", encap, "PPPOE")
                    return
                proto = u16(data, off + 6)[0]
                if proto == 0x0021 or proto == 0x0057:
                    self._ip(data, off + 8, end, ts, cut, encap, emit, ctx)
                else:
                    self.stats["non_ip"] += 1
                return
            if et == ETH_PBB:
                if end - off <= 18:
                    self._w("truncated_PBB_header", encap, "PBB")
                    return
                self._ether(data, off + 4, end, ts, cut, encap, emit, ctx)
                return
            if et == ETH_VNTAG:
                if end - off <= 6:
                    self._w("truncated_vntag_header", encap, "VNTAG")
                    return
                et = u16(data, off + 4)[0]
                off += 6
                continue
            # ARP, LLDP, ...: Zeek has no conn-level analysis for them.
            self.stats["non_ip"] += 1
            return

    def _ieee80211(self, data: bytes, off: int, end: int, ts: float, cut: int, encap: tuple, emit) -> None:
        n = end - off
        src = "IEEE802_11"
        if n <= 24:
            self._w("truncated_802_11_header", encap, src)
            return
        fc = data[off]
        if not (fc >> 2) & 0x02 or (fc >> 4) & 0x04:
            return  # management/control frames and data subtypes without data
        ds = data[off + 1] & 0x03
        hl = 30 if ds == 3 else 24
        if hl >= n:
            self._w("truncated_802_11_header", encap, src)
            return
        amsdu = False
        if (fc >> 4) & 0x08:  # QoS data
            amsdu = bool(data[off + hl] & 0x80)
            if data[off + 1] & 0x40:
                return  # protected: encrypted payload
            hl += 2
        if hl >= n:
            self._w("truncated_802_11_header", encap, src)
            return
        if ds == 0:
            s, d = off + 10, off + 4
        elif ds == 1:
            s, d = off + 10, off + 16
        elif ds == 2:
            s, d = off + 16, off + 4
        else:
            s, d = off + 24, off + 16
        addrs = self.addrs
        smac = addrs.ether(data[s:s + 6])
        dmac = addrs.ether(data[d:d + 6])
        off += hl
        if not amsdu:
            self._llc(data, off, end, ts, cut, encap, emit, [smac, dmac, None, None])
            return
        while off < end:
            left = end - off
            if left < 14:
                self._w("truncated_802_11_amsdu_header", encap, src)
                return
            sub = (data[off + 12] << 8) | data[off + 13]
            if left < sub + 14:
                self._w("truncated_802_11_amsdu_packet", encap, src)
                return
            off += 14
            if not self._llc(data, off, off + sub, ts, cut, encap, emit, [smac, dmac, None, None]):
                self._w("invalid_802_11_amsdu_inner_packet", encap, src)
                return
            off += sub
            pad = sub % 4
            if end - off >= pad:
                off += pad

    def _llc(self, data: bytes, off: int, end: int, ts: float, cut: int, encap: tuple, emit, ctx: list) -> bool:
        if end - off < 8:
            self._w("truncated_802_11_llc_header", encap, "IEEE802_11")
            return False
        if data[off:off + 6] != b"\xaa\xaa\x03\x00\x00\x00":
            return False
        et = (data[off + 6] << 8) | data[off + 7]
        if et in (ETH_IP4, ETH_IP6, ETH_ARP, ETH_RARP):
            if et == ETH_IP4 or et == ETH_IP6:
                self._ip(data, off + 8, end, ts, cut, encap, emit, ctx)
            return True
        return False

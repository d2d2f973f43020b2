"""Tunnel decapsulation as Zeek does it: IP-in-IP and GRE (incl. PPTP's enhanced GRE, ERSPAN
I-III, Aruba 802.11) through the IPTunnel logic, and the UDP tunnels VXLAN, Geneve, GTPv1,
Teredo and AYIYA — chosen by the responder port, else (Teredo, AYIYA) by content.

Each layer appends one :class:`~analysis.packet.Encap` (outermost first); a UDP tunnel's outer
packet has already been emitted when its payload reaches these decoders.
A mixin of :class:`~analysis.decode.decoder.Decoder`.
"""

from __future__ import annotations

from analysis.decode.wire import (
    ETH_IP4,
    ETH_IP6,
    ETH_TEB,
    LT_ETHERNET,
    LT_IEEE802_11,
    LT_RAW,
    u16,
)
from analysis.packet import Encap


class Tunnels:
    """Decoder mixin: tunnel decapsulation (see the module docstring)."""

    def _ip_tunnel(self, data: bytes, start: int, end: int, ts: float, encap: tuple, emit, src: str, dst: str,
                   proto: int, kind: str, inner_lt: int = LT_RAW, check_inner: bool = False) -> None:
        """Zeek's IPTunnel analyzer: IP-in-IP, and GRE once its header is stripped."""
        if len(encap) >= self.options.max_tunnel_depth:
            self._w("exceeded_tunnel_max_depth", encap, "IPTUNNEL", src, dst)
            return
        if check_inner:  # GRE version 1 (PPTP): the inner packet must be exactly one IP datagram
            n = end - start
            if n < 20 or data[start] >> 4 not in (4, 6) or (data[start] >> 4 == 6 and n < 40):
                self._w("invalid_inner_IP_version" if n >= 20 else "truncated_inner_IP", encap, "IPTUNNEL", src, dst)
                return
            inner_total = (u16(data, start + 2)[0] if data[start] >> 4 == 4
                           else 40 + u16(data, start + 4)[0])
            if n < inner_total:
                self._w("truncated_inner_IP", encap, "IPTUNNEL", src, dst)
                return
            if n > inner_total:
                self._w("inner_IP_payload_length_mismatch", encap, "IPTUNNEL", src, dst)
                return
        enc = encap + (Encap(kind, src, dst, 0, 0, proto),)
        if inner_lt == LT_RAW:
            self._ip(data, start, end, ts, 0, enc, emit, None)
        else:
            self._frame(inner_lt, data, start, end, ts, 0, enc, emit)

    def _gre(self, data: bytes, start: int, end: int, ts: float, encap: tuple, emit, src: str, dst: str) -> None:
        n = end - start
        if n < 4:
            self._w("truncated_GRE", encap, "GRE", src, dst)
            return
        flags = u16(data, start)[0]
        ptype = u16(data, start + 2)[0]
        ver = flags & 0x0007
        glen = 4 + (4 if flags & 0x8000 else 0) + (4 if flags & 0x2000 else 0) + \
            (4 if flags & 0x1000 else 0) + (4 if flags & 0x0080 else 0)
        pptp = 4 if ver == 1 else 0
        eth = erspan = 0
        inner_lt = LT_RAW
        if ver not in (0, 1):
            self._w("unknown_gre_version", encap, "GRE", src, dst, f"version={ver}")
            return
        if ver == 0:
            if ptype == ETH_TEB:
                if n <= glen + 14:
                    self._w("truncated_GRE", encap, "GRE", src, dst)
                    return
                eth, inner_lt = 14, LT_ETHERNET
            elif ptype == 0x88BE:  # ERSPAN I/II
                if n <= glen + 14:
                    self._w("truncated_GRE", encap, "GRE", src, dst)
                    return
                eth, inner_lt = 14, LT_ETHERNET
                if flags & 0x1000:
                    erspan = 8
            elif ptype == 0x22EB:  # ERSPAN III
                if n <= glen + 26:
                    self._w("truncated_GRE", encap, "GRE", src, dst)
                    return
                erspan, eth, inner_lt = 12, 14, LT_ETHERNET
                if data[start + glen + erspan - 1] & 0x01:
                    if n > glen + erspan + 8 + eth:
                        erspan += 8
                    else:
                        self._w("truncated_GRE", encap, "GRE", src, dst)
                        return
            elif (((ptype & 0x8200) == 0x8200 and (ptype & 0x0F) == 0)
                  or ((ptype & 0x8300) == 0x8300 and (ptype & 0x0F) == 0 and ptype <= 0x8370)
                  or ptype == 0x9000):  # Aruba: 802.11 frames
                if n <= glen:
                    self._w("truncated_GRE", encap, "GRE", src, dst)
                    return
                inner_lt = LT_IEEE802_11
        elif ptype != 0x880B:
            self._w("egre_protocol_type", encap, "GRE", src, dst, f"proto={ptype}")
            return
        if flags & 0x4000:
            self._w("gre_routing", encap, "GRE", src, dst)
            return
        if flags & 0x0078:
            self._w("unknown_gre_flags", encap, "GRE", src, dst)
            return
        if n < glen + pptp + eth + erspan:
            self._w("truncated_GRE", encap, "GRE", src, dst)
            return
        if ver == 1:
            pproto = u16(data, start + glen + 2)[0]
            if pproto != 0x0021 and pproto != 0x0057:
                self._w("non_ip_packet_in_encap", encap, "GRE", src, dst)
                return
        inner = start + glen + pptp + erspan
        self._ip_tunnel(data, inner, end, ts, encap, emit, src, dst, 47, "GRE", inner_lt, ver == 1)

    def _udp_tunnels(self, data: bytes, u: int, uend: int, ts: float, cut: int, encap: tuple, emit, v: int,
                     src: str, dst: str, sport: int, dport: int) -> None:
        """Hand a UDP payload to a tunnel decoder chosen like Zeek: by responder port, else by content."""
        ports = self._udp_ports
        kind = ports.get(dport)
        port_known = kind is not None
        if kind is None and sport in ports and dport >= 1024 and dport not in ports:
            # Probably a reply: the tunnel port is the responder's.
            kind = ports[sport]
            port_known = True
        if not port_known:
            n = uend - u
            opts = self.options
            if opts.enable_ayiya and n >= 3 and data[u + 1] == 0x52 and data[u + 2] == 0x11:
                kind = "AYIYA"
            elif opts.enable_teredo and self._teredo_detect(data, u, n):
                kind = "TEREDO"
            else:
                return
        if not kind:
            return  # port of a disabled tunnel type
        if kind != "GTPV1" and len(encap) >= self.options.max_tunnel_depth:
            self._w("exceeded_tunnel_max_depth", encap, kind, src, dst)
            return
        getattr(self, "_t_" + kind.lower())(data, u, uend, ts, cut, encap, emit, src, dst, sport, dport)

    def _t_vxlan(self, data, u, uend, ts, cut, encap, emit, src, dst, sport, dport) -> None:
        if uend - u < 8 or not data[u] & 0x08:
            return  # analyzer violation: not VXLAN
        i = u + 8
        if i >= uend:
            self._w("vxlan_empty_packet", encap, "VXLAN", src, dst)
            return
        enc = encap + (Encap("VXLAN", src, dst, sport, dport, 17),)
        self._ether(data, i, uend, ts, cut, enc, emit, [None, None, None, None])

    def _t_geneve(self, data, u, uend, ts, cut, encap, emit, src, dst, sport, dport) -> None:
        if uend - u < 8:
            return
        version = data[u] >> 6
        if version != 0:
            self._w("geneve_invalid_version", encap, "GENEVE", src, dst, str(version))
            return
        i = u + 8 + (data[u] & 0x3F) * 4
        if i > uend:
            return
        if i == uend:
            self._w("geneve_empty_packet", encap, "GENEVE", src, dst)
            return
        nh = u16(data, u + 2)[0]
        enc = encap + (Encap("GENEVE", src, dst, sport, dport, 17),)
        if nh == ETH_TEB:
            self._ether(data, i, uend, ts, cut, enc, emit, [None, None, None, None])
        elif nh == ETH_IP4 or nh == ETH_IP6:
            self._ip(data, i, uend, ts, cut, enc, emit, None)

    def _t_gtpv1(self, data, u, uend, ts, cut, encap, emit, src, dst, sport, dport) -> None:
        n = uend - u
        if n < 8:
            return
        flags = data[u]
        if flags >> 5 != 1 or not flags & 0x10:
            return  # not GTPv1 (or GTP'): analyzer violation, the UDP flow stays plain
        hdr = 8
        if flags & 0x07:
            if n < 12:
                return
            hdr = 12
            nxt = data[u + 11] if flags & 0x04 else 0
            while nxt:
                if hdr >= n:
                    return
                elen = data[u + hdr] * 4
                if elen == 0 or hdr + elen > n:
                    return
                hdr += elen
                nxt = data[u + hdr - 1]
        if data[u + 1] != 0xFF:
            return  # signalling message, no user payload
        i = u + hdr
        left = uend - i
        if left < 1:
            return
        ver = data[i] >> 4
        if ver == 4:
            if left < 20 or u16(data, i + 2)[0] != left:
                return
        elif ver == 6:
            if left < 40 or 40 + u16(data, i + 4)[0] != left:
                return
        else:
            return
        enc = encap + (Encap("GTPv1", src, dst, sport, dport, 17),)
        self._ip(data, i, uend, ts, cut, enc, emit, None)

    @staticmethod
    def _teredo_detect(data: bytes, u: int, n: int) -> bool:
        """Zeek's Teredo protocol detection (its old DPD signature plus header walking)."""
        if n < 40:
            return False
        d0, d1 = data[u], data[u + 1]
        if n > 8 and (d0 >> 4) != 6 and (d0 != 0 or (d1 != 0 and d1 != 1)):
            return False
        if 0x60 <= d0 <= 0x6F and (data[u + 8:u + 12] == b"\x20\x01\x00\x00"
                                   or data[u + 24:u + 28] == b"\x20\x01\x00\x00"):
            return True
        val = d1
        if val == 1:
            need = 13 + data[u + 2] + data[u + 3]
            if n < need:
                return False
            u += need
            n -= need
            if n < 40:
                return False
            val = u16(data, u)[0]
        if val == 0:
            if n < 8:
                return False
            u += 8
            n -= 8
            return n >= 40 and data[u] >> 4 == 6
        return False

    def _t_teredo(self, data, u, uend, ts, cut, encap, emit, src, dst, sport, dport) -> None:
        i = u
        origin = auth = False
        while True:
            n = uend - i
            if n < 2:
                self._w("truncated_Teredo", encap, "TEREDO", src, dst)
                return
            tag = u16(data, i)[0]
            if tag == 0:
                if origin:
                    return
                if n < 8:
                    self._w("truncated_Teredo_origin_indication", encap, "TEREDO", src, dst)
                    return
                i += 8
                origin = True
            elif tag == 1:
                if origin or auth:
                    return
                if n < 4:
                    self._w("truncated_Teredo_authentication", encap, "TEREDO", src, dst)
                    return
                tot = 13 + data[i + 2] + data[i + 3]
                if n < tot:
                    self._w("truncated_Teredo_authentication", encap, "TEREDO", src, dst)
                    return
                i += tot
                auth = True
            elif tag >> 12 == 6:
                if n < 40:
                    self._w("truncated_IPv6_in_Teredo", encap, "TEREDO", src, dst)
                    return
                break
            else:
                return
        n = uend - i
        total = 40 + u16(data, i + 4)[0]
        if n < total:
            return  # violation: truncated
        if n > total:
            if data[i + 6] == 59 and total == 40:
                self._w("Teredo_bubble_with_payload", encap, "TEREDO", src, dst)
            else:
                return
        enc = encap + (Encap("TEREDO", src, dst, sport, dport, 17),)
        self._ip(data, i, uend, ts, cut, enc, emit, None)

    def _t_ayiya(self, data, u, uend, ts, cut, encap, emit, src, dst, sport, dport) -> None:
        n = uend - u
        if n < 8:
            return
        hdr = 8 + (1 << (data[u] >> 4)) + (data[u + 1] >> 4) * 4
        if hdr > n or data[u + 2] & 0x0F != 1:
            return  # truncated, or not a "forward" message
        nh = data[u + 3]
        i = u + hdr
        if i >= uend:
            self._w("ayiya_empty_packet", encap, "AYIYA", src, dst)
            return
        if nh == 4 or nh == 41:
            enc = encap + (Encap("AYIYA", src, dst, sport, dport, 17),)
            self._ip(data, i, uend, ts, cut, enc, emit, None)

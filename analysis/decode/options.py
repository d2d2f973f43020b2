"""Decoder configuration; every default is Zeek's default for the same option."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class DecoderOptions:
    ignore_checksums: bool = False          # zeek -C / ignore_checksums
    max_tunnel_depth: int = 2               # Tunnel::max_depth
    enable_ip: bool = True                  # Tunnel::enable_ip (IP-in-IP)
    enable_gre: bool = True                 # Tunnel::enable_gre
    enable_ayiya: bool = True               # Tunnel::enable_ayiya
    enable_teredo: bool = True              # Tunnel::enable_teredo
    enable_gtpv1: bool = True               # Tunnel::enable_gtpv1
    validate_vxlan_checksums: bool = True   # Tunnel::validate_vxlan_checksums
    # PacketAnalyzer::VXLAN::vxlan_ports, ::Geneve::geneve_ports, ::GTPV1::gtpv1_ports, ...
    vxlan_ports: frozenset[int] = field(default_factory=lambda: frozenset({4789}))
    geneve_ports: frozenset[int] = field(default_factory=lambda: frozenset({6081}))
    gtpv1_ports: frozenset[int] = field(default_factory=lambda: frozenset({2152, 2123}))
    teredo_ports: frozenset[int] = field(default_factory=lambda: frozenset({3544}))
    ayiya_ports: frozenset[int] = field(default_factory=lambda: frozenset({5072}))
    frag_timeout: float = 0.0               # frag_timeout: 0 = never (Zeek's default)
    max_frag_datagrams: int = 10000         # memory bounds of the fragment table (ours)
    max_frag_bytes: int = 32 << 20
    l2_addrs: bool = True                   # fill Packet.src_mac/dst_mac (only mac-logging needs them)

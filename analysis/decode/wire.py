"""Wire-format constants and precompiled structs shared by the decoder's layers."""

from __future__ import annotations

import struct

# precompiled unpackers: (buffer, offset) -> tuple
u16 = struct.Struct("!H").unpack_from
u16le = struct.Struct("<H").unpack_from
u32 = struct.Struct("!I").unpack_from
u32le = struct.Struct("<I").unpack_from
ipv4_hdr = struct.Struct("!BxHxxHBBxx8s").unpack_from  # vhl, total, flags+frag, ttl, proto, addrs
tcp_hdr = struct.Struct("!HHIIBBH").unpack_from        # ports, seq, ack, offset, flags, window
tcp_ports_seq = struct.Struct("!HHII").unpack_from
udp_hdr = struct.Struct("!HHHH").unpack_from
from_bytes = int.from_bytes

# pcap LINKTYPE values
LT_NULL = 0
LT_ETHERNET = 1
LT_RAW_OLD = 12
LT_RAW_OBSD = 14
LT_RAW = 101
LT_IEEE802_11 = 105
LT_LOOP = 108
LT_LINUX_SLL = 113
LT_RADIOTAP = 127
LT_IPV4 = 228
LT_IPV6 = 229
LT_NFLOG = 239
LT_LINUX_SLL2 = 276

ETH_IP4 = 0x0800
ETH_IP6 = 0x86DD
ETH_ARP = 0x0806
ETH_RARP = 0x8035
ETH_VLAN = (0x8100, 0x88A8, 0x9100)
ETH_MPLS = 0x8847
ETH_PPPOE = 0x8864
ETH_PBB = 0x88E7
ETH_VNTAG = 0x8926
ETH_TEB = 0x6558

NULL_AF_IP = (2, 24, 28, 30)  # AF_INET and the BSDs' AF_INET6 values
IPV6_EXT = frozenset((0, 43, 60, 44, 51, 50, 135))
V6_STOP = (44, 50, 135)
EMPTY_MAC = "00:00:00:00:00:00"
MAX_PAIRS = 4096   # address-text cache: cleared at a batch end when larger (~500 B an entry)
PAD4 = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")  # to the next multiple of 4 bytes
ZERO12 = bytes(12)  # stands in for the IPv4 header part an IPv6 packet does not have
NO_MACS = (None, None)

TRANSPORT_SOURCE = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMP"}

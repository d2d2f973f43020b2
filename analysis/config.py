"""AnalysisConfig: everything that shapes one engine run, in one plain object.

It carries the decoder's options, which networks are local, which logs exist (Zeek's bare
mode writes only the logs of loaded scripts), conn.log extensions, the "likely server ports"
that decide connection flips, and Zeek's timeouts.  ``analysis/zeek_scripts.py`` builds one
from Zeek ``@load`` names and ``redef`` lines; the defaults are Zeek's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

#: Zeek's ``Site::private_address_space`` (base/utils/site.zeek); local by default.
PRIVATE_ADDRESS_SPACE = (
    "0.0.0.0/8", "2002::/24", "10.0.0.0/8", "2002:a00::/24", "100.64.0.0/10", "2002:6440::/26",
    "127.0.0.0/8", "2002:7f00::/24", "169.254.0.0/16", "2002:a9fe::/32", "172.16.0.0/12", "2002:ac10::/28",
    "192.0.0.0/24", "2002:c000::/40", "192.0.2.0/24", "2002:c000:200::/40", "192.168.0.0/16",
    "2002:c0a8::/32", "198.18.0.0/15", "2002:c612::/31", "198.51.100.0/24", "2002:c633:6400::/40",
    "203.0.113.0/24", "2002:cb00:7100::/40", "240.0.0.0/4", "2002:f000::/20", "255.255.255.255/32",
    "2002:ffff:ffff::/48", "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:2::/48",
    "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10", "224.0.0.0/24", "2002:e000::/40", "239.0.0.0/8",
    "2002:ef00::/24",
)

PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1}


def _decoder_options(ignore_checksums: bool = False, l2_addrs: bool = True) -> Any:
    from analysis.decode import DecoderOptions  # the decoder owns its options type

    return DecoderOptions(ignore_checksums=ignore_checksums, l2_addrs=l2_addrs)


class NetSet:
    """A set of subnets with a per-address answer cache (addresses repeat a lot)."""

    __slots__ = ("nets", "_cache", "_masks")

    def __init__(self, nets=()) -> None:
        self.nets = tuple(ipaddress.ip_network(n, strict=False) for n in nets)
        self._cache: dict[str, bool] = {}
        # (network, netmask) integers per IP version: a miss costs one parse, no object compares
        self._masks = {v: tuple((int(n.network_address), int(n.netmask)) for n in self.nets if n.version == v)
                       for v in (4, 6)}

    def __len__(self) -> int:
        return len(self.nets)

    def __contains__(self, addr: str) -> bool:
        hit = self._cache.get(addr)
        if hit is None:
            try:
                a = ipaddress.ip_address(addr)
            except ValueError:
                hit = False
            else:
                x = int(a)
                hit = any(x & m == n for n, m in self._masks[a.version])
            if len(self._cache) > 65536:
                self._cache.clear()
            self._cache[addr] = hit
        return hit


@dataclass
class AnalysisConfig:
    decoder: Any = None                       # analysis.decode.DecoderOptions; built on first use
    ignore_checksums: bool = False            # copied into DecoderOptions when `decoder` is None
    local_nets: tuple[str, ...] = ()          # Site::local_nets
    private_address_space_is_local: bool = True
    # None: every log stream exists (Zeek's default mode); else only these (bare mode).
    logs: frozenset[str] | None = None
    conn_extensions: tuple[str, ...] = ()     # "mac", "vlan" (policy scripts), in load order
    # (port, "tcp"|"udp") pairs Zeek considers likely server ports (decides flips).
    likely_server_ports: frozenset[tuple[int, str]] = frozenset()
    # ports where a loaded analyzer attaches (enables TCP reassembly when first-packet reassembly is off)
    analyzer_ports: frozenset[tuple[int, str]] = frozenset()
    dpd_reassemble_first_packets: bool = True
    dpd_buffer_size: int = 1024
    dpd_match_only_beginning: bool = True
    # protocol analyzers: None = every registered one (Zeek's default mode), else these names
    analyzers: frozenset[str] | None = None
    disabled_analyzers: frozenset[str] = frozenset()       # Analyzer::disabled_analyzers
    analyzer_options: dict[str, Any] = field(default_factory=dict)   # name -> options object (redefs applied)
    reassembly_buffer_cap: int = 1 << 20      # out-of-order payload bytes held per connection
    strict_analyzers: bool = False            # re-raise analyzer exceptions (tests) instead of a weird
    tcp_inactivity_timeout: float = 300.0
    udp_inactivity_timeout: float = 60.0
    icmp_inactivity_timeout: float = 60.0
    unknown_ip_inactivity_timeout: float = 60.0
    tcp_SYN_timeout: float = 5.0
    tcp_session_timer: float = 6.0
    tcp_connection_linger: float = 5.0
    tcp_attempt_delay: float = 5.0
    tcp_close_delay: float = 5.0
    tcp_partial_close_delay: float = 3.0
    tcp_reset_delay: float = 5.0
    tcp_max_initial_window: int = 16384
    tcp_max_above_hole_without_any_acks: int = 16384
    tcp_excessive_data_without_further_acks: int = 10 * 1024 * 1024
    tunnel_expiration_interval: float = 3600.0
    weird_do_not_ignore_repeats: frozenset[str] = frozenset(
        {"bad_IP_checksum", "bad_TCP_checksum", "bad_UDP_checksum", "bad_ICMP_checksum"})
    uid_seed: int | None = None
    peer: str = "zeek"
    notes: list[str] = field(default_factory=list)   # what zeek_scripts could not map
    unused_redefs: list[str] = field(default_factory=list)   # redef names the engine does not take

    def decoder_options(self) -> Any:
        if self.decoder is None:
            # MAC address text is only needed by conn.log's mac-logging columns
            self.decoder = _decoder_options(self.ignore_checksums, "mac" in self.conn_extensions)
        return self.decoder

    def log_enabled(self, path: str) -> bool:
        return self.logs is None or path in self.logs

    def local_netset(self) -> NetSet:
        nets = list(self.local_nets)
        if self.private_address_space_is_local:
            nets.extend(PRIVATE_ADDRESS_SPACE)
        return NetSet(nets)

    def server_port_sets(self) -> tuple[frozenset[int], frozenset[int]]:
        """(tcp ports, udp ports) of :attr:`likely_server_ports`, for the hot path."""
        tcp = frozenset(p for p, t in self.likely_server_ports if t == "tcp")
        udp = frozenset(p for p, t in self.likely_server_ports if t == "udp")
        return tcp, udp

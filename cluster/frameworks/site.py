"""Zeek's ``Site::is_local_addr`` and ``addr_matches_host`` (``base/utils/site``,
``base/utils/directions-and-hosts``) over the run's local networks, for the policy scripts."""

from __future__ import annotations

import functools
import ipaddress

from cluster.frameworks import host as _host

__all__ = ["addr_matches_host", "is_local_addr"]


@functools.lru_cache(maxsize=64)
def _nets(nets: tuple[str, ...]) -> tuple:
    out = []
    for n in nets:
        try:
            out.append(ipaddress.ip_network(n, strict=False))
        except ValueError:
            continue
    return tuple(out)


def is_local_addr(addr: str, extra: tuple[str, ...] = ()) -> bool:
    """True when ``addr`` is in ``Site::local_nets`` (the layout's / ``--local-nets`` networks,
    plus a script's own ``extra`` ones)."""
    try:
        a = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(a in n for n in _nets(tuple(extra) + tuple(_host.current().local_nets)))


def addr_matches_host(addr: str, hosts: str) -> bool:
    """``addr_matches_host(ip, h)`` for ``Host`` values ``LOCAL_HOSTS``, ``REMOTE_HOSTS``,
    ``ALL_HOSTS`` and ``NO_HOSTS`` (with or without a module prefix)."""
    h = hosts.rsplit("::", 1)[-1]
    if h == "ALL_HOSTS":
        return True
    if h == "NO_HOSTS":
        return False
    local = is_local_addr(addr)
    return local if h == "LOCAL_HOSTS" else (not local if h == "REMOTE_HOSTS" else False)

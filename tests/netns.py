"""Test helper: a small private network of Linux network namespaces (a star around a bridge), so
that cluster nodes can run on "different hosts" with real addresses without touching any real
network.  Everything it creates is removed by :meth:`Star.remove`, which never raises.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, no ``ip``, no permission)."""


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")


class Star:
    """One namespace per host, each joined by a veth pair to a bridge in a hub namespace.

    ``hosts`` maps a host label to its address in ``prefix`` (e.g. ``{"mgr": "192.0.2.1"}``);
    :meth:`ns` gives the namespace name of a label for ``ip netns exec``.
    """

    def __init__(self, hosts: dict[str, str], prefix_len: int = 24) -> None:
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root")
        self.tag = "st" + secrets.token_hex(3)
        self.hosts = dict(hosts)
        self.prefix_len = prefix_len
        self.bridge_ns = f"{self.tag}-br"
        self.created: list[str] = []

    def ns(self, label: str) -> str:
        return f"{self.tag}-{label}"

    def create(self) -> "Star":
        try:
            self._add_ns(self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
            for i, (label, addr) in enumerate(self.hosts.items()):
                ns = self.ns(label)
                self._add_ns(ns)
                inner, outer = f"{self.tag}h{i}", f"{self.tag}b{i}"      # <= 15 characters
                _ip("link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer,
                    "netns", self.bridge_ns)
                _ip("-n", ns, "link", "set", inner, "name", "eth0")
                _ip("-n", ns, "addr", "add", f"{addr}/{self.prefix_len}", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", self.bridge_ns, "link", "set", outer, "master", "br0")
                _ip("-n", self.bridge_ns, "link", "set", outer, "up")
        except BaseException:
            self.remove()
            raise
        return self

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.created.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def remove(self) -> None:
        """Kill whatever still runs inside, then delete every namespace (and so every veth)."""
        for ns in reversed(self.created):
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.created.clear()

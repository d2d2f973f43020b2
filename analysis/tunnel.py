"""tunnel.log and tunnel identities (Zeek's ``base/frameworks/tunnels``).

A tunnel layer is identified like Zeek's ``EncapsulatingConn``: a UDP-carried tunnel (VXLAN,
GENEVE, Teredo, AYIYA, GTPv1) *is* its outer UDP connection, so it takes that connection's
uid and 4-tuple; an IP tunnel (IP-in-IP, GRE) gets its own uid, keyed by its address pair in
either direction, with ports 0.  tunnel.log gets ``Tunnel::DISCOVER`` the first time a layer
is seen, ``Tunnel::CLOSE`` when the connection with the same 4-tuple is removed (so only
UDP tunnels close), and ``Tunnel::EXPIRE`` after an hour without activity.
"""

from __future__ import annotations

from collections.abc import Callable

from analysis.logs.schema import Addr, Enum, LogRecord, Port, String, Time, field, log_stream
from analysis.sinks import LogSink


@log_stream("tunnel")
class TunnelInfo(LogRecord, kw_only=True):
    ts: Time
    uid: String | None = None
    orig_h: Addr = field(name="id.orig_h")
    orig_p: Port = field(name="id.orig_p")
    resp_h: Addr = field(name="id.resp_h")
    resp_p: Port = field(name="id.resp_p")
    tunnel_type: Enum
    action: Enum


CID = tuple  # (orig_h, orig_p, resp_h, resp_p)


class TunnelRegistry:
    """Knows every tunnel layer seen; writes tunnel.log when ``enabled``."""

    def __init__(self, sink: LogSink, new_uid: Callable[[], str], enabled: bool = True,
                 expiration: float = 3600.0) -> None:
        self._sink = sink
        self._new_uid = new_uid
        self.enabled = enabled
        self._expiration = expiration
        self._ip: dict[tuple, tuple[str, CID]] = {}        # IP tunnels: (type, lo, hi) -> (uid, cid)
        self._active: dict[CID, list] = {}                  # cid -> [uid, type, last_seen]
        self._next_sweep = 0.0

    def ip_tunnel(self, tunnel_type: str, src: str, dst: str) -> tuple[str, CID]:
        """uid and conn_id of an IP tunnel between ``src`` and ``dst`` (either direction)."""
        k = (tunnel_type, src, dst) if src <= dst else (tunnel_type, dst, src)
        got = self._ip.get(k)
        if got is None:
            got = self._ip[k] = (self._new_uid(), (src, 0, dst, 0))
        return got

    def register(self, uid: str, cid: CID, tunnel_type: str, ts: float) -> None:
        """A connection was seen inside this layer (Zeek's ``Tunnel::register``)."""
        act = self._active.get(cid)
        if act is not None:
            act[2] = ts
            return
        self._active[cid] = [uid, tunnel_type, ts]
        self._log(ts, uid, cid, tunnel_type, "Tunnel::DISCOVER")

    def connection_removed(self, cid: CID, ts: float) -> None:
        act = self._active.pop(cid, None)
        if act is not None:
            self._log(ts, act[0], cid, act[1], "Tunnel::CLOSE")

    def sweep(self, now: float) -> None:
        """Expire layers idle for the expiration interval (checked at most once a minute)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60.0
        limit = now - self._expiration
        for cid in [c for c, a in self._active.items() if a[2] <= limit]:
            uid, ttype, _ = self._active.pop(cid)
            self._log(now, uid, cid, ttype, "Tunnel::EXPIRE")

    def _log(self, ts: float, uid: str, cid: CID, tunnel_type: str, action: str) -> None:
        if self.enabled:
            self._sink.write("tunnel", TunnelInfo(ts=ts, uid=uid, orig_h=cid[0], orig_p=cid[1], resp_h=cid[2],
                                                  resp_p=cid[3], tunnel_type="Tunnel::" + tunnel_type,
                                                  action=action))

"""The connection table: one dict lookup per packet, Zeek's connection semantics.

Packets come from the decoder one by one (``process``); connections are keyed by a
direction-independent tuple, created with Zeek's orig/resp flip rules, driven through the
per-transport logic (TCP in :mod:`analysis.conn.tcp`), and removed by network-time timers —
checked lazily on the next packet of the same connection and by a periodic sweep — or by
``finish``.  Removal writes the conn.log row and emits ``connection_state_remove``.  With an
event sink, the TCP timers that raise events (attempt, reset, partial close) also sit in an
exact heap checked before each packet, so their events come at Zeek's network time.
"""

from __future__ import annotations

import heapq
import itertools
import sys

from analysis.conn import tcp as _tcp
from analysis.conn.record import ConnInfo, conn_record_type
from analysis.conn.tcp import _fast
from analysis.conn.state import shared_int
from analysis.conn.state import F_ACTIVE, F_REASSEMBLE, F_T_SESSION, F_SEEN_ORIG, F_SEEN_RESP, F_WEIRD, H_DATA, Connection, Endpoint
from analysis.conn.uid import UidGenerator
from analysis.dpd import TUNNEL_SERVICES, add_service
from analysis.tunnel import TunnelRegistry

_ESTABLISHED = 4
_intern = sys.intern
# One int object per port number, shared by every connection's key and fields: a port above 256
# is a private 28-byte int per packet otherwise, and a table holds two per connection (2.4 MB once).
_PORT = tuple(range(65536))

# ICMP request/reply counterparts (Zeek's ICMP4_counterpart / ICMP6_counterpart); others are one-way.
ICMP4_COUNTERPART = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
ICMP6_COUNTERPART = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130,
                     139: 140, 140: 139, 144: 145, 145: 144}

_NULL_MAC = "00:00:00:00:00:00"
TRANSPORT = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}


def _is_multi_or_broadcast(addr: str) -> bool:
    if ":" in addr:
        return addr[:2].lower() == "ff"
    if addr == "255.255.255.255":
        return True
    first = addr.split(".", 1)[0]
    return first.isdigit() and 224 <= int(first) <= 239


class ConnTable:
    """``analyzer_factory(conn)``, when given, is called for each new connection and may return
    the callable to put in ``conn.analyzer`` (how protocol analyzers attach)."""

    def __init__(self, config, log_sink, event_sink, weirds, analyzer_factory=None) -> None:
        self.cfg = config
        self.analyzer_factory = analyzer_factory
        self._sink = log_sink
        self._events = event_sink
        self._weirds = weirds
        self.new_uid = UidGenerator(config.uid_seed)
        self._conns: dict[tuple, Connection] = {}
        self._tcp_ports, self._udp_ports = config.server_port_sets()
        self._analyzer_tcp_ports = frozenset(p for p, t in config.analyzer_ports if t == "tcp")
        self._local = config.local_netset()
        self._has_local = len(self._local) > 0
        self._conn_log = config.log_enabled("conn")
        self._record = conn_record_type(tuple(config.conn_extensions))
        self._want_l2 = "mac" in config.conn_extensions
        self._want_vlan = "vlan" in config.conn_extensions
        self._want_ext = self._want_l2 or self._want_vlan
        self.tunnels = TunnelRegistry(log_sink, self.new_uid, enabled=config.log_enabled("tunnel"),
                                      expiration=config.tunnel_expiration_interval)
        self.now = 0.0
        self._buckets: dict[int, list[Connection]] = {}
        self._due: list[int] = []          # heap of bucket seconds
        self.packets = 0
        self.bytes = 0
        self.connections = 0
        self.removed = 0
        self._ev_timers: list | None = None
        if event_sink is not None:
            # Zeek raises a timer's event when network time passes it, before the packet that
            # moved the clock: event-raising timers get an exact heap, checked per packet (only
            # here: without a sink ``process`` is the plain method)
            h = self._ev_timers = []
            self._ev_seq = itertools.count()
            plain, run_due = self.process, self._run_event_timers

            def process(p) -> None:
                if h and h[0][0] <= p.ts:
                    run_due(p.ts)
                plain(p)
            self.process = process

    def __len__(self) -> int:
        return len(self._conns)

    # -- hot path -------------------------------------------------------------------------------
    def process(self, p) -> None:
        """Account one decoded packet (the decoder's ``emit`` callback)."""
        ts = p.ts
        if ts > self.now:
            self.now = ts
        self.packets += 1
        self.bytes += p.ip_len
        proto = p.proto
        src = p.src
        dst = p.dst
        if proto == 6 or proto == 17:
            sp = _PORT[p.sport]
            dp = _PORT[p.dport]
            if src < dst or (src == dst and sp <= dp):
                key = (src, dst, sp, dp, proto)
            else:
                key = (dst, src, dp, sp, proto)
        elif proto == 1 or proto == 58:
            sp = p.sport
            dp = (ICMP4_COUNTERPART if proto == 1 else ICMP6_COUNTERPART).get(sp, -1)
            if dp < 0:      # one-way message: "port" is the code, key keeps the direction
                dp = p.dport
                key = (src, dst, sp, dp, proto, 1)
            elif src < dst or (src == dst and sp <= dp):
                key = (src, dst, sp, dp, proto)
            else:
                key = (dst, src, dp, sp, proto)
        else:
            sp = dp = 0
            key = (src, dst, 0, 0, proto) if src <= dst else (dst, src, 0, 0, proto)

        c = self._conns.get(key)
        if c is not None:
            if ts - c.last >= 5.0 or ts >= c.timer_at:
                if self._expired(c, ts):
                    self._remove(c, ts)
                    c = None
            if c is not None and proto == 6 and p.tcp_flags & 0x02 and _tcp.is_reuse(self, c, p, ts):
                self._remove(c, ts)
                c = None
        if c is None:
            c = self._new(key, p, proto, src, dst, sp, dp, ts)
            is_orig = src == c.orig_h and sp == c.orig_p
        else:
            is_orig = src == c.orig_h and sp == c.orig_p
            if p.encap:
                self._check_encap(c, p, ts)
            elif c.tun is not None:
                c.tun[0] = None

        if proto == 6:
            side = 0
            if p.tcp_flags & 0x37 == 0x10 and not p.bad_checksum:
                if is_orig:
                    ep = c.o
                    peer = c.r
                else:
                    ep = c.r
                    peer = c.o
                if ep.state == _ESTABLISHED and peer.state == _ESTABLISHED:
                    side = _fast(self, c, ep, peer, is_orig, ts, p.seq, p.ack, p.win, p.payload_len, p.payload)
            if not side:
                side = _tcp.process(self, c, p, is_orig, ts)
                if not side:
                    return
            is_orig = side == 1
        elif proto == 17:
            if p.bad_checksum:
                self.conn_weird(c, "bad_UDP_checksum", ts, source="UDP")
                _tcp.scaled_history(c, c, "C" if is_orig else "c")
                return
            c.last = ts
            n = p.payload_len
            if is_orig:
                if not c.hist_seen & H_DATA:
                    c.hist_seen = shared_int(c.hist_seen | H_DATA)
                    c.history = _intern(c.history + "D")
                c.orig_size = n if c.orig_size < 0 else c.orig_size + n
            else:
                if not c.hist_seen & 0x100000:
                    c.hist_seen = shared_int(c.hist_seen | 0x100000)
                    c.history = _intern(c.history + "d")
                c.resp_size = n if c.resp_size < 0 else c.resp_size + n
            if c.analyzer is not None and n:
                c.analyzer(is_orig, -1, p.payload, ts)
        elif proto == 1 or proto == 58:
            if p.bad_checksum:
                self.conn_weird(c, "bad_ICMP_checksum", ts, source="ICMP")
                return
            c.last = ts
            n = p.payload_len
            if is_orig:
                c.orig_size = n if c.orig_size < 0 else c.orig_size + n
            else:
                c.resp_size = n if c.resp_size < 0 else c.resp_size + n
        else:
            c.last = ts
        if is_orig:
            c.orig_pkts += 1
            c.orig_ip_bytes += p.ip_len
        else:
            c.resp_pkts += 1
            c.resp_ip_bytes += p.ip_len

    def _run_event_timers(self, ts: float) -> None:
        """Run the event timers due by a packet at ``ts`` (network time moves there first).
        A removal they call for follows at the sweep or the connection's next packet, as
        without a sink, so the logs do not depend on the sink."""
        if ts > self.now:
            self.now = ts
        h = self._ev_timers
        conns = self._conns
        while h and h[0][0] <= ts:
            t, _, c = heapq.heappop(h)
            if c.timer_at == t and conns.get(c.key) is c:     # else cancelled, replaced or removed
                _tcp.run_timer(self, c)

    def event_timer(self, c: Connection) -> None:
        """``c.timer_at`` now holds a timer that raises an event: run it at its exact time."""
        heapq.heappush(self._ev_timers, (c.timer_at, next(self._ev_seq), c))

    # -- connection lifecycle -------------------------------------------------------------------
    def _new(self, key, p, proto, src, dst, sp, dp, ts) -> Connection:
        flip = False
        if proto == 6:
            fl = p.tcp_flags
            if not fl & 0x02 or fl & 0x10:
                ports = self._tcp_ports
                if sp in ports:
                    flip = (not fl & 0x02 and sp < dp) if dp in ports else True
        elif proto == 17:
            ports = self._udp_ports
            flip = sp in ports and dp not in ports
        if flip and _is_multi_or_broadcast(dst):
            flip = False      # a reply is never sent to a broadcast/multicast address
        c = Connection()
        c.key = key
        c.proto = proto
        # servers are few and shared by many connections: one text object per responder address
        # (the decoder makes a new one per address pair)
        c.orig_h, c.orig_p, c.resp_h, c.resp_p = src, sp, dst, dp
        c.start = c.last = ts
        cfg = self.cfg
        if proto == 6:
            c.o = Endpoint()
            c.r = Endpoint()
            c.timeout = cfg.udp_inactivity_timeout   # Zeek: TCP starts with the UDP timeout until established
            c.flags = F_ACTIVE
            if cfg.dpd_reassemble_first_packets or dp in self._analyzer_tcp_ports or \
                    (flip and sp in self._analyzer_tcp_ports):
                c.flags |= F_REASSEMBLE
        elif proto == 17:
            c.timeout = cfg.udp_inactivity_timeout
        elif proto == 1 or proto == 58:
            c.timeout = cfg.icmp_inactivity_timeout
        else:
            c.timeout = cfg.unknown_ip_inactivity_timeout
        if self._want_ext:
            # Zeek leaves an all-zero link-layer address unset
            sm, dm = p.src_mac, p.dst_mac
            c.ext = (None if sm == _NULL_MAC else sm, None if dm == _NULL_MAC else dm, p.vlan, p.inner_vlan)
        if flip:
            self.flip(c)
        self._conns[key] = c
        self._file(c, ts)
        self.connections += 1
        if p.encap:
            self._check_encap(c, p, ts)
        if self.analyzer_factory is not None:
            an = c.analyzer = self.analyzer_factory(c)
            if an is not None and proto == 6:
                c.flags |= F_REASSEMBLE      # an application analyzer needs the stream (and its gaps)
        if self._events is not None:
            self._events.event("new_connection", (self._info(c),))
        return c

    def flip(self, c: Connection) -> None:
        """Zeek's Connection::FlipRoles: swap every orig/resp pair and note ``^`` in the history."""
        c.orig_h, c.resp_h = c.resp_h, c.orig_h
        c.orig_p, c.resp_p = c.resp_p, c.orig_p
        c.orig_pkts, c.resp_pkts = c.resp_pkts, c.orig_pkts
        c.orig_ip_bytes, c.resp_ip_bytes = c.resp_ip_bytes, c.orig_ip_bytes
        c.orig_size, c.resp_size = c.resp_size, c.orig_size
        if c.ext is not None:
            om, rm, v, iv = c.ext
            c.ext = (rm, om, v, iv)
        if c.o is not None:
            c.o, c.r = c.r, c.o
            f = c.flags
            seen = (F_SEEN_RESP if f & F_SEEN_ORIG else 0) | (F_SEEN_ORIG if f & F_SEEN_RESP else 0)
            c.flags = (f & ~(F_SEEN_ORIG | F_SEEN_RESP)) | seen
        # the letters already earned change sides with the endpoints; "^" marks the flip
        hs = c.hist_seen
        c.hist_seen = shared_int(((hs & 0xFFFF) << 16) | (hs >> 16))
        c.history = _intern("^" + c.history.swapcase())

    def session_expiry(self, c: Connection, interval: float) -> None:
        """Zeek's DNS-over-UDP ExpireTimer: from now on, every ``interval`` of network time, the
        connection is removed if it has been idle for ``interval - 1`` s (the second of slack
        lets a single request/reply pair go at the first tick).  Replaces the inactivity
        timeout, which could never fire first."""
        c.timeout = interval
        c.timer_at = self.now + interval
        c.flags |= F_T_SESSION

    def _expired(self, c: Connection, now: float) -> bool:
        if c.flags & F_T_SESSION:
            t = c.timer_at
            if t > now:
                return False
            idle = c.timeout - 1.0
            while t - c.last < idle:      # a tick that finds recent activity re-arms the timer
                t += c.timeout
                if t > now:
                    c.timer_at = t
                    return False
            return True
        if c.last + c.timeout <= now:
            if c.proto == 6 and c.timer_at <= c.last + c.timeout and self._events is not None:
                _tcp.run_timer(self, c)              # a TCP timer due first still raises its event
            return True
        if c.proto == 6:
            return _tcp.expired(self, c, now)
        return False

    def _remove(self, c: Connection, now: float) -> None:
        if self._conns.get(c.key) is c:
            del self._conns[c.key]
        self.removed += 1
        if c.analyzer is not None:
            c.analyzer.done(now)
        info = self._info(c, final=True)
        if self._conn_log:
            self._sink.write("conn", info)
        if self._events is not None:
            self._events.event("connection_state_remove", (info,))
        self.tunnels.connection_removed((c.orig_h, c.orig_p, c.resp_h, c.resp_p), now)

    def sweep(self, now: float | None = None) -> None:
        """Remove connections whose timers expired by ``now`` (called once per batch).

        Connections sit in one-second buckets keyed by the earliest time they could expire;
        a sweep only looks at the buckets that came due, re-filing the connections that turned
        out to be alive — so its cost follows the expiring connections, not the table size.
        """
        if now is None:
            now = self.now
        self.tunnels.sweep(now)
        heap = self._due
        buckets = self._buckets
        conns = self._conns
        while heap and heap[0] <= now:
            sec = heapq.heappop(heap)
            for c in buckets.pop(sec):
                if conns.get(c.key) is not c:
                    continue                      # already removed (reuse, lazy expiry)
                if self._expired(c, now):
                    self._remove(c, now)
                else:
                    self._file(c, now)

    def _file(self, c: Connection, now: float) -> None:
        """Put ``c`` in the bucket of the earliest moment one of its timers could fire."""
        t = c.last + c.timeout
        if c.timer_at < t:
            t = c.timer_at
        if c.proto == 6 and c.flags & F_ACTIVE:
            lg = c.last + self.cfg.tcp_connection_linger
            if lg < t:
                t = lg
        sec = int(t) + 1
        if sec <= now:
            sec = int(now) + 1
        b = self._buckets.get(sec)
        if b is None:
            self._buckets[sec] = [c]
            heapq.heappush(self._due, sec)
        else:
            b.append(c)

    def finish(self) -> None:
        """Remove every connection (end of input): their conn.log rows are written."""
        now = self.now
        for c in list(self._conns.values()):
            self._remove(c, now)
        self._buckets.clear()
        self._due.clear()
        if self._ev_timers is not None:
            self._ev_timers.clear()

    # -- tunnels --------------------------------------------------------------------------------
    def _check_encap(self, c: Connection, p, ts: float) -> None:
        encap = p.encap
        key = tuple(e.key() for e in encap)
        tun = c.tun
        if tun is None:
            tun = c.tun = [None, []]
        elif key == tun[0]:
            return
        tun[0] = key
        uid = None
        for e in encap:
            uid, cid = self._layer(e)
            self.tunnels.register(uid, cid, e.tunnel_type, ts)
        if uid not in tun[1]:
            tun[1].append(uid)

    def _layer(self, e) -> tuple[str, tuple]:
        """uid and conn_id of one tunnel layer (a UDP tunnel is its outer UDP connection)."""
        if e.proto == 17:
            s, d, sp, dp = e.src, e.dst, e.sport, e.dport
            k = (s, d, sp, dp, 17) if (s < d or (s == d and sp <= dp)) else (d, s, dp, sp, 17)
            outer = self._conns.get(k)
            if outer is not None:
                sv = TUNNEL_SERVICES.get(e.tunnel_type)
                if sv is not None:
                    add_service(outer, sv)
                return self.uid_of(outer), (outer.orig_h, outer.orig_p, outer.resp_h, outer.resp_p)
        return self.tunnels.ip_tunnel(e.tunnel_type, e.src, e.dst)

    def uid_of(self, c: Connection) -> str:
        """The connection's uid, made on first use (saves memory for the many never asked early)."""
        uid = c.uid
        if uid is None:
            uid = c.uid = self.new_uid()
        return uid

    # -- events ---------------------------------------------------------------------------------
    def snapshot(self, c: Connection) -> ConnInfo:
        """``c``'s conn.log record as it stands now (history, counts, state so far): the ``c``
        that engine events raised during a connection's life carry."""
        return self._info(c, final=True)

    def conn_event(self, name: str, c: Connection) -> None:
        """Raise engine event ``name(c)``.  Callers test ``self._events is not None`` first,
        so that without a sink nothing is built."""
        self._events.event(name, (self.snapshot(c),))

    # -- weirds and records ---------------------------------------------------------------------
    def conn_weird(self, c: Connection, name: str, ts: float, addl: str = "", source: str = "") -> None:
        c.flags |= F_WEIRD
        self._weirds.conn(name, ts, self.uid_of(c), c.orig_h, c.orig_p, c.resp_h, c.resp_p, addl, source)

    def is_local(self, addr: str) -> bool | None:
        """``Site::is_local_addr`` for the configured local networks; None without any."""
        return addr in self._local if self._has_local else None

    def _info(self, c: Connection, final: bool = False) -> ConnInfo:
        """conn.log's record for ``c``; ``final`` adds what Zeek fills in at removal."""
        local = self._local
        if self._has_local:
            lo = c.orig_h in local
            lr = c.resp_h in local
        else:
            lo = lr = None
        tp = None if c.tun is None else list(c.tun[1])
        duration = ob = rb = op = oib = rp = rib = state = hist = None
        if final:
            proto = c.proto
            d = c.last - c.start
            if d > 0:
                duration = d
                if proto == 6:
                    ob = _tcp.endpoint_size(c.o, c.r)
                    rb = _tcp.endpoint_size(c.r, c.o)
                else:
                    ob = c.orig_size if c.orig_size > 0 else 0
                    rb = c.resp_size if c.resp_size > 0 else 0
            op, oib, rp, rib = c.orig_pkts, c.orig_ip_bytes, c.resp_pkts, c.resp_ip_bytes
            if proto == 6:
                state = _tcp.conn_state(c)
            elif proto == 17:
                if c.orig_size >= 0:
                    state = "SF" if c.resp_size >= 0 else "S0"
                else:
                    state = "SHR" if c.resp_size >= 0 else "OTH"
            else:
                state = "OTH"
            hist = c.history or None
        uid = c.uid
        if uid is None:
            uid = c.uid = self.new_uid()
        rec = self._record(ts=c.start, uid=uid, orig_h=c.orig_h, orig_p=c.orig_p, resp_h=c.resp_h,
                           resp_p=c.resp_p, proto=TRANSPORT.get(c.proto, "unknown_transport"), duration=duration, orig_bytes=ob, resp_bytes=rb,
                           conn_state=state, local_orig=lo, local_resp=lr, missed_bytes=c.missed, history=hist,
                           orig_pkts=op, orig_ip_bytes=oib, resp_pkts=rp, resp_ip_bytes=rib, tunnel_parents=tp,
                           ip_proto=c.proto, service=",".join(c.service) if c.service else None)
        if c.ext is not None:
            om, rm, v, iv = c.ext
            if self._want_l2:
                rec.orig_l2_addr, rec.resp_l2_addr = om, rm
            if self._want_vlan:
                rec.vlan, rec.inner_vlan = v, iv
        return rec

"""weird.log: odd or malformed traffic, reported instead of raised.

The decoder and the connection table report through one :class:`WeirdReporter`; it owns the
``weird`` stream's record type and Zeek's rules for which repeats are logged
(``base/frameworks/notice/weird.zeek``): every name has an action (log, log once, once per
connection, once per originator, ignore); besides, the same (name, identifier) pair is logged
once per 10 minutes of network time, the identifier being the connection's 4-tuple, the
flow's address pair or empty for net weirds — except for the checksum weirds.

Decoder-facing API (stable contract):
  ``net(name, ts, addl="", source="")``        no flow known: id columns unset
  ``flow(name, ts, src, dst, addl="", source="")``  addresses known, ports 0 (like Zeek's flow weirds)
The connection table adds ``conn(name, ts, uid, orig_h, orig_p, resp_h, resp_p, ...)``.
"""

from __future__ import annotations

from analysis.logs.schema import Addr, Bool, LogRecord, Port, String, Time, field, log_stream
from analysis.sinks import LogSink


@log_stream("weird")
class WeirdInfo(LogRecord, kw_only=True):
    ts: Time
    uid: String | None = None
    orig_h: Addr | None = field(name="id.orig_h", default=None)
    orig_p: Port | None = field(name="id.orig_p", default=None)
    resp_h: Addr | None = field(name="id.resp_h", default=None)
    resp_p: Port | None = field(name="id.resp_p", default=None)
    name: String
    addl: String | None = None
    notice: Bool = False
    peer: String | None = "zeek"
    source: String | None = None


IGNORE, LOG, LOG_ONCE, LOG_PER_CONN, LOG_PER_ORIG, NOTICE, NOTICE_ONCE, NOTICE_PER_CONN, NOTICE_PER_ORIG = range(9)

#: Zeek's default actions for the names our engine can raise (the rest default to LOG).
ACTIONS: dict[str, int] = {
    "unsolicited_SYN_response": IGNORE, "spontaneous_FIN": IGNORE, "spontaneous_RST": IGNORE,
    "FIN_after_reset": IGNORE,
    "bad_ICMP_checksum": LOG_PER_ORIG, "bad_TCP_checksum": LOG_PER_ORIG, "bad_UDP_checksum": LOG_PER_ORIG,
    "bad_IP_checksum": LOG_PER_ORIG, "connection_originator_SYN_ack": LOG_PER_ORIG,
    "SYN_with_data": LOG_PER_ORIG, "UDP_datagram_length_mismatch": LOG_PER_ORIG,
    "excessively_small_fragment": LOG_PER_ORIG, "fragment_inconsistency": LOG_PER_ORIG,
    "fragment_overlap": LOG_PER_ORIG, "fragment_size_inconsistency": LOG_PER_ORIG,
    "simultaneous_open": LOG_PER_CONN,
    "FIN_storm": NOTICE_PER_ORIG, "SYN_after_partial": NOTICE_PER_ORIG,
}

DO_NOT_IGNORE_REPEATS = frozenset({"bad_IP_checksum", "bad_TCP_checksum", "bad_UDP_checksum", "bad_ICMP_checksum"})

_IGNORE_FOR = 600.0       # weird_ignore &create_expire=10min
_DID_LOG_FOR = 86400.0    # did_log / did_notice &create_expire=1day
_LIMITING = {LOG_ONCE, LOG_PER_CONN, LOG_PER_ORIG, NOTICE_ONCE, NOTICE_PER_CONN, NOTICE_PER_ORIG}
_NOTICES = {NOTICE, NOTICE_ONCE, NOTICE_PER_CONN, NOTICE_PER_ORIG}


class WeirdReporter:
    """Applies Zeek's weird policy and writes the surviving rows to the ``weird`` stream.

    ``enabled=False`` models a Zeek run without the weird framework loaded: nothing is
    written, but :attr:`count` still counts what was reported (for stats).
    """

    def __init__(self, sink: LogSink, peer: str = "zeek", enabled: bool = True,
                 actions: dict[str, int] | None = None,
                 do_not_ignore_repeats: frozenset[str] | set[str] = DO_NOT_IGNORE_REPEATS) -> None:
        self._sink = sink
        self._peer = peer
        self.enabled = enabled
        self._actions = ACTIONS if actions is None else actions
        self._no_ignore = frozenset(do_not_ignore_repeats)
        self._ignore: dict[tuple[str, str], float] = {}
        self._did_log: dict[tuple[str, str], float] = {}
        self._did_notice: dict[tuple[str, str], float] = {}
        self.count = 0
        self.logged = 0
        self._purge_at = 4096

    def _purge(self, ts: float) -> None:
        """Forget expired suppression entries (Zeek's &create_expire), keeping memory bounded."""
        for table, ttl in ((self._ignore, _IGNORE_FOR), (self._did_log, _DID_LOG_FOR),
                           (self._did_notice, _DID_LOG_FOR)):
            for k in [k for k, t in table.items() if ts - t >= ttl]:
                del table[k]
        self._purge_at = max(4096, 2 * len(self._ignore))

    # -- the three entry points -----------------------------------------------------------------
    def net(self, name: str, ts: float, addl: str = "", source: str = "") -> None:
        self._do(name, ts, "", None, None, None, None, None, addl, source)

    def flow(self, name: str, ts: float, src: str, dst: str, addl: str = "", source: str = "") -> None:
        self._do(name, ts, f"{src} -> {dst}", None, src, 0, dst, 0, addl, source)

    def conn(self, name: str, ts: float, uid: str, orig_h: str, orig_p: int, resp_h: str, resp_p: int,
             addl: str = "", source: str = "") -> None:
        ident = f"{orig_h}:{orig_p} > {resp_h}:{resp_p}"
        self._do(name, ts, ident, uid, orig_h, orig_p, resp_h, resp_p, addl, source)

    # -- policy ---------------------------------------------------------------------------------
    @staticmethod
    def _seen(table: dict, key: tuple, ts: float, ttl: float) -> bool:
        t = table.get(key)
        return t is not None and ts - t < ttl

    def _do(self, name, ts, ident, uid, oh, op, rh, rp, addl, source) -> None:
        self.count += 1
        if not self.enabled:
            return
        action = self._actions.get(name, LOG)
        if action == IGNORE or self._seen(self._ignore, (name, ident), ts, _IGNORE_FOR):
            return
        if action in _LIMITING:
            lim = ident
            if oh is not None and action in (LOG_PER_ORIG, NOTICE_PER_ORIG):
                lim = oh
            elif action in (LOG_ONCE, NOTICE_ONCE):
                lim = ""
            table = self._did_notice if action in _NOTICES else self._did_log
            if self._seen(table, (name, lim), ts, _DID_LOG_FOR):
                return
            table[(name, lim)] = ts
        if name not in self._no_ignore:
            self._ignore[(name, ident)] = ts
            if len(self._ignore) > self._purge_at:
                self._purge(ts)
        self.logged += 1
        self._sink.write("weird", WeirdInfo(ts=ts, uid=uid, orig_h=oh, orig_p=op, resp_h=rh, resp_p=rp, name=name,
                                            addl=addl or None, notice=action in _NOTICES, peer=self._peer,
                                            source=source or None))

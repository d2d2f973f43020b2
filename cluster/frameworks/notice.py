"""The notice framework (Zeek's ``base/frameworks/notice``): ``NOTICE(...)`` from any node.

    from cluster.frameworks import notice

    notice.NOTICE(note="SSH::Password_Guessing", msg="...", src="10.0.0.1", identifier="10.0.0.1")

    @notice.policy                         # Zeek's ``hook Notice::policy``
    def page_on_scans(n):
        if n.note == "Scan::Port_Scan":
            n.actions.add(notice.ACTION_ALARM)
            n.suppress_for = 600.0
        # return False to stop lower-priority policies (Zeek's ``break``)

Flow, as in Zeek 9: the raising node checks its suppression table, fills in the defaults and runs
the policy hooks (``apply_policy``), then the notice is *acted on* centrally.  Standalone, that is
the same process; in a cluster the notice goes to the manager (``Notice::cluster_notice``), which
checks suppression again -- so two workers raising the same (note, identifier) at once still give
one row -- writes notice.log / notice_alarm.log and announces ``Notice::begin_suppression`` to
workers and proxies, which keep it in their local table and stop sending such notices.
Suppression times are network time: a notice is suppressed while its ``ts`` is before the stored
``ts + suppress_for`` of the first one.  ``ACTION_EMAIL``/``ACTION_PAGE`` are placeholders that
only fill ``email_dest`` (Zeek mails nothing when reading traces either).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import structlog

from analysis.logs.schema import (Addr, Count, Double, Enum, Interval, LogRecord, Port, String, Time,
                                  field, log_stream, set_of)
from cluster import api
from cluster.frameworks import host as _host

log = structlog.get_logger(__name__)

__all__ = ["NOTICE", "Notice", "NoticeInfo", "AlarmInfo", "policy", "notice_hook", "ACTION_NONE",
           "ACTION_LOG", "ACTION_ALARM", "ACTION_EMAIL", "ACTION_EMAIL_ADMIN", "ACTION_PAGE",
           "ACTION_ADD_GEODATA", "default_suppression_interval", "ignored_types", "alarmed_types",
           "emailed_types", "not_suppressed_types", "type_suppression_intervals", "mail_dest",
           "stats", "reset"]

ACTION_NONE = "Notice::ACTION_NONE"
ACTION_LOG = "Notice::ACTION_LOG"
ACTION_ALARM = "Notice::ACTION_ALARM"
ACTION_EMAIL = "Notice::ACTION_EMAIL"
ACTION_EMAIL_ADMIN = "Notice::ACTION_EMAIL_ADMIN"
ACTION_PAGE = "Notice::ACTION_PAGE"
ACTION_ADD_GEODATA = "Notice::ACTION_ADD_GEODATA"

# Options with Zeek's names and defaults (assign from a script: ``notice.alarmed_types.add(...)``).
default_suppression_interval = 3600.0      # Notice::default_suppression_interval
ignored_types: set[str] = set()            # Notice::ignored_types
alarmed_types: set[str] = set()            # Notice::alarmed_types
emailed_types: set[str] = set()            # Notice::emailed_types
not_suppressed_types: set[str] = set()     # Notice::not_suppressed_types
type_suppression_intervals: dict[str, float] = {}   # Notice::type_suppression_intervals
mail_dest = ""                             # Notice::mail_dest

CLUSTER_NOTICE = "Notice::cluster_notice"
BEGIN_SUPPRESSION = "Notice::begin_suppression"


@log_stream("notice")
class NoticeInfo(LogRecord, kw_only=True):
    """notice.log, Zeek 9's columns in Zeek's order."""
    ts: Time
    uid: String | None = None
    orig_h: Addr | None = field(name="id.orig_h", default=None)
    orig_p: Port | None = field(name="id.orig_p", default=None)
    resp_h: Addr | None = field(name="id.resp_h", default=None)
    resp_p: Port | None = field(name="id.resp_p", default=None)
    fuid: String | None = None
    file_mime_type: String | None = None
    file_desc: String | None = None
    proto: Enum | None = None
    note: Enum
    msg: String | None = None
    sub: String | None = None
    src: Addr | None = None
    dst: Addr | None = None
    p: Port | None = None
    n: Count | None = None
    peer_descr: String | None = None
    actions: set_of("enum") = field(default_factory=list)
    email_dest: set_of("string") = field(default_factory=list)
    suppress_for: Interval | None = None
    country_code: String | None = field(name="remote_location.country_code", default=None)
    region: String | None = field(name="remote_location.region", default=None)
    city: String | None = field(name="remote_location.city", default=None)
    latitude: Double | None = field(name="remote_location.latitude", default=None)
    longitude: Double | None = field(name="remote_location.longitude", default=None)


@log_stream("notice_alarm")
class AlarmInfo(NoticeInfo, kw_only=True):
    """notice_alarm.log: the same columns (Zeek logs ``Notice::Info`` to both streams)."""


_LOGGED = NoticeInfo.__struct_fields__


@dataclasses.dataclass(eq=False)
class Notice:
    """``Notice::Info`` as policy hooks see it: mutable, ``actions`` a set.

    ``conn`` may be a connection record from an engine event (``ConnInfo``: uid, orig_h, ...);
    ``p`` a port number (with ``proto``) or Zeek text ``"22/tcp"``.  ``identifier`` enables
    suppression and is never logged.
    """
    note: str
    msg: str | None = None
    sub: str | None = None
    conn: Any = None
    uid: str | None = None
    orig_h: str | None = None
    orig_p: int | None = None
    resp_h: str | None = None
    resp_p: int | None = None
    src: str | None = None
    dst: str | None = None
    p: int | str | None = None
    proto: str | None = None
    n: int | None = None
    ts: float | None = None
    identifier: str | None = None
    suppress_for: float | None = None
    actions: set[str] = dataclasses.field(default_factory=set)
    email_dest: set[str] = dataclasses.field(default_factory=set)
    peer_descr: str | None = None
    fuid: str | None = None
    file_mime_type: str | None = None
    file_desc: str | None = None
    country_code: str | None = None
    region: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None

    def to_info(self, cls: type[NoticeInfo] = NoticeInfo) -> NoticeInfo:
        kw = {k: getattr(self, k) for k in _LOGGED if k not in ("actions", "email_dest")}
        return cls(actions=sorted(self.actions), email_dest=sorted(self.email_dest), **kw)

    def to_wire(self) -> dict[str, Any]:
        """Plain values for the bus (the conn record stays behind, as in Zeek)."""
        d = {k: getattr(self, k) for k in _WIRE}
        d["actions"] = sorted(self.actions)
        d["email_dest"] = sorted(self.email_dest)
        return d

    @classmethod
    def from_wire(cls, d: Any) -> "Notice":
        if not isinstance(d, dict) or not isinstance(d.get("note"), str):
            raise ValueError("a notice needs a note")
        kw = {k: d.get(k) for k in _WIRE if k in d}
        for k, types in _WIRE_TYPES.items():
            v = kw.get(k)
            if v is not None and not isinstance(v, types):
                raise ValueError(f"notice field {k}: {type(v).__name__}")
        n = cls(**kw)
        n.actions = {a for a in d.get("actions") or () if isinstance(a, str)}
        n.email_dest = {a for a in d.get("email_dest") or () if isinstance(a, str)}
        return n


_WIRE = tuple(f.name for f in dataclasses.fields(Notice) if f.name not in ("conn", "actions", "email_dest"))
_NUM = (int, float)
_WIRE_TYPES: dict[str, tuple[type, ...]] = {
    k: (_NUM if k in ("ts", "suppress_for", "latitude", "longitude") else
        (int,) if k in ("orig_p", "resp_p", "p", "n") else (str,)) for k in _WIRE}


# ---- policy hooks ----------------------------------------------------------------------------

_policies: list[tuple[int, int, Callable[[Notice], Any]]] = []
_notice_hooks: list[tuple[int, int, Callable[[Notice], Any]]] = []


def _hook_decorator(table: list, fn: Callable | None, priority: int):
    def register(f: Callable[[Notice], Any]) -> Callable[[Notice], Any]:
        table.append((-priority, len(table), f))
        table.sort(key=lambda t: (t[0], t[1]))
        return f
    return register(fn) if fn is not None else register


def policy(fn: Callable[[Notice], Any] | None = None, *, priority: int = 0):
    """Decorator: a ``Notice::policy`` hook, run on the raising node before the notice is acted
    on.  Higher ``priority`` runs first; returning ``False`` stops the rest (Zeek's ``break``)."""
    return _hook_decorator(_policies, fn, priority)


def notice_hook(fn: Callable[[Notice], Any] | None = None, *, priority: int = 0):
    """Decorator: a ``Notice::notice`` hook, run where the notice is acted on (manager or the
    standalone process), before it is logged; returning ``False`` stops the rest."""
    return _hook_decorator(_notice_hooks, fn, priority)


def _run_hooks(table: list, n: Notice) -> bool:
    for _p, _i, f in table:
        try:
            if f(n) is False:
                return False
        except Exception:
            _stats["hook_errors"] += 1
            log.exception("notice_hook_failed", hook=getattr(f, "__qualname__", repr(f)), note=n.note)
    return True


@policy(priority=10)
def _default_policy(n: Notice) -> Any:
    """Zeek's own priority-10 policy: the type sets, then ACTION_LOG as the default action."""
    if n.note in ignored_types:
        return False
    if n.note in not_suppressed_types:
        n.suppress_for = 0.0
    if n.note in alarmed_types:
        n.actions.add(ACTION_ALARM)
    if n.note in emailed_types:
        n.actions.add(ACTION_EMAIL)
    if n.note in type_suppression_intervals:
        n.suppress_for = type_suppression_intervals[n.note]
    n.actions.add(ACTION_LOG)
    return None


# ---- the machinery ---------------------------------------------------------------------------

_suppressing: dict[tuple[str, str], float] = {}
_stats = {"raised": 0, "suppressed": 0, "forwarded": 0, "logged": 0, "alarms": 0, "hook_errors": 0,
          "malformed": 0}


def stats() -> dict[str, int]:
    return dict(_stats, suppressing=len(_suppressing))


def reset() -> None:
    """Forget suppression state and counters (tests, a new standalone run)."""
    _suppressing.clear()
    for k in _stats:
        _stats[k] = 0


def is_being_suppressed(n: Notice) -> bool:
    if n.identifier is None:
        return False
    key = (n.note, n.identifier)
    until = _suppressing.get(key)
    if until is None:
        return False
    ts = n.ts if n.ts is not None else _host.current().network_time()
    if ts >= until:
        del _suppressing[key]       # expired (network time), as Zeek's &expire_func
        return False
    return True


def _port(p: Any, proto: str | None) -> tuple[int | None, str | None]:
    if isinstance(p, str):
        num, _, pr = p.partition("/")
        try:
            return int(num), (pr or proto)
        except ValueError:
            raise ValueError(f"bad port {p!r} (use 22 or '22/tcp')") from None
    return p, proto


def apply_policy(n: Notice, h: _host.Host) -> None:
    """Fill the defaults from the context, then run the policy hooks (Zeek's apply_policy)."""
    if n.ts is None:
        n.ts = h.network_time()
    if h.mode != "standalone" and n.peer_descr is None:
        n.peer_descr = h.name
    c = n.conn
    if c is not None:
        if n.orig_h is None:
            n.orig_h, n.orig_p = getattr(c, "orig_h", None), getattr(c, "orig_p", None)
            n.resp_h, n.resp_p = getattr(c, "resp_h", None), getattr(c, "resp_p", None)
        if n.uid is None:
            n.uid = getattr(c, "uid", None)
        if n.proto is None and n.p is None:
            n.proto = getattr(c, "proto", None)
    if n.orig_h is not None:
        if n.src is None:
            n.src = n.orig_h
        if n.dst is None:
            n.dst = n.resp_h
        if n.p is None:
            n.p = n.resp_p
    n.p, n.proto = _port(n.p, n.proto)
    if n.p is not None and n.proto is None:
        n.proto = "tcp"
    if n.p is None and n.orig_h is None:
        n.proto = None      # Zeek derives proto from $p only
    if not isinstance(n.actions, set):
        n.actions = set(n.actions)
    _run_hooks(_policies, n)
    if n.suppress_for is None:
        n.suppress_for = default_suppression_interval
    n.conn = None           # not sent to other nodes, as in Zeek


def NOTICE(n: Notice | None = None, /, **kw: Any) -> bool:  # noqa: N802 - Zeek's name
    """Raise a notice: ``NOTICE(note=..., msg=..., ...)`` or ``NOTICE(Notice(...))``.

    Returns True when it went on to be acted on (locally or at the manager), False when it was
    suppressed or ignored here.
    """
    if n is None:
        n = Notice(**kw)
    elif kw:
        raise TypeError("NOTICE takes a Notice or keyword fields, not both")
    h = _host.current()
    _stats["raised"] += 1
    if is_being_suppressed(n):
        _stats["suppressed"] += 1
        return False
    apply_policy(n, h)
    if h.is_central:
        return _act(n, h)
    _stats["forwarded"] += 1
    h.publish(api.manager_topic, CLUSTER_NOTICE, n.to_wire())
    _host.mark_used()
    _begin_suppression(n)       # this node will not send it again while suppressed
    return True


def _begin_suppression(n: Notice) -> bool:
    if n.identifier is None or not n.suppress_for or (n.note, n.identifier) in _suppressing:
        return False
    _suppressing[(n.note, n.identifier)] = n.ts + n.suppress_for
    return True


def _act(n: Notice, h: _host.Host) -> bool:
    """The central part: suppression decides, notice hooks run, logs are written."""
    if is_being_suppressed(n):
        _stats["suppressed"] += 1
        return False
    if ACTION_EMAIL in n.actions and mail_dest:
        n.email_dest.add(mail_dest)
    if not _run_hooks(_notice_hooks, n):
        return False
    if ACTION_LOG in n.actions:
        h.log_write("notice", n.to_info())
        _stats["logged"] += 1
    if ACTION_ALARM in n.actions:
        h.log_write("notice_alarm", n.to_info(AlarmInfo))
        _stats["alarms"] += 1
    if _begin_suppression(n) and h.mode == "manager":
        args = (n.ts, n.suppress_for, n.note, n.identifier)
        h.publish(api.worker_topic, BEGIN_SUPPRESSION, *args)
        h.publish(api.proxy_topic, BEGIN_SUPPRESSION, *args)
    return True


_last_sweep = 0.0


@api.on(_host.TICK)
def _expire() -> None:
    """Forget suppressions that ended (network time), every few wall seconds: a long live run
    must not keep every identifier it ever saw."""
    global _last_sweep
    now = _host.wall()
    if now - _last_sweep < 10.0 or not _suppressing:
        return
    _last_sweep = now
    t = _host.current().network_time()
    for k in [k for k, until in _suppressing.items() if until <= t]:
        del _suppressing[k]


# ---- bus events --------------------------------------------------------------------------------

@api.on(CLUSTER_NOTICE)
def _cluster_notice(d: Any) -> None:
    h = _host.current()
    if h.mode != "manager":
        return
    try:
        n = Notice.from_wire(d)
    except (TypeError, ValueError) as e:
        _stats["malformed"] += 1
        log.warning("notice_malformed", error=str(e))
        return
    h.saw_time(n.ts or 0.0)
    _act(n, h)


@api.on(BEGIN_SUPPRESSION)
def _on_begin_suppression(ts: Any, suppress_for: Any, note: Any, identifier: Any) -> None:
    if not (isinstance(ts, (int, float)) and isinstance(suppress_for, (int, float))
            and isinstance(note, str) and isinstance(identifier, str)):
        _stats["malformed"] += 1
        return
    _suppressing[(note, identifier)] = ts + suppress_for

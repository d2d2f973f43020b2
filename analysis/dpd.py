"""Analyzer attachment: by port, by content (Zeek's DPD/PIA), by hand-off and by expectation.

:class:`AnalyzerManager` (one per engine) knows the enabled analyzers, their options and the
port map; the connection table calls :meth:`AnalyzerManager.attach` for each new connection.
A connection that may need analysis gets a :class:`ConnAnalyzers`: the callable in
``Connection.analyzer``, which reassembles TCP payload (:mod:`analysis.reassembly`) and feeds
every live analyzer.  Like Zeek's PIA, while the first ``dpd_buffer_size`` bytes go by the
stream is also buffered and matched against each candidate's ``dpd_orig``/``dpd_resp``
patterns (anchored at the start of each direction); a match attaches the analyzer and replays
the buffer to it.  Several analyzers may run side by side until ``ctx.violation`` removes them.
Confirmation order is conn.log's ``service`` order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from analysis.reassembly import TCPReassembler

if TYPE_CHECKING:       # the registry is imported by AnalyzerManager: the table needs no analyzers
    from analysis.protocols.base import Analyzer, AnalyzerSpec

#: Tunnel types whose outer UDP connection Zeek labels with a service.
TUNNEL_SERVICES = {"VXLAN": "vxlan", "GENEVE": "geneve", "AYIYA": "ayiya", "GTPv1": "gtpv1",
                   "TEREDO": "teredo"}


class AnalyzerConfirmationInfo(msgspec.Struct, frozen=True):
    """Zeek's ``AnalyzerConfirmationInfo`` (second argument of ``analyzer_confirmation_info``):
    ``c`` is the connection's conn.log record as it stands (``ConnInfo``), ``aid`` the analyzer
    instance's id (unique within the engine).  Zeek's ``f`` (file analyzers) does not exist here."""

    c: Any
    aid: int


class AnalyzerViolationInfo(msgspec.Struct, frozen=True):
    """Zeek's ``AnalyzerViolationInfo``: ``reason`` as the analyzer gave it; ``data`` is never
    set (our analyzers do not pass the offending bytes)."""

    reason: str
    c: Any
    aid: int
    data: bytes | None = None


def analyzer_tag(name: str) -> str:
    """Zeek's ``AllAnalyzers::Tag`` as script text, e.g. ``"Analyzer::ANALYZER_FTP_DATA"``."""
    return "Analyzer::ANALYZER_" + name.upper().replace("-", "_")


def add_service(c, name: str) -> None:
    """Append ``name`` to the connection's services (confirmation order, no repeats)."""
    sv = c.service
    if sv is None:
        c.service = [name]
    elif name not in sv:
        sv.append(name)


class AnalyzerManager:
    """Engine-wide analyzer state: enabled specs, options objects, expectations."""

    def __init__(self, config, table, log_sink, event_sink, specs: dict[str, AnalyzerSpec] | None = None) -> None:
        if specs is not None:
            registry = specs
        elif config.analyzers is not None and not config.analyzers:
            registry = {}          # conn-only run: the protocol modules are not even imported
        else:
            from analysis.protocols import REGISTRY as registry
        self.cfg = config
        self.table = table
        self.log_sink = log_sink
        self.event_sink = event_sink
        enabled = config.analyzers
        disabled = config.disabled_analyzers
        self.specs: dict[str, AnalyzerSpec] = {
            n: s for n, s in registry.items() if (enabled is None or n in enabled) and n not in disabled}
        self.options: dict[str, Any] = {}
        for n, s in self.specs.items():
            given = config.analyzer_options.get(n)
            self.options[n] = given if given is not None else (s.options() if s.options is not None else None)
        self.by_port: dict[tuple[int, str], tuple[AnalyzerSpec, ...]] = {}
        for s in self.specs.values():
            for port in s.ports:
                if port[1] in s.transports:
                    self.by_port[port] = self.by_port.get(port, ()) + (s,)
        self.dpd: dict[str, tuple[AnalyzerSpec, ...]] = {
            t: tuple(s for s in self.specs.values() if t in s.transports and (s.dpd_orig or s.dpd_resp or s.dpd_orig_only))
            for t in ("tcp", "udp")}
        # per spec name: (orig-only, orig, resp) match callables or None, made once
        self.matchers: dict[str, tuple] = {
            s.name: (s, _matcher(s.dpd_orig_only), _matcher(s.dpd_orig), _matcher(s.dpd_resp))
            for ss in self.dpd.values() for s in ss}
        self._rest: dict[tuple[int, str], tuple] = {}    # port -> DPD candidates minus port specs
        self.buffer_size = config.dpd_buffer_size
        self.cap = config.reassembly_buffer_cap
        self.strict = config.strict_analyzers
        self._expected: dict[tuple, tuple[str, float]] = {}
        self.errors = 0
        self.aids = 0             # analyzer instances made (Zeek's analyzer ids count from 1)

    # -- per new connection -----------------------------------------------------------------------
    def attach(self, c) -> "ConnAnalyzers | None":
        t = c.transport
        if t != "tcp" and t != "udp":
            return None
        pk = (c.resp_p, t)
        specs = self.by_port.get(pk, ())
        plain = True
        if self._expected:
            exp = self._expectation(c, t)
            if exp is not None:
                add_service(c, exp)
                s = self.specs.get(exp)
                if s is not None and all(s is not x for x in specs) and t in s.transports:
                    specs = specs + (s,)
                    plain = False
        cands = self.dpd[t]
        if t == "tcp" and not self.cfg.dpd_reassemble_first_packets and not specs:
            cands = ()     # no reassembly for the first packets: content detection has no stream
        if not specs and not cands:
            return None
        ca = ConnAnalyzers(self, c)
        for s in specs:
            ca._start(s)
        if cands:
            rest = self._rest.get(pk) if plain else None
            if rest is None:
                m = self.matchers
                rest = tuple(m[s.name] for s in cands if all(s is not x for x in specs))
                if plain:
                    self._rest[pk] = rest
            ca._begin_dpd(rest)
        return ca

    def expect(self, orig_h, resp_h, resp_p, service, proto, timeout) -> None:
        self._expected[(orig_h, resp_h, int(resp_p), proto)] = (service, self.table.now + timeout)

    def _expectation(self, c, t) -> str | None:
        now = self.table.now
        for key in ((c.orig_h, c.resp_h, c.resp_p, t), (None, c.resp_h, c.resp_p, t)):
            hit = self._expected.get(key)
            if hit is not None:
                del self._expected[key]         # Zeek: a scheduled analyzer applies once
                if hit[1] >= now:
                    return hit[0]
        if len(self._expected) > 4096:
            self._expected = {k: v for k, v in self._expected.items() if v[1] >= now}
        return None


def _matcher(patterns: tuple):
    """One callable for a pattern tuple: any of them matches at offset 0; None for none."""
    if not patterns:
        return None
    if len(patterns) == 1:
        return patterns[0].match
    return lambda buf: any(p.match(buf) for p in patterns)


class _ConnView:
    """The read-only connection an analyzer sees (live: follows role flips)."""

    __slots__ = ("_c", "_m")

    def __init__(self, c, m: AnalyzerManager) -> None:
        self._c = c
        self._m = m

    uid = property(lambda self: self._m.table.uid_of(self._c))
    orig_h = property(lambda self: self._c.orig_h)
    orig_p = property(lambda self: self._c.orig_p)
    resp_h = property(lambda self: self._c.resp_h)
    resp_p = property(lambda self: self._c.resp_p)
    proto = property(lambda self: self._c.transport)
    start_time = property(lambda self: self._c.start)
    service = property(lambda self: tuple(self._c.service or ()))
    network_time = property(lambda self: self._m.table.now)


class _Ctx:
    """One analyzer's AnalyzerContext; also the bookkeeping of that attachment."""

    __slots__ = ("_ca", "spec", "options", "analyzer", "conn", "dead", "muted", "finished", "confirmed", "aid")

    def __init__(self, ca: "ConnAnalyzers", spec: AnalyzerSpec) -> None:
        self._ca = ca
        self.spec = spec
        self.confirmed = False
        m = ca.m
        m.aids += 1
        self.aid = m.aids
        self.options = ca.m.options.get(spec.name)
        self.conn = ca.view()
        self.dead = False       # violated: detached
        self.muted = False      # handed the stream off: no more data, still gets done()
        self.finished = False   # done() called
        self.analyzer: Analyzer | None = None

    def write_log(self, path: str, record) -> None:
        self._ca.m.log_sink.write(path, record)

    def event(self, name: str, *args: Any) -> None:
        """Raise analyzer event ``name(c, *args)``: the connection comes first, as in every Zeek
        analyzer event, added here once so no analyzer passes it (nothing is built without a sink)."""
        ev = self._ca.m.event_sink
        if ev is not None:
            ev.event(name, (self.conn, *args))

    def weird(self, name: str, addl: str = "", source: str | None = None) -> None:
        m = self._ca.m
        m.table.conn_weird(self._ca.c, name, m.table.now, addl or "",
                           self.spec.name.upper() if source is None else source)

    # Added by the long-tail analyzers helper (minimal, to unblock SNMP): a weird Zeek raises
    # without a connection (reporter->Weird), e.g. asn_oid_subidentifier_too_long -- weird.log
    # rows with uid/id.* unset.  The core owner may move/rename this (snmp.py looks it up by name).
    def net_weird(self, name: str, addl: str = "", source: str = "") -> None:
        m = self._ca.m
        m.table._weirds.net(name, m.table.now, addl or "", source)

    def confirm(self) -> None:
        """Zeek's AnalyzerConfirmation: the first one adds the service and raises
        ``analyzer_confirmation_info``; repeats do nothing."""
        if self.confirmed:
            return
        self.confirmed = True
        ca = self._ca
        add_service(ca.c, self.spec.name)
        ev = ca.m.event_sink
        if ev is not None:
            t = ca.m.table
            ev.event("analyzer_confirmation_info",
                     (analyzer_tag(self.spec.name), AnalyzerConfirmationInfo(t.snapshot(ca.c), self.aid)))

    def violation(self, reason: str) -> None:
        self._ca._detach(self, reason)

    def disable(self) -> None:
        """Zeek's ``disable_analyzer``: this analyzer gets no more ``data``/``gap``/``eof`` (its
        ``done`` still comes at removal); no violation, the service stays."""
        self._ca._disable(self)

    def add_history(self, letter: str) -> None:
        c = self._ca.c
        if letter not in c.history:
            c.history = c.history + letter

    def uid_for(self, kind: str) -> str:
        return self._ca.m.table.new_uid(kind)

    def set_session_expiry(self, interval: float) -> None:
        self._ca.m.table.session_expiry(self._ca.c, interval)

    def is_local_addr(self, addr: str) -> bool | None:
        """Zeek's ``Site::is_local_addr`` over the run's local networks (the set conn.log's
        ``local_orig`` uses); None when there are none, where Zeek leaves ``local_*`` unset."""
        return self._ca.m.table.is_local(addr)

    def hand_off(self, name: str, pending: bytes = b"", is_orig: bool = True) -> bool:
        return self._ca._hand_off(self, name, pending, is_orig)

    # Added by the HTTP helper (minimal, see its report): an analyzer nested in this one's
    # stream (WebSocket after an HTTP upgrade, the protocol inside CONNECT or WebSocket).
    def attach_child(self, name: str):
        """A new analyzer ``name`` with its own context (own conn.log service on confirm), fed
        only by the caller (``data``/``eof``/``gap``); the engine calls its ``done``.  None when
        the analyzer is unknown or disabled."""
        return self._ca._attach_child(name)

    def expect_connection(self, orig_h, resp_h, resp_p, service, proto="tcp", timeout=300.0) -> None:
        self._ca.m.expect(orig_h, resp_h, resp_p, service, proto, timeout)

    # Added by the DNS helper (minimal, to unblock the dns "flip" case; the core helper owns this
    # file): Zeek's Connection::FlipRoles on an analyzer's request.  DNS flips a UDP connection
    # whose first message is a reply sent by the originator.  ``conn`` is a live view, so the
    # analyzer sees the new roles; later packets are oriented by the table against them.
    def flip_roles(self) -> None:
        self._ca.m.table.flip(self._ca.c)


class ConnAnalyzers(TCPReassembler):
    """Everything analysis-related of one connection; the table calls it per payload packet."""

    __slots__ = ("m", "c", "live", "_view", "dpd", "_done", "_idle")

    def __init__(self, m: AnalyzerManager, c) -> None:
        super().__init__(m.cap)
        self.m = m
        self.c = c
        self.live: list[_Ctx] = []        # replaced (never mutated) when attachments change
        self._view = None
        self.dpd = None                   # [candidates, orig buf, resp buf, replay list, size]
        self._done = False
        self._idle = False                # no analyzer wants bytes any more: nothing reassembled

    def view(self) -> _ConnView:
        v = self._view
        if v is None:
            v = self._view = _ConnView(self.c, self.m)
        return v

    # -- the table's entry points -----------------------------------------------------------------
    def __call__(self, is_orig: bool, seq: int, payload, ts: float) -> None:
        if self._idle:
            return
        if seq < 0:         # UDP: one datagram
            self._deliver(is_orig, payload if type(payload) is bytes else bytes(payload), ts)
        else:
            self.segment(is_orig, seq, payload, ts)

    def ack(self, is_orig: bool, up_to: int, ts: float) -> None:
        if not self._idle:
            TCPReassembler.ack(self, is_orig, up_to, ts)

    def eof(self, is_orig: bool, ts: float) -> None:
        """The ``is_orig`` side's FIN was reached in sequence space."""
        if self._idle:
            return
        self.flush(is_orig, ts)
        for x in self.live:
            if not x.dead and not x.muted:
                self._call(x, x.analyzer.eof, is_orig, ts)

    def done(self, ts: float) -> None:
        """The connection is removed: deliver what is left, then ``done`` each analyzer once."""
        if self._done:
            return
        self._done = True
        if not self._idle:
            self.flush(True, ts)
            self.flush(False, ts)
        self.dpd = None
        for x in self.live:
            if not x.finished:
                x.finished = True
                self._call(x, x.analyzer.done, ts)

    # -- delivery ---------------------------------------------------------------------------------
    def _deliver(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self._done:
            return
        for x in self.live:
            if not x.dead and not x.muted:
                self._call(x, x.analyzer.data, is_orig, data, ts)
        if self.dpd is not None:
            self._match(is_orig, data, ts)

    def _undelivered(self, is_orig: bool, length: int, ts: float) -> None:
        if self._done:
            return
        self.dpd = None           # content detection needs the stream's beginning, intact
        ev = self.m.event_sink
        if ev is not None:
            ev.event("content_gap", (self.view(), is_orig, length))
        for x in self.live:
            if not x.dead and not x.muted:
                self._call(x, x.analyzer.gap, is_orig, length, ts)
        self._check_idle()

    def _call(self, x: _Ctx, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:
            if self.m.strict:
                raise
            # an analyzer bug must not take the engine down: report it and detach the analyzer
            self.m.errors += 1
            why = f"{type(e).__name__}: {e}"[:200]
            x.weird("analyzer_error", why, source=x.spec.name.upper())
            self._detach(x, why)

    # -- attachment -------------------------------------------------------------------------------
    def _start(self, spec: AnalyzerSpec) -> _Ctx:
        x = _Ctx(self, spec)
        x.analyzer = spec.factory(x)
        self.live = self.live + [x]
        return x

    def _has(self, name: str) -> bool:
        return any(x.spec.name == name and not x.dead for x in self.live)

    def _detach(self, x: _Ctx, reason: str) -> None:
        """A violation (or an analyzer error): raise ``analyzer_violation_info``, then remove
        the analyzer (what Zeek's DPD script does on a violation)."""
        if x.dead:
            return
        x.dead = True
        ev = self.m.event_sink
        if ev is not None:
            ev.event("analyzer_violation_info",
                     (analyzer_tag(x.spec.name), AnalyzerViolationInfo(reason, self.m.table.snapshot(self.c), x.aid)))
        self.live = [y for y in self.live if y is not x]
        if not x.finished:
            x.finished = True
            try:
                x.analyzer.done(self.m.table.now)
            except Exception:
                if self.m.strict:
                    raise
                self.m.errors += 1
        self._check_idle()

    def _disable(self, x: _Ctx) -> None:
        x.muted = True
        self._check_idle()

    def _check_idle(self) -> None:
        """With no analyzer left to feed and content detection over, stop reassembling: the
        table still does conn.log's sequence and gap accounting itself."""
        if self.dpd is None and all(y.dead or y.muted for y in self.live):
            self._idle = True
            self.segs_o = self.segs_r = None
            self.buffered = 0

    def _hand_off(self, parent: _Ctx, name: str, pending: bytes, is_orig: bool) -> bool:
        spec = self.m.specs.get(name)
        if spec is None or self.c.transport not in spec.transports:
            return False
        parent.muted = True
        if self._has(name):
            return True
        if self.dpd is not None:
            self.dpd[0] = tuple(e for e in self.dpd[0] if e[0].name != name)
        x = self._start(spec)
        if pending:
            self._call(x, x.analyzer.data, is_orig, bytes(pending), self.m.table.now)
        return True

    def _attach_child(self, name: str):
        # Added by the HTTP helper: see _Ctx.attach_child.  ``muted``: the stream is not
        # delivered to it by the engine; ``done`` still is.
        spec = self.m.specs.get(name)
        if spec is None or self.c.transport not in spec.transports:
            return None
        x = self._start(spec)
        x.muted = True
        return x.analyzer

    # -- content detection (PIA) ------------------------------------------------------------------
    def _begin_dpd(self, cands: tuple) -> None:
        """``cands``: the candidates' :attr:`AnalyzerManager.matchers` entries."""
        if cands:
            self.dpd = [cands, b"", b"", [], 0]

    def _match(self, is_orig: bool, data: bytes, ts: float) -> None:
        d = self.dpd
        limit = self.m.buffer_size
        grew = False
        if is_orig:
            if len(d[1]) < limit:
                d[1] = (d[1] + data)[:limit]
                grew = True
        elif len(d[2]) < limit:
            d[2] = (d[2] + data)[:limit]
            grew = True
        d[3].append((is_orig, data, ts))
        d[4] += len(data)
        ob, rb = d[1], d[2]
        matched = []
        if grew:                  # the patterns see only the two buffers: unchanged, no new match
            for e in d[0]:
                s, oo, o, r = e
                if oo is not None and ob and oo(ob):
                    matched.append(e)
                    continue
                if o is not None and not (ob and o(ob)):
                    continue
                if r is not None and not (rb and r(rb)):
                    continue
                if o is None and r is None:
                    continue      # only orig-only patterns, and they did not match
                matched.append(e)
        if matched:
            d[0] = tuple(e for e in d[0] if e not in matched)
            for s, _, _, _ in matched:
                if self._has(s.name):
                    continue
                x = self._start(s)
                for io, chunk, t in d[3]:
                    if x.dead or x.muted:
                        break
                    self._call(x, x.analyzer.data, io, chunk, t)
        if self.dpd is d and (not d[0] or d[4] >= limit):
            self.dpd = None       # dpd_match_only_beginning: the buffer is full, stop looking
            self._check_idle()

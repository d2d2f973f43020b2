"""The contract between the engine and protocol analyzers.

Every protocol module (``analysis/protocols/<name>.py`` or a package of that name) has two layers:

1. A **sans-I/O parser** (like h11): bytes + direction + network time in, small immutable event
   objects out.  No sockets, no asyncio, no globals, no log records: it can be fuzzed alone.
   Resource caps (line length, nesting, pipeline depth, ...) are the parser's job: on a cap it
   returns a violation event and stops consuming.
2. An **analyzer** (a subclass of :class:`Analyzer`), one instance per connection, that feeds the
   parser and turns its events into log rows (``ctx.write_log``), script events (``ctx.event``),
   weirds (``ctx.weird``) and protocol confirmation/violation (``ctx.confirm`` / ``ctx.violation``).

The engine (TCP reassembly, dynamic protocol detection) calls, for one connection:
``data()`` with in-order stream bytes (TCP) or one whole datagram (UDP), ``gap()`` when stream
bytes are missing, ``eof()`` when a side closes (FIN), and ``done()`` exactly once when the
connection is removed (flush pending state and write any outstanding rows there).

An analyzer module registers itself with :func:`register` at import time; ``analysis/protocols/
__init__.py`` imports every module so the registry is complete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from analysis.logs.schema import LogRecord


class ConnView(Protocol):
    """What an analyzer may read about its connection (read-only)."""

    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str            # "tcp" | "udp"
    start_time: float
    # additions: conn.log's service so far (confirmation order) and the current network time
    service: tuple[str, ...]
    network_time: float


class AnalyzerContext(Protocol):
    """What the engine offers an analyzer instance (one context per connection and analyzer)."""

    conn: ConnView
    options: Any          # the analyzer's own options object (see AnalyzerSpec.options), redefs applied

    def write_log(self, path: str, record: LogRecord) -> None: ...
    def event(self, name: str, *args: Any) -> None:
        """Raise script event ``name``; the handlers get ``(c, *args)``: the context puts the
        connection (``conn``) first, as Zeek does, so an analyzer never passes it itself."""
    def weird(self, name: str, addl: str = "", source: str | None = None) -> None:
        """A connection weird; ``source`` defaults to the analyzer name upper-cased (Zeek's
        weird.log ``source``, e.g. ``HTTP``); pass ``""`` for none."""
    def confirm(self) -> None:
        """The protocol is what we thought: adds the analyzer's service name to conn.service."""
    def violation(self, reason: str) -> None:
        """Not (or no longer) this protocol: the engine detaches the analyzer after this call."""
    def add_history(self, letter: str) -> None:
        """Zeek's analyzer-driven history letters, e.g. ``X`` when a limit was hit."""
    def uid_for(self, kind: str) -> str:
        """A fresh id (``kind`` "F" for files, "C" for connections) in Zeek's format."""
    # -- additions (engine v2); every method above keeps its meaning -----------------------------
    def hand_off(self, name: str, pending: bytes = b"", is_orig: bool = True) -> bool:
        """Attach analyzer ``name`` to the rest of this stream, both directions (STARTTLS, HTTP
        CONNECT / Upgrade: websocket -> ssl/ssh/...).  The calling analyzer receives no more
        ``data``/``gap``/``eof`` (it keeps its ``done``, so its rows are still written).
        ``pending``: bytes of the current chunk (side ``is_orig``) that already belong to the new
        protocol; they are delivered to it first.  False when ``name`` is unknown or disabled."""
    def expect_connection(self, orig_h: str | None, resp_h: str, resp_p: int, service: str,
                          proto: str = "tcp", timeout: float = 300.0) -> None:
        """Zeek's ``Analyzer::schedule_analyzer``: a future connection ``orig_h`` (None: any) ->
        ``resp_h:resp_p`` gets ``service`` in conn.log (and that analyzer, when registered) for
        ``timeout`` seconds of network time, e.g. FTP's data connections (``ftp-data``)."""
    def disable(self) -> None:
        """Zeek's ``disable_analyzer`` (e.g. SSL once the handshake is done): this analyzer gets
        no more ``data``/``gap``/``eof``, without a violation (the service stays); ``done`` still
        comes at removal.  With no analyzer left wanting bytes the engine stops reassembling the
        connection's payload; conn.log's byte and gap accounting is unaffected."""
    def set_session_expiry(self, interval: float) -> None:
        """Zeek's analyzer expire timer (DNS over UDP, ``dns_session_timeout``): from now, every
        ``interval`` seconds of network time the connection is removed if it has been idle for
        ``interval - 1`` s; it replaces the connection's inactivity timeout."""
    def is_local_addr(self, addr: str) -> bool | None:
        """Zeek's ``Site::is_local_addr`` over the run's local networks (what conn.log's
        ``local_orig`` uses); None when none are configured (Zeek then leaves ``local_*`` unset)."""


class Analyzer:
    """Base class: one instance per connection.  Override what the protocol needs."""

    def __init__(self, ctx: AnalyzerContext) -> None:
        self.ctx = ctx

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        """In-order stream bytes (TCP) or one datagram (UDP)."""

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        """``length`` bytes of the stream are missing (content gap)."""

    def eof(self, is_orig: bool, ts: float) -> None:
        """The ``is_orig`` side closed its half (FIN)."""

    def done(self, ts: float) -> None:
        """The connection ends: flush and write outstanding rows.  Called exactly once."""


@dataclass(frozen=True)
class AnalyzerSpec:
    """How the engine finds, attaches and configures an analyzer.

    ``name`` is Zeek's analyzer name in lower case and becomes conn.log's ``service`` on
    confirmation.  ``ports`` are the well-known ports (Zeek's ``likely_server_ports`` /
    ``Analyzer::register_for_ports``) as ``{(port, "tcp"|"udp"), ...}``.  ``dpd`` gives
    content patterns for dynamic protocol detection, like Zeek's dpd.sig: regexes (bytes)
    that the first payload of the originator (and, when given, of the responder) must match
    from offset 0.  ``zeek_scripts`` are the ``@load`` names that enable it in Zeek's bare
    mode (e.g. ``base/protocols/dns``).  ``options`` is a dataclass *type* whose fields carry
    Zeek option names via ``metadata={"zeek": "DNS::max_pending_msgs"}`` so that ``redef`` lines
    can set them; its defaults are Zeek's.
    """

    name: str
    factory: type[Analyzer]
    transports: frozenset[str]                     # {"tcp"}, {"udp"}, or both
    ports: frozenset[tuple[int, str]] = frozenset()
    dpd_orig: tuple[re.Pattern[bytes], ...] = ()
    dpd_resp: tuple[re.Pattern[bytes], ...] = ()
    # patterns that enable the analyzer from the originator's first bytes alone, whatever
    # ``dpd_resp`` says (a dpd.sig signature without ``requires-reverse-signature``)
    dpd_orig_only: tuple[re.Pattern[bytes], ...] = ()
    zeek_scripts: tuple[str, ...] = ()
    logs: tuple[str, ...] = ()                     # log streams it writes (bare mode enables these)
    options: type | None = None
    events: tuple[str, ...] = field(default=())    # script events it raises (documented in docs/events.md)


REGISTRY: dict[str, AnalyzerSpec] = {}


def register(spec: AnalyzerSpec) -> AnalyzerSpec:
    existing = REGISTRY.get(spec.name)
    if existing is not None and existing.factory is not spec.factory:
        raise ValueError(f"analyzer {spec.name!r} registered twice")
    REGISTRY[spec.name] = spec
    return spec

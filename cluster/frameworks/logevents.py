"""Zeek's per-stream log events (``SSL::log_ssl``, ``X509::log_x509``, ``SSH::log_ssh`` ...).

Zeek raises ``<Module>::log_<stream>(rec)`` for every record written to a stream.  Scripts use
them to see what only the logs carry (x509.log's certificate details, say).  :func:`tap` wraps
the engine's LogSink: each record is still written, and the stream's event is dispatched to
the scripts' handlers first.  Without a handler for any log event the sink is returned as it
is, so a run that wants none pays nothing.  The standalone runner (:mod:`cluster.frameworks.local`)
and the worker node wrap their engine's sink with it.
"""

from __future__ import annotations

from typing import Any

from cluster import api

__all__ = ["LogEvents", "event_name", "tap"]

# Streams whose Zeek module is not simply the stream name in upper case.
_MODULES = {"conn": "Conn", "files": "Files", "weird": "Weird", "notice": "Notice", "tunnel": "Tunnel",
            "software": "Software", "reporter": "Reporter", "packet_filter": "PacketFilter",
            "known_hosts": "Known", "known_services": "Known", "known_certs": "Known"}


def event_name(path: str) -> str:
    """``ssl`` -> ``SSL::log_ssl``, ``conn`` -> ``Conn::log_conn``."""
    return f"{_MODULES.get(path, path.upper())}::log_{path}"


class LogEvents:
    """A LogSink that raises each record's log event, then writes it to the wrapped sink."""

    __slots__ = ("sink", "_reg", "_names")

    def __init__(self, sink: Any, registry: api.Registry) -> None:
        self.sink = sink
        self._reg = registry
        self._names: dict[str, str | None] = {}

    def write(self, path: str, record: Any) -> None:
        name = self._names.get(path, "")
        if name == "":
            n = event_name(path)
            name = self._names[path] = n if self._reg.wants(n) else None
        if name is not None:
            self._reg.dispatch(name, (record,))
        self.sink.write(path, record)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()

    def __getattr__(self, name: str) -> Any:      # the wrapped sink's extras (drain, stats ...)
        if name == "sink":
            raise AttributeError(name)
        return getattr(self.sink, name)


def tap(sink: Any, registry: api.Registry | None = None) -> Any:
    """``sink`` wrapped in :class:`LogEvents` when a script handles a log event, else ``sink``."""
    reg = registry or api.registry()
    if not any("::log_" in name for name in reg.handlers):
        return sink
    return LogEvents(sink, reg)

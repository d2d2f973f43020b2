"""weird.log: odd or malformed traffic, reported instead of raised.

The decoder and the connection table report through one :class:`WeirdReporter`; it owns the
``weird`` stream's record type and Zeek's rules for which repeats are logged.

Decoder-facing API (stable contract):
  ``net(name, ts, addl="", source="")``        no flow known: id columns unset
  ``flow(name, ts, src, dst, addl="", source="")``  addresses known, ports 0 (like Zeek's flow weirds)
The connection table adds connection weirds (uid and full id) on top.
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


class WeirdReporter:
    def __init__(self, sink: LogSink, peer: str = "zeek") -> None:
        self._sink = sink
        self._peer = peer

    def net(self, name: str, ts: float, addl: str = "", source: str = "") -> None:
        self._sink.write("weird", WeirdInfo(ts=ts, name=name, addl=addl or None, peer=self._peer,
                                            source=source or None))

    def flow(self, name: str, ts: float, src: str, dst: str, addl: str = "", source: str = "") -> None:
        self._sink.write("weird", WeirdInfo(ts=ts, orig_h=src, orig_p=0, resp_h=dst, resp_p=0, name=name,
                                            addl=addl or None, peer=self._peer, source=source or None))

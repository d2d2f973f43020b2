"""HTTP/1.x analyzer (Zeek's HTTP analyzer and base/protocols/http): http.log.

``parser`` is the sans-I/O state machine, ``analyzer`` turns its events into http.log rows
and script events, ``mime`` sniffs body types, ``info`` defines the log record.
"""

from __future__ import annotations

import re

from analysis.protocols.base import AnalyzerSpec, register
from analysis.protocols.http.analyzer import HTTPAnalyzer, HTTPOptions
from analysis.protocols.http.info import HTTPInfo
from analysis.protocols.http.parser import HTTPParser

__all__ = ["HTTPAnalyzer", "HTTPInfo", "HTTPOptions", "HTTPParser", "SPEC"]

# Zeek's dpd.sig for HTTP: a request method word at the start of the originator's stream,
# "HTTP/" at the start of the responder's.
_DPD_ORIG = re.compile(rb"[ \t\r\n\v\f]*(OPTIONS|GET|HEAD|POST|PUT|DELETE|TRACE|CONNECT|PROPFIND|"
                       rb"PROPPATCH|MKCOL|COPY|MOVE|LOCK|UNLOCK|POLL|REPORT|SUBSCRIBE|BMOVE|SEARCH|"
                       rb"QUERY|PATCH)[ \t\r\n\v\f]*")
_DPD_RESP = re.compile(rb"HTTP/[0-9]")

SPEC = register(AnalyzerSpec(
    name="http",
    factory=HTTPAnalyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset((p, "tcp") for p in (80, 81, 631, 1080, 3128, 8000, 8080, 8888)),
    dpd_orig=(_DPD_ORIG,),
    dpd_resp=(_DPD_RESP,),
    zeek_scripts=("base/protocols/http", "base/protocols/websocket"),
    logs=("http",),
    options=HTTPOptions,
    events=("http_request", "http_reply", "http_header", "http_message_done",
            "http_connection_upgrade", "http_connect_tunnel"),
))

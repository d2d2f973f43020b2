"""The HTTP parser's output: small immutable events (h11 style), one class per kind.

They mirror Zeek's HTTP analyzer events (``http_request``, ``http_reply``, ``http_header``,
``http_begin_entity``/``http_end_entity``, ``http_message_done``) plus the analyzer-level
signals (weird, confirmation, violation, upgrade, CONNECT tunnel) so that the per-connection
analyzer can reproduce base/protocols/http exactly without parsing anything itself.
"""

from __future__ import annotations

from typing import NamedTuple


class Request(NamedTuple):
    method: str
    original_uri: str
    unescaped_uri: str
    version: str          # "%.1f" of the request version, as Zeek passes it


class Reply(NamedTuple):
    version: str
    code: int
    reason: str           # "<empty>" when the status line has no reason phrase (Zeek's value)


class Header(NamedTuple):
    is_orig: bool
    name: str             # as on the wire
    upper_name: str       # upper-cased, what Zeek's scripts compare against
    value: str


class BeginEntity(NamedTuple):
    is_orig: bool
    depth: int


class EntityData(NamedTuple):
    """Decoded body bytes of a leaf MIME entity (what Zeek hands to file analysis)."""

    is_orig: bool
    data: bytes
    offset: int           # file offset for 206 partial content, else -1 (stream order)


class EndEntity(NamedTuple):
    is_orig: bool
    eof_file: bool        # False for 206 replies: Zeek leaves the file open (byte ranges)


class MessageDone(NamedTuple):
    is_orig: bool
    interrupted: bool
    reason: str
    body_length: int
    header_length: int
    content_gap_length: int
    start_time: float


class Weird(NamedTuple):
    name: str
    addl: str = ""
    source: str | None = None     # weird.log source; None = the analyzer ("HTTP")


class Confirm(NamedTuple):
    pass


class Violation(NamedTuple):
    reason: str


class Upgrade(NamedTuple):
    """101 Switching Protocols completed: the rest of the stream is ``protocol``."""

    protocol: str


class ConnectEstablished(NamedTuple):
    """A CONNECT request got a 2xx reply; the rest of the stream is tunnelled payload."""


class TunnelData(NamedTuple):
    """Stream bytes after an upgrade or CONNECT (forwarded to the inner protocol)."""

    is_orig: bool
    data: bytes


CONFIRM = Confirm()

"""The per-connection HTTP analyzer: parser events -> http.log rows, script events, weirds.

It reproduces base/protocols/http/main.zeek and entities.zeek: the ``pending`` table of
transactions indexed by request/response counters (pipelining, responses without requests,
1xx informational replies), logging at the end of each reply and flushing what is left when
the connection goes away, basic-auth parsing, proxy headers, and the file columns (one file
per leaf MIME entity with body data, MIME type by content sniffing) and their files.log rows
(``analysis/files``: one row when the entity ends, or when the connection goes away).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from analysis.files import FileOptions, FileState, filename_from_disposition, write_file
from analysis.protocols.base import Analyzer, AnalyzerContext
from analysis.protocols.http import events as ev
from analysis.protocols.http.info import HTTPInfo
from analysis.protocols.http.parser import _NOTHING, HTTPParser

HTTP_METHODS = frozenset({
    "GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "CONNECT",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
    "POLL", "REPORT", "SUBSCRIBE", "BMOVE", "SEARCH", "QUERY",
})

PROXY_HEADERS = frozenset({
    "FORWARDED", "X-FORWARDED-FOR", "X-FORWARDED-FROM", "CLIENT-IP", "VIA",
    "XROXY-CONNECTION", "PROXY-CONNECTION",
})

_ORIG_ATTRS = {"REFERER": "referrer", "HOST": "host", "ORIGIN": "origin", "USER-AGENT": "user_agent"}
_BASIC = re.compile(r"^[bB][aA][sS][iI][cC] ")
_BASIC_SUB = re.compile(r"[bB][aA][sS][iI][cC][ \t]+")
_FILENAME = re.compile(r"[fF][iI][lL][eE][nN][aA][mM][eE]")
_NAME_EQ = re.compile(r"[nN][aA][mM][eE][ \t]*=")

__all__ = ["HTTPAnalyzer", "HTTPOptions", "filename_from_disposition"]


@dataclass
class HTTPOptions(FileOptions):
    """Zeek's HTTP options (names as in base/protocols/http), plus the file-analysis switches."""

    default_capture_password: bool = field(default=False, metadata={"zeek": "HTTP::default_capture_password"})
    http_methods: frozenset = field(default=HTTP_METHODS, metadata={"zeek": "HTTP::http_methods"})
    proxy_headers: frozenset = field(default=PROXY_HEADERS, metadata={"zeek": "HTTP::proxy_headers"})
    max_pending_requests: int = field(default=100, metadata={"zeek": "HTTP::max_pending_requests"})
    max_files_orig: int = field(default=15, metadata={"zeek": "HTTP::max_files_orig"})
    max_files_resp: int = field(default=15, metadata={"zeek": "HTTP::max_files_resp"})


class _ChildContext:
    """Context for an analyzer the HTTP analyzer runs on its own stream (WebSocket): logs,
    events and weirds go to the HTTP analyzer's context; confirmation reports the child's
    service name when the engine offers ``confirm_service(name)``."""

    def __init__(self, parent, name: str) -> None:
        self._parent = parent
        self._name = name
        self.conn = parent.conn
        self.options = None

    def write_log(self, path, record):
        self._parent.write_log(path, record)

    def event(self, name, *args):
        self._parent.event(name, *args)

    def weird(self, name, addl="", source=None):
        if source is None:
            self._parent.weird(name, addl, self._name.upper())
        else:
            self._parent.weird(name, addl, source)

    def confirm(self):
        confirm_service = getattr(self._parent, "confirm_service", None)
        if confirm_service is not None:
            confirm_service(self._name)

    def violation(self, reason):
        pass

    def add_history(self, letter):
        self._parent.add_history(letter)

    def uid_for(self, kind):
        return self._parent.uid_for(kind)


class _Txn:
    """HTTP::Info while it is being filled (mutable); becomes an HTTPInfo row when logged."""

    __slots__ = ("ts", "trans_depth", "method", "host", "uri", "referrer", "version",
                 "user_agent", "origin", "request_body_len", "response_body_len", "status_code",
                 "status_msg", "info_code", "info_msg", "username", "password", "proxied",
                 "orig_fuids", "orig_filenames", "orig_mime_types", "resp_fuids",
                 "resp_filenames", "resp_mime_types", "range_request", "entity", "has_entity")

    def __init__(self, ts: float, depth: int) -> None:
        self.ts = ts
        self.trans_depth = depth
        self.method = self.host = self.uri = self.referrer = self.version = None
        self.user_agent = self.origin = None
        self.request_body_len = 0
        self.response_body_len = 0
        self.status_code = self.status_msg = self.info_code = self.info_msg = None
        self.username = self.password = None
        self.proxied = None
        self.orig_fuids = self.orig_filenames = self.orig_mime_types = None
        self.resp_fuids = self.resp_filenames = self.resp_mime_types = None
        self.range_request = False
        self.entity = None           # filename of the current entity (entities.zeek)
        self.has_entity = False


class _File:
    """A body file as this connection sees it: the file's state (its own, or the one shared by
    every piece of a range-requested resource), the transaction whose http.log vectors name it
    and whether its fuid made it into them (below HTTP::max_files_*)."""

    __slots__ = ("state", "txn", "is_orig", "logged", "shared")

    def __init__(self, state: FileState, txn: _Txn, is_orig: bool, shared: _RangeFile | None) -> None:
        self.state = state
        self.txn = txn
        self.is_orig = is_orig
        self.logged = False
        self.shared = shared


class _ConnSnap(NamedTuple):
    """The connection columns of a files.log row, kept for a file that outlives the connection."""

    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    is_local: object


class _RangeFile:
    """A resource fetched by range requests: Zeek's file handle is then (host, uri), so all its
    pieces, over any number of connections, are one file (one row per connection, written when
    the file ends or the last connection carrying it goes away)."""

    __slots__ = ("key", "state", "conns", "users", "ended")

    def __init__(self, key: tuple, state: FileState) -> None:
        self.key = key
        self.state = state
        self.conns: list[_ConnSnap] = []
        self.users = 0
        self.ended = False

    def end(self, ctx, timedout: bool) -> bool:
        """Write the rows (once); True when this call decided the MIME type."""
        if self.ended:
            return False
        self.ended = True
        if _RANGE_FILES.get(self.key) is self:
            del _RANGE_FILES[self.key]
        sniffed = self.state.finish()
        for snap in self.conns:
            ctx.write_log("files", self.state.record(snap, snap.is_local, timedout))
        return sniffed


#: Open range-request files by (host, uri): one table per process, like Zeek's file manager
#: (and ftp.py's table of expected data connections); bounded against floods.
_RANGE_FILES: dict[tuple, _RangeFile] = {}
_RANGE_FILES_LIMIT = 10000


_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d{1,18})\s*-\s*(\d{1,18})\s*/\s*(\d{1,18}|\*)")


def _content_range(value: str) -> list | None:
    """``bytes first-last/instance`` -> [first, instance length or 0]; None when unusable."""
    m = _CONTENT_RANGE.match(value)
    if m is None or int(m.group(2)) < int(m.group(1)):
        return None
    return [int(m.group(1)), 0 if m.group(3) == "*" else int(m.group(3))]


def _append(txn: _Txn, attr: str, value: str, cap: int) -> None:
    cur = getattr(txn, attr)
    if cur is None:
        setattr(txn, attr, [value])
    elif len(cur) < cap:
        cur.append(value)


class HTTPAnalyzer(Analyzer):
    """One HTTP connection: feeds the parser, keeps main.zeek's transaction table."""

    def __init__(self, ctx: AnalyzerContext) -> None:
        super().__init__(ctx)
        self.parser = HTTPParser()
        opts = getattr(ctx, "options", None)
        self.opts = opts if isinstance(opts, HTTPOptions) else HTTPOptions()
        self.pending: dict[int, _Txn] = {}
        self.current_request = 0
        self.current_response = 0
        self.trans_depth = 0
        self.http: _Txn | None = None
        self.files: dict[bool, _File | None] = {True: None, False: None}
        self.partial_files: list[_File] = []   # 206 bodies: Zeek keeps the file open (ranges)
        self.range_files: list[_RangeFile] = []   # shared range files this connection carries
        self.entity_depth = {True: 0, False: 0}
        self.part_range: list | None = None      # [offset, instance length] of a 206 body part
        self.confirmed = False
        self.dead = False
        self.finished = False
        self.tunnel_handler = None
        self.ws_headers: dict[bool, dict[str, str]] = {True: {}, False: {}}
        self.inner: HTTPParser | None = None
        self._inner_other = None
        self.children: list = []
        self.history_x = False
        self._dispatch = {ev.EntityData: self._on_entity_data, ev.Header: self._on_header,
                          ev.Request: self._on_request, ev.Reply: self._on_reply,
                          ev.MessageDone: self._on_message_done,
                          ev.BeginEntity: self._on_begin_entity, ev.EndEntity: self._on_end_entity}

    # -- engine interface ----------------------------------------------------------------

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self.dead:
            return
        if self.tunnel_handler is not None and (self.parser.upgraded or self.parser.tunnel):
            self.tunnel_handler(is_orig, payload, ts)
            return
        self._handle(self.parser.data(is_orig, payload, ts), ts)

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        if not self.dead:
            f = self.files[is_orig]
            if f is not None:
                f.state.gap(length)
            self._handle(self.parser.gap(is_orig, length, ts), ts)

    def eof(self, is_orig: bool, ts: float) -> None:
        if not self.dead:
            self._handle(self.parser.eof(is_orig, ts), ts)
            if self.inner is not None:
                self._handle(self.inner.eof(is_orig, ts), ts, inner=True)
            for child in self.children:
                child.eof(is_orig, ts)

    def done(self, ts: float) -> None:
        if self.finished:
            return
        self.finished = True
        if not self.dead:
            self._handle(self.parser.done(ts), ts)
            if self.inner is not None:
                self._handle(self.inner.done(ts), ts, inner=True)
        for is_orig in (True, False):
            f = self.files[is_orig]
            if f is not None:
                self.files[is_orig] = None
                if f.shared is None:
                    self._end_file(f)
        for f in self.partial_files:
            # Zeek's file timer expires a range file still open at the end (timedout=T)
            write_file(self.ctx, f.state, timedout=True)
        self.partial_files = []
        for rf in self.range_files:
            rf.users -= 1
            if rf.users <= 0:
                rf.end(self.ctx, timedout=True)
        self.range_files = []
        self._flush_pending()

    # -- main.zeek -----------------------------------------------------------------------

    def _new_txn(self, ts: float) -> _Txn:
        self.trans_depth += 1
        return _Txn(ts, self.trans_depth)

    def _set_state(self, is_orig: bool, ts: float) -> _Txn:
        idx = self.current_request if is_orig else self.current_response
        txn = self.pending.get(idx)
        if txn is None:
            txn = self.pending[idx] = self._new_txn(ts)
        self.http = txn
        return txn

    def _log(self, txn: _Txn) -> None:
        c = self.ctx.conn
        self.ctx.write_log("http", HTTPInfo(
            ts=txn.ts, uid=c.uid, orig_h=c.orig_h, orig_p=c.orig_p, resp_h=c.resp_h, resp_p=c.resp_p,
            trans_depth=txn.trans_depth, method=txn.method, host=txn.host, uri=txn.uri,
            referrer=txn.referrer, version=txn.version, user_agent=txn.user_agent, origin=txn.origin,
            request_body_len=txn.request_body_len, response_body_len=txn.response_body_len,
            status_code=txn.status_code, status_msg=txn.status_msg, info_code=txn.info_code,
            info_msg=txn.info_msg, tags=[], username=txn.username, password=txn.password,
            proxied=txn.proxied, orig_fuids=txn.orig_fuids, orig_filenames=txn.orig_filenames,
            orig_mime_types=txn.orig_mime_types, resp_fuids=txn.resp_fuids,
            resp_filenames=txn.resp_filenames, resp_mime_types=txn.resp_mime_types))

    def _flush_pending(self) -> None:
        for idx, txn in list(self.pending.items()):
            if idx != 0:
                self._log(txn)
        self.pending.clear()

    def _on_request(self, e: ev.Request, ts: float) -> None:
        if self.current_request < self.current_response:
            self.ctx.weird("HTTP_response_before_request", "", "")
            self.current_request = self.current_response
        maxp = self.opts.max_pending_requests
        if maxp > 0 and len(self.pending) > maxp:
            self.ctx.weird("HTTP_excessive_pipelining", "", "")
            if self.current_response == 0:
                self.current_response += 1
            while self.current_response < self.current_request:
                txn = self.pending.pop(self.current_response, None)
                if txn is not None:
                    self._log(txn)
                self.current_response += 1
        self.current_request += 1
        txn = self._set_state(True, ts)
        txn.method = e.method
        txn.uri = e.unescaped_uri
        if e.method not in self.opts.http_methods:
            self.ctx.weird("unknown_HTTP_method", e.method, "")
        self.ctx.event("http_request", e.method, e.original_uri, e.unescaped_uri, e.version)

    def _on_reply(self, e: ev.Reply, ts: float) -> None:
        cur = self.pending.get(self.current_response)
        if cur is None or (cur.status_code is not None and not 100 <= cur.status_code <= 199):
            self.current_response += 1
        txn = self._set_state(False, ts)
        txn.status_code = e.code
        txn.status_msg = e.reason
        txn.version = e.version
        if 100 <= e.code <= 199:
            txn.info_code = e.code
            txn.info_msg = e.reason
        self.ctx.event("http_reply", e.version, e.code, e.reason)

    def _on_header(self, e: ev.Header, ts: float) -> None:
        txn = self._set_state(e.is_orig, ts)
        name = e.upper_name
        value = e.value
        if e.is_orig:
            attr = _ORIG_ATTRS.get(name)
            if attr is not None:
                setattr(txn, attr, value)
            elif name == "RANGE":
                txn.range_request = True
            elif name in self.opts.proxy_headers:
                if txn.proxied is None:
                    txn.proxied = []
                item = f"{name} -> {value}"
                if item not in txn.proxied:
                    txn.proxied.append(item)
            elif name in ("AUTHORIZATION", "PROXY-AUTHORIZATION"):
                self._basic_auth(txn, value)
        if name[:4] in ("CONT", "SEC-"):
            # entities.zeek: the current entity's file name
            if name == "CONTENT-DISPOSITION" and _FILENAME.search(value):
                self._entity_filename(txn, value)
            elif name == "CONTENT-TYPE" and _NAME_EQ.search(value):
                self._entity_filename(txn, value)
            elif name.startswith("SEC-WEBSOCKET-"):
                self.ws_headers[e.is_orig][name] = value
            elif name == "CONTENT-RANGE" and not e.is_orig and self.entity_depth[False] > 0 \
                    and txn.status_code == 206:
                self.part_range = _content_range(value)
        self.ctx.event("http_header", e.is_orig, e.name, name, value)

    def _entity_filename(self, txn: _Txn, value: str) -> None:
        if not txn.has_entity:
            self.ctx.weird("missing_HTTP_entity")
            return
        fn = filename_from_disposition(value)
        if fn is not None:
            txn.entity = fn

    def _basic_auth(self, txn: _Txn, value: str) -> None:
        if not _BASIC.match(value):
            return
        raw = _BASIC_SUB.sub("", value, count=1)
        try:
            userpass = base64.b64decode(raw.encode("utf-8", "surrogateescape") + b"===", validate=False)
        except (binascii.Error, ValueError):
            self.ctx.weird("base64_illegal_encoding")
            userpass = b""
        up = userpass.decode("utf-8", "surrogateescape")
        user, sep, pw = up.partition(":")
        if sep:
            txn.username = user
            if self.opts.default_capture_password:
                txn.password = pw
        else:
            txn.username = f"<problem-decoding> ({value})"
            if self.opts.default_capture_password:
                txn.password = up

    def _on_message_done(self, e: ev.MessageDone, ts: float) -> None:
        txn = self._set_state(e.is_orig, ts)
        if e.is_orig:
            txn.request_body_len = e.body_length
        else:
            txn.response_body_len = e.body_length
        self.ctx.event("http_message_done", e.is_orig, {
            "start": e.start_time, "interrupted": e.interrupted, "finish_msg": e.reason,
            "body_length": e.body_length, "content_gap_length": e.content_gap_length,
            "header_length": e.header_length})
        if not e.is_orig:
            txn = self.http
            if not (txn.status_code is not None and 100 <= txn.status_code <= 199):
                self._log(txn)
                self.pending.pop(self.current_response, None)

    # -- entities.zeek / files -----------------------------------------------------------

    def _on_begin_entity(self, e: ev.BeginEntity, ts: float) -> None:
        txn = self._set_state(e.is_orig, ts)
        txn.has_entity = True
        txn.entity = None
        self.entity_depth[e.is_orig] = e.depth
        if not e.is_orig:
            self.part_range = None

    def _on_entity_data(self, e: ev.EntityData, ts: float) -> None:
        is_orig = e.is_orig
        f = self.files[is_orig]
        if f is None:
            f = self._new_file(is_orig, ts)
        offset = e.offset
        pr = self.part_range
        if pr is not None and not is_orig:
            # a part of a multipart/byteranges reply: its own Content-Range places it
            offset = pr[0]
            pr[0] += len(e.data)
            if pr[1] > 0 and f.state.total_bytes is None:
                f.state.total_bytes = pr[1]
        if f.state.data(e.data, ts, offset) and f.logged:
            self._add_mime(f)

    def _new_file(self, is_orig: bool, ts: float) -> _File:
        """The entity's first data: a new file, or for a range request the resource's shared
        file (entities.zeek's file_over_new_connection names it once per connection)."""
        txn = self._set_state(is_orig, ts)
        name = txn.entity if txn.has_entity else None
        rf = None
        new_here = True
        if txn.range_request and not is_orig:
            key = (txn.host, txn.uri)
            rf = _RANGE_FILES.get(key)
            if rf is None and len(_RANGE_FILES) < _RANGE_FILES_LIMIT:
                rf = _RANGE_FILES[key] = _RangeFile(
                    key, FileState(self.ctx.uid_for("F"), "HTTP", False, ts, self.opts, 0, name))
            if rf is not None:
                new_here = rf not in self.range_files
                if new_here:
                    self.range_files.append(rf)
                    rf.users += 1
                    c = self.ctx.conn
                    rf.conns.append(_ConnSnap(c.uid, c.orig_h, c.orig_p, c.resp_h, c.resp_p,
                                              getattr(self.ctx, "is_local_addr", None)))
        state = rf.state if rf is not None else \
            FileState(self.ctx.uid_for("F"), "HTTP", is_orig, ts, self.opts, 0, name)
        f = self.files[is_orig] = _File(state, txn, is_orig, rf)
        cap = self.opts.max_files_orig if is_orig else self.opts.max_files_resp
        attr = "orig_fuids" if is_orig else "resp_fuids"
        cur = getattr(txn, attr)
        if new_here and (cur is None or len(cur) < cap):
            f.logged = True
            _append(txn, attr, state.fuid, cap)
            if name is not None:
                _append(txn, "orig_filenames" if is_orig else "resp_filenames", name, cap)
        if self.entity_depth[is_orig] == 0:
            # HTTP_Entity::SubmitData: the size from the headers (not for decompressed bodies)
            msg = self.parser.req_msg if is_orig else self.parser.rep_msg
            if msg is not None and msg.encoding is None:
                size = msg.instance_length if msg.partial else msg.content_length
                if size > 0:
                    state.total_bytes = size
        return f

    def _add_mime(self, f: _File) -> None:
        mime = f.state.mime_type
        if mime is not None:
            if f.is_orig:
                _append(f.txn, "orig_mime_types", mime, self.opts.max_files_orig)
            else:
                _append(f.txn, "resp_mime_types", mime, self.opts.max_files_resp)

    def _end_file(self, f: _File) -> None:
        if f.state.finish() and f.logged:
            self._add_mime(f)
        write_file(self.ctx, f.state)

    def _on_end_entity(self, e: ev.EndEntity, ts: float) -> None:
        f = self.files[e.is_orig]
        if f is not None:
            self.files[e.is_orig] = None
            if not e.eof_file:
                if f.shared is None:
                    self.partial_files.append(f)
            elif f.shared is not None:
                if f.shared.end(self.ctx, timedout=False) and f.logged:
                    self._add_mime(f)
            else:
                self._end_file(f)
        txn = self._set_state(e.is_orig, ts)
        txn.has_entity = False
        txn.entity = None

    # -- dispatch ------------------------------------------------------------------------

    def _handle(self, events: list, ts: float, inner: bool = False) -> None:
        if not events:
            return
        ctx = self.ctx
        dispatch = self._dispatch
        for e in events:
            t = type(e)
            fn = dispatch.get(t)
            if fn is not None:
                fn(e, ts)
            elif t is ev.Weird:
                if e.source is None:
                    ctx.weird(e.name, e.addl)
                else:
                    ctx.weird(e.name, e.addl, e.source)
            elif t is ev.Confirm:
                if not self.confirmed and not inner:
                    self.confirmed = True
                    ctx.confirm()
            elif t is ev.Upgrade:
                if not inner:
                    self._on_upgrade(e, ts)
            elif t is ev.ConnectEstablished:
                if not inner:
                    self._on_connect(ts)
            elif t is ev.TunnelData:
                if self.tunnel_handler is not None:
                    self.tunnel_handler(e.is_orig, e.data, ts)
            elif t is ev.Violation:
                pass  # Zeek keeps the analyzer (its other direction may still parse)
        parser = self.parser
        if parser.wants_history_x and not self.history_x:
            self.history_x = True
            ctx.add_history("X")
        if parser.stopped and not self.dead:
            self.dead = True
            self.done(ts)
            ctx.violation("HTTP resource limit exceeded")
        elif not self.confirmed and parser.req_state == _NOTHING and parser.rep_state == _NOTHING \
                and not self.dead:
            # neither side is HTTP and nothing ever was: let the engine drop us (Zeek's DPD)
            self.dead = True
            self.done(ts)
            ctx.violation("not HTTP")

    # -- upgrades and tunnels ------------------------------------------------------------

    def _attach(self, name: str):
        """A child analyzer on this stream (engine ``attach_child``); without engine support
        the WebSocket analyzer still runs here, through a :class:`_ChildContext`."""
        attach = getattr(self.ctx, "attach_child", None)
        if attach is not None:
            child = attach(name)
        elif name == "websocket":
            from analysis.protocols.websocket import WebSocketAnalyzer
            child = WebSocketAnalyzer(_ChildContext(self.ctx, name))
        else:
            child = None
        if child is not None:
            self.children.append(child)
        return child

    def _on_upgrade(self, e: ev.Upgrade, ts: float) -> None:
        """101 + ``Upgrade: websocket``: the WebSocket analyzer takes the rest of the stream
        (Zeek 9); ``Analyzer::disabled_analyzers`` can switch it off (no child then)."""
        ctx = self.ctx
        ctx.event("http_connection_upgrade", e.protocol)
        if e.protocol.lower() != "websocket":
            return
        ws = self._attach("websocket")
        if ws is None:
            return
        from analysis.protocols.websocket import handshake_info
        txn = self.http
        ws.established(handshake_info(txn.ts if txn else ts, ctx.conn, txn.host if txn else None,
                                      txn.uri if txn else None, txn.user_agent if txn else None,
                                      self.ws_headers[True], self.ws_headers[False]))
        ws.inner = self._inner_data
        self.tunnel_handler = ws.data

    def _on_connect(self, ts: float) -> None:
        """CONNECT answered 200: Tunnel::HTTP in tunnel.log (orig_p 0: one tunnel per proxy
        pair, as Zeek registers it) and protocol detection on the tunnelled bytes."""
        from analysis.tunnel import TunnelInfo
        c = self.ctx.conn
        self.ctx.write_log("tunnel", TunnelInfo(ts=ts, uid=None, orig_h=c.orig_h, orig_p=0,
                                                resp_h=c.resp_h, resp_p=c.resp_p,
                                                tunnel_type="Tunnel::HTTP", action="Tunnel::DISCOVER"))
        self.ctx.event("http_connect_tunnel")
        self.tunnel_handler = _InnerDetect(self._attach).data

    def _inner_data(self, is_orig: bool, data: bytes, ts: float) -> None:
        """Payload unwrapped from WebSocket messages.  HTTP inside is parsed here and shares
        this connection's transaction state, as Zeek's nested HTTP analyzer shares
        ``c$http_state``; any other protocol is detected by content and attached as a child."""
        if self.inner is None and self._inner_other is None:
            from analysis.protocols.http import _DPD_ORIG, _DPD_RESP
            if (_DPD_ORIG if is_orig else _DPD_RESP).match(data):
                self.inner = HTTPParser()
            else:
                self._inner_other = _InnerDetect(self._attach).data
        if self.inner is not None:
            self._handle(self.inner.data(is_orig, data, ts), ts, inner=True)
        else:
            self._inner_other(is_orig, data, ts)


class _InnerDetect:
    """Zeek's PIA for a tunnelled stream: buffer the first bytes of each side, attach the first
    registered analyzer whose DPD patterns match (``attach`` returns None when disabled),
    replay the buffer to it, then forward everything."""

    LIMIT = 1024

    __slots__ = ("attach", "chunks", "bufs", "child", "gave_up", "tried")

    def __init__(self, attach) -> None:
        self.attach = attach
        self.chunks: list = []
        self.bufs = {True: b"", False: b""}
        self.child = None
        self.gave_up = False
        self.tried: set[str] = set()

    def data(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self.child is not None:
            self.child.data(is_orig, data, ts)
            return
        if self.gave_up:
            return
        from analysis.protocols.base import REGISTRY
        if len(self.bufs[is_orig]) < self.LIMIT:
            self.bufs[is_orig] = (self.bufs[is_orig] + data)[:self.LIMIT]
        self.chunks.append((is_orig, data, ts))
        ob, rb = self.bufs[True], self.bufs[False]
        for spec in REGISTRY.values():
            if spec.name in self.tried or not (spec.dpd_orig or spec.dpd_resp) or spec.name == "http":
                continue
            if spec.dpd_orig and not (ob and any(p.match(ob) for p in spec.dpd_orig)):
                continue
            if spec.dpd_resp and not (rb and any(p.match(rb) for p in spec.dpd_resp)):
                continue
            self.tried.add(spec.name)
            child = self.attach(spec.name)
            if child is None:
                continue
            self.child = child
            for io, chunk, t in self.chunks:
                child.data(io, chunk, t)
            self.chunks = []
            return
        if len(ob) >= self.LIMIT and len(rb) >= self.LIMIT or len(self.chunks) > 64:
            self.gave_up = True
            self.chunks = []

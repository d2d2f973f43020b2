"""http.log: Zeek 9's ``HTTP::Info`` columns, in Zeek's order (base/protocols/http/main.zeek
plus the file columns of entities.zeek)."""

from __future__ import annotations

from analysis.logs.schema import ConnIdRecord, Count, String, field, log_stream, set_of, vector_of


@log_stream("http")
class HTTPInfo(ConnIdRecord, kw_only=True):
    trans_depth: Count
    method: String | None = None
    host: String | None = None
    uri: String | None = None
    referrer: String | None = None
    version: String | None = None
    user_agent: String | None = None
    origin: String | None = None
    request_body_len: Count = 0
    response_body_len: Count = 0
    status_code: Count | None = None
    status_msg: String | None = None
    info_code: Count | None = None
    info_msg: String | None = None
    tags: set_of("enum") = field(default_factory=list)
    username: String | None = None
    password: String | None = None
    proxied: set_of("string") | None = None
    orig_fuids: vector_of("string") | None = None
    orig_filenames: vector_of("string") | None = None
    orig_mime_types: vector_of("string") | None = None
    resp_fuids: vector_of("string") | None = None
    resp_filenames: vector_of("string") | None = None
    resp_mime_types: vector_of("string") | None = None

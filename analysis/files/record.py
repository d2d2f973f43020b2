"""files.log's record (Zeek 9's ``Files::Info``) and the columns file-analysis scripts add.

Since Zeek 5.1 a row names one connection (``uid`` and ``id``; a file seen over several
connections gets one row per connection, all with the same ``fuid``).  ``base/files/hash``
appends ``md5 sha1 sha256`` and ``base/files/extract`` appends ``extracted extracted_cutoff
extracted_size`` (both are part of Zeek's default configuration; in bare mode only when
loaded).  As with conn.log's extensions, each combination is a subclass made once, so the
writers derive the header from the record's type while the stream keeps one base schema.
"""

from __future__ import annotations

import functools
import typing

import msgspec

from analysis.logs.schema import (
    Addr, Bool, Count, Interval, LogRecord, Port, String, Time, field, log_stream, set_of,
)

__all__ = ["FilesInfo", "files_record_type"]


@log_stream("files")
class FilesInfo(LogRecord, kw_only=True):
    ts: Time
    fuid: String
    uid: String | None = None
    orig_h: Addr | None = field(name="id.orig_h", default=None)
    orig_p: Port | None = field(name="id.orig_p", default=None)
    resp_h: Addr | None = field(name="id.resp_h", default=None)
    resp_p: Port | None = field(name="id.resp_p", default=None)
    source: String | None = None
    depth: Count = 0
    analyzers: set_of("string") = field(default_factory=list)
    mime_type: String | None = None
    filename: String | None = None
    duration: Interval = 0.0
    local_orig: Bool | None = None
    is_orig: Bool | None = None
    seen_bytes: Count = 0
    total_bytes: Count | None = None
    missing_bytes: Count = 0
    overflow_bytes: Count = 0
    timedout: Bool = False
    parent_fuid: String | None = None


class _HashColumns(LogRecord, kw_only=True):
    md5: String | None = None
    sha1: String | None = None
    sha256: String | None = None


class _ExtractColumns(LogRecord, kw_only=True):
    extracted: String | None = None
    extracted_cutoff: Bool | None = None
    extracted_size: Count | None = None


@functools.cache
def files_record_type(hash_columns: bool = False, extract_columns: bool = False) -> type[FilesInfo]:
    """FilesInfo with the hash and/or extraction columns appended (Zeek's load order)."""
    exts = [e for e, on in ((_HashColumns, hash_columns), (_ExtractColumns, extract_columns)) if on]
    if not exts:
        return FilesInfo
    fields = []
    for ext in exts:
        hints = typing.get_type_hints(ext, include_extras=True)
        fields.extend((f.name, hints[f.name], None) for f in msgspec.structs.fields(ext))
    name = "FilesInfo" + "".join(e.__name__.removesuffix("Columns") for e in exts)
    cls = msgspec.defstruct(name, fields, bases=(FilesInfo,), kw_only=True, module=__name__)
    cls.__log_path__ = "files"  # type: ignore[attr-defined]
    return cls

"""One definition per log record: the TSV header, JSON keys and wire encoding all derive from it.

A log record is a ``msgspec.Struct`` subclass of :class:`LogRecord`.  Each field's Zeek type is
carried in its annotation (``ts: Time``, ``orig_h: Addr = field(name="id.orig_h")``), the Zeek
column name is the field's encode name, and ``None`` means unset (``-`` in TSV, key omitted in
JSON).  Sets and vectors are Python lists; the Zeek type tag says which it is.

    @log_stream("conn")
    class ConnInfo(LogRecord, kw_only=True):   # kw_only: msgspec does not inherit it
        ts: Time
        uid: String
        orig_h: Addr = field(name="id.orig_h")
        ...

Writers (``analysis/logs/tsv.py``, ``jsonl.py``) and the cluster's wire encoding ask
:func:`columns` for the column list; nobody writes a header by hand.

Values a script needs but Zeek does not log (Zeek's non-``&log`` fields, e.g. a certificate's
file id) are not fields: the record is declared with ``dict=True`` and the value is a ``ClassVar``
default overridden per instance, so writers and the wire see only the columns.  They exist only
in the process that made the record (``analysis/protocols/ssl`` is the first user).

String convention: ``String``/``Enum`` values that come from the wire are the wire bytes decoded
as UTF-8 with ``errors="surrogateescape"`` (``data.decode("utf-8", "surrogateescape")``).  Valid
UTF-8 becomes ordinary text; every other byte becomes a lone surrogate U+DC80..U+DCFF, so no
information is lost and the value still travels through msgpack as a ``str``.  The writers
re-encode with ``surrogateescape`` and escape exactly those bytes as ``\\xNN``, as Zeek does with
its default ``LogAscii::enable_utf_8=T`` (valid multibyte UTF-8 is written as is; control
characters, DEL and backslash are escaped).  Times are epoch seconds as ``float``.
"""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass
from typing import Annotated

import msgspec
from msgspec import field  # re-exported: records use ``field(name="id.orig_h")``

__all__ = [
    "Addr", "Bool", "Column", "ConnIdRecord", "Count", "Double", "Enum", "Int", "Interval", "LogRecord", "Port",
    "STREAMS", "String", "Subnet", "Time", "columns", "field", "log_stream", "set_of", "vector_of",
]


def _zeek(type_name: str, py: type) -> typing.Any:
    return Annotated[py, msgspec.Meta(extra={"zeek": type_name})]


Time = _zeek("time", float)
Interval = _zeek("interval", float)
Double = _zeek("double", float)
Count = _zeek("count", int)
Int = _zeek("int", int)
Port = _zeek("port", int)
Bool = _zeek("bool", bool)
String = _zeek("string", str)
Enum = _zeek("enum", str)
Addr = _zeek("addr", str)
Subnet = _zeek("subnet", str)


@functools.cache
def set_of(elem: str) -> typing.Any:
    """``set_of("string")`` -> a field type written as Zeek ``set[string]`` (a Python list)."""
    return _zeek(f"set[{elem}]", list)


@functools.cache
def vector_of(elem: str) -> typing.Any:
    """``vector_of("count")`` -> a field type written as Zeek ``vector[count]`` (a Python list)."""
    return _zeek(f"vector[{elem}]", list)


class LogRecord(msgspec.Struct, kw_only=True, array_like=True):
    """Base of every log record.  ``array_like`` keeps the wire form a compact msgpack array."""


class ConnIdRecord(LogRecord, kw_only=True):
    """The ``ts uid id.orig_h id.orig_p id.resp_h id.resp_p`` columns that open every log about
    one connection (Zeek's ``conn_id``).  A subclass's own fields follow them (msgspec puts base
    fields first); declare it ``kw_only=True`` too, msgspec does not inherit that."""

    ts: Time
    uid: String
    orig_h: Addr = field(name="id.orig_h")
    orig_p: Port = field(name="id.orig_p")
    resp_h: Addr = field(name="id.resp_h")
    resp_p: Port = field(name="id.resp_p")


@dataclass(frozen=True, slots=True)
class Column:
    name: str        # Zeek column name, e.g. "id.orig_h"
    attr: str        # Python attribute, e.g. "orig_h"
    zeek_type: str   # e.g. "addr", "set[string]"
    container: bool  # set or vector


def _zeek_type_of(hint: typing.Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union or type(hint).__name__ == "UnionType":
        for a in args:
            if a is not type(None):
                return _zeek_type_of(a)
    if typing.get_origin(hint) is Annotated:
        for meta in args[1:]:
            extra = getattr(meta, "extra", None)
            if extra and "zeek" in extra:
                return extra["zeek"]
    raise TypeError(f"log field annotation {hint!r} carries no Zeek type (use Time, Addr, ...)")


@functools.cache
def columns(record_type: type[LogRecord]) -> tuple[Column, ...]:
    """The ordered columns of a record type, derived from its annotations."""
    hints = typing.get_type_hints(record_type, include_extras=True)
    cols = []
    for f in msgspec.structs.fields(record_type):
        zt = _zeek_type_of(hints[f.name])
        cols.append(Column(f.encode_name, f.name, zt, zt.startswith(("set[", "vector["))))
    return tuple(cols)


STREAMS: dict[str, type[LogRecord]] = {}


def log_stream(path: str):
    """Class decorator: register ``record_type`` as the schema of log stream ``path``."""

    def register(record_type: type[LogRecord]) -> type[LogRecord]:
        existing = STREAMS.get(path)
        if existing is not None and existing is not record_type:
            raise ValueError(f"log stream {path!r} already registered by {existing.__qualname__}")
        STREAMS[path] = record_type
        record_type.__log_path__ = path  # type: ignore[attr-defined]
        columns(record_type)  # fail at import time on a bad annotation
        return record_type

    return register

"""The log batch format: one stream's records plus the header a receiver needs to rebuild them.

A batch is the msgpack array ``[1, path, columns, records]`` or ``[1, path, columns, records, true]``:

* ``1`` -- the layout version of this array;
* ``path`` -- the log stream, e.g. ``"conn"``;
* ``columns`` -- ``[[name, zeek_type], ...]`` in order (``["id.orig_h", "addr"]``);
* ``records`` -- one msgpack array per record, values in column order (``nil`` = unset), which is
  exactly how an ``array_like`` :class:`~analysis.logs.schema.LogRecord` encodes;
* the optional ``true`` says that string values may also come as msgpack *bin*: strings holding
  bytes that are not valid UTF-8 (lone surrogates from ``surrogateescape``, the project's string
  convention) cannot be msgpack *str*, so they travel as their exact bytes and are turned back
  into the same ``str`` on arrival.  Batches without such a string take the fast path.

The receiver never imports the sender's record class: from the columns it builds an equivalent
Struct with ``msgspec.defstruct`` (cached per distinct header), so extended records (conn with
mac-logging columns) and streams defined in users' scripts arrive intact.  Decoding validates
every value against its Zeek type; anything malformed raises :class:`BatchError`.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Any

import msgspec

from analysis.logs.schema import LogRecord, columns

__all__ = ["BatchError", "Decoded", "LogDecoder", "LogEncoder", "record_type_for"]

VERSION = 1
MAX_COLUMNS = 1024
_PATH_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")
_TYPE_RE = re.compile(r"[a-z_]+(\[[a-z_]+\])?\Z")

_SCALARS: dict[str, type] = {
    "time": float, "interval": float, "double": float,
    "count": int, "int": int, "port": int, "counter": int,
    "bool": bool,
    "string": str, "enum": str, "addr": str, "subnet": str, "pattern": str, "file": str, "func": str,
}


class BatchError(ValueError):
    """A log batch that does not follow the format (counted and dropped by the logger)."""


def _attr(name: str, taken: set[str]) -> str:
    a = re.sub(r"\W", "_", name)
    if not a or a[0].isdigit() or keyword.iskeyword(a) or a.startswith("__"):
        a = "f_" + a
    while a in taken:
        a += "_"
    taken.add(a)
    return a


def _py_type(zeek_type: str) -> Any:
    if zeek_type.startswith(("set[", "vector[")):
        elem = _SCALARS.get(zeek_type[zeek_type.index("[") + 1:-1], Any)
        return list[elem | None] if elem is not Any else list
    return _SCALARS.get(zeek_type, Any)


_types: dict[tuple, type[LogRecord]] = {}


def record_type_for(cols: tuple[tuple[str, str], ...]) -> type[LogRecord]:
    """A LogRecord Struct with exactly these (name, zeek type) columns, every field optional.

    Attribute names are a fixed function of the column names, so two headers that share a
    column share its attribute (the writers project records of another type by attribute).
    """
    key = cols
    t = _types.get(key)
    if t is None:
        taken: set[str] = set()
        fields = []
        for name, zt in cols:
            py = _py_type(zt)
            hint = Annotated[py | None, msgspec.Meta(extra={"zeek": zt})] if py is not Any else \
                Annotated[Any, msgspec.Meta(extra={"zeek": zt})]
            fields.append((_attr(name, taken), hint, msgspec.field(default=None, name=name)))
        t = msgspec.defstruct("WireRecord", fields, bases=(LogRecord,), kw_only=True, array_like=True,
                              forbid_unknown_fields=True)
        columns(t)
        if len(_types) > 4096:
            _types.clear()
        _types[key] = t
    return t


def _to_wire(v: Any) -> Any:
    if v.__class__ is str:
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return v.encode("utf-8", "surrogateescape")
        return v
    if v.__class__ is list:
        return [_to_wire(e) for e in v]
    return v


def _binary_rows(records: list[LogRecord]) -> list[list[Any]]:
    """Records as value lists with every non-UTF-8 string replaced by its bytes."""
    astuple = msgspec.structs.astuple
    return [[_to_wire(v) for v in astuple(r)] for r in records]


def _from_wire(v: Any) -> Any:
    if v.__class__ is bytes:
        return v.decode("utf-8", "surrogateescape")
    if v.__class__ is list:
        return [_from_wire(e) for e in v]
    return v


class LogEncoder:
    """Turns a list of records of one type into batch bytes; headers are cached per type."""

    def __init__(self) -> None:
        self._enc = msgspec.msgpack.Encoder()
        self._headers: dict[type, list[list[str]]] = {}

    def header(self, record_type: type[LogRecord]) -> list[list[str]]:
        h = self._headers.get(record_type)
        if h is None:
            h = self._headers[record_type] = [[c.name, c.zeek_type] for c in columns(record_type)]
        return h

    def encode(self, path: str, records: list[LogRecord]) -> bytes:
        header = self.header(type(records[0]))
        try:
            return self._enc.encode((VERSION, path, header, records))
        except UnicodeEncodeError:
            return self._enc.encode((VERSION, path, header, _binary_rows(records), True))


class Decoded(msgspec.Struct, array_like=True):
    version: int
    path: str
    columns: msgspec.Raw
    records: msgspec.Raw
    binary: bool = False


class LogDecoder:
    """Batch bytes -> ``(path, record_type, [records])``; raises :class:`BatchError`."""

    def __init__(self) -> None:
        self._outer = msgspec.msgpack.Decoder(Decoded)
        self._cols = msgspec.msgpack.Decoder(list[tuple[str, str]])
        self._by_header: dict[bytes, tuple[type[LogRecord], msgspec.msgpack.Decoder]] = {}
        self._generic = msgspec.msgpack.Decoder(list[list[Any]])

    def _header(self, raw: bytes) -> tuple[type[LogRecord], msgspec.msgpack.Decoder]:
        hit = self._by_header.get(raw)
        if hit is None:
            cols = tuple(self._cols.decode(raw))
            if not cols or len(cols) > MAX_COLUMNS:
                raise BatchError(f"bad column count {len(cols)}")
            names = set()
            for name, zt in cols:
                if not name or len(name) > 256 or not _TYPE_RE.match(zt) or name in names:
                    raise BatchError(f"bad column {name!r} of type {zt!r}")
                names.add(name)
            t = record_type_for(cols)
            hit = (t, msgspec.msgpack.Decoder(list[t]))
            if len(self._by_header) > 4096:
                self._by_header.clear()
            self._by_header[raw] = hit
        return hit

    def decode(self, data: bytes) -> tuple[str, type[LogRecord], list[LogRecord]]:
        try:
            d = self._outer.decode(data)
            if d.version != VERSION:
                raise BatchError(f"unknown batch version {d.version}")
            if not _PATH_RE.match(d.path) or d.path in (".", ".."):
                raise BatchError(f"bad stream path {d.path[:80]!r}")
            if not d.binary:
                t, dec = self._header(bytes(d.columns))
                return d.path, t, dec.decode(d.records)
            # Rare slow path: decode untyped, turn bytes back into strings, then validate.
            t, _ = self._header(bytes(d.columns))
            rows = [[_from_wire(v) for v in row] for row in self._generic.decode(d.records)]
            return d.path, t, msgspec.convert(rows, list[t])
        except BatchError:
            raise
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError, RecursionError) as e:
            raise BatchError(str(e)[:200]) from None

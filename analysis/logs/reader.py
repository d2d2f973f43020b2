"""Parse Zeek-format logs (ours or Zeek's) back into Python values, for tests and tools.

TSV values come back in the writers' conventions: ``None`` for unset, ``float``/``int``/``bool``,
lists for sets and vectors, and strings decoded from the bytes they denote (``\\xNN`` and ``\\\\``
undone) with ``errors="surrogateescape"``, so a written-then-read string equals the original.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

__all__ = ["ParsedLog", "parse_value", "read_json", "read_tsv", "unescape"]

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})|\\\\")


def unescape(raw: bytes) -> str:
    """Undo the writer's escaping: ``\\xNN`` -> byte NN, ``\\\\`` -> ``\\``."""
    if b"\\" in raw:
        raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]) if m.group(1) else b"\\", raw)
    return raw.decode("utf-8", "surrogateescape")


def _scalar(raw: bytes, zeek_type: str) -> Any:
    if zeek_type in ("time", "interval", "double"):
        return float(raw)
    if zeek_type in ("count", "int", "port", "counter"):
        return int(raw)
    if zeek_type == "bool":
        if raw in (b"T", b"F"):
            return raw == b"T"
        raise ValueError(f"bad bool {raw!r}")
    return unescape(raw)


def parse_value(raw: bytes, zeek_type: str, *, set_separator: bytes = b",",
                unset: bytes = b"-", empty: bytes = b"(empty)") -> Any:
    """One TSV cell of type ``zeek_type`` -> Python value (``ValueError`` if malformed)."""
    if raw == unset:
        return None
    if zeek_type.startswith(("set[", "vector[")):
        if raw == empty:
            return []
        elem = zeek_type[zeek_type.index("[") + 1:-1]
        return [None if e == unset else ("" if e == empty and elem not in ("time", "interval", "double")
                                         else _scalar(e, elem))
                for e in raw.split(set_separator)]
    if raw == empty and zeek_type not in ("time", "interval", "double", "count", "int", "port"):
        return ""
    return _scalar(raw, zeek_type)


@dataclass
class ParsedLog:
    """A TSV log: meta lines, column names and types, and the raw cells of each row."""

    meta: dict[str, str] = field(default_factory=dict)   # "path", "open", "close", ...
    fields: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    raw_rows: list[list[bytes]] = field(default_factory=list)
    separator: bytes = b"\t"
    set_separator: bytes = b","

    @property
    def path(self) -> str | None:
        return self.meta.get("path")

    def rows(self) -> Iterator[dict[str, Any]]:
        """Each row as ``{column: value}`` with values parsed by the column's type."""
        for raw in self.raw_rows:
            yield {f: parse_value(c, t, set_separator=self.set_separator)
                   for f, t, c in zip(self.fields, self.types, raw)}


def read_tsv(source: str | os.PathLike | bytes) -> ParsedLog:
    """Parse a Zeek ASCII log given as a file name or as its bytes."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    log = ParsedLog()
    for line in data.split(b"\n"):
        if not line:
            continue
        if line.startswith(b"#"):
            key, _, value = line[1:].partition(b"\t")
            if key.startswith(b"separator "):
                sep = key[len(b"separator "):]
                log.separator = unescape(sep).encode("utf-8", "surrogateescape")
            elif key == b"set_separator":
                log.set_separator = value
            elif key == b"fields":
                log.fields = [unescape(f) for f in value.split(log.separator)]
            elif key == b"types":
                log.types = [t.decode() for t in value.split(log.separator)]
            else:
                log.meta[key.decode("utf-8", "replace").strip()] = value.decode("utf-8", "replace")
            continue
        log.raw_rows.append(line.split(log.separator))
    return log


def read_json(source: str | os.PathLike | bytes) -> list[dict[str, Any]]:
    """Parse a JSON-lines log: one dict per non-empty line."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return [json.loads(line) for line in data.split(b"\n") if line.strip()]

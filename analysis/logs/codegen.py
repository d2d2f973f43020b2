"""Build one specialised row-formatting function per (record type, header) pair.

Writing is the loggers' hot path.  Instead of walking the columns and dispatching on the Zeek
type for every field of every record, each writer describes how to render one column as a Python
expression, and this module compiles those into a single function per record type (the way
``dataclasses`` builds ``__init__``).  The generated code only ever sees our own column metadata
(attribute names are checked to be identifiers), never data.
"""

from __future__ import annotations

import keyword
from typing import Any, Callable

from analysis.logs.schema import Column, LogRecord, columns

__all__ = ["compile_row_function", "element_type"]


def element_type(zeek_type: str) -> str:
    """``set[string]`` -> ``string``; scalars are returned unchanged."""
    return zeek_type[zeek_type.index("[") + 1:-1] if zeek_type.endswith("]") else zeek_type


def compile_row_function(
    header: tuple[Column, ...],
    record_type: type[LogRecord],
    render: Callable[[Column, str], str],
    assemble: Callable[[list[str]], str],
    namespace: dict[str, Any],
    name: str,
) -> Callable[[LogRecord], str]:
    """Return ``f(record) -> str`` rendering ``header``'s columns of ``record_type`` records.

    ``render(column, var)`` gives the expression for one column whose value is in local ``var``;
    ``assemble(exprs)`` joins the per-column expressions into the returned expression.  A header
    column missing from ``record_type`` (a different record type on the same stream) reads as
    unset; extra attributes of ``record_type`` are not written.
    """
    have = {c.attr for c in columns(record_type)}
    lines = [f"def {name}(r):"]
    exprs = []
    attr_names: dict[str, str] = {}
    for i, col in enumerate(header):
        var = f"v{i}"
        if col.attr not in have:
            lines.append(f"    {var} = None")
        elif col.attr.isidentifier() and not keyword.iskeyword(col.attr):
            lines.append(f"    {var} = r.{col.attr}")
        else:  # e.g. a struct made with msgspec.defstruct and a field called "from"
            attr_names[f"_a{i}"] = col.attr
            lines.append(f"    {var} = getattr(r, _a{i})")
        exprs.append(render(col, var))
    lines.append("    return " + assemble(exprs))
    ns = {**namespace, **attr_names}
    exec("\n".join(lines), ns)  # noqa: S102 - code built from our own schema, see module doc
    return ns[name]

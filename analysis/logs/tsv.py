"""Zeek's ASCII (TSV) log format, byte for byte as Zeek's ASCII writer produces it.

Header lines (``#separator \\x09`` ... ``#types``) on open, one tab-separated row per record,
``#close`` with the close time on :meth:`TsvWriter.close`.  Dates in ``#open``/``#close`` are
``%Y-%m-%d-%H-%M-%S`` in local time, as Zeek writes them.  Value rendering lives in
:mod:`analysis.logs.values`.
"""

from __future__ import annotations

import time

from analysis.logs.base import LogWriter
from analysis.logs.codegen import compile_row_function, element_type
from analysis.logs.schema import Column, LogRecord
from analysis.logs.values import INT_MAX, tsv_double, tsv_set_string, tsv_string, tsv_time

__all__ = ["SEPARATOR", "SET_SEPARATOR", "EMPTY_FIELD", "UNSET_FIELD", "TsvWriter", "tsv_date"]

SEPARATOR = "\t"
SET_SEPARATOR = ","
EMPTY_FIELD = "(empty)"
UNSET_FIELD = "-"

_STRINGY = frozenset({"string", "enum", "addr", "subnet", "file", "func", "pattern"})
_INTEGRAL = frozenset({"count", "int", "port", "counter"})
_TIMES = frozenset({"time", "interval"})


def tsv_date(t: float) -> str:
    """``#open``/``#close`` date: Zeek formats the time in the local time zone."""
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(t))


def _element_text(elem: str, e) -> str:
    if e is None:
        return UNSET_FIELD
    if elem in _STRINGY:
        return tsv_set_string(e)
    if elem in _TIMES:
        return tsv_time(e)
    if elem == "double":
        return tsv_double(e)
    if elem == "bool":
        return "T" if e else "F"
    return str(e)


def _container(elem: str):
    """Renderer for a non-empty or empty set/vector of ``elem``."""
    if elem in _STRINGY:
        def render(v, _f=tsv_set_string):
            return ",".join([_f(e) if e is not None else UNSET_FIELD for e in v]) if v else EMPTY_FIELD
    elif elem in _INTEGRAL:
        def render(v):
            return ",".join([str(e) for e in v]) if v else EMPTY_FIELD
    else:
        def render(v, _elem=elem):
            return ",".join([_element_text(_elem, e) for e in v]) if v else EMPTY_FIELD
    return render


def _no_comment(text: str) -> str:
    """A row must not look like a meta line: Zeek escapes a leading ``#``."""
    return "\\x23" + text[1:] if text.startswith("#") else text


_NAMESPACE = {
    "_F6": "%.6f", "_IM": INT_MAX, "_tt": tsv_time, "_td": tsv_double, "_ts": tsv_string,
    "_nc": _no_comment, "_BS": "\\",
}


def _render(col: Column, v: str, ns: dict) -> str:
    zt = col.zeek_type
    if col.container:
        name = f"_c_{len(ns)}"
        ns[name] = _container(element_type(zt))
        expr = f"{name}({v})"
    elif zt in _TIMES:
        expr = f"(_F6 % ({v} + 0.0) if -_IM < {v} < _IM else _tt({v}))"
    elif zt in _INTEGRAL:
        expr = v
    elif zt == "bool":
        expr = f"('T' if {v} else 'F')"
    elif zt == "double":
        expr = f"_td({v})"
    else:  # string, enum, addr, subnet and anything else written as text; fast path inline
        expr = (f"({v} if {v}.isascii() and {v}.isprintable() and _BS not in {v} and {v} != '-'"
                f" and {v} != '(empty)' and {v} else _ts({v}))")
    return f"('-' if {v} is None else {expr})"


class TsvWriter(LogWriter):
    """Zeek ASCII log writer for one file; see :class:`~analysis.logs.base.LogWriter` for the API."""

    def _header(self) -> str:
        cols = self.columns
        return (
            "#separator \\x09\n"
            f"#set_separator\t{SET_SEPARATOR}\n"
            f"#empty_field\t{EMPTY_FIELD}\n"
            f"#unset_field\t{UNSET_FIELD}\n"
            f"#path\t{self.path}\n"
            f"#open\t{tsv_date(self.open_time)}\n"
            "#fields\t" + "\t".join(c.name for c in cols) + "\n"
            "#types\t" + "\t".join(c.zeek_type for c in cols) + "\n"
        )

    def _footer(self, close_time: float) -> str:
        return f"#close\t{tsv_date(close_time)}\n"

    def _compile(self, record_type: type[LogRecord]):
        ns = dict(_NAMESPACE)
        header = self.columns

        def render(col: Column, v: str) -> str:
            expr = _render(col, v, ns)
            if col is header[0] and (col.container or col.zeek_type not in _INTEGRAL | _TIMES
                                     | {"bool", "double"}):
                expr = f"_nc({expr})"
            return expr

        def assemble(exprs: list[str]) -> str:
            return 'f"' + "\\t".join("{" + e + "}" for e in exprs) + '"'

        return compile_row_function(header, record_type, render, assemble, ns, "tsv_row")

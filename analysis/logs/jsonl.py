"""Zeek's JSON logs (``LogAscii::use_json=T``): one object per line, no header.

Keys are the Zeek column names (``"id.orig_h"``), unset fields are left out, times are epoch
seconds (Zeek's default ``JSON::TS_EPOCH``), sets and vectors are arrays, doubles are written
the way rapidjson writes them (``null`` when not finite).  String escaping: see
:mod:`analysis.logs.values`.
"""

from __future__ import annotations

from analysis.logs.base import LogWriter
from analysis.logs.codegen import compile_row_function, element_type
from analysis.logs.schema import Column, LogRecord
from analysis.logs.values import json_double, json_string

__all__ = ["JsonWriter"]

_INTEGRAL = frozenset({"count", "int", "port", "counter"})
_FLOATS = frozenset({"time", "interval", "double"})


def _element(elem: str):
    if elem in _INTEGRAL:
        return str
    if elem in _FLOATS:
        return json_double
    if elem == "bool":
        return lambda e: "true" if e else "false"
    return json_string


def _container(elem: str):
    f = _element(elem)

    def render(v):
        return "[" + ",".join([f(e) if e is not None else "null" for e in v]) + "]"

    return render


_NAMESPACE = {"_jd": json_double, "_js": json_string, "_Q": '"', "_BS": "\\"}


class JsonWriter(LogWriter):
    """Zeek JSON-lines log writer for one file; API as :class:`~analysis.logs.base.LogWriter`."""

    def _compile(self, record_type: type[LogRecord]):
        ns = dict(_NAMESPACE)

        def render(col: Column, v: str) -> str:
            key = f"_k{len(ns)}"
            ns[key] = "," + json_string(col.name) + ":"  # leading comma: dropped for the 1st
            zt = col.zeek_type
            if col.container:
                fn = f"_c{len(ns)}"
                ns[fn] = _container(element_type(zt))
                expr = f"{fn}({v})"
            elif zt in _INTEGRAL:
                expr = f"str({v})"
            elif zt in _FLOATS:  # repr() is what rapidjson writes unless exponent/inf/nan
                expr = f"(r if 'e' not in (r := repr({v})) and 'n' not in r else _jd({v}))"
            elif zt == "bool":
                expr = f"('true' if {v} else 'false')"
            else:
                kq = f"_q{len(ns)}"
                ns[kq] = ns[key] + '"'
                return (f"('' if {v} is None else {kq} + {v} + _Q if {v}.isascii() and {v}.isprintable()"
                        f" and _Q not in {v} and _BS not in {v} else {key} + _js({v}))")
            return f"('' if {v} is None else {key} + {expr})"

        def assemble(exprs: list[str]) -> str:
            return "'{' + f\"" + "".join("{" + e + "}" for e in exprs) + "\"[1:] + '}'"

        return compile_row_function(self.columns, record_type, render, assemble, ns, "json_row")

"""Zeek's rendering of single values, shared by the TSV and JSON writers.

Strings follow the project convention (see :mod:`analysis.logs.schema`): wire bytes were decoded
as UTF-8 with ``errors="surrogateescape"``, so a byte that is not part of valid UTF-8 sits in the
string as a lone surrogate U+DC80..U+DCFF.  :func:`normalize` re-derives the exact bytes and decodes
them again, so escaping works on what Zeek would see: the original bytes.

Escaping rules (Zeek 9.1, ``LogAscii::enable_utf_8=T``, the default):

* TSV: backslash -> ``\\\\``; the separator (tab), control characters 0x00-0x1f, DEL 0x7f and
  every byte of invalid UTF-8 -> ``\\xNN``; inside sets/vectors the set separator -> ``\\x2c``;
  valid multibyte UTF-8 is written as is.  A value equal to ``-`` or ``(empty)`` gets its first
  character escaped so it cannot be mistaken for the unset/empty markers.
* JSON: invalid UTF-8 bytes and control characters other than ``\\b \\f \\n \\r \\t`` become the
  *text* ``\\xNN`` (so ``\\\\xNN`` inside the JSON string), the rest is standard JSON escaping.
"""

from __future__ import annotations

__all__ = [
    "INT_MAX", "json_double", "json_string", "normalize", "tsv_double", "tsv_string",
    "tsv_set_string", "tsv_time",
]

INT_MAX = 2147483647.0  # modp_numtoa switches to exponent notation from here on


def normalize(s: str) -> str:
    """Round-trip through bytes so lone surrogates stand for exactly the invalid bytes."""
    try:
        b = s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates not made by surrogateescape: keep them as bytes
        b = s.encode("utf-8", "surrogatepass")
    return b.decode("utf-8", "surrogateescape")


def _hex(cp: int) -> str:
    return "\\x%02x" % cp


# --- TSV -----------------------------------------------------------------------------------------

_TSV_TABLE: dict[int, str] = {c: _hex(c) for c in range(0x20)}
_TSV_TABLE[0x7F] = _hex(0x7F)
_TSV_TABLE[ord("\\")] = "\\\\"
_TSV_TABLE.update({0xDC00 + b: _hex(b) for b in range(0x80, 0x100)})
_TSV_SET_TABLE = dict(_TSV_TABLE)
_TSV_SET_TABLE[ord(",")] = _hex(ord(","))


def _tsv_slow(s: str, table: dict[int, str]) -> str:
    if s == "-":
        return "\\x2d"
    if s == "(empty)":
        return "\\x28empty)"
    return normalize(s).translate(table)


def tsv_string(s: str) -> str:
    """A string/enum/addr/subnet cell (not inside a container)."""
    if s.isascii() and s.isprintable() and "\\" not in s and s != "-" and s != "(empty)":
        return s or "(empty)"
    return _tsv_slow(s, _TSV_TABLE) if s else "(empty)"


def tsv_set_string(s: str) -> str:
    """A string element of a set or vector: the set separator is escaped too."""
    if (s.isascii() and s.isprintable() and "\\" not in s and "," not in s
            and s != "-" and s != "(empty)"):
        return s or "(empty)"
    return _tsv_slow(s, _TSV_SET_TABLE) if s else "(empty)"


def _strip_exp(s: str) -> str:
    # sn_strip_trailing_zeros: "2.1474836480000000e+09" -> "2.147483648e+09", "3.0...0e+09" -> "3e+09"
    mant, sep, exp = s.partition("e")
    if not sep or "." not in mant:
        return s
    return mant.rstrip("0").rstrip(".") + "e" + exp


def tsv_time(v: float) -> str:
    """time/interval: fixed 6 decimals (Zeek's modp_dtoa), exponent form from 2**31-1 on."""
    if -INT_MAX < v < INT_MAX:
        return "%.6f" % (v + 0.0)  # + 0.0 turns -0.0 into 0.0 as modp does
    if v != v:
        return "nan"
    return _strip_exp("%.16e" % v)


def tsv_double(v: float) -> str:
    """double: up to 6 decimals without trailing zeros, ``.0`` on integral values (ODesc::Add)."""
    v += 0.0
    s = "%.6f" % v
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if v - v == 0.0 and -1e-9 < v - round(v) < 1e-9:  # finite and integral within 1e-9
        s += ".0"
    return s


# --- JSON ----------------------------------------------------------------------------------------

_JSON_TABLE: dict[int, str] = {c: "\\\\x%02x" % c for c in range(0x20)}
_JSON_TABLE.update({0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"})
_JSON_TABLE[0x7F] = "\\\\x7f"
_JSON_TABLE[ord('"')] = '\\"'
_JSON_TABLE[ord("\\")] = "\\\\"
_JSON_TABLE.update({0xDC00 + b: "\\\\x%02x" % b for b in range(0x80, 0x100)})


def json_string(s: str) -> str:
    """A quoted JSON string as Zeek's JSON formatter writes it."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    return '"' + normalize(s).translate(_JSON_TABLE) + '"'


def json_double(v: float) -> str:
    """A double as rapidjson writes it (shortest round-trip digits), ``null`` if not finite."""
    r = repr(v)
    if "e" not in r:
        if "n" in r:  # inf, nan
            return "null"
        return r
    # Python switches to exponent form earlier than rapidjson: re-layout the digits.
    neg = r.startswith("-")
    mant, _, exp = r.lstrip("-").partition("e")
    whole, _, frac = mant.partition(".")
    digits = (whole + frac).lstrip("0") or "0"
    kk = int(exp) + len(whole)  # 10^(kk-1) <= |v| < 10^kk
    n = len(digits)
    if n <= kk <= 21:
        out = digits + "0" * (kk - n) + ".0"
    elif 0 < kk <= 21:
        out = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        out = "0." + "0" * (-kk) + digits
    elif n == 1:
        out = digits + "e" + str(kk - 1)
    else:
        out = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return "-" + out if neg else out


"""BER (ASN.1) primitives shared by the ASN.1-based analyzers (SNMP today).

Pure functions over ``bytes``: no state, no context.  Like Zeek's ``asn1.pac`` they know
single-byte tags and definite lengths only; anything else is an :class:`ASN1Error`, which the
calling analyzer turns into a protocol violation.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ASN1Error", "TLV", "read_tlv", "children", "to_int", "to_uint", "oid_to_str",
           "MAX_SUBID_BYTES", "MAX_LENGTH_BYTES"]

#: A subidentifier of more than this many bytes needs a shift of >= 64 bits to decode
#: (7 bits per byte): Zeek rejects it with the ``asn_oid_subidentifier_too_long`` weird.
MAX_SUBID_BYTES = 10
#: Long-form length fields longer than 8 bytes cannot be represented (Zeek's ``uint64``).
MAX_LENGTH_BYTES = 8


class ASN1Error(ValueError):
    """Malformed BER input (truncated, indefinite length, length past the buffer)."""


class TLV(NamedTuple):
    tag: int
    start: int   # first content byte
    end: int     # one past the last content byte


def read_tlv(buf: bytes, off: int, end: int) -> TLV:
    """The element at ``buf[off:end]``; its content is ``buf[start:end]`` of the result."""
    if off + 2 > end:
        raise ASN1Error("truncated ASN.1 header")
    tag = buf[off]
    n = buf[off + 1]
    off += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0:
            raise ASN1Error("indefinite ASN.1 length")
        if k > MAX_LENGTH_BYTES or off + k > end:
            raise ASN1Error("bad ASN.1 long-form length")
        n = int.from_bytes(buf[off:off + k], "big")
        off += k
    if off + n > end:
        raise ASN1Error("ASN.1 length beyond data")
    return TLV(tag, off, off + n)


def children(buf: bytes, start: int, end: int, limit: int) -> list[TLV]:
    """The elements of a constructed value's content, at most ``limit`` (a resource cap)."""
    out = []
    while start < end:
        if len(out) >= limit:
            raise ASN1Error("too many ASN.1 elements")
        t = read_tlv(buf, start, end)
        out.append(t)
        start = t.end
    return out


def to_int(buf: bytes, t: TLV) -> int:
    """Two's-complement INTEGER content (empty content is 0, as in Zeek)."""
    return int.from_bytes(buf[t.start:t.end][-8:], "big", signed=True)


def to_uint(buf: bytes, t: TLV) -> int:
    return int.from_bytes(buf[t.start:t.end][-8:], "big")


def oid_to_str(content: bytes) -> tuple[str, int]:
    """Dotted text of an OBJECT IDENTIFIER's content, and the byte length of the first
    overlong subidentifier (0 if none).

    Follows Zeek's ``asn1_oid_to_val``: a trailing unterminated subidentifier or an empty
    OID gives ``""``; the first subidentifier is split into ``x.y`` by /40 and %40.  An
    overlong subidentifier (``> MAX_SUBID_BYTES`` bytes) also gives ``""``.
    """
    values = []
    v = 0
    size = 0
    for b in content:
        size += 1
        if size <= MAX_SUBID_BYTES:     # never build huge ints from hostile input
            v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            if size > MAX_SUBID_BYTES:
                return "", size
            values.append(v)
            v = 0
            size = 0
    if size or not values:
        return "", 0
    first = values[0]
    head = f"{first // 40}.{first % 40}"
    if len(values) == 1:
        return head, 0
    return head + "." + ".".join(map(str, values[1:])), 0

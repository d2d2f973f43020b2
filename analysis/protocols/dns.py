"""DNS analyzer (UDP, TCP, mDNS, LLMNR, NetBIOS-NS framing) and dns.log, with Zeek 9 semantics.

Two layers, as ``base.py`` asks:

* :func:`parse_message` is the sans-I/O parser: one whole DNS message in, one immutable
  :class:`DNSMessage` out (header, questions, answer-section records, the weirds it met).  It
  follows Zeek's ``DNS_Interpreter`` walk: names are decompressed with strictly backward
  pointers only (so a loop is impossible and the work is bounded by the message size), the name
  buffer is capped at 512 bytes, and a malformed record stops the walk of that message.
  :class:`TCPFramer` cuts a TCP stream into messages by their 2-byte length prefix.
* :class:`DNSAnalyzer` is the script layer of ``base/protocols/dns/main.zeek``: query/reply
  pairing by transaction id with Zeek's pending queues (``DNS::max_pending_msgs``,
  ``DNS::max_pending_query_ids``), the answer summaries it logs, multicast (mDNS) one-row-per
  message, and the ``log-original-query-case`` policy column.

Zeek skips the authority and additional sections by default (``dns_skip_all_auth`` and
``dns_skip_all_addl`` are ``T``) and logs only answer-section records, so the parser stops
after the answer section.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
import typing
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from analysis.logs.schema import Bool, ConnIdRecord, Count, Enum, Interval, String, log_stream, vector_of
from analysis.protocols.base import Analyzer, AnalyzerSpec, register

# -- constants (Zeek's base/protocols/dns/consts.zeek) ---------------------------------------------

QUERY_TYPES = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR", 10: "NULL",
    11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP", 18: "AFSDB",
    19: "X25", 20: "ISDN", 21: "RT", 22: "NSAP", 23: "NSAP-PTR", 24: "SIG", 25: "KEY", 26: "PX",
    27: "GPOS", 28: "AAAA", 29: "LOC", 30: "NXT", 31: "EID", 32: "NIMLOC", 33: "SRV", 34: "ATMA",
    35: "NAPTR", 36: "KX", 37: "CERT", 38: "A6", 39: "DNAME", 40: "SINK", 41: "OPT", 42: "APL",
    43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID",
    50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA", 55: "HIP", 56: "NINFO", 57: "RKEY",
    58: "TALINK", 59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB",
    65: "HTTPS", 99: "SPF", 100: "UINFO", 101: "UID", 102: "GID", 103: "UNSPEC", 104: "NID",
    105: "L32", 106: "L64", 107: "LP", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG",
    251: "IXFR", 252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "*", 256: "URI", 257: "CAA",
    32768: "TA", 32769: "DLV", 65281: "WINS", 65282: "WINS-R", 65422: "XPF", 65521: "INTEGRITY",
}
_ERR_NAMES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
              "NXRRSet", "NOTAUTH", "NOTZONE", "unassigned-11", "unassigned-12", "unassigned-13",
              "unassigned-14", "unassigned-15", "BADVERS", "BADKEY", "BADTIME", "BADMODE", "BADNAME",
              "BADALG", "BADTRUNC", "BADCOOKIE")
BASE_ERRORS = dict(enumerate(_ERR_NAMES)) | {3842: "BADSIG"}
CLASSES = {1: "C_INTERNET", 2: "C_CSNET", 3: "C_CHAOS", 4: "C_HESIOD", 254: "C_NONE", 255: "C_ANY"}
OPCODES = {0: "query", 1: "iquery", 2: "server-status", 4: "notify", 5: "dynamic-update", 6: "dso"}
NETBIOS_OPCODES = {0: "netbios-query", 5: "netbios-registration", 6: "netbios-release",
                   7: "netbios-wack", 8: "netbios-refresh"}

#: opcodes main.zeek tracks (query, notify, dynamic update); other messages are parsed, not logged
_TRACKED_OPCODES = frozenset((0, 4, 5))


def qtype_name(n: int) -> str:
    return QUERY_TYPES.get(n) or f"query-{n}"


def qclass_name(n: int) -> str:
    return CLASSES.get(n) or f"qclass-{n}"


def rcode_name(n: int) -> str:
    return BASE_ERRORS.get(n) or f"rcode-{n}"


def opcode_name(n: int, netbios: bool = False) -> str:
    if netbios:
        return NETBIOS_OPCODES.get(n) or f"netbios-opcode-{n}"
    return OPCODES.get(n) or f"opcode-{n}"


# RR types (the ones the parser gives structure to; every other type is "unknown" as in Zeek)
T_A, T_NS, T_CNAME, T_SOA, T_WKS, T_PTR, T_HINFO, T_MX, T_TXT = 1, 2, 5, 6, 11, 12, 13, 15, 16
T_AAAA, T_LOC, T_NBS, T_SRV, T_NAPTR, T_A6, T_EDNS, T_DS, T_SSHFP = 28, 29, 32, 33, 35, 38, 41, 43, 44
T_RRSIG, T_NSEC, T_DNSKEY, T_NSEC3, T_NSEC3PARAM, T_SVCB, T_HTTPS = 46, 47, 48, 50, 51, 64, 65
T_SPF, T_TSIG, T_CAA, T_BINDS = 99, 250, 257, 65534

MAX_NAME = 512          # Zeek's name buffer (u_char name[513], one byte for the terminator)
# Compression pointers followed for one name: Zeek 9's ``dns_max_compression_chain_depth``
# (default 20).  Without a cap, chains of backward pointers make a 64 KiB message cost quadratic
# time.  The weird's name is ours (Zeek's could not be checked).
MAX_POINTERS = 20
POINTER_CAP_WEIRD = "DNS_name_too_many_compression_pointers"
HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")

# -- parser events (NamedTuples: immutable and cheap to build on the hot path) -----------------


class DNSHeader(NamedTuple):
    """Zeek's ``dns_msg`` record (the header fields scripts see)."""

    id: int
    opcode: int
    rcode: int
    QR: bool
    AA: bool
    TC: bool
    RD: bool
    RA: bool
    Z: int
    num_queries: int
    num_answers: int
    num_auth: int
    num_addl: int
    is_netbios: bool = False


class Question(NamedTuple):
    query: str              # lower-cased, as Zeek normalises it
    original_query: str     # as on the wire
    qtype: int
    qclass: int


class Answer(NamedTuple):
    """One answer-section RR (Zeek's ``dns_answer``) with its type-specific ``rdata``.

    ``rdata`` by type: A/AAAA/A6 address text; NS/CNAME/PTR name; MX ``(name, preference)``;
    SOA ``(mname, rname, serial, refresh, retry, expire, minimum)``; TXT/SPF tuple of strings;
    SRV ``(target, priority, weight, port)``; CAA ``(flags, tag, value)``; DNSKEY
    ``(flags, protocol, algorithm)``; DS ``(key_tag, algorithm, digest_type)``; RRSIG
    ``(type_covered, algorithm, signer_name)``; NSEC next name; SSHFP ``(algo, fptype, hex)``;
    LOC ``(size, horiz_pre, vert_pre)``; NAPTR ``(order, preference, flags, service, regexp,
    replacement)``; others ``None``.
    """

    query: str
    qtype: int
    qclass: int
    TTL: float
    rdata: typing.Any = None


class DNSMessage(NamedTuple):
    header: DNSHeader
    length: int
    questions: tuple[Question, ...]
    answers: tuple[Answer, ...]
    weirds: tuple[tuple[str, str], ...]
    violation: str | None = None    # "DNS_Conn_count_too_large": stop analysing the connection
    confirmed: bool = False         # questions and answers parsed cleanly (Zeek's confirmation point)


class _Walk:
    """Mutable state of one message walk (weirds collected in order)."""

    __slots__ = ("buf", "n", "weirds", "p137", "max_ptr")

    def __init__(self, buf: bytes, p137: bool, max_ptr: int = MAX_POINTERS) -> None:
        self.buf = buf
        self.n = len(buf)
        self.weirds: list[tuple[str, str]] = []
        self.p137 = p137
        self.max_ptr = max_ptr

    def weird(self, name: str, addl: str = "") -> None:
        self.weirds.append((name, addl))


def _name(w: _Walk, pos: int, end: int, downcase: bool = True) -> tuple[str, int]:
    """Zeek's ExtractName: decompress the name at ``pos``; returns (name, position after it).

    A compression pointer must point before itself and the followed part may only read up to
    that pointer: every jump strictly shrinks the readable region, so loops are impossible.
    Labels reached through a pointer are always lower-cased (Zeek's recursion does so even
    for the original-case question).
    """
    buf = w.buf
    labels: list[bytes] = []
    room = MAX_NAME
    after = -1          # position after the first pointer (where the caller continues)
    jumps = 0
    lower_from = None   # index of the first label reached through a pointer
    while True:
        if pos >= end:
            break
        ln = buf[pos]
        pos += 1
        if pos >= end:
            break
        if ln == 0:
            break
        if ln & 0xC0 == 0xC0:
            ptr_at = pos - 1
            off = ((ln & 0x3F) << 8) | buf[pos]
            pos += 1
            if after < 0:
                after = pos
            if off >= ptr_at:
                w.weird("DNS_label_forward_compress_offset")
                break
            jumps += 1
            if jumps > w.max_ptr:
                w.weird(POINTER_CAP_WEIRD)
                break
            end = ptr_at
            pos = off
            if lower_from is None:
                lower_from = len(labels)
            continue
        if ln > end - pos:
            w.weird("DNS_label_len_gt_pkt")
            pos = end
            break
        if ln > 63 and not w.p137:
            w.weird("DNS_label_too_long")
            break
        if ln >= room:
            w.weird("DNS_label_len_gt_name_len")
            break
        labels.append(buf[pos:pos + ln])
        room -= ln + 1
        pos += ln
    if MAX_NAME - room >= 255:
        w.weird("DNS_NAME_too_long")
    raw = b".".join(labels)
    if downcase:
        raw = raw.lower()
    elif lower_from is not None:
        raw = b".".join(labels[:lower_from] + [lab.lower() for lab in labels[lower_from:]])
    return raw.decode("utf-8", "surrogateescape"), (after if after >= 0 else pos)


def _char_strings(w: _Walk, pos: int, rdlen: int) -> tuple[tuple[str, ...], bool]:
    """TXT/SPF character strings; (strings, complete)."""
    buf = w.buf
    out = []
    end = pos + rdlen
    while pos < end:
        size = buf[pos]
        pos += 1
        if size > end - pos:
            w.weird("DNS_TXT_char_str_past_rdlen")
            return tuple(out), False
        out.append(buf[pos:pos + size].decode("utf-8", "surrogateescape"))
        pos += size
    return tuple(out), True


def _char_string_at(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    if pos >= end:
        return "", pos
    size = buf[pos]
    s = buf[pos + 1:min(pos + 1 + size, end)]
    return s.decode("utf-8", "surrogateescape"), min(pos + 1 + size, end)


def _ip6(b: bytes) -> str:
    return str(ipaddress.IPv6Address(b))


@functools.lru_cache(maxsize=4096)
def _ip4(b: bytes) -> str:
    return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}"


_KNOWN_ALGOS = frozenset((2, 3, 4, 5, 6, 7, 8, 10, 12, 13, 14, 15, 16))
_ALGO_WEIRDS = {1: "NotRecommended_ZoneSignAlgo", 252: "Indirect_ZoneSignAlgo", 253: "PrivateDNS_ZoneSignAlgo",
                254: "PrivateOID_ZoneSignAlgo"}


def _algo_weird(w: _Walk, prefix: str, alg: int) -> None:
    """Zeek's DNSSEC algorithm weirds (DNSKEY/RRSIG): deprecated, private and unknown algorithms."""
    if alg not in _KNOWN_ALGOS:
        w.weird(prefix + _ALGO_WEIRDS.get(alg, "unknown_ZoneSignAlgo"), str(alg))


def _bitmaps(w: _Walk, pos: int, left: int, weird: str) -> int:
    """Walk NSEC/NSEC3 type bitmaps (window, length, bits); returns the position after them."""
    buf = w.buf
    n = w.n
    while left > 0 and pos < n:
        if n - pos < 2:
            return n
        win, bmlen = buf[pos], buf[pos + 1]
        pos += 2
        if bmlen == 0:
            w.weird(weird, str(win))
            break
        pos = min(n, pos + bmlen)
        left -= 2 + bmlen
    return pos


def _answer(w: _Walk, pos: int) -> tuple[Answer | None, int, bool]:
    """Parse one RR at ``pos``; returns (answer or None, new position, keep going)."""
    buf = w.buf
    n = w.n
    name, pos = _name(w, pos, n)
    left = n - pos
    if left < 4:
        w.weird("DNS_truncated_ans_too_short")
        return None, pos, False
    if left >= 10:
        atype, aclass, ttl, rdlength = _RR_FIXED.unpack_from(buf, pos)
        pos += 10
    else:   # Zeek's Extract* yield 0 when too few bytes are left
        atype, aclass = struct.unpack_from("!HH", buf, pos)
        pos += 4
        ttl = rdlength = 0
        if n - pos >= 4:
            ttl = struct.unpack_from("!I", buf, pos)[0]
            pos += 4
    left = n - pos
    if rdlength > left:
        w.weird("DNS_truncated_RR_rdlength_lt_len")
        return None, pos, False
    rd = pos
    rd_end = pos + rdlength
    rdata = None
    ok = True
    if atype == T_A:
        if rdlength != 4:
            w.weird("DNS_RR_bad_length")
            return None, pos, False
        rdata = _ip4(buf[rd:rd + 4])
        pos = rd_end
    elif atype == T_AAAA or atype == T_A6:
        if left < 16:
            w.weird("DNS_AAAA_neg_length" if atype == T_AAAA else "DNS_A6_neg_length")
            return None, pos, False
        rdata = _ip6(buf[rd:rd + 16])
        pos = rd + 16
    elif atype == T_NS or atype == T_CNAME or atype == T_PTR:
        rdata, pos = _name(w, rd, n)
        if pos != rd_end:
            w.weird("DNS_RR_length_mismatch")
    elif atype == T_MX:
        pref = struct.unpack_from("!H", buf, rd)[0] if rdlength >= 2 else 0
        target, pos = _name(w, rd + 2, n)
        rdata = (target, pref)
        if pos != rd_end:
            w.weird("DNS_RR_length_mismatch")
    elif atype == T_SOA:
        mname, pos = _name(w, rd, n)
        rname, pos = _name(w, pos, n)
        if n - pos < 20:
            return None, pos, False
        rdata = (mname, rname) + struct.unpack_from("!IIIII", buf, pos)
        pos += 20
        if pos != rd_end:
            w.weird("DNS_RR_length_mismatch")
    elif atype == T_TXT or atype == T_SPF:
        rdata, ok = _char_strings(w, rd, rdlength)
        pos = rd_end
    elif atype == T_SRV:
        if w.p137:
            # NetBIOS NBSTAT reuses the SRV number; Zeek does not parse it (nor advance)
            return Answer(name, atype, aclass, float(ttl), None), pos, True
        pri = wei = port = 0
        if rdlength >= 6:
            pri, wei, port = struct.unpack_from("!HHH", buf, rd)
        target, pos = _name(w, rd + 6, n)
        rdata = (target, pri, wei, port)
        if pos != rd_end:
            w.weird("DNS_RR_length_mismatch")
    elif atype == T_DNSKEY:
        if left < 4:
            return None, pos, False
        flags, proto, alg = struct.unpack_from("!HBB", buf, rd)
        if flags & 0xFE7E:
            w.weird("DNSSEC_DNSKEY_Invalid_Flag", str(flags))
        if flags & 0x0181 == 0x0181:
            w.weird("DNSSEC_DNSKEY_Revoked_KSK", str(flags))
        if proto != 3:
            w.weird("DNSSEC_DNSKEY_Invalid_Protocol", str(proto))
        _algo_weird(w, "DNSSEC_DNSKEY_", alg)
        rdata = (flags, proto, alg)
        pos = rd + 4 + min(left - 4, max(rdlength - 4, 0))
    elif atype == T_DS:
        if left < 4:
            return None, pos, False
        rdata = struct.unpack_from("!HBB", buf, rd)
        dt = rdata[2]
        if dt == 0:
            w.weird("DNSSEC_DS_ResrevedDigestType", "0")    # sic: Zeek's spelling
        elif dt > 4:
            w.weird("DNSSEC_DS_unknown_DigestType", str(dt))
        pos = rd + 4 + min(left - 4, max(rdlength - 4, 0))
    elif atype == T_RRSIG:
        if left < 18:
            return None, pos, False
        covered, alg = struct.unpack_from("!HB", buf, rd)
        signer, spos = _name(w, rd + 18, n)
        sig_len = rdlength - (spos - rd)
        _algo_weird(w, "DNSSEC_RRSIG_", alg)
        rdata = (covered, alg, signer)
        pos = spos + min(n - spos, max(sig_len, 0))
    elif atype == T_NSEC:
        rdata, pos = _name(w, rd, n)
        pos = _bitmaps(w, pos, rdlength - (pos - rd), "DNSSEC_NSEC_bitmapLen0")
    elif atype == T_NSEC3:
        if left < 6:
            return None, pos, False
        p = rd + 4
        salt_len = buf[p] if p < n else 0
        p = min(n, p + 1 + salt_len)
        hash_len = buf[p] if p < n else 0
        p = min(n, p + 1 + hash_len)
        pos = _bitmaps(w, p, rdlength - (p - rd), "DNSSEC_NSEC3_bitmapLen0")
    elif atype == T_NSEC3PARAM:
        if left < 5:
            return None, pos, False
        pos = min(n, rd + 5 + buf[rd + 4])
    elif atype == T_BINDS:
        if left < 5:
            return None, pos, False
        pos = rd + 4 + min(left - 4, max(rdlength - 4, 0))
    elif atype == T_SSHFP:
        if left < 2:
            return None, pos, False
        pos = rd + 2 + min(left - 2, max(rdlength - 2, 0))
        rdata = (buf[rd], buf[rd + 1], buf[rd + 2:pos].hex())
    elif atype == T_LOC:
        if left < 15:
            return None, pos, False
        if buf[rd] != 0:
            w.weird("DNS_LOC_version_unrecognized", str(buf[rd]))
        rdata = (buf[rd + 1], buf[rd + 2], buf[rd + 3])
        pos = min(n, rd + 16)
    elif atype == T_EDNS:
        pos = n     # Zeek's EDNS option walk runs to the end of the message
    elif atype == T_NAPTR:
        if rdlength >= 4:
            order, pref = struct.unpack_from("!HH", buf, rd)
            p = rd + 4
            flags, p = _char_string_at(buf, p, rd_end)
            service, p = _char_string_at(buf, p, rd_end)
            regexp, p = _char_string_at(buf, p, rd_end)
            repl, _ = _name(w, p, rd_end) if p < rd_end else ("", p)
            rdata = (order, pref, flags, service, regexp, repl)
        pos = rd_end
    elif atype == T_CAA:
        flags = buf[rd] if rdlength >= 1 else 0
        tlen = buf[rd + 1] if rdlength >= 2 else 0
        if tlen >= rdlength - 2:
            w.weird("DNS_CAA_char_str_past_rdlen")
            return None, pos, False
        tag = buf[rd + 2:rd + 2 + tlen].decode("utf-8", "surrogateescape")
        val = buf[rd + 2 + tlen:rd_end].decode("utf-8", "surrogateescape")
        rdata = (flags, tag, val)
        pos = rd_end
    elif atype in _KNOWN_OPAQUE:
        pos = rd_end
    else:
        w.weird("DNS_RR_unknown_type", str(atype))
        pos = rd_end
    return Answer(name, atype, aclass, float(ttl), rdata), pos, ok


# types Zeek parses without anything the log shows; no "unknown type" weird for them
_KNOWN_OPAQUE = frozenset((T_WKS, T_HINFO, T_NBS, T_EDNS, T_TSIG, T_NSEC3, T_NSEC3PARAM, T_BINDS,
                           T_SVCB, T_HTTPS))    # (the ones without a branch above skip their rdata)


def parse_message(data: bytes, resp_port: int = 53, max_queries: int = 25,
                  max_compression_depth: int = MAX_POINTERS) -> DNSMessage | None:
    """Parse one DNS message (a UDP datagram or one TCP-framed message).

    Returns ``None`` (with nothing to report but a weird the caller raises) when shorter than a
    header; see :data:`SHORT_MESSAGE_WEIRD`.
    """
    if len(data) < 12:
        return None
    ident, flags, qd, an, ns, ar = HEADER.unpack_from(data, 0)
    p137 = resp_port == 137
    hdr = DNSHeader(ident, (flags >> 11) & 0xF, flags & 0xF, bool(flags & 0x8000), bool(flags & 0x0400),
                    bool(flags & 0x0200), bool(flags & 0x0100), bool(flags & 0x0080), (flags >> 4) & 0x7,
                    qd, an, ns, ar, p137)
    if max_queries > 0 and qd > max_queries:
        return DNSMessage(hdr, len(data), (), (), (("DNS_Conn_count_too_large", ""),),
                          violation="DNS_Conn_count_too_large")
    w = _Walk(bytes(data), p137, max_compression_depth)
    buf = w.buf
    n = w.n
    pos = 12
    questions = []
    complete = True
    for _ in range(qd):
        raw_name, pos = _name(w, pos, n, downcase=False)
        if n - pos < 4:
            w.weird("DNS_truncated_quest_too_short")
            complete = False
            break
        qtype, qclass = struct.unpack_from("!HH", buf, pos)
        pos += 4
        questions.append(Question(raw_name.lower() if raw_name.isascii() else _lower(raw_name),
                                  raw_name, qtype, qclass))
    answers = []
    if complete:
        for _ in range(an):
            ans, pos, ok = _answer(w, pos)
            if ans is not None:
                answers.append(ans)
            if not ok:
                complete = False
                break
    return DNSMessage(hdr, n, tuple(questions), tuple(answers), tuple(w.weirds), None, complete)


def _lower(s: str) -> str:
    """ASCII-only lower-casing (C ``tolower`` in the C locale), keeping other bytes as they are."""
    return s.encode("utf-8", "surrogateescape").lower().decode("utf-8", "surrogateescape")


SHORT_MESSAGE_WEIRD = "DNS_truncated_len_lt_hdr_len"


class TCPFramer:
    """Cuts one direction of a DNS-over-TCP stream into messages (2-byte length prefix).

    Memory is bounded by the largest possible message (65535 bytes) plus one segment.
    """

    __slots__ = ("_buf", "_need")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = -1        # -1: waiting for the length prefix

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out = []
        while True:
            if self._need < 0:
                if len(buf) < 2:
                    break
                self._need = (buf[0] << 8) | buf[1]
                del buf[:2]
            if len(buf) < self._need:
                break
            out.append(bytes(buf[:self._need]))
            del buf[:self._need]
            self._need = -1
        return out

    def flush(self) -> bytes | None:
        """A partial message at end of stream (Zeek delivers it as is)."""
        if self._need >= 0 and self._buf:
            rest = bytes(self._buf)
            self._buf.clear()
            self._need = -1
            return rest
        return None

    def reset(self) -> None:
        self._buf.clear()
        self._need = -1


# -- the log record ------------------------------------------------------------------------------------


@log_stream("dns")
class DNSInfo(ConnIdRecord, kw_only=True):
    proto: Enum
    trans_id: Count | None = None
    rtt: Interval | None = None
    query: String | None = None
    qclass: Count | None = None
    qclass_name: String | None = None
    qtype: Count | None = None
    qtype_name: String | None = None
    rcode: Count | None = None
    rcode_name: String | None = None
    AA: Bool = False
    TC: Bool = False
    RD: Bool = False
    RA: Bool = False
    Z: Count = 0
    answers: vector_of("string") | None = None
    TTLs: vector_of("interval") | None = None
    rejected: Bool = False
    opcode: Count | None = None
    opcode_name: String | None = None


@functools.cache
def dns_record_type(original_query: bool = False) -> type[DNSInfo]:
    """DNSInfo, plus the ``original_query`` column of ``policy/protocols/dns/log-original-query-case``."""
    if not original_query:
        return DNSInfo
    cls = msgspec.defstruct("DNSInfoOriginalCase", [("original_query", String | None, None)],
                            bases=(DNSInfo,), kw_only=True, module=__name__)
    cls.__log_path__ = "dns"  # type: ignore[attr-defined]
    return cls


# -- options -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class DNSOptions:
    """Zeek's defaults; ``redef`` lines reach them through the ``zeek`` metadata."""

    max_pending_msgs: int = field(default=50, metadata={"zeek": "DNS::max_pending_msgs"})
    max_pending_query_ids: int = field(default=50, metadata={"zeek": "DNS::max_pending_query_ids"})
    max_queries: int = field(default=25, metadata={"zeek": "dns_max_queries"})
    max_compression_depth: int = field(default=MAX_POINTERS, metadata={"zeek": "dns_max_compression_chain_depth"})
    session_timeout: float = field(default=10.0, metadata={"zeek": "dns_session_timeout"})
    # set when policy/protocols/dns/log-original-query-case is loaded (see zeek_scripts)
    log_original_query: bool = field(default=False,
                                     metadata={"zeek_load": "protocols/dns/log-original-query-case"})


_DEFAULT_OPTIONS = DNSOptions()

# -- the analyzer (base/protocols/dns/main.zeek) -----------------------------------------------------


class _Txn:
    """One DNS::Info being built (a query, a reply, or a matched pair)."""

    __slots__ = ("ts", "trans_id", "rtt", "query", "qclass", "qtype", "rcode", "AA", "TC", "RD", "RA", "Z",
                 "answers", "TTLs", "rejected", "opcode", "netbios", "saw_query", "saw_reply",
                 "original_query", "id")

    def __init__(self, ts: float, trans_id: int, conn_id: tuple) -> None:
        self.ts = ts
        self.trans_id = trans_id
        self.id = conn_id
        self.rtt = self.query = self.qclass = self.qtype = self.rcode = self.opcode = None
        self.original_query = None
        self.AA = self.TC = self.RD = self.RA = self.rejected = False
        self.netbios = False
        self.Z = 0
        self.answers = None
        self.TTLs = None
        self.saw_query = self.saw_reply = False


def _is_multicast(addr: str) -> bool:
    """Zeek's DNS::multicast_subnets (224.0.0.0/4, ff00::/8)."""
    if ":" in addr:
        return addr[:2].lower() == "ff"
    dot = addr.find(".")
    try:
        return 224 <= int(addr[:dot]) <= 239
    except ValueError:
        return False


def decode_netbios_name(name: str) -> str:
    """Zeek's ``decode_netbios_name``: 32 'A'-based nibble characters -> up to 15 name characters."""
    label = name.split(".", 1)[0]
    if len(label) != 32:
        return ""
    raw = label.encode("utf-8", "surrogateescape").upper()
    out = bytearray()
    for i in range(0, 32, 2):
        hi, lo = raw[i] - 65, raw[i + 1] - 65
        if not (0 <= hi < 16 and 0 <= lo < 16):
            return ""
        out.append((hi << 4) | lo)
    out = out[:15].rstrip(b" \x00")
    return out.decode("utf-8", "surrogateescape")


def _fmt_strings(kind: str, strs) -> str:
    return " ".join(f"{kind} {len(s.encode('utf-8', 'surrogateescape'))} {s}" for s in strs)


def _reply_text(a: Answer, opcode: int, netbios: bool) -> str | None:
    """The summary main.zeek logs for an answer, or None when no script handles the RR type."""
    t = a.qtype
    d = a.rdata
    if t == T_A or t == T_AAAA or t == T_A6:
        if d is None:
            return None
        if opcode == 5 and not netbios:
            return f"{'A' if t == T_A else 'AAAA' if t == T_AAAA else 'A6'} {a.query} {d}"
        return d
    if t == T_NS or t == T_CNAME or t == T_PTR:
        return d
    if t == T_MX or t == T_SOA or t == T_SRV:
        return None if d is None else d[0]
    if t == T_TXT:
        return _fmt_strings("TXT", d)
    if t == T_SPF:
        return _fmt_strings("SPF", d)
    if t == T_WKS:
        return ""
    if t == T_DNSKEY:
        return None if d is None else f"DNSKEY {d[2]}"
    if t == T_DS:
        return None if d is None else f"DS {d[1]} {d[2]}"
    if t == T_RRSIG:
        return None if d is None else f"RRSIG {d[0]} {d[2] or '<Root>'}"
    if t == T_NSEC:
        return None if d is None else f"NSEC {a.query} {d}"
    if t == T_NSEC3:
        return "NSEC3"
    if t == T_NSEC3PARAM:
        return "NSEC3PARAM"
    if t == T_BINDS:
        return "BIND9 signing signal"
    if t == T_SSHFP:
        return None if d is None else f"SSHFP: {d[2]}"
    if t == T_LOC:
        return None if d is None else f"LOC:  {d[0]} {d[1]} {d[2]}"
    if t == T_NAPTR:
        if d is None:
            return None
        tail = d[4]
        if d[5]:
            tail = f"{tail} {d[5]}" if tail else d[5]
        return f"NAPTR {d[0]} {d[1]} {d[2]} {d[3]} {tail}"
    if t in _KNOWN_OPAQUE or t == T_CAA:
        return None     # HINFO, EDNS, TSIG, CAA, SVCB/HTTPS, ...: events only, nothing logged
    return f"<unknown type={t}>"


# the script events (name -> RR type), raised per answer record
_RR_EVENTS = {
    T_A: "dns_A_reply", T_AAAA: "dns_AAAA_reply", T_A6: "dns_A6_reply", T_NS: "dns_NS_reply",
    T_CNAME: "dns_CNAME_reply", T_PTR: "dns_PTR_reply", T_MX: "dns_MX_reply", T_SOA: "dns_SOA_reply",
    T_TXT: "dns_TXT_reply", T_SPF: "dns_SPF_reply", T_SRV: "dns_SRV_reply", T_CAA: "dns_CAA_reply",
    T_WKS: "dns_WKS_reply", T_HINFO: "dns_HINFO_reply", T_DNSKEY: "dns_DNSKEY", T_DS: "dns_DS",
    T_RRSIG: "dns_RRSIG", T_NSEC: "dns_NSEC", T_NSEC3: "dns_NSEC3", T_NSEC3PARAM: "dns_NSEC3PARAM",
    T_SSHFP: "dns_SSHFP", T_LOC: "dns_LOC", T_NAPTR: "dns_NAPTR_reply", T_SVCB: "dns_SVCB",
    T_HTTPS: "dns_HTTPS", T_EDNS: "dns_EDNS_addl", T_TSIG: "dns_TSIG_addl", T_BINDS: "dns_BINDS",
}

EVENTS = ("dns_message", "dns_request", "dns_rejected", "dns_query_reply", "dns_unknown_reply",
          "dns_end") + tuple(sorted(set(_RR_EVENTS.values())))


class DNSAnalyzer(Analyzer):
    """One per connection: parse messages, pair queries with replies, write dns.log rows."""

    __slots__ = ("opts", "first", "cur", "pending_query", "pending_queries", "pending_replies",
                 "framers", "dead", "confirmed", "_rec", "_event", "_conn")

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.opts = ctx.options if isinstance(getattr(ctx, "options", None), DNSOptions) else _DEFAULT_OPTIONS
        self.first = True
        self.cur: _Txn | None = None
        self.pending_query: _Txn | None = None
        self.pending_queries: dict[int, deque] | None = None
        self.pending_replies: dict[int, deque] | None = None
        self.framers: list[TCPFramer] | None = None
        self.dead = False
        self.confirmed = False
        self._rec = dns_record_type(bool(self.opts.log_original_query))
        self._event = ctx.event
        if ctx.conn.proto == "udp":
            expiry = getattr(ctx, "set_session_expiry", None)    # engine contexts; test doubles may lack it
            if expiry is not None:
                expiry(self.opts.session_timeout)
        self._conn = ctx.conn

    # -- engine entry points ----------------------------------------------------------------------
    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self.dead:
            return
        if self._conn.proto == "tcp":
            if self.framers is None:
                self.framers = [TCPFramer(), TCPFramer()]
            for msg in self.framers[0 if is_orig else 1].feed(payload):
                self._message(is_orig, msg, ts)
                if self.dead:
                    return
        else:
            self._message(is_orig, payload, ts)

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        # the length framing cannot be recovered inside a hole: drop the partial message
        if self.framers is not None:
            self.framers[0 if is_orig else 1].reset()

    def eof(self, is_orig: bool, ts: float) -> None:
        if self.framers is not None and not self.dead:
            rest = self.framers[0 if is_orig else 1].flush()
            if rest is not None:
                self._message(is_orig, rest, ts)

    def done(self, ts: float) -> None:
        """Zeek's DNS::finalize_dns: log every unmatched query and reply."""
        if self.pending_query is not None:
            self._write(self.pending_query)
            self.pending_query = None
        for table in (self.pending_queries, self.pending_replies):
            if table:
                for q in table.values():
                    for t in q:
                        self._write(t)
                table.clear()

    # -- one message ------------------------------------------------------------------------------
    def _message(self, is_orig: bool, data: bytes, ts: float) -> None:
        ctx = self.ctx
        conn = self._conn
        opts = self.opts
        msg = parse_message(data, conn.resp_p, opts.max_queries, opts.max_compression_depth)
        if msg is None:
            ctx.weird(SHORT_MESSAGE_WEIRD)
            return
        hdr = msg.header
        if self.first and hdr.QR and is_orig:
            is_orig = False
            # (UDP only here: flipping a TCP connection mid-stream would cross the reassembler's
            # directions; Zeek flips both)
            if conn.proto == "udp" and not _is_multicast(conn.resp_h):
                flip = getattr(ctx, "flip_roles", None)
                if flip is not None:
                    flip()
                    conn = self._conn = ctx.conn
        self.first = False
        event = self._event
        event("dns_message", is_orig, hdr, msg.length)
        tracked = hdr.opcode in _TRACKED_OPCODES
        if tracked:
            self._set_session(hdr, ts)
        for name, addl in msg.weirds:
            ctx.weird(name, addl)
        if msg.violation is not None:
            ctx.violation(msg.violation)
            self.dead = True
            self._end(hdr)
            return
        cur = self.cur
        for q in msg.questions:
            if not hdr.QR:
                event("dns_request", hdr, q.query, q.qtype, q.qclass, q.original_query)
                if tracked and cur is not None:
                    self._request(cur, hdr, q)
            elif hdr.num_answers == 0 and hdr.num_auth == 0 and hdr.num_addl == 0:
                event("dns_rejected", hdr, q.query, q.qtype, q.qclass, q.original_query)
                if cur is not None:
                    cur.rejected = True
            else:
                event("dns_query_reply", hdr, q.query, q.qtype, q.qclass, q.original_query)
        for a in msg.answers:
            ev = _RR_EVENTS.get(a.qtype)
            if ev is None:
                event("dns_unknown_reply", hdr, a)
            else:
                event(ev, hdr, a, a.rdata)
            if tracked and hdr.QR and cur is not None:
                reply = _reply_text(a, hdr.opcode, hdr.is_netbios)
                if reply is not None:
                    self._do_reply(cur, hdr, a, reply, ts)
        if msg.confirmed and not self.confirmed:
            self.confirmed = True
            ctx.confirm()
        self._end(hdr)

    def _end(self, hdr: DNSHeader) -> None:
        self._event("dns_end", hdr)
        cur = self.cur
        if cur is None:
            return
        if hdr.QR:
            cur.saw_reply = True
        else:
            cur.saw_query = True
        if cur.saw_reply and cur.saw_query:
            self._write(cur)
            self.cur = None

    # -- main.zeek ----------------------------------------------------------------------------------
    def _new(self, trans_id: int, ts: float) -> _Txn:
        c = self._conn
        return _Txn(ts, trans_id, (c.orig_h, c.orig_p, c.resp_h, c.resp_p))

    def _set_session(self, hdr: DNSHeader, ts: float) -> None:
        tid = hdr.id
        if _is_multicast(self._conn.resp_h):
            cur = self._new(tid, ts)
            cur.saw_query = cur.saw_reply = True
        elif not hdr.QR:
            pr = self.pending_replies
            if pr and tid in pr:
                cur = self._pop(pr, tid)
            else:
                cur = self._new(tid, ts)
                if self.pending_query is None:
                    self.pending_query = cur
                else:
                    if self.pending_queries is None:
                        self.pending_queries = {}
                    self._enqueue(self.pending_queries, tid, cur)
        else:
            pq = self.pending_queries
            if self.pending_query is not None and self.pending_query.trans_id == tid:
                cur = self.pending_query
                self.pending_query = None
                if pq:
                    # refill the fast path, preferring a query with the same id (keeps queue order)
                    key = tid if tid in pq else next(iter(pq))
                    self.pending_query = self._pop(pq, key)
            elif pq and tid in pq:
                cur = self._pop(pq, tid)
            else:
                cur = self._new(tid, ts)
                if self.pending_replies is None:
                    self.pending_replies = {}
                self._enqueue(self.pending_replies, tid, cur)
        if hdr.QR:
            cur.rcode = hdr.rcode
            if hdr.rcode != 0 and hdr.num_queries == 0:
                cur.rejected = True
        cur.opcode = hdr.opcode
        cur.netbios = hdr.is_netbios
        self.cur = cur

    def _enqueue(self, msgs: dict[int, deque], tid: int, t: _Txn) -> None:
        q = msgs.get(tid)
        if q is None:
            if len(msgs) > self.opts.max_pending_query_ids:
                # give up on all unmatched messages: log them now
                for old in msgs.values():
                    for o in old:
                        self._write(o)
                msgs.clear()
            q = msgs[tid] = deque()
        elif len(q) > self.opts.max_pending_msgs:
            for o in q:
                self._write(o)
            q.clear()
        q.append(t)

    @staticmethod
    def _pop(msgs: dict[int, deque], tid: int) -> _Txn:
        q = msgs[tid]
        t = q.popleft()
        if not q:
            del msgs[tid]
        return t

    def _request(self, cur: _Txn, hdr: DNSHeader, q: Question) -> None:
        cur.RD = hdr.RD
        cur.TC = hdr.TC
        cur.qclass = q.qclass
        cur.qtype = q.qtype
        cur.Z = hdr.Z
        query = q.query
        if hdr.is_netbios:
            decoded = decode_netbios_name(query)
            if decoded:
                query = decoded
        cur.query = query
        cur.original_query = q.original_query

    def _do_reply(self, cur: _Txn, hdr: DNSHeader, a: Answer, reply: str, ts: float) -> None:
        if cur.query is None:
            cur.query = a.query
        cur.AA = hdr.AA
        cur.RA = hdr.RA
        if cur.rtt is None:
            rtt = ts - cur.ts
            if rtt != 0.0:
                cur.rtt = rtt
        if reply:
            # (for dynamic updates this section holds prerequisites: Zeek's "add: " prefix is
            # for update-section records, which are not parsed here)
            if cur.answers is None:
                cur.answers = [reply]
                cur.TTLs = [a.TTL]
            else:
                cur.answers.append(reply)
                cur.TTLs.append(a.TTL)

    def _write(self, t: _Txn) -> None:
        c = self._conn
        oh, op, rh, rp = t.id
        qt = t.qtype
        qtn = None
        if qt is not None:
            qtn = qtype_name(qt)
            if t.netbios and qtn == "SRV":
                qtn = "NBSTAT"
        kw = {}
        if self._rec is not DNSInfo:
            kw["original_query"] = t.original_query
        rec = self._rec(
            ts=t.ts, uid=c.uid, orig_h=oh, orig_p=op, resp_h=rh, resp_p=rp, proto=c.proto,
            trans_id=t.trans_id, rtt=t.rtt, query=t.query, qclass=t.qclass,
            qclass_name=None if t.qclass is None else qclass_name(t.qclass), qtype=qt, qtype_name=qtn,
            rcode=t.rcode, rcode_name=None if t.rcode is None else rcode_name(t.rcode),
            AA=t.AA, TC=t.TC, RD=t.RD, RA=t.RA, Z=t.Z, answers=t.answers, TTLs=t.TTLs,
            rejected=t.rejected, opcode=t.opcode,
            opcode_name=None if t.opcode is None else opcode_name(t.opcode, t.netbios), **kw)
        self.ctx.write_log("dns", rec)


SPEC = register(AnalyzerSpec(
    name="dns",
    factory=DNSAnalyzer,
    transports=frozenset(("udp", "tcp")),
    ports=frozenset(((53, "udp"), (53, "tcp"), (137, "udp"), (5353, "udp"), (5355, "udp"))),
    zeek_scripts=("base/protocols/dns", "protocols/dns/log-original-query-case"),
    logs=("dns",),
    options=DNSOptions,
    events=EVENTS,
))

"""Just enough DER/X.509 for ssl.log: fingerprints, subject/issuer strings, host names.

ssl.log needs the SHA-256 of each DER certificate, the subject and issuer of the first one
(Zeek prints them with OpenSSL's RFC 2253 form: last RDN first, short attribute names,
``,+"\\<>;`` escaped) and the DNS names it covers (``sni_matches_cert``).  A full X.509 parser
is x509.log's business; this reader is small, iterative and bounded, and every malformed input
raises :class:`DERError` instead of anything else.
"""

from __future__ import annotations

import functools
import hashlib

from analysis.protocols.asn1 import ASN1Error, children, oid_to_str, read_tlv

__all__ = ["DERError", "fingerprint", "cert_names", "cert_names_cached", "name_to_str", "hostname_matches"]


DERError = ASN1Error
#: cap on elements per constructed value (RDNs, extensions, SANs): bounded work on hostile input
_MAX_ELEMENTS = 1024


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content_start, content_end) of the element at ``pos``."""
    return read_tlv(buf, pos, end)


def _children(buf: bytes, start: int, end: int):
    """(tag, content_start, content_end, element_start) of each element of a constructed value."""
    pos = start
    for t in children(buf, start, end, _MAX_ELEMENTS):
        yield t.tag, t.start, t.end, pos
        pos = t.end


def _oid(b: bytes) -> str:
    text, _ = oid_to_str(b)
    if not text:
        raise DERError("bad OID")
    return text


def fingerprint(der: bytes) -> str:
    """Zeek's default ``X509::hash_function``: SHA-256 of the DER bytes, lower-case hex."""
    return hashlib.sha256(der).hexdigest()


_SHORT = {
    "2.5.4.3": "CN", "2.5.4.4": "SN", "2.5.4.5": "serialNumber", "2.5.4.6": "C", "2.5.4.7": "L",
    "2.5.4.8": "ST", "2.5.4.9": "street", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.12": "title",
    "2.5.4.13": "description", "2.5.4.15": "businessCategory", "2.5.4.17": "postalCode",
    "2.5.4.41": "name", "2.5.4.42": "GN", "2.5.4.43": "initials", "2.5.4.44": "generationQualifier",
    "2.5.4.45": "x500UniqueIdentifier", "2.5.4.46": "dnQualifier", "2.5.4.65": "pseudonym",
    "2.5.4.72": "role", "2.5.4.97": "organizationIdentifier",
    "1.2.840.113549.1.9.1": "emailAddress", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID", "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST", "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}
_STRING_TAGS = {0x0C, 0x12, 0x13, 0x14, 0x16, 0x1A, 0x1C, 0x1E}  # UTF8, Numeric, Printable, T61, IA5, Visible, Universal, BMP


def _decode_value(tag: int, raw: bytes) -> str:
    if tag == 0x1E:
        return raw.decode("utf-16-be", "replace")
    if tag == 0x1C:
        return raw.decode("utf-32-be", "replace")
    if tag == 0x0C:
        return raw.decode("utf-8", "replace")
    return raw.decode("latin-1")


def _escape_2253(value: str) -> str:
    """OpenSSL's ASN1_STRFLGS_RFC2253 escaping: specials backslashed, controls and non-ASCII as \\XX."""
    out = []
    n = len(value)
    for i, ch in enumerate(value):
        o = ord(ch)
        if ch in ',+"\\<>;' or (i == 0 and ch in "# ") or (i == n - 1 and ch == " "):
            out.append("\\" + ch)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\{o:02X}")
        elif o > 0x7F:
            out.extend(f"\\{b:02X}" for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    return "".join(out)


def name_to_str(buf: bytes, start: int, end: int) -> str:
    """The DER Name in ``buf[start:end]`` (contents of the SEQUENCE) as OpenSSL's RFC 2253 text."""
    rdns = []
    for tag, s, e, _ in _children(buf, start, end):
        if tag != 0x31:
            raise DERError("RDN is not a SET")
        avas = []
        for t2, s2, e2, _ in _children(buf, s, e):
            if t2 != 0x30:
                raise DERError("AVA is not a SEQUENCE")
            kids = list(_children(buf, s2, e2))
            if len(kids) != 2 or kids[0][0] != 0x06:
                raise DERError("bad AVA")
            oid = _oid(buf[kids[0][1]:kids[0][2]])
            vtag, vs, ve, vpos = kids[1]
            key = _SHORT.get(oid)
            if key is None or vtag not in _STRING_TAGS:
                # unknown attribute or non-string value: OpenSSL dumps the DER as #hex
                avas.append(f"{key or oid}=#{buf[vpos:ve].hex().upper()}")
            else:
                avas.append(f"{key}={_escape_2253(_decode_value(vtag, buf[vs:ve]))}")
        rdns.append("+".join(avas))
    return ",".join(reversed(rdns))


def cert_names(der: bytes) -> tuple[str, str, str | None, tuple[str, ...]]:
    """(subject, issuer, subject CN, SAN dNSNames) of one DER certificate."""
    tag, s, e = _tlv(der, 0, len(der))
    if tag != 0x30:
        raise DERError("certificate is not a SEQUENCE")
    tag, ts, te = _tlv(der, s, e)
    if tag != 0x30:
        raise DERError("tbsCertificate is not a SEQUENCE")
    fields = list(_children(der, ts, te))
    i = 1 if fields and fields[0][0] == 0xA0 else 0  # optional [0] version
    if len(fields) < i + 6:
        raise DERError("tbsCertificate too short")
    _, iss_s, iss_e, _ = fields[i + 2]
    _, sub_s, sub_e, _ = fields[i + 4]
    issuer = name_to_str(der, iss_s, iss_e)
    subject = name_to_str(der, sub_s, sub_e)
    cn = None
    for t, s1, e1, _ in _children(der, sub_s, sub_e):
        for t2, s2, e2, _ in _children(der, s1, e1):
            kids = list(_children(der, s2, e2))
            if len(kids) == 2 and _oid(der[kids[0][1]:kids[0][2]]) == "2.5.4.3":
                cn = _decode_value(kids[1][0], der[kids[1][1]:kids[1][2]])
    sans: list[str] = []
    for t, s1, e1, _ in fields[i + 6:]:
        if t != 0xA3:
            continue
        _, xs, xe = _tlv(der, s1, e1)
        for _t, es, ee, _ in _children(der, xs, xe):
            kids = list(_children(der, es, ee))
            if not kids or _oid(der[kids[0][1]:kids[0][2]]) != "2.5.29.17":
                continue
            _, os_, oe = kids[-1][0], kids[-1][1], kids[-1][2]
            _, gs, ge = _tlv(der, os_, oe)
            for gt, g1, g2, _ in _children(der, gs, ge):
                if gt == 0x82:
                    sans.append(der[g1:g2].decode("latin-1"))
    return subject, issuer, cn, tuple(sans)


def _match(pattern: str, host: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def hostname_matches(host: str, cn: str | None, sans: tuple[str, ...]) -> bool:
    """Does ``host`` match one of the certificate's DNS names (SANs, else the subject CN)?"""
    host = host.lower().rstrip(".")
    names = sans if sans else ((cn,) if cn else ())
    return any(_match(n, host) for n in names)


@functools.lru_cache(maxsize=2048)
def cert_names_cached(der: bytes) -> tuple[str, str, str | None, tuple[str, ...]] | None:
    """:func:`cert_names` memoised (the same server certificates recur across connections);
    None for a certificate that does not parse."""
    try:
        return cert_names(der)
    except DERError:
        return None


# -- x509.log: the fields Zeek's X.509 file analyzer logs -------------------------------------------

_ALG_NAMES = {   # OpenSSL long names, as Zeek logs key_alg / sig_alg
    "1.2.840.113549.1.1.1": "rsaEncryption", "1.2.840.113549.1.1.2": "md2WithRSAEncryption",
    "1.2.840.113549.1.1.4": "md5WithRSAEncryption", "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.113549.1.1.10": "rsassaPss", "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption", "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.113549.1.1.14": "sha224WithRSAEncryption", "1.2.840.10045.2.1": "id-ecPublicKey",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1", "1.2.840.10045.4.3.1": "ecdsa-with-SHA224",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256", "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.10045.4.3.4": "ecdsa-with-SHA512", "1.2.840.10040.4.1": "dsaEncryption",
    "1.2.840.10040.4.3": "dsaWithSHA1", "2.16.840.1.101.3.4.3.1": "dsa_with_SHA224",
    "2.16.840.1.101.3.4.3.2": "dsa_with_SHA256", "1.3.101.112": "ED25519", "1.3.101.113": "ED448",
    "1.2.840.113549.1.3.1": "dhKeyAgreement",
}
_CURVES = {  # OpenSSL short name, degree in bits
    "1.2.840.10045.3.1.7": ("prime256v1", 256), "1.3.132.0.34": ("secp384r1", 384),
    "1.3.132.0.35": ("secp521r1", 521), "1.2.840.10045.3.1.1": ("prime192v1", 192),
    "1.3.132.0.33": ("secp224r1", 224), "1.3.132.0.10": ("secp256k1", 256),
    "1.3.36.3.3.2.8.1.1.7": ("brainpoolP256r1", 256), "1.3.36.3.3.2.8.1.1.11": ("brainpoolP384r1", 384),
    "1.3.36.3.3.2.8.1.1.13": ("brainpoolP512r1", 512),
}
_KEY_TYPES = {"1.2.840.113549.1.1.1": "rsa", "1.2.840.113549.1.1.10": "rsa", "1.2.840.10040.4.1": "dsa",
              "1.2.840.10045.2.1": "ecdsa", "1.2.840.113549.1.3.1": "dh"}


def _time(der: bytes, t) -> float:
    import calendar

    text = der[t.start:t.end].decode("ascii")
    if t.tag == 0x17:                      # UTCTime YYMMDDHHMM[SS]Z
        yy = int(text[0:2])
        year, rest = (2000 + yy if yy < 50 else 1900 + yy), text[2:]
    elif t.tag == 0x18:                    # GeneralizedTime YYYYMMDDHHMM[SS]Z
        year, rest = int(text[0:4]), text[4:]
    else:
        raise DERError("bad time")
    rest = rest.rstrip("Z")
    sec = int(rest[8:10]) if len(rest) >= 10 else 0
    return float(calendar.timegm((year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]), int(rest[6:8]), sec)))


def _serial(raw: bytes) -> str:
    neg = bool(raw) and raw[0] & 0x80
    if neg:
        raw = (-int.from_bytes(raw, "big", signed=True)).to_bytes(len(raw), "big")
    raw = raw.lstrip(b"\x00") or b"\x00"
    return ("-" if neg else "") + raw.hex().upper()


def _ip(b: bytes) -> str | None:
    import ipaddress

    if len(b) in (4, 16):
        return str(ipaddress.ip_address(b))
    return None


@functools.lru_cache(maxsize=2048)
def cert_details(der: bytes) -> dict | None:
    """x509.log's ``certificate.*``, ``san.*`` and ``basic_constraints.*`` values of one DER
    certificate (None when it does not parse): Zeek's X509 file analyzer, memoised."""
    try:
        return _details(der)
    except (DERError, ValueError, UnicodeDecodeError, IndexError, OverflowError):
        return None


def _details(der: bytes) -> dict:
    top = read_tlv(der, 0, len(der))
    cert = children(der, top.start, top.end, _MAX_ELEMENTS)
    if len(cert) < 3:
        raise DERError("certificate has fewer than 3 parts")
    tbs = children(der, cert[0].start, cert[0].end, _MAX_ELEMENTS)
    i = 0
    version = 1
    if tbs and tbs[0].tag == 0xA0:
        v = read_tlv(der, tbs[0].start, tbs[0].end)
        version = int.from_bytes(der[v.start:v.end], "big") + 1
        i = 1
    serial, _sig, iss, validity, sub, spki = tbs[i:i + 6]
    out: dict = {
        "version": version, "serial": _serial(der[serial.start:serial.end]),
        "issuer": name_to_str(der, iss.start, iss.end), "subject": name_to_str(der, sub.start, sub.end),
    }
    nb, na = children(der, validity.start, validity.end, 4)[:2]
    out["not_valid_before"], out["not_valid_after"] = _time(der, nb), _time(der, na)
    sig_alg = children(der, cert[1].start, cert[1].end, 8)
    oid = _oid(der[sig_alg[0].start:sig_alg[0].end])
    out["sig_alg"] = _ALG_NAMES.get(oid, oid)
    alg, key = children(der, spki.start, spki.end, 4)[:2]
    alg_parts = children(der, alg.start, alg.end, 4)
    koid = _oid(der[alg_parts[0].start:alg_parts[0].end])
    out["key_alg"] = _ALG_NAMES.get(koid, koid)
    ktype = _KEY_TYPES.get(koid)
    out["key_type"] = ktype
    bits = der[key.start + 1:key.end]      # BIT STRING content after the unused-bits byte
    if ktype == "rsa":
        rsa = read_tlv(bits, 0, len(bits))
        mod, exp = children(bits, rsa.start, rsa.end, 4)[:2]
        out["key_length"] = int.from_bytes(bits[mod.start:mod.end], "big").bit_length()
        out["exponent"] = str(int.from_bytes(bits[exp.start:exp.end], "big"))
    elif ktype == "ecdsa" and len(alg_parts) > 1 and alg_parts[1].tag == 0x06:
        coid = _oid(der[alg_parts[1].start:alg_parts[1].end])
        name, degree = _CURVES.get(coid, (coid, None))
        out["curve"], out["key_length"] = name, degree
    elif ktype in ("dsa", "dh") and len(alg_parts) > 1 and alg_parts[1].tag == 0x30:
        p = children(der, alg_parts[1].start, alg_parts[1].end, 4)[0]
        out["key_length"] = int.from_bytes(der[p.start:p.end], "big").bit_length()
    for ext_wrap in tbs[i + 6:]:
        if ext_wrap.tag != 0xA3:
            continue
        exts = read_tlv(der, ext_wrap.start, ext_wrap.end)
        for ext in children(der, exts.start, exts.end, _MAX_ELEMENTS):
            parts = children(der, ext.start, ext.end, 4)
            eoid = _oid(der[parts[0].start:parts[0].end])
            val = parts[-1]
            if eoid == "2.5.29.19":                         # basicConstraints
                bc = read_tlv(der, val.start, val.end)
                ca, path_len = False, None
                for t in children(der, bc.start, bc.end, 4):
                    if t.tag == 0x01:
                        ca = der[t.start:t.end] != b"\x00"
                    elif t.tag == 0x02:
                        path_len = int.from_bytes(der[t.start:t.end], "big")
                out["ca"], out["path_len"] = ca, path_len
            elif eoid == "2.5.29.17":                       # subjectAltName
                gn = read_tlv(der, val.start, val.end)
                dns, uri, email, ips = [], [], [], []
                for t in children(der, gn.start, gn.end, _MAX_ELEMENTS):
                    raw = der[t.start:t.end]
                    if t.tag == 0x82:
                        dns.append(raw.decode("utf-8", "surrogateescape"))
                    elif t.tag == 0x86:
                        uri.append(raw.decode("utf-8", "surrogateescape"))
                    elif t.tag == 0x81:
                        email.append(raw.decode("utf-8", "surrogateescape"))
                    elif t.tag == 0x87:
                        a = _ip(raw)
                        if a:
                            ips.append(a)
                out["san_dns"], out["san_uri"] = dns or None, uri or None
                out["san_email"], out["san_ip"] = email or None, ips or None
    return out

"""Sans-I/O SSL/TLS parser: stream bytes per direction in, small immutable events out.

It follows the shape of Zeek's binpac SSL analyzer: a record layer (with reassembly of records
split across TCP segments, SSLv2 hellos, and per-direction "encrypted" state switched by
ChangeCipherSpec — or, for TLS 1.3, by the first application-data record), and a handshake layer
that reassembles handshake messages spanning records.  Encrypted records are skipped by length
without buffering them.  ``established`` is decided here exactly as Zeek does: the first
encrypted record seen once both sides have switched to encryption.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from analysis.protocols.ssl import consts as K

__all__ = [
    "TLSParser", "ClientHello", "ServerHello", "HandshakeMsg", "Certificates", "ECDHParams",
    "CertificateRequest", "ChangeCipherSpec", "Alert", "Heartbeat", "Encrypted", "Plaintext",
    "Established", "Violation",
]


class ClientHello(NamedTuple):
    version: int
    record_version: int
    random: bytes
    session_id: bytes
    ciphers: tuple
    comp_methods: tuple
    extensions: tuple          # ((code, bytes), ...) in wire order


class ServerHello(NamedTuple):
    version: int
    record_version: int
    random: bytes
    session_id: bytes
    cipher: int
    comp_method: int
    extensions: tuple


class HandshakeMsg(NamedTuple):
    is_orig: bool
    msg_type: int
    length: int


class Certificates(NamedTuple):
    is_orig: bool
    certs: tuple               # DER bytes, leaf first


class ECDHParams(NamedTuple):
    curve: int
    point: bytes


class CertificateRequest(NamedTuple):
    is_orig: bool
    cert_types: tuple
    sig_algs: tuple            # ((hash, sig), ...) for TLS 1.2
    cas: tuple                 # DER Names (full SEQUENCE elements)


class ChangeCipherSpec(NamedTuple):
    is_orig: bool


class Alert(NamedTuple):
    is_orig: bool
    level: int
    desc: int


class Heartbeat(NamedTuple):
    is_orig: bool
    length: int
    type: int
    payload_length: int


class Encrypted(NamedTuple):
    is_orig: bool
    record_version: int
    content_type: int
    length: int


class Plaintext(NamedTuple):
    is_orig: bool
    record_version: int
    content_type: int
    length: int


class Established(NamedTuple):
    pass


class Violation(NamedTuple):
    reason: str


ESTABLISHED = Established()
_TLS13ISH_SKIP = K.PRE_TLS13
_HH = struct.Struct(">HH")
MAX_HANDSHAKE = 1 << 20      # one handshake message (certificate chains are far below this)


class TLSParser:
    """One connection's TLS state.  ``feed`` returns the events of one delivery, in order."""

    __slots__ = ("_buf", "_skip", "_hs", "record_version", "encrypted", "negotiated", "established",
                 "stopped", "cipher", "max_handshake")
    DTLS = False          # DTLS client hellos carry a cookie after the session id

    def __init__(self, max_handshake: int = MAX_HANDSHAKE) -> None:
        self._buf = [b"", b""]          # [resp, orig] partial record bytes
        self._skip = [0, 0]             # encrypted bytes still to skip per direction
        self._hs = [b"", b""]           # partial handshake message bytes per direction
        self.record_version: int | None = None
        self.encrypted = [False, False]
        self.negotiated: int | None = None
        self.established = False
        self.stopped = False            # after a violation nothing more is parsed
        self.cipher: int | None = None
        self.max_handshake = max_handshake

    # -- record layer --------------------------------------------------------------------------

    def feed(self, is_orig: bool, data: bytes) -> list:
        out: list = []
        if self.stopped or not data:
            return out
        d = 1 if is_orig else 0
        skip = self._skip[d]
        if skip:
            if skip >= len(data):
                self._skip[d] = skip - len(data)
                return out
            data = data[skip:]
            self._skip[d] = 0
        if self._buf[d]:
            data = self._buf[d] + data
            self._buf[d] = b""
        pos, n = 0, len(data)
        while n - pos >= 5 and not self.stopped:
            h0 = data[pos]
            if self.record_version is None and h0 & 0x80 or self.record_version == K.SSLv2:
                used = self._v2_record(is_orig, data, pos, n, out)
                if used == 0:
                    break
                pos += used
                continue
            version = (data[pos + 1] << 8) | data[pos + 2]
            if version not in K.RECORD_VERSIONS:
                where = "late in" if self.record_version is not None else "in"
                return self._violate(out, f"Invalid version {where} TLS connection. Packet reported version: {version}")
            if self.record_version is None:
                if not 20 <= h0 <= 30:
                    return self._violate(out, f"Invalid type in TLS connection. Version: {version}, Type: {h0}")
                self.record_version = version
            length = (data[pos + 3] << 8) | data[pos + 4]
            if self._is_encrypted(d, h0):
                out.append(Encrypted(is_orig, version, h0, length))
                if not self.established and self.encrypted[0] and self.encrypted[1]:
                    self.established = True
                    out.append(ESTABLISHED)
                end = pos + 5 + length
                if end > n:
                    self._skip[d] = end - n
                    pos = n
                    break
                pos = end
                continue
            end = pos + 5 + length
            if end > n:
                break
            self._plaintext(is_orig, version, h0, data[pos + 5:end], out)
            pos = end
        if pos < n and not self.stopped:
            self._buf[d] = data[pos:]
        return out

    def _is_encrypted(self, d: int, content_type: int) -> bool:
        if self.encrypted[d]:
            return True
        if content_type != K.APPLICATION_DATA or self.negotiated is None or self.negotiated in _TLS13ISH_SKIP:
            return False
        self.encrypted[d] = True   # TLS 1.3: the first application data record is encrypted
        return True

    def _violate(self, out: list, reason: str) -> list:
        self.stopped = True
        self._buf = [b"", b""]
        self._hs = [b"", b""]
        out.append(Violation(reason))
        return out

    def _plaintext(self, is_orig: bool, version: int, ctype: int, body: bytes, out: list) -> None:
        if ctype == K.HANDSHAKE:
            self._handshake(is_orig, version, body, out)
        elif ctype == K.CHANGE_CIPHER_SPEC:
            out.append(Plaintext(is_orig, version, ctype, len(body)))
            out.append(ChangeCipherSpec(is_orig))
            self.encrypted[1 if is_orig else 0] = True
        elif ctype == K.ALERT:
            out.append(Plaintext(is_orig, version, ctype, len(body)))
            if len(body) >= 2:
                out.append(Alert(is_orig, body[0], body[1]))
        elif ctype == K.HEARTBEAT:
            out.append(Plaintext(is_orig, version, ctype, len(body)))
            if len(body) >= 3:
                out.append(Heartbeat(is_orig, len(body), body[0], (body[1] << 8) | body[2]))
        elif ctype == K.APPLICATION_DATA:
            out.append(Plaintext(is_orig, version, ctype, len(body)))
        else:
            self._violate(out, f"unknown SSL record type ({ctype}) from {'originator' if is_orig else 'responder'}")

    # -- SSLv2 -----------------------------------------------------------------------------------

    def _v2_record(self, is_orig: bool, data: bytes, pos: int, n: int, out: list) -> int:
        h0, h1, h2 = data[pos], data[pos + 1], data[pos + 2]
        if not h0 & 0x80:
            self._violate(out, f"Invalid headers in SSL connection. Head1: {h1}, head2: {h2}, head3: {data[pos + 3]}")
            return 0
        total = 2 + (((h0 & 0x7F) << 8) | h1)
        if total < 5:
            self._violate(out, "SSLv2 record too short")
            return 0
        d = 1 if is_orig else 0
        if self.encrypted[d]:
            out.append(Encrypted(is_orig, K.SSLv2, h2 + 300, total - 5))
            if total > n - pos:
                self._skip[d] = total - (n - pos)
                return n - pos
            return total
        if total > n - pos:
            return 0
        rec = data[pos:pos + total]
        h3, h4 = rec[3], rec[4]
        body = rec[5:]
        try:
            if self.record_version is None:
                if h2 == 0x01 and is_orig:
                    version = (h3 << 8) | h4
                    if version not in (K.SSLv2, K.SSLv3, K.TLSv10, K.TLSv11, K.TLSv12):
                        self._violate(out, f"Invalid version in SSL client hello. Version: {version}")
                        return 0
                    self._v2_client_hello(version, body, out)
                    return total
                if h2 == 0x04 and h4 < 2 and not is_orig:
                    self.record_version = K.SSLv2
                    self._v2_server_hello(body, out)
                    return total
                self._violate(out, f"Invalid headers in SSL connection. Head1: {h1}, head2: {h2}, head3: {h3}")
                return 0
            if h2 == 0x02 and is_orig:       # client master key: both sides encrypt from here
                self.encrypted = [True, True]
                if not self.established:
                    self.established = True
                    out.append(ESTABLISHED)
            elif h2 == 0x00:
                out.append(Alert(is_orig, 2, (h3 << 8) | h4))
            return total
        except (IndexError, ValueError):
            self._violate(out, "malformed SSLv2 record")
            return 0

    def _v2_client_hello(self, version: int, body: bytes, out: list) -> None:
        cs_len = (body[0] << 8) | body[1]
        sid_len = (body[2] << 8) | body[3]
        ch_len = (body[4] << 8) | body[5]
        p = 6
        if p + cs_len + sid_len + ch_len > len(body):
            raise ValueError("truncated")
        ciphers = tuple(int.from_bytes(body[i:i + 3], "big") for i in range(p, p + cs_len - cs_len % 3, 3))
        p += cs_len
        sid = body[p:p + sid_len]
        p += sid_len
        challenge = body[p:p + ch_len]
        # SSLv2 hellos raise the hello events but no ssl_handshake_message (no history letter)
        out.append(ClientHello(version, K.SSLv2, challenge, sid, ciphers, (), ()))

    def _v2_server_hello(self, body: bytes, out: list) -> None:
        version = (body[0] << 8) | body[1]
        cert_len = (body[2] << 8) | body[3]
        ciph_len = (body[4] << 8) | body[5]
        cid_len = (body[6] << 8) | body[7]
        p = 8
        cert = body[p:p + cert_len]
        p += cert_len
        ciphers = [int.from_bytes(body[i:i + 3], "big") for i in range(p, p + ciph_len - ciph_len % 3, 3)]
        p += ciph_len
        conn_id = body[p:p + cid_len]
        if version != K.SSLv2:
            self._violate(out, f"Invalid version in SSL server hello. Version: {version}")
            return
        self.negotiated = K.SSLv2
        self.cipher = ciphers[0] if ciphers else 0
        out.append(ServerHello(version, K.SSLv2, conn_id, b"", self.cipher, 0, ()))
        if cert:
            out.append(Certificates(False, (bytes(cert),)))

    # -- handshake layer -------------------------------------------------------------------------

    def _handshake(self, is_orig: bool, rv: int, body: bytes, out: list) -> None:
        d = 1 if is_orig else 0
        buf = self._hs[d] + body if self._hs[d] else body
        p, n = 0, len(buf)
        while n - p >= 4:
            mtype = buf[p]
            mlen = (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]
            if mlen > self.max_handshake:
                self._violate(out, f"handshake message too large ({mlen} bytes)")
                return
            if p + 4 + mlen > n:
                break
            msg = buf[p + 4:p + 4 + mlen]
            p += 4 + mlen
            try:
                self._message(is_orig, rv, mtype, msg, out)
            except (IndexError, ValueError) as e:
                self._violate(out, f"malformed handshake message type {mtype}: {e or 'truncated'}")
                return
            if self.stopped:
                return
        self._hs[d] = buf[p:] if p < n else b""

    def _message(self, is_orig: bool, rv: int, mtype: int, m: bytes, out: list) -> None:
        if mtype == K.CLIENT_HELLO and is_orig:
            out.append(_client_hello(rv, m, self.DTLS))
        elif mtype == K.SERVER_HELLO and not is_orig:
            sh = _server_hello(rv, m)
            self.cipher = sh.cipher
            self.negotiated = sh.version
            for code, val in sh.extensions:
                if code == K.EXT_SUPPORTED_VERSIONS and len(val) == 2:
                    self.negotiated = (val[0] << 8) | val[1]
            out.append(sh)
        elif mtype == K.CERTIFICATE:
            certs = _certificates(m, self.negotiated)
            if certs is not None:
                out.append(Certificates(is_orig, certs))
        elif mtype == K.SERVER_KEY_EXCHANGE and not is_orig:
            name = K.cipher_name(self.cipher) if self.cipher is not None else ""
            if "ECDH" in name and len(m) >= 4 and m[0] == 3:
                plen = m[3]
                out.append(ECDHParams((m[1] << 8) | m[2], m[4:4 + plen]))
        elif mtype == K.CERTIFICATE_REQUEST and not is_orig:
            out.append(_cert_request(is_orig, m, self.negotiated))
        out.append(HandshakeMsg(is_orig, mtype, len(m)))


# -- message bodies (pure functions; IndexError/ValueError on truncation) ---------------------------

def _u16(b: bytes, p: int) -> int:
    if p + 2 > len(b):
        raise IndexError
    return (b[p] << 8) | b[p + 1]


def _extensions(m: bytes, p: int) -> tuple:
    if p + 2 > len(m):
        return ()
    end = p + 2 + ((m[p] << 8) | m[p + 1])
    if end > len(m):
        raise ValueError("extensions overrun the message")
    p += 2
    exts = []
    unpack = _HH.unpack_from
    while p + 4 <= end:
        code, ln = unpack(m, p)
        p += 4
        if p + ln > end:
            raise ValueError("extension overruns the list")
        exts.append((code, m[p:p + ln]))
        p += ln
    return tuple(exts)


def _client_hello(rv: int, m: bytes, dtls: bool = False) -> ClientHello:
    version = _u16(m, 0)
    random = m[2:34]
    p = 34
    sid_len = m[p]
    sid = m[p + 1:p + 1 + sid_len]
    p += 1 + sid_len
    if dtls:
        p += 1 + m[p]      # cookie
    cs_len = _u16(m, p)
    p += 2
    if p + cs_len > len(m):
        raise ValueError("cipher list overruns the message")
    ciphers = struct.unpack_from(f">{cs_len // 2}H", m, p)
    p += cs_len
    comp_len = m[p]
    comps = tuple(m[p + 1:p + 1 + comp_len])
    p += 1 + comp_len
    return ClientHello(version, rv, random, sid, ciphers, comps, _extensions(m, p))


def _server_hello(rv: int, m: bytes) -> ServerHello:
    version = _u16(m, 0)
    random = m[2:34]
    if len(random) < 32:
        raise ValueError("short random")
    p = 34
    if version >> 8 == 0x7F and (version & 0xFF) < 22:
        # early TLS 1.3 drafts: no session id, no compression
        return ServerHello(version, rv, random, b"", _u16(m, p), 0, _extensions(m, p + 2))
    sid_len = m[p]
    sid = m[p + 1:p + 1 + sid_len]
    p += 1 + sid_len
    cipher = _u16(m, p)
    comp = m[p + 2]
    return ServerHello(version, rv, random, sid, cipher, comp, _extensions(m, p + 3))


def _certificates(m: bytes, negotiated: int | None) -> tuple | None:
    p = 0
    if negotiated is not None and negotiated not in K.PRE_TLS13:
        p = 1 + m[0]           # TLS 1.3: certificate_request_context
        entry_ext = True
    else:
        entry_ext = False
    total = (m[p] << 16) | (m[p + 1] << 8) | m[p + 2]
    p += 3
    end = min(len(m), p + total)
    certs = []
    while p + 3 <= end:
        ln = (m[p] << 16) | (m[p + 1] << 8) | m[p + 2]
        p += 3
        if p + ln > end:
            raise ValueError("certificate overruns the list")
        certs.append(bytes(m[p:p + ln]))
        p += ln
        if entry_ext:
            p += 2 + _u16(m, p)
    return tuple(certs)


def _cert_request(is_orig: bool, m: bytes, negotiated: int | None) -> CertificateRequest:
    n_types = m[0]
    types = tuple(m[1:1 + n_types])
    p = 1 + n_types
    algs: tuple = ()
    if negotiated == K.TLSv12 or negotiated == K.DTLSv12:
        ln = _u16(m, p)
        p += 2
        algs = tuple((m[i], m[i + 1]) for i in range(p, p + ln - 1, 2))
        p += ln
    total = _u16(m, p)
    p += 2
    end = min(len(m), p + total)
    cas = []
    while p + 2 <= end:
        ln = _u16(m, p)
        p += 2
        cas.append(bytes(m[p:p + ln]))
        p += ln
    return CertificateRequest(is_orig, types, algs, tuple(cas))

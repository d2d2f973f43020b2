"""Names Zeek gives SSL/TLS protocol numbers (``SSL::version_strings``, alerts, curves...).

Unknown values render as ``unknown-<n>`` exactly like the ``&default`` functions of Zeek's
``base/protocols/ssl/consts.zeek``; TLS 1.3 draft versions (0x7fNN) as ``TLSv13-draft<NN>``.
"""

from __future__ import annotations

from analysis.protocols.ssl.ciphers import CIPHERS

SSLv2, SSLv3, TLSv10, TLSv11, TLSv12, TLSv13 = 0x0002, 0x0300, 0x0301, 0x0302, 0x0303, 0x0304
DTLSv10, DTLSv12, DTLSv13 = 0xFEFF, 0xFEFD, 0xFEFC
#: record-layer versions accepted on the wire (Zeek's determine_ssl_record_layer)
RECORD_VERSIONS = frozenset({SSLv3, TLSv10, TLSv11, TLSv12})
#: versions for which application data before CCS is *not* TLS 1.3-style encrypted data
PRE_TLS13 = frozenset({SSLv2, SSLv3, TLSv10, TLSv11, TLSv12, 0xFEFF, 0xFEFD})   # + DTLS 1.0/1.2

_VERSIONS = {SSLv2: "SSLv2", SSLv3: "SSLv3", TLSv10: "TLSv10", TLSv11: "TLSv11", TLSv12: "TLSv12",
             TLSv13: "TLSv13", DTLSv10: "DTLSv10", DTLSv12: "DTLSv12", DTLSv13: "DTLSv13"}

# content types
CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT = 20, 21, 22, 23, 24

# handshake message types
HELLO_REQUEST, CLIENT_HELLO, SERVER_HELLO, HELLO_VERIFY_REQUEST, SESSION_TICKET = 0, 1, 2, 3, 4
END_OF_EARLY_DATA, HELLO_RETRY_REQUEST, ENCRYPTED_EXTENSIONS = 5, 6, 8
CERTIFICATE, SERVER_KEY_EXCHANGE, CERTIFICATE_REQUEST, SERVER_HELLO_DONE = 11, 12, 13, 14
CERTIFICATE_VERIFY, CLIENT_KEY_EXCHANGE, FINISHED = 15, 16, 20
CERTIFICATE_URL, CERTIFICATE_STATUS, SUPPLEMENTAL_DATA, KEY_UPDATE, MESSAGE_HASH = 21, 22, 23, 24, 254

#: ssl_history letter per handshake message type (lower case; client-sent letters are upper-cased)
HISTORY_LETTERS = {
    HELLO_REQUEST: "h", CLIENT_HELLO: "c", SERVER_HELLO: "s", HELLO_VERIFY_REQUEST: "v",
    SESSION_TICKET: "t", END_OF_EARLY_DATA: "e", HELLO_RETRY_REQUEST: "j", ENCRYPTED_EXTENSIONS: "o",
    CERTIFICATE: "x", SERVER_KEY_EXCHANGE: "k", CERTIFICATE_REQUEST: "r", SERVER_HELLO_DONE: "n",
    CERTIFICATE_VERIFY: "y", CLIENT_KEY_EXCHANGE: "g", FINISHED: "f", CERTIFICATE_URL: "w",
    CERTIFICATE_STATUS: "u", SUPPLEMENTAL_DATA: "a", KEY_UPDATE: "p", MESSAGE_HASH: "m",
}

# extensions
EXT_SERVER_NAME, EXT_SUPPORTED_GROUPS, EXT_ALPN, EXT_SESSION_TICKET = 0, 10, 16, 35
EXT_PRE_SHARED_KEY, EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE, EXT_KEY_SHARE_OLD = 41, 43, 51, 40

#: the server_random of a TLS 1.3 HelloRetryRequest (RFC 8446 4.1.3)
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

_ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 21: "decryption_failed",
    22: "record_overflow", 30: "decompression_failure", 40: "handshake_failure", 41: "no_certificate",
    42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
    45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca",
    49: "access_denied", 50: "decode_error", 51: "decrypt_error", 60: "export_restriction",
    70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
    86: "inappropriate_fallback", 90: "user_canceled", 100: "no_renegotiation",
    110: "unsupported_extension", 111: "certificate_unobtainable", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 114: "bad_certificate_hash_value",
    115: "unknown_psk_identity", 116: "certificate_required", 120: "no_application_protocol",
}

_CURVES = {
    1: "sect163k1", 2: "sect163r1", 3: "sect163r2", 4: "sect193r1", 5: "sect193r2", 6: "sect233k1",
    7: "sect233r1", 8: "sect239k1", 9: "sect283k1", 10: "sect283r1", 11: "sect409k1", 12: "sect409r1",
    13: "sect571k1", 14: "sect571r1", 15: "secp160k1", 16: "secp160r1", 17: "secp160r2",
    18: "secp192k1", 19: "secp192r1", 20: "secp224k1", 21: "secp224r1", 22: "secp256k1",
    23: "secp256r1", 24: "secp384r1", 25: "secp521r1", 26: "brainpoolP256r1", 27: "brainpoolP384r1",
    28: "brainpoolP512r1", 29: "x25519", 30: "x448", 256: "ffdhe2048", 257: "ffdhe3072",
    258: "ffdhe4096", 259: "ffdhe6144", 260: "ffdhe8192", 0xFF01: "arbitrary_explicit_prime_curves",
    0xFF02: "arbitrary_explicit_char2_curves",
}
for _g in range(16):  # GREASE values (RFC 8701)
    _v = (_g << 12) | 0x0A00 | (_g << 4) | 0x0A
    _CURVES[_v] = f"grease_0x{_v:04X}"


def version_name(v: int) -> str:
    name = _VERSIONS.get(v)
    if name is not None:
        return name
    if v // 0xFF == 0x7F:
        return f"TLSv13-draft{v % 0x7F}"
    return f"unknown-{v}"


def cipher_name(c: int) -> str:
    return CIPHERS.get(c) or f"unknown-{c}"


def alert_name(d: int) -> str:
    return _ALERTS.get(d) or f"unknown-{d}"


def curve_name(c: int) -> str:
    return _CURVES.get(c) or f"unknown-{c}"

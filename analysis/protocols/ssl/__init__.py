"""SSL/TLS analyzer: ssl.log as Zeek 9 writes it (``base/protocols/ssl`` + ``files.zeek``).

The parser (:mod:`.parser`) turns bytes into events; :class:`SSLAnalyzer` applies the logic of
Zeek's ``main.zeek`` to them: version (``supported_versions`` overrides the hello), cipher, curve
(ECDHE params or the server's key_share), SNI, ALPN, resumption, last alert, ``ssl_history``
letters (client upper case), and on ``ssl_established`` (or when the connection ends) writes the
row with the certificate fingerprints (``cert_chain_fps``), optionally subject/issuer, and
``sni_matches_cert``.  Like Zeek with ``SSL::disable_analyzer_after_detection`` it stops looking
at the connection once the session is established.

Every certificate is a file in Zeek (file analysis, X509 analyzer) with a file id ``F...``; here
each certificate gets one from the engine's id generator (``ctx.uid_for("F")``, as HTTP/SMTP/FTP
files do).  Zeek logs it nowhere by default (x509.log has no file id column and
``X509::log_x509_in_files_log`` is F, so no files.log row); scripts read it from the records:
``X509Info.fuid`` and the ssl record's ``cert_chain_fuids`` / ``client_cert_chain_fuids`` (Zeek's
``c$ssl$cert_chain[i]$fuid``).  Those are attributes, not fields, of records declared with
msgspec's ``dict=True``: the writers and the wire encoding see only fields, so the logs are unchanged.
"""

from __future__ import annotations

import functools
import re
import typing
from dataclasses import dataclass, field as dc_field
from typing import ClassVar

import msgspec

from analysis.logs.schema import (
    Bool, ConnIdRecord, Count, LogRecord, String, Time, field, log_stream, vector_of,
)
from analysis.protocols.base import Analyzer, AnalyzerContext, AnalyzerSpec, register
from analysis.protocols.ssl import consts as K
from analysis.protocols.ssl import parser as P
from analysis.protocols.ssl import x509
from analysis.protocols.ssl.dtls import DTLSParser

__all__ = ["SSLInfo", "SSLOptions", "SSLAnalyzer", "DTLSAnalyzer", "ssl_record_type", "SPEC", "DTLS_SPEC"]


@log_stream("ssl")
class SSLInfo(ConnIdRecord, kw_only=True, dict=True):
    """Zeek 9's ssl.log; ``ssl_record_type`` gives the record type actually written."""

    version: String | None = None
    cipher: String | None = None
    curve: String | None = None
    server_name: String | None = None
    resumed: Bool = False
    last_alert: String | None = None
    next_protocol: String | None = None
    established: Bool = False
    ssl_history: String = ""
    cert_chain_fps: vector_of("string") | None = None
    client_cert_chain_fps: vector_of("string") | None = None
    subject: String | None = None
    issuer: String | None = None
    client_subject: String | None = None
    client_issuer: String | None = None
    sni_matches_cert: Bool | None = None
    requested_client_certificate_authorities: vector_of("string") | None = None
    # not logged (attributes, not fields): the file ids of the certificates of each side, in
    # chain order, one per certificate (Zeek's ``c$ssl$cert_chain[i]$fuid``); None without any
    cert_chain_fuids: ClassVar[list[str] | None] = None
    client_cert_chain_fuids: ClassVar[list[str] | None] = None


_NOT_LOGGED = ("cert_chain_fuids", "client_cert_chain_fuids")


@log_stream("x509")
class X509Info(LogRecord, kw_only=True, dict=True):
    """Zeek 9's x509.log (``base/files/x509``), one row per certificate seen in a TLS handshake."""

    ts: Time
    fingerprint: String
    version: Count = field(name="certificate.version")
    serial: String = field(name="certificate.serial")
    subject: String = field(name="certificate.subject")
    issuer: String = field(name="certificate.issuer")
    not_valid_before: Time = field(name="certificate.not_valid_before")
    not_valid_after: Time = field(name="certificate.not_valid_after")
    key_alg: String = field(name="certificate.key_alg")
    sig_alg: String = field(name="certificate.sig_alg")
    key_type: String | None = field(default=None, name="certificate.key_type")
    key_length: Count | None = field(default=None, name="certificate.key_length")
    exponent: String | None = field(default=None, name="certificate.exponent")
    curve: String | None = field(default=None, name="certificate.curve")
    san_dns: vector_of("string") | None = field(default=None, name="san.dns")
    san_uri: vector_of("string") | None = field(default=None, name="san.uri")
    san_email: vector_of("string") | None = field(default=None, name="san.email")
    san_ip: vector_of("addr") | None = field(default=None, name="san.ip")
    ca: Bool | None = field(default=None, name="basic_constraints.ca")
    path_len: Count | None = field(default=None, name="basic_constraints.path_len")
    host_cert: Bool = False
    client_cert: Bool = False
    # not logged (an attribute, not a field): the certificate's file id, Zeek's ``f$id``
    fuid: ClassVar[str | None] = None


_OPTIONAL = ("subject", "issuer", "client_subject", "client_issuer", "requested_client_certificate_authorities")


@functools.cache
def ssl_record_type(server_subject: bool = False, client_subject: bool = False,
                    cert_request_info: bool = False) -> type[LogRecord]:
    """The ssl.log record with the columns Zeek's filters/policy scripts add, in Info's order.

    ``files.zeek`` excludes subject/issuer unless ``SSL::log_include_*_certificate_subject_issuer``;
    ``policy/protocols/ssl/certificate-request-info`` appends the requested CAs.
    """
    keep = set()
    if server_subject:
        keep |= {"subject", "issuer"}
    if client_subject:
        keep |= {"client_subject", "client_issuer"}
    if cert_request_info:
        keep.add("requested_client_certificate_authorities")
    hints = typing.get_type_hints(SSLInfo, include_extras=True)
    fields = []
    for f in msgspec.structs.fields(SSLInfo):
        if f.name in _OPTIONAL and f.name not in keep:
            continue
        default = f.default if f.default is not msgspec.NODEFAULT else msgspec.NODEFAULT
        spec = msgspec.field(default=default, name=f.encode_name) if default is not msgspec.NODEFAULT \
            else msgspec.field(name=f.encode_name)
        fields.append((f.name, hints[f.name], spec))
    suffix = "".join("1" if x else "0" for x in (server_subject, client_subject, cert_request_info))
    cls = msgspec.defstruct(f"SSLInfo_{suffix}", fields, bases=(LogRecord,), kw_only=True, module=__name__,
                            dict=True, namespace={n: getattr(SSLInfo, n) for n in _NOT_LOGGED})
    cls.__log_path__ = "ssl"  # type: ignore[attr-defined]
    return cls


@dataclass
class SSLOptions:
    """Zeek's SSL options; defaults are Zeek's."""

    log_include_server_certificate_subject_issuer: bool = dc_field(
        default=False, metadata={"zeek": "SSL::log_include_server_certificate_subject_issuer"})
    log_include_client_certificate_subject_issuer: bool = dc_field(
        default=False, metadata={"zeek": "SSL::log_include_client_certificate_subject_issuer"})
    disable_analyzer_after_detection: bool = dc_field(
        default=True, metadata={"zeek": "SSL::disable_analyzer_after_detection"})
    max_ssl_history_length: int = dc_field(default=100, metadata={"zeek": "SSL::max_ssl_history_length"})
    # True when policy/protocols/ssl/certificate-request-info is loaded (adds a column)
    certificate_request_info: bool = dc_field(
        default=False, metadata={"zeek_load": "protocols/ssl/certificate-request-info"})


_DEFAULT_OPTIONS = SSLOptions()
_ZERO_SID = b"\x00" * 32


def _names_list(val: bytes) -> list[bytes]:
    """server_name extension: ServerNameList of (type, len16, name)."""
    out = []
    if len(val) < 2:
        return out
    end = min(len(val), 2 + ((val[0] << 8) | val[1]))
    p = 2
    while p + 3 <= end:
        ln = (val[p + 1] << 8) | val[p + 2]
        if val[p] == 0:
            out.append(val[p + 3:p + 3 + ln])
        p += 3 + ln
    return out


def _alpn_list(val: bytes) -> list[bytes]:
    out = []
    if len(val) < 2:
        return out
    end = min(len(val), 2 + ((val[0] << 8) | val[1]))
    p = 2
    while p < end:
        ln = val[p]
        out.append(val[p + 1:p + 1 + ln])
        p += 1 + ln
    return out


def _text(b: bytes) -> str:
    return bytes(b).decode("utf-8", "surrogateescape")


class SSLAnalyzer(Analyzer):
    """One TLS connection (or the TLS part of a STARTTLS stream)."""

    __slots__ = ("parser", "opts", "info", "hist", "session_id", "ticket_empty_session", "cke_seen",
                 "psk_seen", "hrr_seen", "version_num", "server_certs", "client_certs", "server_fuids",
                 "client_fuids", "cas", "logged", "done_parsing", "first_ts")

    def __init__(self, ctx: AnalyzerContext) -> None:
        super().__init__(ctx)
        self.parser = P.TLSParser()
        self.opts = ctx.options if isinstance(ctx.options, SSLOptions) else _DEFAULT_OPTIONS
        self.info: dict | None = None
        self.hist: list[str] = []
        self.session_id: bytes | None = None
        self.ticket_empty_session = False
        self.cke_seen = False
        self.psk_seen = False
        self.hrr_seen = False
        self.version_num: int | None = None
        self.server_certs: list[bytes] | None = None
        self.client_certs: list[bytes] | None = None
        self.server_fuids: list[str] | None = None    # file ids of the certificates, in chain order
        self.client_fuids: list[str] | None = None
        self.cas: list[str] | None = None
        self.logged = False
        self.done_parsing = False
        self.first_ts = 0.0

    # -- engine interface -------------------------------------------------------------------------

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self.done_parsing:
            return
        events = self.parser.feed(is_orig, payload)
        if events:
            self._handle(events, ts)

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        # Zeek's SSL analyzer cannot resynchronise after a content gap: stop parsing this side.
        if not self.done_parsing and not self.parser.established:
            self.done_parsing = True

    def done(self, ts: float) -> None:
        if self.info is not None and not self.logged:
            self._finish()

    # -- event handling (base/protocols/ssl/main.zeek) --------------------------------------------

    def _session(self, ts: float) -> dict:
        if self.info is None:
            self.info = {"ts": ts}
        return self.info

    def _add_history(self, is_client: bool, letter: str) -> None:
        limit = self.opts.max_ssl_history_length
        if len(self.hist) >= limit:
            return
        self.hist.append(letter.upper() if is_client else letter)
        if len(self.hist) == limit:
            self.ctx.weird("SSL_max_ssl_history_length_reached")

    def _handle(self, events: list, ts: float) -> None:
        ctx = self.ctx
        for ev in events:
            kind = type(ev)
            if kind is P.HandshakeMsg:
                info = self._session(ts)
                if ev.is_orig and ev.msg_type == K.CLIENT_KEY_EXCHANGE:
                    self.cke_seen = True
                if ev.msg_type == K.SERVER_HELLO and self.hrr_seen:
                    self._add_history(ev.is_orig, "j")
                    self.hrr_seen = False
                else:
                    self._add_history(ev.is_orig, K.HISTORY_LETTERS.get(ev.msg_type, "z"))
            elif kind is P.Encrypted:
                pass          # per-record events would flood the event bus; not raised
            elif kind is P.Plaintext:
                if ev.content_type == K.APPLICATION_DATA:
                    self._plaintext(ev, ts)
            elif kind is P.ClientHello:
                self._client_hello(ev, ts)
            elif kind is P.ServerHello:
                self._server_hello(ev, ts)
            elif kind is P.Certificates:
                self._session(ts)
                if self.server_certs is None:
                    self.server_certs, self.client_certs = [], []
                    self.server_fuids, self.client_fuids = [], []
                chain = self.client_certs if ev.is_orig else self.server_certs
                first = not chain
                chain.extend(ev.certs)
                # every certificate is a file (Zeek's file analysis): its id, in chain order
                fuids = [ctx.uid_for("F") for _ in ev.certs]
                (self.client_fuids if ev.is_orig else self.server_fuids).extend(fuids)
                self._log_x509(ev, fuids, first, ts)
            elif kind is P.ECDHParams:
                self._session(ts)["curve"] = K.curve_name(ev.curve)
                ctx.event("ssl_ecdh_server_params", ev.curve, ev.point)
            elif kind is P.CertificateRequest:
                self._session(ts)
                self._cert_request(ev)
            elif kind is P.ChangeCipherSpec:
                self._session(ts)
                self._add_history(ev.is_orig, "i")
                if ev.is_orig and self.ticket_empty_session and not self.cke_seen:
                    self.info["resumed"] = True
                ctx.event("ssl_change_cipher_spec", ev.is_orig)
            elif kind is P.Alert:
                info = self._session(ts)
                self._add_history(ev.is_orig, "l")
                info["last_alert"] = K.alert_name(ev.desc)
                ctx.event("ssl_alert", ev.is_orig, ev.level, ev.desc)
            elif kind is P.Heartbeat:
                self._session(ts)
                self._add_history(ev.is_orig, "b")
                ctx.event("ssl_heartbeat", ev.is_orig, ev.length, ev.type, ev.payload_length)
            elif kind is P.Established:
                info = self._session(ts)
                info["established"] = True
                ctx.event("ssl_established")
                self._finish()
                if self.opts.disable_analyzer_after_detection:
                    self.done_parsing = True
                    _disable(ctx)
                    return
            elif kind is P.Violation:
                ctx.violation(ev.reason)
                self.done_parsing = True
                if self.info is not None:
                    self._finish()
                return

    def _plaintext(self, ev: P.Plaintext, ts: float) -> None:
        info = self._session(ts)
        if ev.content_type == K.APPLICATION_DATA and "version" in info and not info.get("established"):
            self.ctx.weird("ssl_early_application_data")

    def _client_hello(self, ev: P.ClientHello, ts: float) -> None:
        info = self._session(ts)
        ctx = self.ctx
        for code, val in ev.extensions:
            if code == K.EXT_SESSION_TICKET and val:
                self.ticket_empty_session = True
            elif code == K.EXT_PRE_SHARED_KEY:
                self.psk_seen = True
            elif code == K.EXT_SERVER_NAME:
                names = _names_list(val)
                if names:
                    info["server_name"] = _text(names[0])
                    if len(names) > 1:
                        ctx.weird("SSL_many_server_names", "[" + ", ".join(_text(n) for n in names) + "]")
        sid = ev.session_id
        if sid and sid != _ZERO_SID:
            self.session_id = bytes(sid)
            self.ticket_empty_session = False
        if _version_ok(ev.version):
            ctx.confirm()
        else:
            ctx.violation(f"Invalid version in SSL client hello. Version: {ev.version}")
            self.done_parsing = True
        ctx.event("ssl_client_hello", ev.version, ev.record_version, ts, bytes(ev.random), bytes(sid),
                  list(ev.ciphers), list(ev.comp_methods))

    def _server_hello(self, ev: P.ServerHello, ts: float) -> None:
        info = self._session(ts)
        ctx = self.ctx
        for code, val in ev.extensions:
            if code == K.EXT_SUPPORTED_VERSIONS and len(val) == 2:
                self.version_num = (val[0] << 8) | val[1]
                info["version"] = K.version_name(self.version_num)
            elif code == K.EXT_KEY_SHARE and len(val) >= 2:
                info["curve"] = K.curve_name((val[0] << 8) | val[1])
            elif code == K.EXT_ALPN:
                protos = _alpn_list(val)
                if protos:
                    info["next_protocol"] = _text(protos[0])
            elif code == K.EXT_PRE_SHARED_KEY and self.psk_seen:
                info["resumed"] = True
        if self.version_num is None:
            self.version_num = ev.version
            info["version"] = K.version_name(ev.version)
        info["cipher"] = K.cipher_name(ev.cipher)
        if ev.random == K.HRR_RANDOM:
            self.hrr_seen = True
        v = self.version_num
        if (self.session_id is not None and self.session_id == ev.session_id
                and v // 0xFF != 0x7F and v != K.TLSv13):
            info["resumed"] = True
        ctx.confirm()
        ctx.event("ssl_server_hello", ev.version, ev.record_version, ts, bytes(ev.random),
                  bytes(ev.session_id), ev.cipher, ev.comp_method)

    def _cert_request(self, ev: P.CertificateRequest) -> None:
        cas = []
        for der in ev.cas:
            try:
                tag, s, e = x509._tlv(der, 0, len(der))
                cas.append(x509.name_to_str(der, s, e) if tag == 0x30 else "")
            except x509.DERError:
                self.ctx.weird("x509_certificate_request_parse_error")
        self.cas = cas
        self.ctx.event("ssl_certificate_request", ev.cert_types, ev.sig_algs, list(ev.cas))

    def _log_x509(self, ev: P.Certificates, fuids: list[str], first: bool, ts: float) -> None:
        """One x509.log row per certificate (Zeek's X509 file analyzer), carrying the certificate's
        file id ``fuids[i]`` (not logged); unparsable ones get a weird."""
        write = self.ctx.write_log
        for i, der in enumerate(ev.certs):
            d = x509.cert_details(der)
            if d is None:
                self.ctx.weird("x509_cert_parse_error")
                continue
            rec = X509Info(
                ts=ts, fingerprint=x509.fingerprint(der), version=d["version"], serial=d["serial"],
                subject=d["subject"], issuer=d["issuer"], not_valid_before=d["not_valid_before"],
                not_valid_after=d["not_valid_after"], key_alg=d["key_alg"], sig_alg=d["sig_alg"],
                key_type=d.get("key_type"), key_length=d.get("key_length"), exponent=d.get("exponent"),
                curve=d.get("curve"), san_dns=d.get("san_dns"), san_uri=d.get("san_uri"),
                san_email=d.get("san_email"), san_ip=d.get("san_ip"), ca=d.get("ca"), path_len=d.get("path_len"),
                host_cert=first and i == 0, client_cert=ev.is_orig)
            rec.fuid = fuids[i]
            write("x509", rec)

    # -- logging (ssl_finishing hooks + log_record) ------------------------------------------------

    def _finish(self) -> None:
        if self.logged:
            return
        self.logged = True
        info = self.info
        opts = self.opts
        conn = self.ctx.conn
        rec_type = ssl_record_type(opts.log_include_server_certificate_subject_issuer,
                                   opts.log_include_client_certificate_subject_issuer,
                                   opts.certificate_request_info)
        extra: dict = {}
        if self.server_certs is not None:
            extra["cert_chain_fps"] = [x509.fingerprint(c) for c in self.server_certs]
            extra["client_cert_chain_fps"] = [x509.fingerprint(c) for c in self.client_certs]
            want_subject = opts.log_include_server_certificate_subject_issuer
            if self.server_certs and ("server_name" in info or want_subject):
                names = x509.cert_names_cached(self.server_certs[0])
                if names is None:
                    self.ctx.weird("x509_cert_parse_error")
                else:
                    subject, issuer, cn, sans = names
                    if "server_name" in info:
                        extra["sni_matches_cert"] = x509.hostname_matches(info["server_name"], cn, sans)
                    if want_subject:
                        extra["subject"], extra["issuer"] = subject, issuer
            if self.client_certs and opts.log_include_client_certificate_subject_issuer:
                names = x509.cert_names_cached(self.client_certs[0])
                if names is None:
                    self.ctx.weird("x509_cert_parse_error")
                else:
                    extra["client_subject"], extra["client_issuer"] = names[0], names[1]
        if opts.certificate_request_info and self.cas is not None:
            extra["requested_client_certificate_authorities"] = self.cas
        rec = rec_type(ts=info["ts"], uid=conn.uid, orig_h=conn.orig_h, orig_p=conn.orig_p,
                       resp_h=conn.resp_h, resp_p=conn.resp_p, version=info.get("version"),
                       cipher=info.get("cipher"), curve=info.get("curve"),
                       server_name=info.get("server_name"), resumed=info.get("resumed", False),
                       last_alert=info.get("last_alert"), next_protocol=info.get("next_protocol"),
                       established=info.get("established", False), ssl_history="".join(self.hist),
                       **extra)
        if self.server_certs is not None:
            rec.cert_chain_fuids, rec.client_cert_chain_fuids = list(self.server_fuids), list(self.client_fuids)
        self.ctx.write_log("ssl", rec)


def _disable(ctx: AnalyzerContext) -> None:
    """Zeek's ``disable_analyzer``: stop receiving this connection's bytes, without a violation.
    Uses the engine's ``ctx.disable()`` when it offers one; otherwise the analyzer just ignores
    further data."""
    disable = getattr(ctx, "disable", None)
    if disable is not None:
        disable()


def _version_ok(v: int) -> bool:
    return v in (K.SSLv2, K.SSLv3, K.TLSv10, K.TLSv11, K.TLSv12, K.TLSv13, K.DTLSv10, K.DTLSv12,
                 K.DTLSv13) or v >> 8 == 0x7F


SPEC = register(AnalyzerSpec(
    name="ssl",
    factory=SSLAnalyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset((p, "tcp") for p in (443, 563, 585, 614, 636, 989, 990, 992, 993, 995, 5223)),
    # base/protocols/ssl/dpd.sig: SSLv2/SSLv3/TLS client hellos and server replies
    dpd_orig=(
        re.compile(rb"^(\x16\x03[\x00\x01\x02\x03]..\x01...\x03[\x00\x01\x02\x03]|"
                   rb"...?\x01[\x00\x03][\x00\x01\x02\x03\x04])", re.S),
    ),
    dpd_resp=(
        re.compile(rb"^((\x15\x03[\x00\x01\x02\x03]....)?\x16\x03[\x00\x01\x02\x03]..\x02..."
                   rb"(\x03[\x00\x01\x02\x03\x04]|\x7f[\x00-\x50])|...?\x04..\x00\x02)", re.S),
    ),
    # Zeek 9's dpd_tls_client: a TLS client hello alone enables the analyzer (SSLv2 still needs
    # the server's reply above)
    dpd_orig_only=(re.compile(rb"^\x16\x03[\x00\x01\x02\x03]..\x01...\x03[\x00\x01\x02\x03]", re.S),),
    zeek_scripts=("base/protocols/ssl",),
    logs=("ssl", "x509"),
    options=SSLOptions,
    events=("ssl_client_hello", "ssl_server_hello", "ssl_established", "ssl_alert",
            "ssl_change_cipher_spec", "ssl_ecdh_server_params", "ssl_heartbeat",
            "ssl_certificate_request"),
))


class DTLSAnalyzer(SSLAnalyzer):
    """DTLS over UDP: same logic and ssl.log, DTLS framing (one datagram per ``data`` call)."""

    def __init__(self, ctx: AnalyzerContext) -> None:
        super().__init__(ctx)
        self.parser = DTLSParser()


DTLS_SPEC = register(AnalyzerSpec(
    name="dtls",
    factory=DTLSAnalyzer,
    transports=frozenset({"udp"}),
    ports=frozenset({(443, "udp")}),
    # base/protocols/ssl/dpd.sig (DTLS): a client hello / a server hello or hello verify request
    dpd_orig=(re.compile(rb"^\x16\xfe[\xff\xfd\xfc]\x00\x00.{6}..\x01", re.S),),
    dpd_resp=(re.compile(rb"^\x16\xfe[\xff\xfd\xfc]\x00\x00.{6}..[\x02\x03]", re.S),),
    zeek_scripts=("base/protocols/ssl",),
    logs=("ssl", "x509"),
    # no options type of its own: SSL::* redefs are indexed to the "ssl" analyzer (one owner per
    # Zeek option name), so DTLS runs with Zeek's defaults
    options=None,
    events=SPEC.events,
))

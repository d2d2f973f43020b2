"""SSL/TLS analyzer: ssl.log rows from corpus traces, record-layer behaviour, X.509 strings."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import Conn, Recorder, corpus_dir, corpus_trace, run, streams  # noqa: E402

import analysis.protocols  # noqa: E402,F401  (registry complete)
from analysis.logs.schema import columns  # noqa: E402
from analysis.protocols.base import REGISTRY  # noqa: E402
from analysis.protocols.ssl import SSLAnalyzer, SSLOptions, ssl_record_type  # noqa: E402
from analysis.protocols.ssl import parser as P  # noqa: E402
from analysis.protocols.ssl import x509  # noqa: E402

needs_corpus = pytest.mark.skipif(not (corpus_dir() / "zeek" / "traces").is_dir(),
                                  reason="conformance corpus not available")

COLS = ("version", "cipher", "curve", "server_name", "resumed", "last_alert", "next_protocol",
        "established", "ssl_history")


def _row(ctx: Recorder) -> dict:
    ssl = [r for p, r in ctx.logs if p == "ssl"]
    assert len(ssl) == 1 and {p for p, _ in ctx.logs} <= {"ssl", "x509"}
    rec = ssl[0]
    return {c.name: getattr(rec, c.attr) for c in columns(type(rec))}


def _tls_conn(trace: str) -> Conn:
    (c,) = [c for c in streams(corpus_trace(trace)) if c.chunks]
    return c


def _strip_to_tls(c: Conn) -> Conn:
    """STARTTLS-style streams: drop each side's bytes before its first TLS record."""
    out, started = [], {True: False, False: False}
    for o, d, ts in c.chunks:
        if not started[o]:
            i = d.find(b"\x16\x03")
            if i < 0:
                continue
            started[o], d = True, d[i:]
        out.append((o, d, ts))
    c.chunks = out
    return c


@needs_corpus
def test_ecdsa_tls12_row():
    _, ctx = run(SSLAnalyzer, _tls_conn("tls/ecdsa-cert.pcap"))
    row = _row(ctx)
    assert [row[c] for c in COLS] == ["TLSv12", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "secp384r1", None,
                                      False, None, None, True, "CsxknGIti"]
    assert row["cert_chain_fps"] == ["11db6d4f6e4df14cec874b9d4a306c64c282dacbd479788ee0510b2c99382dc4",
                                     "7e32368e24a2cc48d3d29e883b260e40ceda22af97189c78fc5b928484e9a010"]
    assert row["client_cert_chain_fps"] == []
    assert "subject" not in row       # only with SSL::log_include_server_certificate_subject_issuer
    assert ctx.confirmed >= 1 and not ctx.violations
    names = ctx.event_names()
    assert names.index("ssl_client_hello") < names.index("ssl_server_hello") < names.index("ssl_established")


@needs_corpus
def test_handshake_failure_alert_only():
    _, ctx = run(SSLAnalyzer, _tls_conn("tls/tls-1.2-handshake-failure.pcap"))
    row = _row(ctx)
    assert [row[c] for c in COLS] == [None, None, None, None, False, "handshake_failure", None, False, "Cl"]
    assert row["cert_chain_fps"] is None and row["client_cert_chain_fps"] is None
    assert ("ssl_alert", ctx.conn, False, 2, 40) in ctx.events


@needs_corpus
def test_tls13_draft_version_from_supported_versions():
    _, ctx = run(SSLAnalyzer, _tls_conn("tls/tls13draft23-chrome67.0.3368.0-canary.pcap"))
    row = _row(ctx)
    assert [row[c] for c in COLS] == ["TLSv13-draft23", "TLS_AES_128_GCM_SHA256", "x25519",
                                      "tls13.crypto.mozilla.org", False, None, None, True, "CsiI"]


@needs_corpus
def test_certificate_request_info_column():
    _, ctx = run(SSLAnalyzer, _tls_conn("tls/certificate-request-failed.pcap"),
                 SSLOptions(certificate_request_info=True))
    row = _row(ctx)
    assert row["ssl_history"] == "CsxkrnXGIl" and row["established"] is False
    assert row["requested_client_certificate_authorities"] == ["O=SomeOrg,L=Somewhere,ST=Some-State,C=US"]
    assert list(row)[-1] == "requested_client_certificate_authorities"


@needs_corpus
def test_rdp_subject_issuer_option():
    c = _tls_conn("rdp/rdp-no-cookie-mstshash.pcap")
    c.chunks = [x for x in c.chunks if not x[1].startswith(b"\x03\x00")]   # drop the X.224 PDUs
    _, ctx = run(SSLAnalyzer, c, SSLOptions(log_include_server_certificate_subject_issuer=True))
    row = _row(ctx)
    assert row["ssl_history"] == "CsxnGIi"
    assert row["subject"] == row["issuer"] == "CN=CLK-456040-D.one.phoenix.gov"
    cols = list(row)
    assert cols.index("client_cert_chain_fps") + 1 == cols.index("subject")
    assert cols.index("issuer") + 1 == cols.index("sni_matches_cert")


@needs_corpus
@pytest.mark.parametrize("trace,history", [
    ("tls/irc-starttls.pcap", "CsxrnXGIti"),
    ("tls/pop3-starttls.pcap", "CsxkrnXGIti"),
    ("tls/xmpp-dialback-starttls.pcap", "CsxkrnXGYIi"),
])
def test_starttls_streams(trace, history):
    _, ctx = run(SSLAnalyzer, _strip_to_tls(_tls_conn(trace)))
    row = _row(ctx)
    assert row["ssl_history"] == history and row["established"] is True
    if "xmpp" in trace:
        assert len(row["client_cert_chain_fps"]) == 4 and len(row["cert_chain_fps"]) == 3


@needs_corpus
@pytest.mark.parametrize("size", [1, 7, 300])
def test_record_reassembly_any_segmentation(size):
    """The same row whatever the TCP segmentation (records split across deliveries)."""
    c = _tls_conn("tls/ecdsa-cert.pcap")
    _, whole = run(SSLAnalyzer, c)
    pieces = []
    for o, d, ts in c.chunks:
        pieces.extend((o, d[i:i + size], ts) for i in range(0, len(d), size))
    c2 = Conn(c.uid, c.orig_h, c.orig_p, c.resp_h, c.resp_p, chunks=pieces)
    _, split = run(SSLAnalyzer, c2)
    assert _row(split) == _row(whole)


def _record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack(">BHH", ctype, version, len(body)) + body


def _hs(mtype: int, body: bytes) -> bytes:
    return bytes([mtype]) + len(body).to_bytes(3, "big") + body


def _client_hello(exts: bytes = b"", sid: bytes = b"") -> bytes:
    body = b"\x03\x03" + b"R" * 32 + bytes([len(sid)]) + sid + b"\x00\x02\xc0\x2f" + b"\x01\x00"
    body += len(exts).to_bytes(2, "big") + exts
    return _record(22, _hs(1, body), 0x0301)


def _server_hello(cipher: int = 0xC02F, exts: bytes = b"", sid: bytes = b"") -> bytes:
    body = b"\x03\x03" + b"S" * 32 + bytes([len(sid)]) + sid + cipher.to_bytes(2, "big") + b"\x00"
    if exts:
        body += len(exts).to_bytes(2, "big") + exts
    return _record(22, _hs(2, body))


def _ext(code: int, data: bytes) -> bytes:
    return code.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def _sni(*names: bytes) -> bytes:
    lst = b"".join(b"\x00" + len(n).to_bytes(2, "big") + n for n in names)
    return _ext(0, len(lst).to_bytes(2, "big") + lst)


def _conn() -> Conn:
    return Conn("Ctest", "10.0.0.1", 40000, "10.0.0.2", 443)


def _feed(chunks, options=None) -> tuple[SSLAnalyzer, Recorder]:
    c = _conn()
    c.chunks = [(o, d, 1.0 + i) for i, (o, d) in enumerate(chunks)]
    return run(SSLAnalyzer, c, options)


def test_synthetic_handshake_alpn_sni_resumption():
    alpn = _ext(16, b"\x00\x03\x02h2")
    sid = b"\x11" * 32
    _, ctx = _feed([(True, _client_hello(_sni(b"example.com") + _ext(16, b"\x00\x06\x02h2\x03foo"), sid)),
                    (False, _server_hello(exts=alpn, sid=sid)),
                    (False, _record(20, b"\x01")), (True, _record(20, b"\x01")),
                    (True, _record(23, b"x" * 40)), (False, _record(23, b"y" * 40))])
    row = _row(ctx)
    assert row["server_name"] == "example.com" and row["next_protocol"] == "h2"
    assert row["resumed"] is True          # same session id echoed by the server (TLS 1.2)
    assert row["ssl_history"] == "CsiI" and row["established"] is True


def test_many_server_names_weird():
    _, ctx = _feed([(True, _client_hello(_sni(b"a.example", b"b.example")))])
    assert _row(ctx)["server_name"] == "a.example"
    assert ctx.weirds and ctx.weirds[0][0] == "SSL_many_server_names"


def test_garbage_is_a_violation_not_an_exception():
    _, ctx = _feed([(True, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")])
    assert ctx.violations and not ctx.logs


def test_invalid_late_record_version_violates_and_logs():
    _, ctx = _feed([(True, _client_hello()), (False, b"\x16\x09\x09\x00\x05hello")])
    assert ctx.violations and "late" in ctx.violations[0]
    assert _row(ctx)["ssl_history"] == "C"


def test_encrypted_records_are_skipped_not_buffered():
    p = P.TLSParser()
    p.feed(True, _client_hello())
    p.feed(False, _server_hello())
    p.feed(True, _record(20, b"\x01"))
    p.feed(False, _record(20, b"\x01"))
    header = struct.pack(">BHH", 23, 0x0303, 16000)
    evs = p.feed(True, header + b"z" * 100)
    assert any(type(e) is P.Established for e in evs)
    for _ in range(100):
        assert p.feed(True, b"z" * 150) == []
        assert p._buf == [b"", b""]          # nothing held for ciphertext
    assert p._skip[1] == 16000 - 100 - 100 * 150


def test_sslv2_client_hello():
    ciphers = b"\x01\x00\x80\x07\x00\xc0"
    body = b"\x01\x00\x02" + len(ciphers).to_bytes(2, "big") + b"\x00\x00\x00\x10" + ciphers + b"C" * 16
    rec = bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body
    p = P.TLSParser()
    evs = p.feed(True, rec)
    ch = evs[0]
    assert type(ch) is P.ClientHello and ch.version == 0x0002 and ch.ciphers == (0x010080, 0x0700C0)
    _, ctx = _feed([(True, rec)])
    assert _row(ctx)["ssl_history"] == "" and ctx.confirmed      # v2 hellos add no history letter


def test_handshake_message_cap_is_a_violation():
    p = P.TLSParser(max_handshake=1000)
    evs = p.feed(True, _record(22, b"\x01" + (5000).to_bytes(3, "big") + b"x" * 100, 0x0301))
    assert type(evs[-1]) is P.Violation and p.stopped
    assert p.feed(True, b"x" * 100) == []


def test_history_length_cap_weird():
    chunks = [(True, _client_hello()), (False, _server_hello())]
    chunks += [(False, _record(21, b"\x01\x00"))] * 120
    _, ctx = _feed(chunks, SSLOptions(max_ssl_history_length=10))
    assert len(_row(ctx)["ssl_history"]) == 10
    assert ctx.weirds.count(("SSL_max_ssl_history_length_reached", "")) == 1


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    ln = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(ln)]) + ln + content


def _rdn(oid: bytes, value: bytes, tag: int = 0x0C) -> bytes:
    return _der(0x31, _der(0x30, _der(0x06, oid) + _der(tag, value)))


CN, O, C = b"\x55\x04\x03", b"\x55\x04\x0a", b"\x55\x04\x06"


def test_name_rfc2253_order_and_escaping():
    name = _der(0x30, _rdn(C, b"US", 0x13) + _rdn(O, b"Acme, Inc.") + _rdn(CN, " caf\u00e9+1 ".encode()))
    tag, s, e = x509._tlv(name, 0, len(name))
    assert x509.name_to_str(name, s, e) == "CN=\\ caf\\C3\\A9\\+1\\ ,O=Acme\\, Inc.,C=US"


def _cert(subject: bytes, issuer: bytes, sans: tuple[bytes, ...] = ()) -> bytes:
    alg = _der(0x30, _der(0x06, b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b") + b"\x05\x00")
    validity = _der(0x30, _der(0x17, b"200101000000Z") + _der(0x17, b"300101000000Z"))
    spki = _der(0x30, alg + _der(0x03, b"\x00\x01"))
    tbs = _der(0xA0, _der(0x02, b"\x02")) + _der(0x02, b"\x01") + alg + issuer + validity + subject + spki
    if sans:
        gn = _der(0x30, b"".join(_der(0x82, n) for n in sans))
        ext = _der(0x30, _der(0x06, b"\x55\x1d\x11") + _der(0x04, gn))
        tbs += _der(0xA3, _der(0x30, ext))
    return _der(0x30, _der(0x30, tbs) + alg + _der(0x03, b"\x00sig"))


def test_cert_names_and_sni_match():
    subj = _der(0x30, _rdn(CN, b"www.example.com"))
    iss = _der(0x30, _rdn(O, b"CA"))
    der = _cert(subj, iss, (b"*.example.org", b"example.net"))
    subject, issuer, cn, sans = x509.cert_names(der)
    assert (subject, issuer, cn, sans) == ("CN=www.example.com", "O=CA", "www.example.com",
                                            ("*.example.org", "example.net"))
    assert x509.hostname_matches("a.example.org", cn, sans)
    assert not x509.hostname_matches("a.b.example.org", cn, sans)
    assert not x509.hostname_matches("www.example.com", cn, sans)      # SANs win over the CN
    assert x509.hostname_matches("WWW.Example.COM", cn, ())
    with pytest.raises(x509.DERError):
        x509.cert_names(der[:-10])


def test_sni_matches_cert_in_row():
    subj = _der(0x30, _rdn(CN, b"example.com"))
    der = _cert(subj, subj)
    cert_msg = _hs(11, (len(der) + 3).to_bytes(3, "big") + len(der).to_bytes(3, "big") + der)
    _, ctx = _feed([(True, _client_hello(_sni(b"example.com"))), (False, _server_hello()),
                    (False, _record(22, cert_msg))])
    row = _row(ctx)
    assert row["sni_matches_cert"] is True and row["cert_chain_fps"] == [x509.fingerprint(der)]


def test_record_type_variants_and_registration():
    base = [c.name for c in columns(ssl_record_type())]
    assert base[-3:] == ["cert_chain_fps", "client_cert_chain_fps", "sni_matches_cert"]
    both = [c.name for c in columns(ssl_record_type(True, True, True))]
    assert both[-6:] == ["subject", "issuer", "client_subject", "client_issuer", "sni_matches_cert",
                         "requested_client_certificate_authorities"]
    spec = REGISTRY["ssl"]
    assert (443, "tcp") in spec.ports and (5223, "tcp") in spec.ports
    assert spec.dpd_orig[0].match(_client_hello()) and not spec.dpd_orig[0].match(b"GET / HTTP/1.1")
    assert spec.dpd_resp[0].match(_server_hello())
    assert {"ssl_client_hello", "ssl_server_hello", "ssl_established", "ssl_alert"} <= set(spec.events)


def _dtls_record(ctype: int, body: bytes, epoch: int = 0, seq: int = 0, version: int = 0xFEFD) -> bytes:
    return struct.pack(">BHH", ctype, version, epoch) + seq.to_bytes(6, "big") + len(body).to_bytes(2, "big") + body


def _dtls_hs(mtype: int, body: bytes, mseq: int = 0, off: int = 0, total: int | None = None) -> bytes:
    total = len(body) if total is None else total
    return (bytes([mtype]) + total.to_bytes(3, "big") + mseq.to_bytes(2, "big") + off.to_bytes(3, "big")
            + len(body).to_bytes(3, "big") + body)


def test_dtls_handshake_with_fragmented_certificate():
    from analysis.protocols.ssl import DTLSAnalyzer

    ch = b"\xfe\xfd" + b"R" * 32 + b"\x00" + b"\x00" + b"\x00\x02\xc0\x2b\x01\x00"   # empty cookie
    sh = b"\xfe\xfd" + b"S" * 32 + b"\x00\xc0\x2b\x00"
    subj = _der(0x30, _rdn(CN, b"dtls.example"))
    der = _cert(subj, subj)
    cert = (len(der) + 3).to_bytes(3, "big") + len(der).to_bytes(3, "big") + der
    half = len(cert) // 2
    datagrams = [
        (True, _dtls_record(22, _dtls_hs(1, ch))),
        (False, _dtls_record(22, _dtls_hs(2, sh)) +
         _dtls_record(22, _dtls_hs(11, cert[half:], 1, half, len(cert)), seq=2)),   # second half first
        (False, _dtls_record(22, _dtls_hs(11, cert[:half], 1, 0, len(cert)), seq=1)),
        (True, _dtls_record(20, b"\x01", seq=3)), (False, _dtls_record(20, b"\x01", seq=3)),
        (True, _dtls_record(23, b"e" * 30, epoch=1)), (False, _dtls_record(23, b"f" * 30, epoch=1)),
    ]
    c = _conn()
    c.proto, c.resp_p = "udp", 443
    c.chunks = [(o, d, 1.0 + i) for i, (o, d) in enumerate(datagrams)]
    _, ctx = run(DTLSAnalyzer, c)
    row = _row(ctx)
    assert row["version"] == "DTLSv12" and row["cipher"] == "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
    assert row["ssl_history"] == "CsxIi" and row["established"] is True
    assert row["cert_chain_fps"] == [x509.fingerprint(der)]
    assert [r.fuid for r in ctx.rows("x509")] == ctx.rows("ssl")[0].cert_chain_fuids == ["Ftest1"]
    spec = REGISTRY["dtls"]
    assert spec.dpd_orig[0].match(datagrams[0][1]) and spec.dpd_resp[0].match(datagrams[1][1])


@needs_corpus
def test_x509_rows_for_the_chain():
    _, ctx = run(SSLAnalyzer, _tls_conn("tls/ecdsa-cert.pcap"))
    rows = [{c.name: getattr(r, c.attr) for c in columns(type(r))} for p, r in ctx.logs if p == "x509"]
    assert [r["fingerprint"][:12] for r in rows] == ["11db6d4f6e4d", "7e32368e24a2"]
    leaf, ca = rows
    assert leaf["certificate.serial"] == "F0AFBBF558BF4D1B71FED9CB33793EE4"
    assert leaf["certificate.subject"] == "CN=pantz.org,OU=PositiveSSL,OU=Domain Control Validated"
    assert (leaf["certificate.not_valid_before"], leaf["certificate.not_valid_after"]) == (1415404800.0, 1573171199.0)
    assert (leaf["certificate.key_alg"], leaf["certificate.sig_alg"], leaf["certificate.key_type"]) == (
        "id-ecPublicKey", "ecdsa-with-SHA256", "ecdsa")
    assert (leaf["certificate.key_length"], leaf["certificate.curve"]) == (384, "secp384r1")
    assert leaf["san.dns"] == ["pantz.org", "www.pantz.org"] and leaf["san.ip"] is None
    assert (leaf["basic_constraints.ca"], leaf["host_cert"], leaf["client_cert"]) == (False, True, False)
    assert (ca["basic_constraints.ca"], ca["basic_constraints.path_len"], ca["host_cert"]) == (True, 0, False)
    assert ca["certificate.curve"] == "prime256v1"


@needs_corpus
def test_certificates_get_file_ids_that_no_log_writes():
    """Each certificate is a file (Zeek's file analysis): an id from ``ctx.uid_for("F")`` on its
    x509 record and, in chain order, on the ssl record; neither is a column or on the wire."""
    import io

    import msgspec

    from analysis.logs.tsv import TsvWriter

    _, ctx = run(SSLAnalyzer, _tls_conn("tls/ecdsa-cert.pcap"))
    certs, (ssl,) = ctx.rows("x509"), ctx.rows("ssl")
    assert [r.fuid for r in certs] == ["Ftest1", "Ftest2"]          # the context's generator, kind "F"
    assert ssl.cert_chain_fuids == ["Ftest1", "Ftest2"] and ssl.client_cert_chain_fuids == []
    assert [r.fingerprint for r in certs] == ssl.cert_chain_fps and certs[0].host_cert
    for rec in (*certs, ssl):
        assert "fuid" not in {c.name for c in columns(type(rec))}
        assert b"Ftest" not in msgspec.msgpack.encode(rec)          # what a log batch carries
    out = io.BytesIO()
    w = TsvWriter(out, "x509", type(certs[0]), open_time=0.0)
    for r in certs:
        w.write(r)
    w.flush()
    text = out.getvalue().decode()
    assert "Ftest" not in text and len(text.splitlines()) == 10     # 8 header lines + 2 rows


def test_certificate_file_ids_per_side_unparsable_included():
    """Every certificate gets a file id, also one that does not parse (Zeek still makes the file;
    it has no x509 row); client certificates get theirs; no certificate, no id drawn."""
    good = _cert(_der(0x30, _rdn(CN, b"srv.example")), _der(0x30, _rdn(O, b"CA")))
    client = _cert(_der(0x30, _rdn(CN, b"client")), _der(0x30, _rdn(O, b"CA")))

    def cert_msg(*ders: bytes) -> bytes:
        body = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
        return _record(22, _hs(11, len(body).to_bytes(3, "big") + body))

    _, ctx = _feed([(True, _client_hello()), (False, _server_hello()),
                    (False, cert_msg(b"\x30\x03bad", good)), (True, cert_msg(client))])
    (ssl,) = ctx.rows("ssl")
    assert ssl.cert_chain_fuids == ["Ftest1", "Ftest2"] and ssl.client_cert_chain_fuids == ["Ftest3"]
    assert [(r.fuid, r.host_cert, r.client_cert) for r in ctx.rows("x509")] == [
        ("Ftest2", False, False), ("Ftest3", True, True)]
    assert ("x509_cert_parse_error", "") in ctx.weirds
    _, none = _feed([(True, _client_hello()), (False, _server_hello())])
    (row,) = none.rows("ssl")
    assert row.cert_chain_fuids is None and row.client_cert_chain_fuids is None
    assert none.uid_for("F") == "Ftest1"                              # nothing was drawn before


def test_x509_rsa_details_and_bad_certificate():
    subj = _der(0x30, _rdn(CN, b"rsa.example"))
    rsa_alg = _der(0x30, _der(0x06, b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01") + b"\x05\x00")
    pub = _der(0x30, _der(0x02, b"\x00" + b"\xc3" * 256) + _der(0x02, b"\x01\x00\x01"))
    alg = _der(0x30, _der(0x06, b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b") + b"\x05\x00")
    validity = _der(0x30, _der(0x17, b"200101000000Z") + _der(0x18, b"20300101000000Z"))
    tbs = (_der(0xA0, _der(0x02, b"\x02")) + _der(0x02, b"\x00\x8f") + alg + subj + validity + subj
           + _der(0x30, rsa_alg + _der(0x03, b"\x00" + pub)))
    der = _der(0x30, _der(0x30, tbs) + alg + _der(0x03, b"\x00sig"))
    d = x509.cert_details(der)
    assert (d["key_type"], d["key_length"], d["exponent"], d["serial"]) == ("rsa", 2048, "65537", "8F")
    assert d["not_valid_after"] == 1893456000.0 and d["sig_alg"] == "sha256WithRSAEncryption"
    assert "ca" not in d and "san_dns" not in d
    assert x509.cert_details(der[:40]) is None

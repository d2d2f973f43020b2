"""SNMP analyzer and the shared BER helpers: OID decoding (Zeek's overlong-subidentifier weird),
message parsing, confirmation/violation, the corpus weird.log case and a bounded fuzz run."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from analysis.protocols.asn1 import ASN1Error, oid_to_str, read_tlv
from analysis.protocols.base import REGISTRY
from analysis.protocols.snmp import SNMPAnalyzer, parse_message
from harness import ZEEK, case, compare, recording

make_ctx, run_trace, fuzz = recording(pack_args=True, with_source=True)   # events (name, args), weirds with source

CASE = "scripts.base.protocols.snmp.oid-subidentifier-too-long"


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    return bytes([tag, 0x82]) + n.to_bytes(2, "big") + content


def message(version: int, pdu_tag: int, oid: bytes, community=b"public", value=b"\x05\x00") -> bytes:
    vb = tlv(0x30, tlv(0x06, oid) + value)
    pdu = tlv(pdu_tag, tlv(0x02, b"\x01") + tlv(0x02, b"\x00") + tlv(0x02, b"\x00") + tlv(0x30, vb))
    return tlv(0x30, tlv(0x02, bytes([version])) + tlv(0x04, community) + pdu)


SYSDESCR = b"\x2b\x06\x01\x02\x01\x01\x01\x00"     # 1.3.6.1.2.1.1.1.0


@pytest.mark.parametrize("content, text, bad", [
    (SYSDESCR, "1.3.6.1.2.1.1.1.0", 0),
    (b"\x2b", "1.3", 0),
    (b"\x2b\x86\xf7\x0d", "1.3.113549", 0),
    (b"\x2b" + b"\xff" * 9 + b"\x7f", "1.3." + str((1 << 70) - 1), 0),
    (b"\x2b" + b"\x80" * 10 + b"\x00", "", 11),        # the corpus case: shift by 70 bits
    (b"\x2b" + b"\x81" * 20 + b"\x00", "", 21),
    (b"\x2b\x80", "", 0),                               # unterminated: Zeek's underflow -> ""
    (b"", "", 0),
])
def test_oid_to_str(content, text, bad):
    assert oid_to_str(content) == (text, bad)


def test_oid_huge_unterminated_is_cheap():
    # 1 MB of continuation bytes must not build a giant integer
    assert oid_to_str(b"\x2b" + b"\x80" * (1 << 20)) == ("", 0)


def test_read_tlv_rejects_bad_lengths():
    with pytest.raises(ASN1Error):
        read_tlv(b"\x30\x80", 0, 2)                   # indefinite
    with pytest.raises(ASN1Error):
        read_tlv(b"\x30\x05\x00", 0, 3)               # beyond data
    with pytest.raises(ASN1Error):
        read_tlv(b"\x30\x89" + b"\x01" * 9, 0, 11)    # 9 length bytes
    assert read_tlv(b"\x04\x81\x02ab", 0, 5) == (4, 3, 5)


def test_parse_get_request_and_response():
    m = parse_message(message(1, 0xA0, SYSDESCR, b"private"))
    assert m.header.version == 1 and m.header.community == b"private"
    assert m.pdu.tag == 0xA0 and m.pdu.request_id == 1
    assert [b.oid for b in m.pdu.bindings] == ["1.3.6.1.2.1.1.1.0"]
    r = parse_message(message(0, 0xA2, SYSDESCR, value=tlv(0x04, b"Linux box")))
    assert r.pdu.bindings[0].tag == 0x04 and r.pdu.bindings[0].value == b"Linux box"


def test_parse_v3_encrypted():
    hdr = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x02, b"\x05\xdc") + tlv(0x04, b"\x07") + tlv(0x02, b"\x03"))
    msg = tlv(0x30, tlv(0x02, b"\x03") + hdr + tlv(0x04, b"usm") + tlv(0x04, b"\xde\xad\xbe\xef"))
    m = parse_message(msg)
    assert m.header.version == 3 and m.header.flags == 7 and m.encrypted and m.pdu is None


def test_analyzer_confirms_on_response_and_flags_overlong_oid():
    ctx = make_ctx(proto="udp", resp_p=161)
    a = SNMPAnalyzer(ctx)
    a.data(True, message(1, 0xA0, b"\x2b" + b"\x80" * 10 + b"\x00"), 1.0)
    assert ctx.confirmed == 0
    assert ctx.weirds == [("asn_oid_subidentifier_too_long", "11", "")]
    a.data(False, message(1, 0xA2, SYSDESCR), 1.1)
    assert ctx.confirmed == 1
    assert [e[0] for e in ctx.events] == ["snmp_get_request", "snmp_response"]
    assert ctx.violations == []


def test_analyzer_violation_on_non_snmp():
    ctx = make_ctx(proto="udp", resp_p=161)
    SNMPAnalyzer(ctx).data(True, b"GET / HTTP/1.1\r\n\r\n", 1.0)
    assert ctx.violations and ctx.confirmed == 0


def test_registered():
    spec = REGISTRY["snmp"]
    assert spec.factory is SNMPAnalyzer and (161, "udp") in spec.ports


def test_corpus_weird_log(tmp_path):
    c = case(CASE)
    run_trace(SNMPAnalyzer, ZEEK / c["trace"], logdir=tmp_path)
    report = compare(ZEEK / c["baselines"]["weird.log"], tmp_path / "weird.log")
    assert report["passed"], report


def test_fuzz():
    c = case(CASE)
    assert fuzz(ZEEK / c["trace"], SNMPAnalyzer, rounds=3000) >= 3000


def test_snmp_log_row():
    ctx = make_ctx(proto="udp", resp_p=161)
    a = SNMPAnalyzer(ctx)
    a.data(True, message(1, 0xA0, SYSDESCR, b"c1") , 10.0)
    resp_vbs = tlv(0x30, tlv(0x06, SYSDESCR) + tlv(0x04, b"Linux box")) + \
        tlv(0x30, tlv(0x06, b"\x2b\x06\x01\x02\x01\x01\x03\x00") + tlv(0x43, (12345).to_bytes(2, "big")))
    resp = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x04, b"c2") + tlv(0xA2, tlv(0x02, b"\x01") + tlv(0x02, b"\x00")
                                                               + tlv(0x02, b"\x00") + tlv(0x30, resp_vbs)))
    a.data(False, resp, 12.5)
    assert ctx.logs == []
    a.done(20.0)
    [(path, r)] = ctx.logs
    assert path == "snmp"
    assert (r.ts, r.duration, r.version, r.community) == (10.0, 2.5, "2c", "c1")
    assert (r.get_requests, r.get_responses, r.get_bulk_requests, r.set_requests) == (1, 2, 0, 0)
    assert r.display_string == "Linux box" and r.up_since == pytest.approx(12.5 - 123.45)



def _encode_oid(arcs: list[int]) -> bytes:
    out = bytearray()
    for v in [arcs[0] * 40 + arcs[1]] + arcs[2:]:
        chunk = [v & 0x7F]
        v >>= 7
        while v:
            chunk.append(0x80 | (v & 0x7F))
            v >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2), st.integers(0, 39), st.lists(st.integers(0, (1 << 63) - 1), max_size=12))
def test_oid_roundtrip(a, b, rest):
    text, bad = oid_to_str(_encode_oid([a, b] + rest))
    assert bad == 0 and text == ".".join(map(str, [a, b] + rest))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_parse_message_only_raises_asn1_errors(data):
    try:
        parse_message(data)
    except ASN1Error:
        pass

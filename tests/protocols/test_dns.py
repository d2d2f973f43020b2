"""DNS analyzer: parser edge cases, Zeek's pairing semantics, TCP framing, and the corpus baselines."""

from __future__ import annotations

import struct

import pytest

from analysis.protocols import dns
from analysis.protocols.dns import DNSAnalyzer, DNSOptions, TCPFramer, parse_message

from harness import Conn, Recorder, case, comparator, corpus_dir, run_trace, trace_path, write_logs


# -- message builders -----------------------------------------------------------------------------

def qname(name: str) -> bytes:
    out = b""
    for label in name.split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def header(tid=0x1234, qr=False, opcode=0, aa=False, tc=False, rd=True, ra=False, z=0, rcode=0,
           qd=1, an=0, ns=0, ar=0) -> bytes:
    flags = (qr << 15) | (opcode << 11) | (aa << 10) | (tc << 9) | (rd << 8) | (ra << 7) | (z << 4) | rcode
    return struct.pack("!HHHHHH", tid, flags, qd, an, ns, ar)


def question(name="www.example.com", qtype=1, qclass=1) -> bytes:
    return qname(name) + struct.pack("!HH", qtype, qclass)


def rr(rdata: bytes, rtype=1, name=b"\xc0\x0c", ttl=300, rclass=1) -> bytes:
    return name + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def query(tid=0x1234, name="www.example.com", qtype=1, **kw) -> bytes:
    return header(tid, **kw) + question(name, qtype)


def reply(tid=0x1234, name="www.example.com", qtype=1, answers=(), **kw) -> bytes:
    kw.setdefault("ra", True)
    return header(tid, qr=True, an=len(answers), **kw) + question(name, qtype) + b"".join(answers)


def conn(proto="udp", resp_h="10.0.0.53", resp_p=53) -> Conn:
    return Conn("CtestDNS", "10.0.0.1", 40000, resp_h, resp_p, proto, 100.0)


def analyzer(c=None, options=None):
    ctx = Recorder(c or conn(), options)
    return DNSAnalyzer(ctx), ctx


# -- parser ---------------------------------------------------------------------------------------

def test_header_and_question():
    m = parse_message(query(0xBEEF, "WwW.Example.COM", 28, z=2))
    assert m.header.id == 0xBEEF and not m.header.QR and m.header.RD and m.header.Z == 2
    assert m.questions[0].query == "www.example.com"
    assert m.questions[0].original_query == "WwW.Example.COM"
    assert m.questions[0].qtype == 28 and m.confirmed


def test_short_message_is_none():
    assert parse_message(b"\x00" * 11) is None


def test_compression_pointer_loop_is_bounded():
    # a pointer to itself and a pointer forward: both refused with Zeek's weird, no hang
    msg = header(an=1) + question() + b"\xc0\x21" + struct.pack("!HHIH", 1, 1, 1, 4) + b"\x01\x02\x03\x04"
    m = parse_message(msg)
    assert ("DNS_label_forward_compress_offset", "") in m.weirds
    forward = header() + b"\xc0\x20" + b"\x00" * 30
    assert ("DNS_label_forward_compress_offset", "") in parse_message(forward).weirds


def test_compression_chain_of_backward_pointers_terminates():
    # a chain of pointers, each to the previous one, ending at the question name: followed
    # to the end (every jump shrinks the readable region), work bounded by the message size
    base = header(qd=1, an=2) + question("a.example")
    chain = bytearray()
    prev = 12
    start = len(base) + 12          # the rdata of the first (unknown-type) RR
    for i in range(15):
        chain += struct.pack("!H", 0xC000 | prev)
        prev = start + 2 * i
    first = rr(bytes(chain), rtype=4242)
    second = struct.pack("!H", 0xC000 | prev) + struct.pack("!HHIH", 5, 1, 60, 2) + b"\xc0\x0c"
    m = parse_message(base + first + second)
    assert m.confirmed
    assert m.answers[1].query == "a.example" and m.answers[1].rdata == "a.example"


def test_label_weirds():
    long_label = header() + b"\x40" + b"a" * 64 + b"\x00" + struct.pack("!HH", 1, 1)
    assert ("DNS_label_too_long", "") in parse_message(long_label).weirds
    past_end = header() + b"\x30abc"
    w = parse_message(past_end).weirds
    assert ("DNS_label_len_gt_pkt", "") in w
    assert ("DNS_truncated_quest_too_short", "") in w


def test_name_too_long():
    name = ".".join(["a" * 60] * 5)   # 305 bytes
    m = parse_message(query(name=name))
    assert ("DNS_NAME_too_long", "") in m.weirds
    assert m.questions[0].query == name


def test_name_buffer_cap():
    name = ".".join(["b" * 63] * 9)   # 576 bytes: more than Zeek's 512-byte name buffer
    m = parse_message(query(name=name))
    assert ("DNS_label_len_gt_name_len", "") in m.weirds
    assert len(m.questions[0].query) < 512


def test_rr_truncated_and_unknown():
    m = parse_message(reply(answers=[rr(b"\x01\x02\x03\x04")])[:-2])
    assert ("DNS_truncated_RR_rdlength_lt_len", "") in m.weirds and not m.confirmed
    m = parse_message(reply(answers=[rr(b"xyz", rtype=4242)]))
    assert ("DNS_RR_unknown_type", "4242") in m.weirds and m.confirmed


def test_max_queries_violation():
    msg = header(qd=30) + question() * 30
    m = parse_message(msg, max_queries=25)
    assert m.violation == "DNS_Conn_count_too_large"
    assert parse_message(msg, max_queries=0).violation is None


# -- analyzer (main.zeek semantics) ---------------------------------------------------------------

def test_query_reply_pair_logged_with_rtt_and_answers():
    a, ctx = analyzer()
    a.data(True, query(), 100.0)
    assert ctx.rows("dns") == []
    a.data(False, reply(answers=[rr(b"\x0a\x00\x00\x01"), rr(b"\x0a\x00\x00\x02", ttl=60)], aa=True), 100.25)
    (r,) = ctx.rows("dns")
    assert (r.query, r.qtype_name, r.qclass_name, r.rcode_name) == ("www.example.com", "A", "C_INTERNET", "NOERROR")
    assert r.answers == ["10.0.0.1", "10.0.0.2"] and r.TTLs == [300.0, 60.0]
    assert r.rtt == pytest.approx(0.25) and r.AA and r.RA and r.RD
    assert (r.opcode, r.opcode_name, r.trans_id) == (0, "query", 0x1234)
    assert ctx.confirmed == 1
    names = [e[0] for e in ctx.events]
    assert names[:3] == ["dns_message", "dns_request", "dns_end"]
    assert "dns_A_reply" in names


def test_record_summaries():
    txt = rr(b"\x05hello\x03a b", rtype=16)
    mx = rr(struct.pack("!H", 10) + qname("mail.example.com"), rtype=15)
    cname = rr(qname("Alias.Example.com"), rtype=5)
    srv = rr(struct.pack("!HHH", 1, 2, 443) + qname("svc.example.com"), rtype=33)
    key = rr(struct.pack("!HBB", 257, 3, 8) + b"k" * 8, rtype=48)
    sig = rr(struct.pack("!HBBIIIH", 48, 8, 2, 300, 0, 0, 7) + b"\x00" + b"s" * 8, rtype=46)
    ds = rr(struct.pack("!HBB", 7, 8, 2) + b"d" * 32, rtype=43)
    caa = rr(b"\x00\x05issueca.example", rtype=257)
    unknown = rr(b"??", rtype=4242)
    a, ctx = analyzer()
    a.data(True, query(qtype=255), 1.0)
    a.data(False, reply(qtype=255, answers=[txt, mx, cname, srv, key, sig, ds, caa, unknown]), 1.5)
    (r,) = ctx.rows("dns")
    assert r.answers == ["TXT 5 hello TXT 3 a b", "mail.example.com", "alias.example.com", "svc.example.com",
                         "DNSKEY 8", "RRSIG 48 <Root>", "DS 8 2", "<unknown type=4242>"]
    assert r.qtype_name == "*"
    assert ("dns_CAA_reply" in [e[0] for e in ctx.events])


def test_reply_only_has_no_rtt_and_is_logged_at_done():
    a, ctx = analyzer()
    a.data(False, reply(answers=[rr(b"\x01\x01\x01\x01")]), 5.0)
    assert ctx.rows("dns") == []
    a.done(70.0)
    (r,) = ctx.rows("dns")
    assert r.rtt is None and r.qtype is None and r.query == "www.example.com" and r.rcode == 0


def test_first_message_reply_flips_roles():
    a, ctx = analyzer()
    a.data(True, reply(answers=[rr(b"\x01\x01\x01\x01")]), 5.0)
    assert ctx.flipped == 1
    a.done(6.0)
    (r,) = ctx.rows("dns")
    assert (r.orig_h, r.resp_h) == ("10.0.0.53", "10.0.0.1")


def test_rejected_and_rcode_names():
    a, ctx = analyzer()
    a.data(True, query(), 1.0)
    a.data(False, header(qr=True, rcode=5, qd=0), 1.1)
    (r,) = ctx.rows("dns")
    assert r.rejected and r.rcode_name == "REFUSED"
    a, ctx = analyzer()
    a.data(True, query(), 1.0)
    a.data(False, reply(rcode=3), 1.1)       # question echoed, no records: dns_rejected
    (r,) = ctx.rows("dns")
    assert r.rejected and r.rcode_name == "NXDOMAIN"


def test_multicast_logs_every_message():
    a, ctx = analyzer(conn(resp_h="224.0.0.251", resp_p=5353))
    a.data(True, query(0, "host.local"), 1.0)
    a.data(True, reply(0, "other.local", answers=[rr(b"\xc0\xa8\x00\x02", ttl=120)], aa=True), 1.0)
    assert ctx.flipped == 0
    rows = ctx.rows("dns")
    assert [r.query for r in rows] == ["host.local", "other.local"]
    assert rows[0].rcode is None and rows[1].answers == ["192.168.0.2"]


def test_pending_query_ids_cap_flushes_unmatched():
    a, ctx = analyzer(options=DNSOptions(max_pending_query_ids=3))
    for tid in range(10):
        a.data(True, query(tid), 1.0 + tid)
    # the fast-path query plus the queue flushed once it held more than 3 ids
    assert 0 < len(ctx.rows("dns")) < 10
    a.done(100.0)
    assert sorted(r.trans_id for r in ctx.rows("dns")) == list(range(10))


def test_pending_msgs_cap_per_id():
    a, ctx = analyzer(options=DNSOptions(max_pending_msgs=2))
    for i in range(8):
        a.data(True, query(7), 1.0 + i)
    assert len(ctx.rows("dns")) >= 3
    a.done(50.0)
    assert len(ctx.rows("dns")) == 8


def test_same_id_queries_pair_in_order():
    a, ctx = analyzer()
    a.data(True, query(1, "first.example"), 1.0)
    a.data(True, query(1, "second.example"), 2.0)
    a.data(False, reply(1, "first.example", answers=[rr(b"\x01\x00\x00\x01")]), 3.0)
    a.data(False, reply(1, "second.example", answers=[rr(b"\x02\x00\x00\x02")]), 4.0)
    rows = ctx.rows("dns")
    assert [(r.query, r.answers) for r in rows] == [("first.example", ["1.0.0.1"]), ("second.example", ["2.0.0.2"])]


def test_original_case_column():
    a, ctx = analyzer(options=DNSOptions(log_original_query=True))
    a.data(True, query(name="MiXeD.Case.ORG"), 1.0)
    a.done(2.0)
    (r,) = ctx.rows("dns")
    assert (r.query, r.original_query) == ("mixed.case.org", "MiXeD.Case.ORG")
    from analysis.logs.schema import columns
    assert columns(type(r))[-1].name == "original_query"
    assert "original_query" not in [c.name for c in columns(dns.DNSInfo)]


def test_violation_stops_and_short_message_is_weird():
    a, ctx = analyzer()
    a.data(True, b"\x00\x01", 1.0)
    assert ctx.weirds == [("DNS_truncated_len_lt_hdr_len", "")]
    a.data(True, header(qd=40) + question() * 40, 1.0)
    assert ctx.violations == ["DNS_Conn_count_too_large"]
    assert ("DNS_Conn_count_too_large", "") in ctx.weirds


# -- TCP ------------------------------------------------------------------------------------------

def test_tcp_framing_across_segments():
    q = query()
    r = reply(answers=[rr(b"\x05\x06\x07\x08")])
    stream_q = struct.pack("!H", len(q)) + q
    stream_r = struct.pack("!H", len(r)) + r + struct.pack("!H", len(r)) + r
    a, ctx = analyzer(conn("tcp"))
    for i in range(len(stream_q)):              # one byte at a time
        a.data(True, stream_q[i:i + 1], 1.0)
    a.data(False, stream_r[:7], 1.1)
    a.data(False, stream_r[7:], 1.2)
    rows = ctx.rows("dns")
    assert len(rows) == 1 and rows[0].proto == "tcp" and rows[0].answers == ["5.6.7.8"]
    a.done(2.0)
    assert len(ctx.rows("dns")) == 2         # the second reply had no query


def test_tcp_partial_message_delivered_at_eof():
    q = query()
    a, ctx = analyzer(conn("tcp"))
    a.data(True, struct.pack("!H", len(q) + 10) + q, 1.0)
    assert not ctx.events
    a.eof(True, 1.5)
    assert [e[0] for e in ctx.events][:2] == ["dns_message", "dns_request"]


def test_framer_memory_bounded():
    f = TCPFramer()
    assert f.feed(b"\xff\xff" + b"x" * 1000) == []
    out = f.feed(b"y" * 70000)
    assert len(out) == 1 and len(out[0]) == 65535


# -- corpus ---------------------------------------------------------------------------------------

DNS_CASES = ["scripts.base.protocols.dns.dns-key", "scripts.base.protocols.dns.flip",
             "scripts.base.protocols.dns.mdns-no-assoc", "scripts.base.protocols.dns.notify",
             "scripts.base.protocols.dns.spf", "scripts.base.protocols.dns.zero-responses",
             "scripts.policy.protocols.dns.original_case", "core.tunnels.gre", "core.tunnels.gre-pptp",
             "core.tunnels.gtp.false_gtp"]


@pytest.mark.parametrize("name", DNS_CASES)
def test_corpus_dns_log(name, tmp_path):
    c = case(name)
    opts = DNSOptions(log_original_query="protocols/dns/log-original-query-case" in c["loads"])
    ctxs = run_trace(DNSAnalyzer, trace_path(c["trace"]), opts, interleave=True,
                     server_ports={p for p, _ in dns.SPEC.ports},
                     ignore_checksums=c["ignore_checksums"], ports=dns.SPEC.ports)
    write_logs(ctxs, tmp_path)
    res = comparator().compare_logs(corpus_dir() / "zeek" / c["baselines"]["dns.log"], tmp_path / "dns.log",
                                      strict=True)
    assert res.passed, res.to_dict()


def test_dnssec_and_caa_weirds():
    bad_key = rr(struct.pack("!HBB", 0x0181 | 0x0002, 2, 200) + b"k" * 4, rtype=48)
    ds0 = rr(struct.pack("!HBB", 1, 8, 0) + b"d" * 4, rtype=43)
    caa_bad = rr(b"\x00\x09issue", rtype=257)
    m = parse_message(reply(answers=[bad_key, ds0, caa_bad]))
    names = [w[0] for w in m.weirds]
    assert names == ["DNSSEC_DNSKEY_Invalid_Flag", "DNSSEC_DNSKEY_Revoked_KSK", "DNSSEC_DNSKEY_Invalid_Protocol",
                     "DNSSEC_DNSKEY_unknown_ZoneSignAlgo", "DNSSEC_DS_ResrevedDigestType", "DNS_CAA_char_str_past_rdlen"]
    assert len(m.answers) == 2 and not m.confirmed


def test_pointer_chain_bomb_is_capped():
    # a 64 KiB message: a long chain of backward pointers, then thousands of answers whose names
    # all jump to the end of the chain.  Without a cap this is quadratic (seconds of CPU); the
    # cap (Zeek's dns_max_compression_chain_depth) stops each name with a weird.
    base = header(qd=1, an=1) + question("x")
    chain = bytearray()
    prev = 12
    start = len(base) + 12
    for i in range(15000):
        chain += struct.pack("!H", 0xC000 | prev)
        prev = start + 2 * i
    first = rr(bytes(chain), rtype=4242)
    tail = (struct.pack("!H", 0xC000 | prev) + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x01\x02\x03\x04") * 1700
    body = base + first + tail
    msg = body[:4] + struct.pack("!HHHH", 1, 1 + 1700, 0, 0) + body[12:]
    m = parse_message(msg[:65535])
    assert m.weirds.count((dns.POINTER_CAP_WEIRD, "")) == len(m.answers) - 1 > 1000


def test_compression_depth_option():
    base = header(qd=1, an=1) + question("deep.example")
    chain = bytearray()
    prev = 12
    start = len(base) + 12
    for i in range(30):
        chain += struct.pack("!H", 0xC000 | prev)
        prev = start + 2 * i
    msg = base + rr(bytes(chain), rtype=4242)
    msg = msg[:6] + b"\x00\x02" + msg[8:] + struct.pack("!H", 0xC000 | prev) + struct.pack("!HHIH", 5, 1, 1, 2) + b"\xc0\x0c"
    assert parse_message(msg, max_compression_depth=40).answers[1].query == "deep.example"
    m = parse_message(msg)     # Zeek's default depth 20
    assert (dns.POINTER_CAP_WEIRD, "") in m.weirds and m.answers[1].query == ""

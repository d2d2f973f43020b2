"""DHCP analyzer: parser, Zeek's cross-connection join by xid, expiry in network time, corpus baselines."""

from __future__ import annotations

import struct

import pytest

from analysis.protocols import dhcp
from analysis.protocols.dhcp import DHCPAggregator, DHCPAnalyzer, DHCPOptions, Malformed, parse_message

from harness import Conn, Recorder, case, comparator, corpus_dir, run_trace, trace_path, write_logs

MAC = bytes.fromhex("90b11c994929")


def build(op=1, m_type=1, xid=0x1234, yiaddr="0.0.0.0", options=b"", chaddr=MAC) -> bytes:
    fixed = struct.pack("!BBBBIHH", op, 1, 6, 0, xid, 0, 0)
    addrs = b"\x00" * 4 + bytes(int(x) for x in yiaddr.split(".")) + b"\x00" * 8
    body = fixed + addrs + chaddr.ljust(16, b"\x00") + b"\x00" * 192 + dhcp.MAGIC_COOKIE
    return body + bytes([53, 1, m_type]) + options + b"\xff"


def opt(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def client_conn(uid="C1", orig_h="0.0.0.0") -> Conn:
    return Conn(uid, orig_h, 68, "255.255.255.255", 67, "udp", 0.0)


def test_parse_options():
    m = parse_message(build(options=opt(12, b"laptop") + opt(50, bytes([10, 0, 0, 9])) + opt(61, b"\x01" + MAC)
                            + opt(81, b"\x04\x00\x00" + b"\x04host\x07example\x00") + opt(56, b"why")))
    assert (m.op, m.m_type, m.xid) == (1, 1, 0x1234)
    assert m.chaddr == "90:b1:1c:99:49:29"
    assert (m.host_name, m.addr_request, m.client_id, m.client_fqdn, m.message) == (
        "laptop", "10.0.0.9", (1, "90:b1:1c:99:49:29"), "host.example", "why")


def test_malformed():
    assert isinstance(parse_message(b"\x01" * 100), Malformed)
    bad_cookie = bytearray(build())
    bad_cookie[236] = 0
    assert isinstance(parse_message(bytes(bad_cookie)), Malformed)
    assert isinstance(parse_message(b"\x07" + build()[1:]), Malformed)
    assert isinstance(parse_message(build()[:-1] + b"\x0c\x50abc"), Malformed)   # option past the end


def test_exchange_joins_across_connections_and_logs_on_expiry():
    opts = DHCPOptions()
    c1, c2 = Recorder(client_conn("C1"), opts), Recorder(Conn("C2", "10.0.0.9", 68, "10.0.0.1", 67, "udp", 0.0), opts)
    a1, a2 = DHCPAnalyzer(c1), DHCPAnalyzer(c2)
    assert a1.agg is a2.agg                 # one join table per options object (per engine)
    a1.data(True, build(m_type=1, options=opt(12, b"laptop")), 10.0)
    a2.data(False, build(op=2, m_type=2, yiaddr="10.0.0.9", options=opt(51, struct.pack("!I", 3600))
                         + opt(15, b"example.org")), 10.5)
    assert c1.confirmed == 1 and c2.confirmed == 1
    assert not c1.logs and not c2.logs
    # a message of another exchange 20 s later expires the first one (created > 10 s, quiet > 5 s)
    a1.data(True, build(m_type=8, xid=99), 30.0)
    rows = c1.rows("dhcp")
    assert len(rows) == 1
    r = rows[0]
    assert r.msg_types == ["DISCOVER", "OFFER"] and sorted(r.uids) == ["C1", "C2"]
    assert (r.host_name, r.assigned_addr, r.client_addr, r.server_addr) == ("laptop", "10.0.0.9", "10.0.0.9", "10.0.0.1")
    assert (r.lease_time, r.domain, r.mac, r.duration) == (3600.0, "example.org", "90:b1:1c:99:49:29", 0.5)
    # the last connection ending writes what is left (Zeek's zeek_done)
    a1.done(31.0)
    assert len(c1.rows("dhcp")) == 1
    a2.done(31.0)
    assert [r.msg_types for r in c2.rows("dhcp")] == [["INFORM"]]


def test_max_msg_types_splits_entries():
    opts = DHCPOptions(max_msg_types_per_log_entry=3)
    ctx = Recorder(client_conn(), opts)
    a = DHCPAnalyzer(ctx)
    for i in range(7):
        a.data(True, build(m_type=8), 1.0 + i * 0.01)
    assert [len(r.msg_types) for r in ctx.rows("dhcp")] == [3, 3]
    a.done(2.0)
    assert [len(r.msg_types) for r in ctx.rows("dhcp")] == [3, 3, 1]


def test_violation_on_garbage():
    ctx = Recorder(client_conn(), DHCPOptions())
    a = DHCPAnalyzer(ctx)
    a.data(True, b"garbage", 1.0)
    assert ctx.violations and not ctx.confirmed
    a.done(1.0)


def test_join_table_is_bounded(monkeypatch):
    monkeypatch.setattr(dhcp, "MAX_JOIN_ENTRIES", 50)
    agg = DHCPAggregator()
    out = []
    c = client_conn()
    for xid in range(200):
        agg.add(1.0, c, "C1", True, parse_message(build(xid=xid)), out.append)
    assert len(agg.join) <= 50 and len(out) == 150


DHCP_CASES = ["scripts.base.protocols.dhcp.dhcp-all-msg-types", "scripts.base.protocols.dhcp.dhcp-discover-msg-types",
              "scripts.base.protocols.dhcp.dhcp-prevent-large-msgtypes",
              "scripts.base.protocols.dhcp.dhcp-prevent-large-uids"]


@pytest.mark.parametrize("name", DHCP_CASES)
def test_corpus_dhcp_log(name, tmp_path):
    c = case(name)
    opts = DHCPOptions()
    for line in c["redefs"]:
        key, value = line.removeprefix("redef DHCP::").rstrip(";").split("=")
        setattr(opts, key.strip(), int(value))
    ctxs = run_trace(DHCPAnalyzer, trace_path(c["trace"]), opts, server_ports={67}, interleave=True,
                     ignore_checksums=c["ignore_checksums"],
                     ports=dhcp.SPEC.ports)
    write_logs(ctxs, tmp_path)
    res = comparator().compare_logs(corpus_dir() / "zeek" / c["baselines"]["dhcp.log"], tmp_path / "dhcp.log",
                                      strict=True)
    assert res.passed, res.to_dict()

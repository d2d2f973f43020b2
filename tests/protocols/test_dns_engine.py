"""DNS, DHCP and NTP through the real engine (standalone ``analyze_file``): TCP framing over
reassembly, role flips, load-switched options, and conn.log's service."""

from __future__ import annotations

import struct

import dpkt
import pytest

from analysis.engine import Engine, analyze_file
from analysis.pcapwriter import LINKTYPE_ETHERNET
from analysis.sinks import ListLogSink
from analysis.zeek_scripts import configure
from tests.decoder_frames import udp4_frame

from test_dns import query, reply, rr
from harness import case, comparator, corpus_dir, trace_path


def _frames_tcp_dns() -> list[tuple[float, bytes]]:
    cli, srv = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x35"
    mac_c, mac_s = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x35"
    out = []
    t = 1_700_000_000.0
    seq = {True: 1000, False: 5000}

    def seg(from_client: bool, flags: int, data: bytes = b""):
        nonlocal t
        t += 0.01
        tcp = dpkt.tcp.TCP(sport=40000 if from_client else 53, dport=53 if from_client else 40000,
                           seq=seq[from_client], ack=seq[not from_client] if flags & dpkt.tcp.TH_ACK else 0,
                           flags=flags, win=65535, data=data)
        seq[from_client] += len(data) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)
        ip = dpkt.ip.IP(src=cli if from_client else srv, dst=srv if from_client else cli, p=6, ttl=64, data=tcp)
        ip.len = len(ip)
        eth = dpkt.ethernet.Ethernet(src=mac_c if from_client else mac_s, dst=mac_s if from_client else mac_c,
                                     type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
        out.append((t, bytes(eth)))

    q = query(0x4242, "tcp.example.org", 16)
    r = reply(0x4242, "tcp.example.org", 16, answers=[rr(b"\x0bhello world", rtype=16)])
    A, PA, S, SA, FA = (dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, dpkt.tcp.TH_SYN,
                        dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
    seg(True, S)
    seg(False, SA)
    seg(True, A)
    seg(True, PA, struct.pack("!H", len(q)))          # the length prefix alone
    seg(True, PA, q[:9])                              # the message split mid-header
    seg(True, PA, q[9:])
    wire = struct.pack("!H", len(r)) + r
    seg(False, PA, wire)
    seg(True, FA)
    seg(False, FA)
    seg(True, A)
    return out


def test_dns_over_tcp_through_reassembly(tmp_path):
    from analysis.pcapwriter import write_pcap

    pcap = tmp_path / "dns-tcp.pcap"
    write_pcap(str(pcap), _frames_tcp_dns())
    cfg = configure(loads=["base/protocols/conn", "base/protocols/dns"], bare=True)
    analyze_file(pcap, tmp_path / "logs", cfg)
    dns_log = (tmp_path / "logs" / "dns.log").read_text().splitlines()
    rows = [line.split("\t") for line in dns_log if not line.startswith("#")]
    fields = next(line for line in dns_log if line.startswith("#fields")).split("\t")[1:]
    assert len(rows) == 1
    row = dict(zip(fields, rows[0]))
    assert (row["proto"], row["query"], row["qtype_name"], row["answers"]) == ("tcp", "tcp.example.org", "TXT",
                                                                               "TXT 11 hello world")
    assert row["rtt"] != "-"
    conn_log = (tmp_path / "logs" / "conn.log").read_text().splitlines()
    cfields = next(line for line in conn_log if line.startswith("#fields")).split("\t")[1:]
    crow = dict(zip(cfields, next(line for line in conn_log if not line.startswith("#")).split("\t")))
    assert crow["service"] == "dns" and crow["conn_state"] == "SF"


@pytest.mark.parametrize("name", ["scripts.base.protocols.dns.flip", "scripts.policy.protocols.dns.original_case",
                                  "scripts.base.protocols.dhcp.dhcp-prevent-large-uids"])
def test_corpus_cases_through_the_engine(name, tmp_path):
    c = case(name)
    cfg = configure(loads=c["loads"], redefs=c["redefs"], bare=c["bare"])
    cfg.ignore_checksums = c["ignore_checksums"]
    analyze_file(trace_path(c["trace"]), tmp_path, cfg)
    for log in ("dns.log", "dhcp.log"):
        if log in c["baselines"]:
            res = comparator().compare_logs(corpus_dir() / "zeek" / c["baselines"][log], tmp_path / log)
            assert res.passed, res.to_dict()


def test_ntp_service_in_conn_log(tmp_path):
    c = case("core.tunnels.gre")
    cfg = configure(loads=c["loads"], bare=True)
    analyze_file(trace_path(c["trace"]), tmp_path, cfg)
    lines = (tmp_path / "conn.log").read_text().splitlines()
    fields = next(x for x in lines if x.startswith("#fields")).split("\t")[1:]
    rows = [dict(zip(fields, x.split("\t"))) for x in lines if not x.startswith("#")]
    assert sorted(r["service"] for r in rows if r["id.resp_p"] == "123") == ["ntp", "ntp", "ntp"]
    assert (tmp_path / "ntp.log").exists()


def _udp_dns_conns(times: list[tuple[float, bool]], redefs: list[str] | None = None) -> list:
    """conn.log rows for DNS datagrams on one 5-tuple at the given (offset, from_client) times."""
    t0 = 1_700_000_000.0
    frames = []
    for i, (dt, from_client) in enumerate(times):
        payload = query(0x100 + i, "a.example.org") if from_client else reply(0x100 + i - 1, "a.example.org")
        f = (udp4_frame(sport=40000, dport=53, payload=payload) if from_client else
             udp4_frame(sip="10.0.0.2", dip="10.0.0.1", sport=53, dport=40000, payload=payload))
        frames.append((t0 + dt, f))
    sink = ListLogSink()
    eng = Engine(configure(redefs=redefs or []), sink)
    eng.process_batch((LINKTYPE_ETHERNET, [(ts, len(f), f) for ts, f in frames]))
    eng.finish()
    return [(round(r.ts - t0, 3), r.orig_pkts, r.resp_pkts) for r in sink.records.get("conn", [])]


def test_udp_dns_sessions_expire_on_zeeks_ten_second_ticks():
    # idle 9.9 s at the first tick (t=10): removed; the query at 12 starts a new connection
    assert _udp_dns_conns([(0, True), (0.1, False), (12, True)]) == [(0, 1, 1), (12, 1, 0)]
    # idle only 5 s at t=10: the timer re-arms, so 12 is the same connection (a 10 s inactivity
    # rule would have split it); at t=30 it was idle 18 s: the packet at 31 is a new one
    assert _udp_dns_conns([(0, True), (0.1, False), (5, True), (12, True), (31, True)]) == \
        [(0, 3, 1), (31, 1, 0)]
    # dns_session_timeout is Zeek's redef-able global
    assert _udp_dns_conns([(0, True), (0.1, False), (12, True)], ["redef dns_session_timeout = 20 sec;"]) == \
        [(0, 2, 1)]

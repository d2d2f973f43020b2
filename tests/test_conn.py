"""The connection table with hand-built packets: Zeek's conn.log semantics, one behaviour per test."""

from __future__ import annotations

import re

import pytest

from analysis.config import AnalysisConfig
from analysis.conn import ConnTable, UidGenerator
from analysis.packet import Encap, Packet
from analysis.sinks import ListLogSink
from analysis.weird import WeirdReporter
from analysis.zeek_scripts import configure

S, F, R, P, A = 0x02, 0x01, 0x04, 0x08, 0x10

C, SV = "10.0.0.1", "192.0.2.80"   # client (local: private space), server (local too: TEST-NET)


def pkt(ts, src, dst, sp, dp, flags=0, seq=0, ack=0, n=0, proto=6, win=1000, ip_len=None, encap=(),
        bad=False, payload=None):
    p = Packet()
    p.ts, p.src, p.dst, p.sport, p.dport, p.proto = ts, src, dst, sp, dp, proto
    p.tcp_flags, p.seq, p.ack, p.win = flags, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, win
    p.payload_len = n
    p.payload = payload if payload is not None else b"x" * n
    hdr = 40 if proto == 6 else 28
    p.ip_len = ip_len if ip_len is not None else hdr + n
    p.encap = encap
    p.bad_checksum = bad
    return p


class Run:
    def __init__(self, cfg: AnalysisConfig | None = None, events=None):
        self.sink = ListLogSink()
        cfg = cfg or configure()
        cfg.uid_seed = 7
        self.weirds = WeirdReporter(self.sink)
        self.table = ConnTable(cfg, self.sink, events, self.weirds)

    def feed(self, *packets):
        for p in packets:
            self.table.process(p)
        return self

    def conns(self):
        self.table.finish()
        return self.sink.records.get("conn", [])

    def one(self):
        rows = self.conns()
        assert len(rows) == 1, rows
        return rows[0]


def handshake(t0=1.0, cseq=1000, sseq=5000, cp=40000, sp=80):
    return [pkt(t0, C, SV, cp, sp, S, cseq), pkt(t0 + 0.1, SV, C, sp, cp, S | A, sseq, cseq + 1),
            pkt(t0 + 0.2, C, SV, cp, sp, A, cseq + 1, sseq + 1)]


def full_session(t0=1.0, cseq=1000, sseq=5000, creq=100, sresp=300):
    return handshake(t0, cseq, sseq) + [
        pkt(t0 + 0.3, C, SV, 40000, 80, P | A, cseq + 1, sseq + 1, creq),
        pkt(t0 + 0.4, SV, C, 80, 40000, A, sseq + 1, cseq + 1 + creq),
        pkt(t0 + 0.5, SV, C, 80, 40000, P | A, sseq + 1, cseq + 1 + creq, sresp),
        pkt(t0 + 0.6, C, SV, 40000, 80, F | A, cseq + 1 + creq, sseq + 1 + sresp),
        pkt(t0 + 0.7, SV, C, 80, 40000, F | A, sseq + 1 + sresp, cseq + 2 + creq),
        pkt(t0 + 0.8, C, SV, 40000, 80, A, cseq + 2 + creq, sseq + 2 + sresp),
    ]


def test_complete_tcp_session_is_SF_with_zeek_history_and_byte_counts():
    r = Run().feed(*full_session()).one()
    assert (r.conn_state, r.history) == ("SF", "ShADadFf")
    assert (r.orig_bytes, r.resp_bytes) == (100, 300)
    assert (r.orig_pkts, r.resp_pkts) == (5, 4)
    assert r.orig_ip_bytes == 5 * 40 + 100 and r.resp_ip_bytes == 4 * 40 + 300
    # the final ACK after both FINs does not extend the duration (Zeek's last_time rule)
    assert r.duration == pytest.approx(0.7)
    assert (r.proto, r.ip_proto, r.missed_bytes) == ("tcp", 6, 0)
    assert r.local_orig is True and r.local_resp is True


def test_bytes_come_from_sequence_numbers_not_payload_sums():
    # a retransmission adds payload but no sequence space, and earns a 'T'
    pk = handshake() + [pkt(1.3, C, SV, 40000, 80, P | A, 1001, 5001, 50), pkt(1.35, C, SV, 40000, 80, P | A, 1001, 5001, 50),
                        pkt(1.4, SV, C, 80, 40000, A, 5001, 1051)]
    r = Run().feed(*pk).one()
    assert r.orig_bytes == 50
    assert r.history == "ShADTa"
    assert r.conn_state == "S1"


def test_retransmission_letter_is_added_at_1_10_100_repeats():
    pk = handshake() + [pkt(1.3, C, SV, 40000, 80, P | A, 1001, 5001, 10)]
    pk += [pkt(1.3 + i * 0.001, C, SV, 40000, 80, P | A, 1001, 5001, 10) for i in range(1, 101)]
    assert Run().feed(*pk).one().history == "ShADTTT"
    for repeats, hist in ((9, "ShADT"), (10, "ShADTT"), (99, "ShADTT")):
        pk2 = handshake() + [pkt(1.3, C, SV, 40000, 80, P | A, 1001, 5001, 10)]
        pk2 += [pkt(1.3 + i * 0.001, C, SV, 40000, 80, P | A, 1001, 5001, 10) for i in range(1, repeats + 1)]
        assert Run().feed(*pk2).one().history == hist


def test_syn_only_is_S0_and_attempt_timer_splits_late_retry():
    rows = Run().feed(pkt(1.0, C, SV, 40000, 80, S, 1000), pkt(4.0, C, SV, 40000, 80, S, 1000),
                      pkt(20.0, C, SV, 40000, 80, S, 1000)).conns()
    assert sorted((r.conn_state, r.history, r.orig_pkts) for r in rows) == [("S0", "S", 1), ("S0", "S", 2)]
    assert all(r.duration is None or r.duration == pytest.approx(3.0) for r in rows)


def test_rejected_connection_is_REJ():
    r = Run().feed(pkt(1.0, C, SV, 40000, 80, S, 1000), pkt(1.1, SV, C, 80, 40000, R | A, 0, 1001)).one()
    assert (r.conn_state, r.history) == ("REJ", "Sr")


def test_originator_abort_is_RSTO_and_responder_abort_RSTR():
    r = Run().feed(*handshake(), pkt(1.5, C, SV, 40000, 80, R | A, 1001, 5001)).one()
    assert (r.conn_state, r.history) == ("RSTO", "ShAR")
    r = Run().feed(*handshake(), pkt(1.5, SV, C, 80, 40000, R | A, 5001, 1001)).one()
    assert (r.conn_state, r.history) == ("RSTR", "ShAr")


def test_syn_then_rst_without_answer_is_RSTOS0():
    r = Run().feed(pkt(1.0, C, SV, 40000, 80, S, 1000), pkt(1.1, C, SV, 40000, 80, R, 1001)).one()
    assert (r.conn_state, r.history) == ("RSTOS0", "SR")


def test_half_close_states_S2_S3_SH():
    assert Run().feed(*handshake(), pkt(1.5, C, SV, 40000, 80, F | A, 1001, 5001)).one().conn_state == "S2"
    assert Run().feed(*handshake(), pkt(1.5, SV, C, 80, 40000, F | A, 5001, 1001)).one().conn_state == "S3"
    r = Run().feed(pkt(1.0, C, SV, 40000, 80, S, 1000), pkt(1.5, C, SV, 40000, 80, F, 1001)).one()
    assert (r.conn_state, r.history) == ("SH", "SF")


def test_synack_first_from_server_port_is_flipped_with_caret():
    r = Run().feed(pkt(1.0, SV, C, 80, 40000, S | A, 5000, 1001), pkt(1.1, C, SV, 40000, 80, A, 1001, 5001)).one()
    assert (r.orig_h, r.orig_p, r.resp_h, r.resp_p) == (C, 40000, SV, 80)
    assert r.history == "^hA"
    assert (r.orig_pkts, r.resp_pkts) == (1, 1)


def test_synack_first_between_unknown_ports_flips_on_following_ack():
    # no likely server port decides it, Zeek flips once an ACK follows the SYN-ACK
    cfg = configure(["base/protocols/conn"], bare=True)
    r = Run(cfg).feed(pkt(1.0, SV, C, 9000, 40000, S | A, 5000, 1001), pkt(1.1, C, SV, 40000, 9000, A, 1001, 5001),
                      pkt(1.2, C, SV, 40000, 9000, P | A, 1001, 5001, 10)).one()
    assert (r.orig_h, r.orig_p) == (C, 40000)
    assert r.history == "^hAD"
    assert (r.orig_pkts, r.resp_pkts) == (2, 1)


def test_midstream_traffic_is_OTH_and_bytes_still_counted():
    r = Run().feed(pkt(1.0, C, SV, 40000, 80, P | A, 1000, 5000, 20), pkt(1.1, SV, C, 80, 40000, A, 5000, 1020)).one()
    assert r.conn_state == "OTH"
    assert r.history == "Da"
    assert r.orig_bytes == 20


def test_content_gap_counts_missed_bytes_and_g_letter():
    pk = handshake() + [pkt(1.3, SV, C, 80, 40000, P | A, 5001, 1001, 100),
                        # server bytes 5101..5200 never seen; the client acks past them
                        pkt(1.4, SV, C, 80, 40000, P | A, 5201, 1001, 100),
                        pkt(1.5, C, SV, 40000, 80, A, 1001, 5301)]
    r = Run().feed(*pk).one()
    assert r.missed_bytes == 100
    assert r.history == "ShAdg"     # 'A' was earned in the handshake already
    assert r.resp_bytes == 300


def test_udp_request_reply_and_one_way():
    r = Run().feed(pkt(1.0, C, SV, 5353, 53, n=30, proto=17), pkt(1.2, SV, C, 53, 5353, n=90, proto=17)).one()
    assert (r.proto, r.conn_state, r.history, r.orig_bytes, r.resp_bytes) == ("udp", "SF", "Dd", 30, 90)
    r = Run().feed(pkt(1.0, C, SV, 5353, 53, n=30, proto=17)).one()
    assert (r.conn_state, r.history, r.duration, r.orig_bytes) == ("S0", "D", None, None)


def test_udp_reply_first_from_server_port_is_flipped():
    r = Run().feed(pkt(1.0, SV, C, 53, 40000, n=90, proto=17)).one()
    assert (r.orig_h, r.orig_p, r.history, r.conn_state) == (C, 40000, "^d", "SHR")
    # both ports plausible servers (53 and 5353): no flip
    r = Run().feed(pkt(1.0, SV, C, 53, 5353, n=90, proto=17)).one()
    assert (r.orig_h, r.orig_p, r.history, r.conn_state) == (SV, 53, "D", "S0")


def test_udp_inactivity_timeout_starts_a_new_connection():
    rows = Run().feed(pkt(1.0, C, SV, 5353, 53, n=30, proto=17), pkt(62.0, C, SV, 5353, 53, n=30, proto=17)).conns()
    assert len(rows) == 2 and len({r.uid for r in rows}) == 2


def test_udp_bad_checksum_is_not_counted():
    r = Run().feed(pkt(1.0, C, SV, 5353, 53, n=30, proto=17, bad=True),
                   pkt(1.1, SV, C, 53, 5353, n=30, proto=17, bad=True)).one()
    assert (r.history, r.orig_pkts, r.resp_pkts, r.conn_state) == ("Cc", 0, 0, "OTH")


def test_icmp_echo_pairs_request_and_reply():
    r = Run().feed(pkt(1.0, C, SV, 8, 0, n=56, proto=1, ip_len=84),
                   pkt(1.1, SV, C, 0, 0, n=56, proto=1, ip_len=84)).one()
    assert (r.proto, r.orig_p, r.resp_p, r.conn_state, r.history) == ("icmp", 8, 0, "OTH", None)
    assert (r.orig_bytes, r.resp_bytes, r.orig_pkts, r.resp_pkts) == (56, 56, 1, 1)


def test_icmp_unreachable_is_one_way_with_code_as_resp_port():
    r = Run().feed(pkt(1.0, SV, C, 3, 3, n=28, proto=1)).one()
    assert (r.orig_h, r.orig_p, r.resp_p) == (SV, 3, 3)


def test_icmp6_neighbor_solicit_counterpart():
    r = Run().feed(pkt(1.0, "fe80::1", "ff02::1:ff00:2", 135, 0, n=24, proto=58)).one()
    assert (r.orig_p, r.resp_p, r.ip_proto, r.proto) == (135, 136, 58, "icmp")


def test_unknown_ip_protocol_is_unknown_transport():
    r = Run().feed(pkt(1.0, C, SV, 0, 0, proto=47, ip_len=40), pkt(1.5, C, SV, 0, 0, proto=47, ip_len=40)).one()
    assert (r.proto, r.orig_p, r.resp_p, r.ip_proto, r.conn_state) == ("unknown_transport", 0, 0, 47, "OTH")
    assert (r.orig_bytes, r.orig_pkts, r.orig_ip_bytes) == (0, 2, 80)


def test_local_columns_unset_without_local_nets():
    cfg = configure()
    cfg.private_address_space_is_local = False
    r = Run(cfg).feed(*handshake()).one()
    assert r.local_orig is None and r.local_resp is None
    cfg = configure(redefs=["redef Site::local_nets = { 192.0.2.0/24 };"])
    cfg.private_address_space_is_local = False
    r = Run(cfg).feed(*handshake()).one()
    assert (r.local_orig, r.local_resp) == (False, True)


def test_udp_tunnel_uses_outer_connection_uid_and_logs_tunnel():
    run = Run()
    outer = pkt(1.0, "198.51.100.1", "198.51.100.2", 4789, 4789, n=100, proto=17)
    enc = (Encap("VXLAN", "198.51.100.1", "198.51.100.2", 4789, 4789, 17),)
    inner = pkt(1.0, C, SV, 40000, 80, S, 1000, encap=enc)
    run.feed(outer, inner)
    rows = {r.proto: r for r in run.conns()}
    assert rows["tcp"].tunnel_parents == [rows["udp"].uid]
    tun = run.sink.records["tunnel"]
    assert [(t.action, t.uid, t.tunnel_type) for t in tun] == [
        ("Tunnel::DISCOVER", rows["udp"].uid, "Tunnel::VXLAN"), ("Tunnel::CLOSE", rows["udp"].uid, "Tunnel::VXLAN")]


def test_ip_tunnel_gets_its_own_uid_and_no_close():
    run = Run()
    enc = (Encap("GRE", "203.0.113.1", "203.0.113.2", 0, 0, 47),)
    enc_back = (Encap("GRE", "203.0.113.2", "203.0.113.1", 0, 0, 47),)
    run.feed(pkt(1.0, C, SV, 40000, 80, S, 1000, encap=enc), pkt(1.1, SV, C, 80, 40000, S | A, 5000, 1001, encap=enc_back))
    rows = run.conns()
    tun = run.sink.records["tunnel"]
    assert [t.action for t in tun] == ["Tunnel::DISCOVER"]
    assert (tun[0].orig_h, tun[0].orig_p, tun[0].resp_p) == ("203.0.113.1", 0, 0)
    assert rows[0].tunnel_parents == [tun[0].uid]


def test_mac_and_vlan_extensions_add_columns():
    cfg = configure(["policy/protocols/conn/mac-logging", "protocols/conn/vlan-logging"])
    p = pkt(1.0, C, SV, 40000, 80, S, 1000)
    p.src_mac, p.dst_mac, p.vlan = "00:11:22:33:44:55", "66:77:88:99:aa:bb", 10
    r = Run(cfg).feed(p).one()
    assert (r.orig_l2_addr, r.resp_l2_addr, r.vlan, r.inner_vlan) == ("00:11:22:33:44:55", "66:77:88:99:aa:bb", 10, None)


def test_events_new_connection_and_state_remove():
    class Ev:
        def __init__(self):
            self.seen = []

        def event(self, name, args):
            self.seen.append((name, args[0].uid))

    ev = Ev()
    Run(events=ev).feed(*handshake()).conns()
    assert [n for n, _ in ev.seen] == ["new_connection", "connection_established", "connection_state_remove"]
    assert len({uid for _, uid in ev.seen}) == 1


def test_weird_policy_logs_repeats_once_per_connection():
    run = Run()
    run.feed(pkt(1.0, C, SV, 40000, 80, S, 1000))
    run.feed(pkt(1.1, C, SV, 40000, 80, S, 1000), pkt(1.2, C, SV, 40000, 80, P | A, 1001, 0, 10),
             pkt(1.3, C, SV, 40000, 80, P | A, 1011, 0, 10))
    names = [w.name for w in run.sink.records.get("weird", [])]
    assert names.count("data_before_established") == 1
    w = [w for w in run.sink.records["weird"] if w.name == "data_before_established"][0]
    assert w.uid and w.orig_p == 40000 and w.source == "TCP"


def test_uids_have_zeek_shape_and_seed_reproduces_them():
    a, b = UidGenerator(5), UidGenerator(5)
    ua = [a() for _ in range(50)]
    assert ua == [b() for _ in range(50)]
    assert all(re.fullmatch(r"C[0-9A-Za-z]{10,18}", u) for u in ua)
    assert len(set(ua)) == 50
    assert UidGenerator(None)() != UidGenerator(None)()


def test_sweep_expires_idle_connections_by_network_time():
    run = Run()
    run.feed(pkt(1.0, C, SV, 5353, 53, n=30, proto=17))
    run.table.sweep(30.0)
    assert len(run.table) == 1
    run.table.sweep(62.0)
    assert len(run.table) == 0 and len(run.sink.records["conn"]) == 1


def test_closed_tcp_connection_removed_after_close_delay_and_port_reuse_is_new_conn():
    run = Run()
    run.feed(*full_session())
    run.feed(*full_session(t0=3.0, cseq=90000))   # SYN with a new ISN right after a clean close
    rows = run.conns()
    assert len(rows) == 2 and all(r.conn_state == "SF" for r in rows)


def test_zeek_script_names_and_redefs_map_to_config():
    cfg = configure(["base/protocols/http", "policy/protocols/conn/mac-logging"],
                    ["redef Site::local_nets = { 125.190.109.0/24 };", "Site::local_nets += { [2001:db8::]/32 }",
                     "redef tcp_inactivity_timeout = 2 min;", "redef dpd_reassemble_first_packets = F;",
                     "redef Some::thing = 3;", "not zeek at all"], bare=True)
    assert cfg.log_enabled("conn") and cfg.log_enabled("http") and not cfg.log_enabled("dns")
    assert cfg.conn_extensions == ("mac",)
    assert cfg.local_nets == ("125.190.109.0/24", "2001:db8::/32")
    assert cfg.tcp_inactivity_timeout == 120.0 and cfg.dpd_reassemble_first_packets is False
    assert (80, "tcp") in cfg.likely_server_ports and (53, "udp") not in cfg.likely_server_ports
    assert len(cfg.notes) == 2
    full = configure()
    assert full.logs is None and (53, "udp") in full.likely_server_ports


from hypothesis import given, settings, strategies as st  # noqa: E402

_pkts = st.lists(st.tuples(
    st.floats(0, 400, allow_nan=False), st.booleans(), st.sampled_from([6, 6, 6, 17, 1, 58, 132]),
    st.integers(0, 0xFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 1500),
    st.integers(0, 3), st.booleans(), st.booleans()), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(_pkts)
def test_arbitrary_packet_sequences_never_raise_and_log_valid_rows(seq):
    run = Run()
    t = 0.0
    for dt, fwd, proto, flags, sq, ak, n, win, bad, trunc in sorted(seq, key=lambda x: x[0]):
        t = dt
        src, dst, sp, dp = (C, SV, 40000, 80) if fwd else (SV, C, 80, 40000)
        if proto in (1, 58):
            sp, dp = (8, 0) if fwd else (0, 0)
        p = pkt(t, src, dst, sp, dp, flags, sq, ak, n, proto=proto, win=win, bad=bad,
                payload=b"x" * (n // 2 if trunc else n))
        run.table.process(p)
        run.table.sweep(t)
    rows = run.conns()
    assert rows
    for r in rows:
        assert r.conn_state in {"S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"}
        assert r.orig_pkts >= 0 and r.resp_pkts >= 0 and r.missed_bytes >= 0
        assert r.orig_bytes is None or 0 <= r.orig_bytes < 2 ** 64
        assert r.duration is None or r.duration > 0


def test_synack_answered_by_rst_is_not_flipped():
    # a stealth-scan reply: the RST must not make Zeek trust the SYN-ACK's direction
    cfg = configure(["base/protocols/conn"], bare=True)
    r = Run(cfg).feed(pkt(1.0, SV, C, 9000, 40000, S | A, 5000, 1001), pkt(1.1, C, SV, 40000, 9000, R, 1001)).one()
    assert (r.orig_h, r.orig_p) == (SV, 9000)
    assert not r.history.startswith("^")


def test_uid_block_conversion_matches_the_scalar_base62():
    from analysis.conn import uid as U

    raw = bytes(12) + b"\x00" * 7 + b"\x3d" + b"\x00\x00\x00\x3e" + b"\xff" * 12 + bytes(range(12)) * 20
    got = U._block(raw)
    assert got == U._block_py(raw)
    assert got[:3] == ["00", "z10", "LygHa16AHYF4gfFC3"]     # a zero word prints as "0"

"""The traffic generator: deterministic, well-formed, and containing the promised mix.

Frames are checked with dpkt (an independent parser) and an independent checksum routine, so
the generator's own incremental checksum code is not checking itself.
"""

from __future__ import annotations

import collections
import ipaddress
import struct
from pathlib import Path

import dpkt
import pytest
from dpkt.dpkt import in_cksum

from analysis.trafficgen import GenConfig, concurrent_connections, generate, main

REPO = Path(__file__).resolve().parents[1]
ALLOWED = [ipaddress.ip_network(n) for n in
           ("10.0.0.0/8", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


@pytest.fixture(scope="module")
def trace():
    return generate(20_000, seed=42)


def _decode(frame: bytes):
    eth = dpkt.ethernet.Ethernet(frame)
    return eth, eth.data


def _checksums_ok(frame: bytes) -> bool:
    eth, ip = _decode(frame)
    if isinstance(ip, dpkt.ip.IP):
        ihl = (frame[14] & 0x0F) * 4
        if ihl < 20 or len(frame) < 14 + ip.len or in_cksum(frame[14:14 + ihl]) != 0:
            return False
        l4 = frame[14 + ihl:14 + ip.len]
        if ip.p in (6, 17):
            return in_cksum(struct.pack("!4s4sxBH", ip.src, ip.dst, ip.p, len(l4)) + l4) == 0
        return ip.p != 1 or in_cksum(l4) == 0
    if isinstance(ip, dpkt.ip6.IP6):
        l4 = frame[54:54 + ip.plen]
        return in_cksum(ip.src + ip.dst + struct.pack("!I3xB", len(l4), ip.nxt) + l4) == 0
    return False


def test_deterministic_per_seed():
    a = generate(3000, seed=5)
    assert a == generate(3000, seed=5)
    assert a != generate(3000, seed=6)


def test_exact_count_time_order_and_window(trace):
    assert len(trace) == 20_000
    ts = [t for t, _ in trace]
    assert ts == sorted(ts)
    small = generate(500, seed=1, start=1_234_567_890.0, duration=10)
    assert len(small) == 500
    assert 1_234_567_890.0 <= small[0][0] and small[-1][0] < 1_234_567_890.0 + 30
    assert generate(0) == []


def test_checksums_valid_except_the_malformed_ones():
    cfg = GenConfig(malformed=12)
    pkts = generate(8000, seed=3, config=cfg)
    bad = [f for _, f in pkts if not _checksums_ok(f)]
    assert len(bad) == 12
    clean = generate(8000, seed=3, config=GenConfig(malformed=0))
    assert all(_checksums_ok(f) for _, f in clean)


def test_frame_sizes_realistic(trace):
    sizes = [len(f) for _, f in trace]
    assert max(sizes) <= 1514
    assert min(sizes) >= 42 - 4  # the shortest are truncated-IP frames
    assert 400 <= sum(sizes) / len(sizes) <= 700


def test_addresses_are_private_or_documentation(trace):
    for _, f in trace:
        _, ip = _decode(f)
        if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
            for raw in (ip.src, ip.dst):
                a = ipaddress.ip_address(raw)
                assert any(a in n for n in ALLOWED), a


def test_tcp_sequence_numbers_consistent(trace):
    nxt: dict = {}
    conns = set()
    for _, f in trace:
        _, ip = _decode(f)
        t = getattr(ip, "data", None)
        if not isinstance(t, dpkt.tcp.TCP) or not _checksums_ok(f):
            continue
        k, rk = (ip.src, t.sport, ip.dst, t.dport), (ip.dst, t.dport, ip.src, t.sport)
        conns.add(frozenset((k, rk)))
        if t.flags & dpkt.tcp.TH_SYN:
            nxt[k] = (t.seq + 1) & 0xFFFFFFFF
            if t.flags & dpkt.tcp.TH_ACK:
                assert t.ack == nxt[rk]
            continue
        if k in nxt:
            assert t.seq == nxt[k]
        if t.flags & dpkt.tcp.TH_ACK and rk in nxt:
            assert t.ack == nxt[rk]
        nxt[k] = (t.seq + len(t.data) + (1 if t.flags & dpkt.tcp.TH_FIN else 0)) & 0xFFFFFFFF
    assert len(conns) > 500


def test_protocol_mix(trace):
    seen = collections.Counter()
    for _, f in trace:
        if not _checksums_ok(f):
            continue
        _, ip = _decode(f)
        seen["ipv6" if isinstance(ip, dpkt.ip6.IP6) else "ipv4"] += 1
        l4 = ip.data
        if isinstance(l4, dpkt.tcp.TCP):
            flags = l4.flags
            if flags & dpkt.tcp.TH_SYN and not flags & dpkt.tcp.TH_ACK:
                seen["syn"] += 1
            if flags & dpkt.tcp.TH_FIN:
                seen["fin"] += 1
            if flags & dpkt.tcp.TH_RST:
                seen["rst"] += 1
            data = bytes(l4.data)
            if l4.dport == 80 and data[:4] in (b"GET ", b"POST"):
                req = dpkt.http.Request(data)
                assert req.headers["host"].endswith(("example.com", "example.net", "example.org"))
                seen["http_" + req.method] += 1
            if l4.sport == 80 and data.startswith(b"HTTP/1.1 "):
                head = data.split(b"\r\n\r\n")[0].lower()
                seen["http_chunked" if b"transfer-encoding: chunked" in head else "http_resp"] += 1
                if b"connection: keep-alive" in head:
                    seen["keepalive"] += 1
            if l4.dport == 443 and data[:1] == b"\x16" and data[5:6] == b"\x01":
                hello = dpkt.ssl.TLSHandshake(dpkt.ssl.TLSRecord(data).data).data
                exts = dict(hello.extensions)
                assert 0 in exts and b"example" in exts[0]
                seen["tls_client_hello"] += 1
            if l4.sport == 443 and data[:1] == b"\x16" and data[5:6] == b"\x02":
                seen["tls_server_hello"] += 1
            if data[:1] in (b"\x14",) and 443 in (l4.sport, l4.dport):
                seen["tls_ccs"] += 1
            if data.startswith(b"SSH-2.0-"):
                seen["ssh_banner"] += 1
        elif isinstance(l4, dpkt.udp.UDP) and 53 in (l4.sport, l4.dport):
            d = dpkt.dns.DNS(bytes(l4.data))
            if d.qr == dpkt.dns.DNS_R:
                seen[f"dns_rcode{d.rcode}"] += 1
                for rr in d.an:
                    seen[f"dns_rr{rr.type}"] += 1
        elif isinstance(l4, dpkt.udp.UDP):
            seen["udp_other"] += 1
        elif isinstance(l4, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)):
            seen[f"icmp{type(l4).__name__[-1]}_{l4.type}"] += 1
    for key in ("ipv4", "ipv6", "syn", "fin", "rst", "http_GET", "http_POST", "http_resp", "http_chunked",
                "keepalive", "tls_client_hello", "tls_server_hello", "tls_ccs", "ssh_banner", "udp_other",
                "dns_rcode0", "dns_rcode3", "icmpP_8", "icmpP_0", "icmpP_3", "icmp6_128", "icmp6_129"):
        assert seen[key] > 0, key
    for rrtype in (1, 28, 5, 15, 16):  # A, AAAA, CNAME, MX, TXT
        assert seen[f"dns_rr{rrtype}"] > 0, rrtype
    assert seen["ipv6"] < seen["ipv4"]


def _syn_targets(pkts):
    """Per (source address): set of (destination address, port) it sent a bare SYN to."""
    out = collections.defaultdict(set)
    for _, f in pkts:
        _, ip = _decode(f)
        t = getattr(ip, "data", None)
        if isinstance(t, dpkt.tcp.TCP) and t.flags & dpkt.tcp.TH_SYN and not t.flags & dpkt.tcp.TH_ACK:
            out[ipaddress.ip_address(ip.src)].add((ipaddress.ip_address(ip.dst), t.dport))
    return out


def test_scans_are_present_and_configurable():
    default = _syn_targets(generate(5000, seed=9))
    ports = max(len({p for h, p in s}) for s in default.values() if len({h for h, _ in s}) == 1)
    hosts = max(len({h for h, _ in s}) for s in default.values() if len({p for _, p in s}) == 1)
    assert ports > 15 and hosts > 25  # above Zeek's scan thresholds by default
    small = _syn_targets(generate(5000, seed=9, config=GenConfig(port_scan_ports=17, addr_scan_hosts=27)))
    by_size = sorted(len(s) for s in small.values())
    assert 17 in by_size and 27 in by_size


def test_concurrent_connections_stay_open():
    pkts = concurrent_connections(300, seed=2)
    syns = fins = 0
    flows = set()
    for _, f in pkts:
        _, ip = _decode(f)
        t = ip.data
        flows.add(frozenset(((ip.src, t.sport), (ip.dst, t.dport))))
        syns += bool(t.flags & dpkt.tcp.TH_SYN and not t.flags & dpkt.tcp.TH_ACK)
        fins += bool(t.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST))
    assert syns == len(flows) == 300 and fins == 0


def test_cli_writes_a_microsecond_ethernet_pcap(tmp_path):
    out = tmp_path / "t.pcap"
    assert main(["--out", str(out), "--packets", "700", "--seed", "4", "--start", "1600000000"]) == 0
    raw = out.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", raw[:24])
    assert magic == 0xA1B2C3D4 and linktype == 1
    with open(out, "rb") as fh:
        recs = list(dpkt.pcap.Reader(fh))
    assert len(recs) == 700
    assert [bytes(b) for _, b in recs] == [f for _, f in generate(700, seed=4, start=1_600_000_000)]
    assert 1_600_000_000 <= recs[0][0] < 1_600_000_060


def test_cli_errors_are_clean(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "missing" / "x.pcap"), "--packets", "10"]) == 1
    assert "cannot write" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "x.pcap"), "--packets", "-5"])
    assert e.value.code == 2


def test_committed_sample_matches_generator():
    sample = REPO / "samples" / "sample.pcap"
    if not sample.exists():
        pytest.skip("samples/sample.pcap not present")
    with open(sample, "rb") as fh:
        recs = [bytes(b) for _, b in dpkt.pcap.Reader(fh)]
    assert recs == [f for _, f in generate(3000, seed=1)]
    assert sample.stat().st_size < 2_000_000


@pytest.mark.skipif(__import__("shutil").which("openssl") is None, reason="openssl not installed")
def test_tls_certificates_parse_with_openssl(tmp_path):
    """The server's Certificate message carries real DER that OpenSSL accepts, subject = SNI."""
    import subprocess

    pkts = generate(6000, seed=8)
    streams: dict = collections.defaultdict(bytearray)
    sni: dict = {}
    for _, f in pkts:
        _, ip = _decode(f)
        t = getattr(ip, "data", None)
        if isinstance(t, dpkt.tcp.TCP) and 443 in (t.sport, t.dport) and t.data:
            key = frozenset(((ip.src, t.sport), (ip.dst, t.dport)))
            if t.sport == 443:
                streams[key] += bytes(t.data)
            elif bytes(t.data[:1]) == b"\x16" and bytes(t.data[5:6]) == b"\x01":
                hello = dpkt.ssl.TLSHandshake(dpkt.ssl.TLSRecord(bytes(t.data)).data).data
                sni[key] = dict(hello.extensions)[0][5:].decode()
    checked = 0
    for key, data in streams.items():
        hs, off = b"", 0
        while off + 5 <= len(data) and data[off] == 0x16:  # the server's handshake records
            n = int.from_bytes(data[off + 3:off + 5], "big")
            hs += bytes(data[off + 5:off + 5 + n])
            off += 5 + n
        pos = 0
        while pos + 4 <= len(hs):
            typ, n = hs[pos], int.from_bytes(hs[pos + 1:pos + 4], "big")
            if typ == 11:
                first_len = int.from_bytes(hs[pos + 7:pos + 10], "big")
                der = tmp_path / "leaf.der"
                der.write_bytes(hs[pos + 10:pos + 10 + first_len])
                out = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(der), "-noout",
                                      "-subject", "-pubkey"], capture_output=True, text=True, timeout=10)
                assert out.returncode == 0, out.stderr
                assert f"CN = {sni[key]}" in out.stdout and "PUBLIC KEY" in out.stdout
                checked += 1
            pos += 4 + n
        if checked >= 3:
            break
    assert checked >= 3

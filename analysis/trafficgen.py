"""Synthetic but realistic traffic traces, written as pcap files (never sent on a network).

Why: benchmarks need large mixed traces (200k+ packets) on demand, the README and the cluster
demo need a small committed sample, and tests need traces whose contents are known.  Everything
is deterministic for a seed.

Usage::

    python -m analysis.trafficgen --out FILE.pcap --packets N [--seed S] [--duration SECONDS]
                                  [--start TS] [--port-scan-ports P] [--addr-scan-hosts H]

or from Python: ``generate(packets, seed=...)`` returns time-ordered ``(ts, frame)`` pairs and
``write_trace(path, packets, ...)`` writes them (``analysis.pcapwriter``: LINKTYPE_ETHERNET,
microsecond timestamps).  ``concurrent_connections(n, ...)`` builds a trace of ``n`` TCP
connections that are all open at once (for connection-table memory measurements).

What is in a trace (Ethernet, IPv4 and ~10 % IPv6, all checksums valid unless meant otherwise):

* TCP sessions with 3-way handshakes, data both ways with consistent seq/ack, FIN closes; some
  RST closes, rejected SYNs (SYN -> RST), unanswered SYNs with retransmissions, half-open
  connections (established, never closed; SYN then FIN without SYN-ACK);
* DNS over UDP: real wire-format queries and answers (A, AAAA, CNAME chains, MX, TXT,
  NXDOMAIN with an SOA), a few unanswered;
* HTTP/1.1 on port 80: real requests/responses with headers, Content-Length and chunked
  bodies, 304/404/301, keep-alive connections carrying several requests, some POSTs;
* TLS on 443: a real ClientHello (SNI, ALPN, groups, signature algorithms, key share,
  supported versions), ServerHello, DER certificates (structurally valid, bogus signatures),
  ServerKeyExchange, ChangeCipherSpec, Finished, application-data records; TLS 1.2 and 1.3;
* SSH on 22: banners, KEXINIT, ECDH exchange, NEWKEYS, encrypted packets;
* plain UDP flows (NTP-like, syslog-like, generic), ICMP echo/reply (v4 and v6), ICMP
  port/host unreachable quoting the offending packet;
* scans, sized above Zeek's scan thresholds by default (15 ports / 25 hosts in 5 minutes): a
  port scan (one host, ``port_scan_ports`` ports of another host) and an address scan (one
  host, one port, ``addr_scan_hosts`` hosts), nearly all probes unsuccessful;
* a few malformed packets: truncated IP, bad IP/TCP/UDP checksum, IP header length < 20,
  TCP data offset < 5.

Addresses are private (10.0.0.0/8) or documentation ranges only (RFC 5737: 192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24; RFC 3849: 2001:db8::/32); names are under example.com/.net/.org;
MACs are locally administered.  Sessions start at uniformly random times within ``duration``
and overlap freely, so many flows are concurrent; the result is sorted by time and cut to exactly
``packets`` packets (the cut only trims the tail of the last sessions).

Speed: headers are packed with precompiled ``struct`` formats and checksums are computed
incrementally (per-direction constant parts precomputed, payload sums with ``array``), so 200k
packets take a few seconds.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import struct
import sys
import time
from array import array
from bisect import bisect
from dataclasses import dataclass
from operator import itemgetter

from analysis.pcapwriter import write_pcap

__all__ = ["GenConfig", "generate", "write_trace", "concurrent_connections", "main"]

_LITTLE = sys.byteorder == "little"

# TCP flags
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

_ETH_IP4 = b"\x08\x00"
_ETH_IP6 = b"\x86\xdd"
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIHHHH")
_UDP = struct.Struct("!HHHH")
_ICMP = struct.Struct("!BBHHH")
_ROUTER_MAC = bytes.fromhex("020000000001")


@dataclass(frozen=True, slots=True)
class GenConfig:
    """Knobs of the traffic mix; the defaults give the documented mix."""

    port_scan_ports: int = 30      # Zeek's port-scan threshold is 15 ports
    addr_scan_hosts: int = 40      # Zeek's address-scan threshold is 25 hosts
    scans: int | None = None       # scans of each kind; None: one per 100k packets (at least one)
    malformed: int | None = None   # malformed packets; None: one per 2k packets (at least 6)
    ipv6_fraction: float = 0.1
    mss: int = 1460


# ---------------------------------------------------------------------------------------------
# checksums: ones-complement sums kept as big-endian 16-bit values

def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _psum(data: bytes) -> int:
    """Ones-complement sum of ``data`` (folded, big-endian).  Summing native words is byte-order
    independent up to a final byte swap (RFC 1071), which lets ``array`` do the work in C."""
    if not data:
        return 0
    if len(data) & 1:
        data += b"\0"
    s = _fold(sum(array("H", data)))
    return ((s & 0xFF) << 8) | (s >> 8) if _LITTLE else s


def _words(b: bytes) -> int:
    return sum(struct.unpack(f"!{len(b) // 2}H", b))


def _csum(s: int) -> int:
    return ~_fold(s) & 0xFFFF


# ---------------------------------------------------------------------------------------------
# flows: per-direction precomputed header parts

class _Flow:
    """Two endpoints and a transport; builds frames in either direction (0 = orig -> resp)."""

    __slots__ = ("v6", "proto", "eth", "src", "dst", "ports", "ip_const", "l4_const", "ident", "ttl")

    def __init__(self, proto: int, a: str, b: str, aport: int, bport: int, rng: random.Random) -> None:
        ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
        self.v6 = ia.version == 6
        self.proto = proto
        ab, bb = ia.packed, ib.packed
        ma, mb = _mac_of(ia), _mac_of(ib)
        et = _ETH_IP6 if self.v6 else _ETH_IP4
        self.eth = (mb + ma + et, ma + mb + et)
        self.src = (ab, bb)
        self.dst = (bb, ab)
        self.ports = ((aport, bport), (bport, aport))
        self.ttl = (rng.choice((64, 128)), rng.choice((64, 128, 255)) - rng.randrange(4, 20))
        addr_words = _words(ab) + _words(bb)
        self.ip_const = (0x4500 + 0x4000 + (self.ttl[0] << 8 | proto) + addr_words,
                         0x4500 + 0x4000 + (self.ttl[1] << 8 | proto) + addr_words)
        self.l4_const = addr_words + proto + aport + bport  # same both ways: the ports just swap
        self.ident = [rng.getrandbits(16), rng.getrandbits(16)]

    def ip(self, d: int, l4: bytes, proto: int | None = None) -> bytes:
        proto = self.proto if proto is None else proto
        if self.v6:
            return self.eth[d] + _IP6.pack(0x60000000, len(l4), proto, self.ttl[d], self.src[d],
                                           self.dst[d]) + l4
        total = 20 + len(l4)
        ident = self.ident[d]
        self.ident[d] = (ident + 1) & 0xFFFF
        const = self.ip_const[d]
        if proto != self.proto:
            const += proto - self.proto
        csum = _csum(const + total + ident)
        return self.eth[d] + _IP4.pack(0x45, 0, total, ident, 0x4000, self.ttl[d], proto, csum,
                                       self.src[d], self.dst[d]) + l4

    def tcp(self, d: int, flags: int, seq: int, ack: int, win: int, payload: bytes = b"",
            opts: bytes = b"") -> bytes:
        hl = 20 + len(opts)
        offflags = (hl << 10) | flags
        tlen = hl + len(payload)
        s = (self.l4_const + tlen + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)
             + offflags + win + _psum(payload))
        if opts:
            s += _words(opts)
        sp, dp = self.ports[d]
        return self.ip(d, _TCP.pack(sp, dp, seq, ack, offflags, win, _csum(s), 0) + opts + payload)

    def udp(self, d: int, payload: bytes) -> bytes:
        n = 8 + len(payload)
        c = _csum(self.l4_const + n + n + _psum(payload)) or 0xFFFF
        sp, dp = self.ports[d]
        return self.ip(d, _UDP.pack(sp, dp, n, c) + payload)

    def icmp(self, d: int, typ: int, code: int, rest: bytes) -> bytes:
        """ICMP (v4) or ICMPv6 message; ``rest`` follows the type/code/checksum words."""
        if self.v6:
            proto = 58
            s = _words(self.src[d]) + _words(self.dst[d]) + 58 + 4 + len(rest)
        else:
            proto, s = 1, 0
        s += (typ << 8 | code) + _psum(rest)
        return self.ip(d, struct.pack("!BBH", typ, code, _csum(s)) + rest, proto)


def _mac_of(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """Hosts on the monitored LAN get their own MAC; everything else is behind the router."""
    if ip.is_private and not _is_doc(ip):
        return b"\x02" + ip.packed[-5:] if ip.version == 6 else b"\x02\x00" + ip.packed
    return _ROUTER_MAC


_DOC_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
_LAN6 = ipaddress.ip_network("2001:db8:1::/48")


def _is_doc(ip) -> bool:
    if ip.version == 6:
        return ip not in _LAN6
    return any(ip in n for n in _DOC_NETS)


class _Tcp:
    """One TCP connection's sequence state; appends time-ordered frames to ``out``."""

    __slots__ = ("f", "out", "t", "rtt", "seq", "win", "mss", "gap", "syn_opts")

    _SYN_OPTS = bytes.fromhex("020405b4") + b"\x01\x03\x03\x07" + b"\x01\x01\x04\x02"  # MSS, WS, SACKOK
    _SYN_OPTS6 = bytes.fromhex("020405a0") + _SYN_OPTS[4:]  # IPv6 headers are 20 bytes longer

    def __init__(self, f: _Flow, out: list, t: float, rng: random.Random, mss: int) -> None:
        self.f, self.out, self.t = f, out, t
        self.rtt = rng.choice((0.0008, 0.004, 0.012, 0.025, 0.045, 0.09, 0.18)) * rng.uniform(0.8, 1.25)
        self.seq = [rng.getrandbits(32), rng.getrandbits(32)]
        self.win = [rng.choice((502, 501, 1024, 64240 >> 7)), rng.choice((509, 235, 1026, 83))]
        self.mss = mss - 20 if f.v6 else mss  # a full segment fills a 1500-byte MTU either way
        self.syn_opts = self._SYN_OPTS6 if f.v6 else self._SYN_OPTS
        self.gap = 1460 / rng.choice((1.5e6, 6e6, 12e6, 60e6))  # seconds per full segment

    def emit(self, d: int, flags: int, payload: bytes = b"", dt: float = 0.00005, opts: bytes = b"",
             win: int | None = None) -> None:
        self.t += dt
        seq = self.seq[d]
        ack = self.seq[1 - d] if flags & ACK else 0
        self.out.append((self.t, self.f.tcp(d, flags, seq, ack, self.win[d] if win is None else win,
                                             payload, opts)))
        n = len(payload) + (1 if flags & (SYN | FIN) else 0)
        if n:
            self.seq[d] = (seq + n) & 0xFFFFFFFF

    def handshake(self) -> None:
        self.emit(0, SYN, opts=self.syn_opts, win=64240, dt=0)
        self.emit(1, SYN | ACK, opts=self.syn_opts, win=65160, dt=self.rtt)
        self.emit(0, ACK, dt=0.00003 + self.rtt * 0.01)

    def send(self, d: int, data: bytes, delay: float) -> None:
        """Send one application message as MSS segments; the receiver ACKs every second one."""
        mss, n = self.mss, len(data)
        self.t += delay
        k = 0
        for off in range(0, n, mss):
            seg = data[off:off + mss]
            last = off + mss >= n
            self.emit(d, (ACK | PSH) if last else ACK, seg, dt=self.gap * len(seg) / 1460 + 0.000002)
            k += 1
            if k % 2 == 0 or last:
                self.emit(1 - d, ACK, dt=0.00002 if d == 1 else self.rtt * 0.02 + 0.00002)

    def close_fin(self, d: int = 0, delay: float = 0.001) -> None:
        self.emit(d, FIN | ACK, dt=delay)
        self.emit(1 - d, FIN | ACK, dt=self.rtt)
        self.emit(d, ACK, dt=0.00003)

    def close_rst(self, d: int, delay: float = 0.001) -> None:
        self.emit(d, RST | ACK, dt=delay)


# ---------------------------------------------------------------------------------------------
# application payloads

_WORDS = ("network security monitor cluster zeek packet flow logger worker manager proxy event "
          "script connection analyzer protocol session stream record signature notice intel file "
          "example traffic header request response").split()
_DOMAINS = ("example.com", "example.net", "example.org")
_HOSTS = ("www", "api", "cdn", "static", "mail", "login", "img", "news", "shop", "docs", "app", "m")
_UAS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
    "curl/8.4.0",
    "Wget/1.21.4",
    "python-requests/2.31.0",
)
_PATHS = ("/", "/index.html", "/api/v1/items", "/static/app.js", "/static/style.css", "/images/logo.png",
          "/search?q=zeek+cluster", "/login", "/favicon.ico", "/docs/guide.html", "/feed.xml")
_CTYPES = {".js": "application/javascript", ".css": "text/css", ".png": "image/png",
           ".ico": "image/x-icon", ".xml": "application/xml", "items": "application/json"}


def _text_pool(n: int) -> bytes:
    r = random.Random(4242)
    parts, size = [b"<!DOCTYPE html>\n<html><head><title>Example</title></head><body>\n"], 0
    while size < n:
        p = ("<p>" + " ".join(r.choice(_WORDS) for _ in range(r.randrange(8, 40))) + ".</p>\n").encode()
        parts.append(p)
        size += len(p)
    return b"".join(parts)


_TEXT = _text_pool(300_000)


def _fqdn(rng: random.Random) -> str:
    return f"{rng.choice(_HOSTS)}.{rng.choice(_DOMAINS)}"


def _http_date(ts: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ts))


def _http_exchange(rng: random.Random, host: str, ts: float, last: bool) -> tuple[bytes, bytes]:
    path = rng.choice(_PATHS)
    ua = rng.choice(_UAS)
    conn = "close" if last else "keep-alive"
    post = rng.random() < 0.08
    body_req = b""
    if post:
        body_req = ("user=alice&token=" + "%032x" % rng.getrandbits(128)).encode()
        req = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\n"
               f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body_req)}\r\n"
               f"Connection: {conn}\r\n\r\n").encode() + body_req
    else:
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\n"
               f"Accept-Encoding: gzip, deflate\r\nConnection: {conn}\r\n\r\n").encode()
    r = rng.random()
    date = _http_date(ts)
    base = f"Date: {date}\r\nServer: {rng.choice(('nginx/1.24.0', 'Apache/2.4.58', 'example-httpd/3.1'))}\r\n"
    if r < 0.06:
        return req, (f"HTTP/1.1 304 Not Modified\r\n{base}ETag: \"{rng.getrandbits(40):x}\"\r\n"
                     f"Connection: {conn}\r\n\r\n").encode()
    if r < 0.11:
        return req, (f"HTTP/1.1 301 Moved Permanently\r\n{base}Location: https://{host}{path}\r\n"
                     f"Content-Length: 0\r\nConnection: {conn}\r\n\r\n").encode()
    status = "404 Not Found" if r < 0.17 else "200 OK"
    ctype = next((v for k, v in _CTYPES.items() if path.endswith(k)), "text/html; charset=utf-8")
    size = int(rng.lognormvariate(8.0, 1.5)) if status.startswith("200") else rng.randrange(150, 600)
    size = min(size, 400_000)
    if ctype.startswith("image"):
        body = b"\x89PNG\r\n\x1a\n" + rng.randbytes(max(0, size - 8))
    else:
        off = rng.randrange(0, len(_TEXT) - min(size, len(_TEXT) - 1))
        body = _TEXT[off:off + size]
    if status.startswith("200") and rng.random() < 0.2:
        chunks, i = [], 0
        while i < len(body):
            c = body[i:i + rng.choice((1024, 4096, 8192))]
            chunks.append(b"%x\r\n%s\r\n" % (len(c), c))
            i += len(c)
        payload = b"".join(chunks) + b"0\r\n\r\n"
        hdr = f"HTTP/1.1 {status}\r\n{base}Content-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n"
    else:
        payload = body
        hdr = f"HTTP/1.1 {status}\r\n{base}Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return req, (hdr + f"Connection: {conn}\r\n\r\n").encode() + payload


def _u8(b: bytes) -> bytes:
    return bytes((len(b),)) + b


def _u16(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _u24(b: bytes) -> bytes:
    return struct.pack("!I", len(b))[1:] + b


def _ext(typ: int, body: bytes) -> bytes:
    return struct.pack("!HH", typ, len(body)) + body


def _tls_record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    out = []
    for i in range(0, len(body), 16384):
        chunk = body[i:i + 16384]
        out.append(struct.pack("!BHH", ctype, version, len(chunk)) + chunk)
    return b"".join(out)


def _handshake(typ: int, body: bytes) -> bytes:
    return bytes((typ,)) + _u24(body)


_CIPHERS = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014,
            0x009C, 0x009D, 0x002F, 0x0035)
_SIGALGS = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)


def _client_hello(rng: random.Random, sni: str) -> bytes:
    exts = b"".join((
        _ext(0, _u16(b"\x00" + _u16(sni.encode()))),
        _ext(23, b""),
        _ext(0xFF01, b"\x00"),
        _ext(10, _u16(struct.pack("!4H", 0x001D, 0x0017, 0x0018, 0x0019))),
        _ext(11, _u8(b"\x00")),
        _ext(35, b""),
        _ext(16, _u16(_u8(b"h2") + _u8(b"http/1.1"))),
        _ext(5, b"\x01\x00\x00\x00\x00"),
        _ext(13, _u16(struct.pack(f"!{len(_SIGALGS)}H", *_SIGALGS))),
        _ext(51, _u16(struct.pack("!H", 0x001D) + _u16(rng.randbytes(32)))),
        _ext(43, _u8(struct.pack("!2H", 0x0304, 0x0303))),
        _ext(45, _u8(b"\x01")),
    ))
    body = (b"\x03\x03" + rng.randbytes(32) + _u8(rng.randbytes(32))
            + _u16(struct.pack(f"!{len(_CIPHERS)}H", *_CIPHERS)) + b"\x01\x00" + _u16(exts))
    return _tls_record(0x16, _handshake(1, body), 0x0301)


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    ln = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(ln))) + ln + body


_OID_ECDSA_SHA256 = bytes.fromhex("06082a8648ce3d040302")
_OID_EC_PUBKEY = bytes.fromhex("06072a8648ce3d0201")
_OID_P256 = bytes.fromhex("06082a8648ce3d030107")
_OID_CN = bytes.fromhex("0603550403")
_OID_O = bytes.fromhex("060355040a")
_OID_SAN = bytes.fromhex("0603551d11")


# Valid P-256 public keys (uncompressed points), so certificate parsers can load the key.
_EC_KEYS = tuple(bytes.fromhex(h) for h in (
    "048f0dc479194000dd94fbed70f7c9eecdac5019cb36751f1edc18dc3b8c2a00d4"
    "630f6feaf0d8e128c00c316227dad5ea078d8c2de4347c89664c0cd37587ae63",
    "047dff5813c16900edc53aca9a0c75230edcbbe7acd31997854d54e03ec65266bb"
    "664193796fd9e5a54f138bec2f4d43665cef35f69adda2689e0df5a3da2209a4",
    "0449a6ffd579a0ed0013064cfb661df1d15f98d371954e27f481a68c76365e06af"
    "57591cd20b122b635ffaedde4c7de62e08f1094eff0f353fccb8ba21779eed3f",
    "04a05158a794c95e64b4c50de800cf301bfb17517b091ae97c8fa7bbbe0c535ee1"
    "684154e4bd50a9779a18560a35ab676918cf8af9b04796a97b6c2acd77bd0c47",
))


def _der_name(cn: str, org: str) -> bytes:
    return _der(0x30, _der(0x31, _der(0x30, _OID_O + _der(0x0C, org.encode())))
                + _der(0x31, _der(0x30, _OID_CN + _der(0x0C, cn.encode()))))


def _certificate(rng: random.Random, cn: str, issuer: str, not_before: float, san: bool) -> bytes:
    """A well-formed X.509 v3 DER certificate (valid EC P-256 key; the signature is random bytes)."""
    def utc(ts: float) -> bytes:
        return _der(0x17, time.strftime("%y%m%d%H%M%SZ", time.gmtime(ts)).encode())
    alg = _der(0x30, _OID_ECDSA_SHA256)
    exts = b""
    if san:
        exts = _der(0xA3, _der(0x30, _der(0x30, _OID_SAN + _der(0x04, _der(0x30, _der(0x82, cn.encode()))))))
    tbs = _der(0x30, b"".join((
        _der(0xA0, _der(0x02, b"\x02")),
        _der(0x02, b"\x01" + rng.randbytes(15)),
        alg,
        _der_name(issuer, "Example Test Authority"),
        _der(0x30, utc(not_before) + utc(not_before + 90 * 86400)),
        _der_name(cn, "Example Organisation"),
        _der(0x30, _der(0x30, _OID_EC_PUBKEY + _OID_P256) + _der(0x03, b"\x00" + rng.choice(_EC_KEYS))),
        exts,
    )))
    sig = _der(0x30, _der(0x02, b"\x00\x80" + rng.randbytes(31)) + _der(0x02, b"\x00\x81" + rng.randbytes(31)))
    return _der(0x30, tbs + alg + _der(0x03, b"\x00" + sig))


def _server_hello(rng: random.Random, tls13: bool, cipher: int, alpn: bytes, session_id: bytes) -> bytes:
    if tls13:
        exts = _ext(43, b"\x03\x04") + _ext(51, struct.pack("!H", 0x001D) + _u16(rng.randbytes(32)))
    else:
        exts = _ext(0xFF01, b"\x00") + _ext(11, _u8(b"\x00")) + _ext(23, b"") + _ext(16, _u16(_u8(alpn)))
    body = b"\x03\x03" + rng.randbytes(32) + _u8(session_id) + struct.pack("!HB", cipher, 0) + _u16(exts)
    return _handshake(2, body)


_SSH_CLIENTS = (b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13", b"SSH-2.0-OpenSSH_8.9p1", b"SSH-2.0-PuTTY_Release_0.79",
                b"SSH-2.0-libssh2_1.11.0")
_SSH_SERVERS = (b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13", b"SSH-2.0-OpenSSH_8.4p1 Debian-5+deb11u3",
                b"SSH-2.0-dropbear_2022.83")


def _ssh_packet(rng: random.Random, payload: bytes) -> bytes:
    pad = 8 - (5 + len(payload)) % 8
    if pad < 4:
        pad += 8
    return struct.pack("!IB", 1 + len(payload) + pad, pad) + payload + rng.randbytes(pad)


def _name_list(*names: str) -> bytes:
    return _u32(",".join(names).encode())


def _u32(b: bytes) -> bytes:
    return struct.pack("!I", len(b)) + b


def _kexinit(rng: random.Random) -> bytes:
    payload = b"\x14" + rng.randbytes(16) + b"".join((
        _name_list("curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256",
                   "diffie-hellman-group16-sha512", "ext-info-c"),
        _name_list("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"),
        _name_list("chacha20-poly1305@openssh.com", "aes128-ctr", "aes256-gcm@openssh.com"),
        _name_list("chacha20-poly1305@openssh.com", "aes128-ctr", "aes256-gcm@openssh.com"),
        _name_list("umac-64-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-256"),
        _name_list("umac-64-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-256"),
        _name_list("none", "zlib@openssh.com"),
        _name_list("none", "zlib@openssh.com"),
        _name_list(), _name_list(),
    )) + b"\x00" + b"\x00\x00\x00\x00"
    return _ssh_packet(rng, payload)


def _dns_name(name: str) -> bytes:
    return b"".join(_u8(lbl.encode()) for lbl in name.split(".") if lbl) + b"\x00"


def _rr(name: bytes, typ: int, ttl: int, rdata: bytes) -> bytes:
    return name + struct.pack("!HHIH", typ, 1, ttl, len(rdata)) + rdata


def _dns_pair(rng: random.Random, kind: str) -> tuple[bytes, bytes]:
    """A DNS query and its response (wire format, name compression in the answer)."""
    qid = rng.getrandbits(16)
    ptr = b"\xc0\x0c"
    if kind == "NXDOMAIN":
        qname, qtype = f"nosuch-{rng.getrandbits(24):06x}.{rng.choice(_DOMAINS)}", 1
    elif kind == "MX" or kind == "TXT":
        qname, qtype = rng.choice(_DOMAINS), 15 if kind == "MX" else 16
    else:
        qname, qtype = _fqdn(rng), 28 if kind == "AAAA" else 1
    q = _dns_name(qname) + struct.pack("!HH", qtype, 1)
    query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q
    ttl = rng.choice((60, 300, 3600, 86400))
    ans, ns, rcode = [], [], 0
    if kind == "NXDOMAIN":
        rcode = 3
        zone = qname.split(".", 1)[1]
        soa = (_dns_name(f"ns1.{zone}") + _dns_name(f"hostmaster.{zone}")
               + struct.pack("!IIIII", 2023110101, 7200, 3600, 1209600, 3600))
        ns.append(_rr(_dns_name(zone), 6, 3600, soa))
    elif kind == "MX":
        for i in range(rng.randrange(1, 3)):
            ans.append(_rr(ptr, 15, ttl, struct.pack("!H", 10 * (i + 1)) + _dns_name(f"mx{i + 1}.{qname}")))
    elif kind == "TXT":
        txt = (b"v=spf1 ip4:192.0.2.0/24 -all", b"example-verification=" + b"%016x" % rng.getrandbits(64))
        ans.append(_rr(ptr, 16, ttl, b"".join(_u8(t) for t in txt[:rng.randrange(1, 3)])))
    else:
        owner = ptr
        if kind == "CNAME":
            target = f"edge-{rng.randrange(1, 99)}.cdn.example.net"
            ans.append(_rr(ptr, 5, ttl, _dns_name(target)))
            owner = struct.pack("!H", 0xC000 | (12 + len(q) + 12))  # the CNAME's rdata
        for _ in range(rng.randrange(1, 4)):
            if qtype == 28:
                rdata = ipaddress.ip_address(f"2001:db8:ff::{rng.randrange(1, 0xffff):x}").packed
            else:
                rdata = bytes((203, 0, 113, rng.randrange(1, 255)))
            ans.append(_rr(owner, qtype, ttl, rdata))
    resp = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(ans), len(ns), 0) + q + b"".join(ans) + b"".join(ns)
    return query, resp


# ---------------------------------------------------------------------------------------------
# the generator

class _Gen:
    def __init__(self, seed: int, start: float, duration: float, cfg: GenConfig) -> None:
        self.rng = random.Random(seed)
        self.start, self.duration, self.cfg = start, duration, cfg
        self.out: list[tuple[float, bytes]] = []
        self.certs: dict[str, list[bytes]] = {}
        r = self.rng
        self.clients4 = [f"10.1.{r.randrange(0, 16)}.{r.randrange(2, 250)}" for _ in range(300)]
        self.clients6 = [f"2001:db8:1::{r.randrange(0x100, 0xffff):x}" for _ in range(40)]
        self.servers4 = [f"{p}.{r.randrange(1, 255)}" for p in ("192.0.2", "198.51.100", "203.0.113")
                         for _ in range(40)]
        self.servers6 = [f"2001:db8:ff::{r.randrange(1, 0xffff):x}" for _ in range(30)]
        self.lan_servers = [f"10.2.0.{i}" for i in range(2, 30)]
        self.ports: dict[str, int] = {}

    def t0(self) -> float:
        return self.start + self.rng.uniform(0, self.duration)

    def ephemeral(self) -> int:
        return self.rng.randrange(32768, 61000)

    def pair(self, v6: bool | None = None) -> tuple[str, str]:
        r = self.rng
        if v6 is None:
            v6 = r.random() < self.cfg.ipv6_fraction
        if v6:
            return r.choice(self.clients6), r.choice(self.servers6)
        return r.choice(self.clients4), r.choice(self.servers4)

    def tcp(self, a: str, b: str, dport: int, t: float | None = None) -> _Tcp:
        f = _Flow(6, a, b, self.ephemeral(), dport, self.rng)
        return _Tcp(f, self.out, self.t0() if t is None else t, self.rng, self.cfg.mss)

    # --- sessions ------------------------------------------------------------------------------
    def http(self) -> None:
        r = self.rng
        c = self.tcp(*self.pair(), 80)
        host = _fqdn(r)
        c.handshake()
        n = 1 if r.random() < 0.55 else r.randrange(2, 6)
        for i in range(n):
            req, resp = _http_exchange(r, host, c.t, i == n - 1)
            c.send(0, req, delay=0.0002 if i == 0 else r.uniform(0.01, 0.6))
            c.send(1, resp, delay=c.rtt + r.uniform(0.0005, 0.05))
        c.close_fin(1 if r.random() < 0.7 else 0, delay=0.0005)

    def tls(self) -> None:
        r = self.rng
        c = self.tcp(*self.pair(), 443)
        sni = _fqdn(r)
        tls13 = r.random() < 0.45
        c.handshake()
        c.send(0, _client_hello(r, sni), delay=0.0003)
        alpn = b"h2" if r.random() < 0.6 else b"http/1.1"
        ccs = _tls_record(0x14, b"\x01")
        if tls13:
            sh = _tls_record(0x16, _server_hello(r, True, 0x1301, alpn, r.randbytes(32)))
            c.send(1, sh + ccs + _tls_record(0x17, r.randbytes(r.randrange(2000, 4500))),
                   delay=c.rtt + r.uniform(0.001, 0.01))
            c.send(0, ccs + _tls_record(0x17, r.randbytes(53)), delay=0.001)
        else:
            chain = self.certs.get(sni)
            if chain is None:
                chain = self.certs[sni] = [_certificate(r, sni, "Example Test CA R1", self.start - 30 * 86400, True),
                                           _certificate(r, "Example Test CA R1", "Example Test Root",
                                                        self.start - 400 * 86400, False)]
            cert = _handshake(11, _u24(b"".join(_u24(x) for x in chain)))
            ske = _handshake(12, b"\x03\x00\x1d" + _u8(r.randbytes(32)) + b"\x08\x04" + _u16(r.randbytes(256)))
            flight = _server_hello(r, False, 0xC02F, alpn, r.randbytes(32)) + cert + ske + _handshake(14, b"")
            c.send(1, _tls_record(0x16, flight), delay=c.rtt + r.uniform(0.001, 0.01))
            cke = _tls_record(0x16, _handshake(16, _u8(r.randbytes(32))))
            c.send(0, cke + ccs + _tls_record(0x16, r.randbytes(40)), delay=0.001)
            c.send(1, ccs + _tls_record(0x16, r.randbytes(40)), delay=c.rtt)
        for _ in range(r.randrange(1, 5)):
            c.send(0, _tls_record(0x17, r.randbytes(r.randrange(80, 900))), delay=r.uniform(0.0005, 0.3))
            c.send(1, _tls_record(0x17, r.randbytes(int(r.lognormvariate(7.5, 1.4)) + 30)),
                   delay=c.rtt + r.uniform(0.001, 0.05))
        if r.random() < 0.1:
            c.close_rst(0, delay=r.uniform(0.01, 1))
        else:
            c.send(0, _tls_record(0x15, r.randbytes(26)), delay=r.uniform(0.01, 2))
            c.close_fin(0)

    def ssh(self) -> None:
        r = self.rng
        c = self.tcp(r.choice(self.clients4), r.choice(self.lan_servers + self.servers4[:5]), 22)
        c.handshake()
        c.send(1, r.choice(_SSH_SERVERS) + b"\r\n", delay=c.rtt + 0.002)
        c.send(0, r.choice(_SSH_CLIENTS) + b"\r\n", delay=0.001)
        c.send(0, _kexinit(r), delay=0.0005)
        c.send(1, _kexinit(r), delay=c.rtt)
        c.send(0, _ssh_packet(r, b"\x1e" + _u32(r.randbytes(32))), delay=0.001)
        c.send(1, _ssh_packet(r, b"\x1f" + _u32(r.randbytes(51)) + _u32(r.randbytes(32)) + _u32(r.randbytes(83)))
               + _ssh_packet(r, b"\x15"), delay=c.rtt + 0.003)
        c.send(0, _ssh_packet(r, b"\x15"), delay=0.001)
        for _ in range(r.randrange(3, 25)):  # encrypted interactive traffic
            d = 0 if r.random() < 0.5 else 1
            c.send(d, r.randbytes(r.choice((36, 44, 52, 68, 100, 500, 1200))), delay=r.uniform(0.05, 2))
        c.close_fin(0, delay=r.uniform(0.1, 3))

    def dns(self) -> None:
        r = self.rng
        v6 = r.random() < self.cfg.ipv6_fraction
        if v6:
            a, b = r.choice(self.clients6), "2001:db8:1::53"
        else:
            a, b = r.choice(self.clients4), "10.1.0.53" if r.random() < 0.8 else "198.51.100.53"
        f = _Flow(17, a, b, self.ephemeral(), 53, r)
        t = self.t0()
        kinds = ("A", "A", "A", "AAAA", "CNAME", "CNAME", "MX", "TXT", "NXDOMAIN")
        for _ in range(1 if r.random() < 0.8 else 2):
            q, resp = _dns_pair(r, r.choice(kinds))
            self.out.append((t, f.udp(0, q)))
            if r.random() < 0.03:  # unanswered
                t += 1.0
                continue
            t += r.uniform(0.0003, 0.08)
            self.out.append((t, f.udp(1, resp)))
            t += r.uniform(0.0001, 0.01)

    def udp(self) -> None:
        r = self.rng
        a = r.choice(self.clients4)
        kind = r.random()
        t = self.t0()
        if kind < 0.35:  # NTP client mode 3 / server mode 4
            f = _Flow(17, a, r.choice(self.servers4), 123, 123, r)
            for _ in range(r.randrange(1, 4)):
                self.out.append((t, f.udp(0, b"\xe3\x00\x06\xec" + bytes(36) + r.randbytes(8))))
                t += r.uniform(0.005, 0.1)
                self.out.append((t, f.udp(1, b"\x24\x02\x06\xe9" + r.randbytes(44))))
                t += r.uniform(1, 8)
        elif kind < 0.6:  # one-way syslog
            f = _Flow(17, a, r.choice(self.lan_servers), self.ephemeral(), 514, r)
            for _ in range(r.randrange(1, 8)):
                msg = f"<{r.randrange(8, 190)}>Nov 14 22:13:20 host{r.randrange(99)} sshd[{r.randrange(999, 65000)}]: " \
                      f"{' '.join(r.choice(_WORDS) for _ in range(r.randrange(4, 20)))}"
                self.out.append((t, f.udp(0, msg.encode())))
                t += r.uniform(0.01, 3)
        else:  # generic request/response flow, e.g. a game or VoIP-ish stream
            f = _Flow(17, a, r.choice(self.servers4), self.ephemeral(), r.randrange(1024, 40000), r)
            size = r.choice((120, 172, 240, 480, 1200))
            for _ in range(r.randrange(2, 30)):
                d = 0 if r.random() < 0.5 else 1
                self.out.append((t, f.udp(d, r.randbytes(size + r.randrange(-20, 20)))))
                t += r.uniform(0.002, 0.05)

    def icmp(self) -> None:
        r = self.rng
        t = self.t0()
        kind = r.random()
        if kind < 0.7:  # ping
            a, b = self.pair()
            f = _Flow(1, a, b, 0, 0, r)
            v6 = f.v6
            ident = r.getrandbits(16)
            data = struct.pack("!II", int(t), 0) + bytes(range(0x10, 0x10 + 48))
            for seq in range(1, r.randrange(2, 6)):
                self.out.append((t, f.icmp(0, 128 if v6 else 8, 0, struct.pack("!HH", ident, seq) + data)))
                if r.random() < 0.95:
                    self.out.append((t + 0.02, f.icmp(1, 129 if v6 else 0, 0, struct.pack("!HH", ident, seq) + data)))
                t += 1.0
        elif kind < 0.85:  # UDP to a closed port, answered by port unreachable quoting it
            a, b = r.choice(self.clients4), r.choice(self.servers4)
            u = _Flow(17, a, b, self.ephemeral(), r.randrange(33434, 33535), r)
            probe = u.udp(0, bytes(32))
            self.out.append((t, probe))
            f = _Flow(1, a, b, 0, 0, r)
            self.out.append((t + 0.03, f.icmp(1, 3, 3, b"\x00\x00\x00\x00" + probe[14:14 + 28 + 32])))
        else:  # host unreachable from a router on the way
            a, b = r.choice(self.clients4), r.choice(self.servers4)
            c = self.tcp(a, b, r.choice((80, 443, 8080)), t)
            c.emit(0, SYN, opts=c.syn_opts, win=64240, dt=0)
            probe = self.out[-1][1]
            f = _Flow(1, a, "198.51.100.1", 0, 0, r)
            self.out.append((t + 0.01, f.icmp(1, 3, 1, b"\x00\x00\x00\x00" + probe[14:14 + 28])))

    def tcp_odd(self) -> None:
        """Connections that are not clean: rejected, unanswered, half-open, reset."""
        r = self.rng
        kind = r.random()
        a, b = self.pair()
        port = r.choice((80, 443, 8080, 25, 3389, 5432, 8443))
        c = self.tcp(a, b, port)
        if kind < 0.25:  # rejected: SYN -> RST
            c.emit(0, SYN, opts=c.syn_opts, win=64240, dt=0)
            c.emit(1, RST | ACK, dt=c.rtt, win=0)
        elif kind < 0.5:  # unanswered SYN with retransmissions
            c.emit(0, SYN, opts=c.syn_opts, win=64240, dt=0)
            for back in (1.0, 2.0, 4.0)[:r.randrange(0, 4)]:
                c.seq[0] = (c.seq[0] - 1) & 0xFFFFFFFF
                c.emit(0, SYN, opts=c.syn_opts, win=64240, dt=back)
        elif kind < 0.65:  # half-open: established, some data, never closed within the trace
            c.handshake()
            c.send(0, r.randbytes(r.randrange(20, 300)), delay=0.001)
            c.send(1, r.randbytes(r.randrange(20, 3000)), delay=c.rtt)
        elif kind < 0.75:  # SYN then FIN without a SYN-ACK (Zeek's SH)
            c.emit(0, SYN, opts=c.syn_opts, win=64240, dt=0)
            c.emit(0, FIN | ACK, dt=r.uniform(0.1, 1))
        else:  # established, data, then reset by either side
            c.handshake()
            c.send(0, r.randbytes(r.randrange(20, 600)), delay=0.001)
            c.send(1, r.randbytes(r.randrange(20, 6000)), delay=c.rtt)
            c.close_rst(1 if r.random() < 0.5 else 0, delay=r.uniform(0.001, 0.5))

    def port_scan(self) -> None:
        r = self.rng
        scanner, target = "203.0.113.66", r.choice(self.lan_servers)
        t = self.t0()
        ports = r.sample(range(1, 1024), self.cfg.port_scan_ports)
        open_ports = set(ports[:2])
        for p in ports:
            c = self.tcp(scanner, target, p, t)
            c.emit(0, SYN, win=1024, opts=bytes.fromhex("020405b4"), dt=0)
            if p in open_ports:
                c.emit(1, SYN | ACK, opts=c.syn_opts, win=65160, dt=0.0004)
                c.emit(0, RST, dt=0.0001, win=0)
            else:
                c.emit(1, RST | ACK, dt=0.0004, win=0)
            t += r.uniform(0.002, 0.02)

    def addr_scan(self) -> None:
        r = self.rng
        scanner = "198.51.100.77"
        port = r.choice((22, 23, 445, 3389))
        t = self.t0()
        base = r.randrange(0, 200)
        for i in range(self.cfg.addr_scan_hosts):
            idx = base + i
            target = f"10.3.{idx // 250}.{idx % 250 + 2}"
            c = self.tcp(scanner, target, port, t)
            c.emit(0, SYN, win=1024, opts=bytes.fromhex("020405b4"), dt=0)
            if r.random() < 0.3:
                c.emit(1, RST | ACK, dt=0.0008, win=0)
            t += r.uniform(0.005, 0.05)

    def malformed(self, kind: int) -> None:
        r = self.rng
        t = self.t0()
        a, b = r.choice(self.clients4), r.choice(self.servers4)
        if kind in (2, 5):
            f = _Flow(6, a, b, self.ephemeral(), 80, r)
            frame = bytearray(f.tcp(0, SYN, r.getrandbits(32), 0, 64240, opts=_Tcp._SYN_OPTS))
        else:
            f = _Flow(17, a, b, self.ephemeral(), 9999, r)
            frame = bytearray(f.udp(0, r.randbytes(r.randrange(40, 400))))
        if kind == 0:    # truncated IP: the IP total length claims more than was captured
            del frame[14 + 20 + 4:]
        elif kind == 1:  # bad IP header checksum
            frame[24] ^= 0x5A
        elif kind == 2:  # bad TCP checksum
            frame[14 + 20 + 16] ^= 0x33
        elif kind == 3:  # bad UDP checksum
            frame[14 + 20 + 6] ^= 0x33
        elif kind == 4:  # bogus IP header length (IHL 3 words < 20 bytes)
            frame[14] = 0x43
        else:            # bogus TCP data offset (3 words < 20 bytes)
            frame[14 + 20 + 12] = 0x30 | (frame[14 + 20 + 12] & 0x0F)
        self.out.append((t, bytes(frame)))

    _MIX = (("dns", 30), ("tls", 22), ("http", 14), ("udp", 10), ("icmp", 6), ("tcp_odd", 14), ("ssh", 2))

    def run(self, packets: int) -> list[tuple[float, bytes]]:
        cfg = self.cfg
        scans = cfg.scans if cfg.scans is not None else max(1, packets // 100_000)
        for _ in range(scans):
            self.port_scan()
            self.addr_scan()
        nbad = cfg.malformed if cfg.malformed is not None else max(6, packets // 2000)
        for i in range(nbad):
            self.malformed(i % 6)
        names, weights = zip(*self._MIX)
        cum, acc = [], 0
        for w in weights:
            acc += w
            cum.append(acc)
        methods = [getattr(self, n) for n in names]
        rnd = self.rng.random
        while len(self.out) < packets:
            methods[bisect(cum, rnd() * acc)]()
        self.out.sort(key=itemgetter(0))
        del self.out[packets:]
        return self.out


def _default_duration(packets: int) -> float:
    return max(30.0, packets / 3000.0)


def generate(packets: int, seed: int = 1, duration: float | None = None, start: float = 1_700_000_000.0,
             config: GenConfig | None = None) -> list[tuple[float, bytes]]:
    """Exactly ``packets`` time-ordered ``(ts, ethernet_frame)`` pairs; same arguments, same bytes."""
    if packets < 0:
        raise ValueError("packets must be >= 0")
    if duration is not None and duration <= 0:
        raise ValueError("duration must be > 0")
    dur = _default_duration(packets) if duration is None else duration
    return _Gen(seed, start, dur, config or GenConfig()).run(packets)


def write_trace(path: str, packets: int, seed: int = 1, duration: float | None = None,
                start: float = 1_700_000_000.0, config: GenConfig | None = None) -> int:
    """Generate and write a pcap; returns the number of bytes written."""
    return write_pcap(path, generate(packets, seed, duration, start, config))


def concurrent_connections(n: int, seed: int = 1, start: float = 1_700_000_000.0,
                           spread: float = 10.0) -> list[tuple[float, bytes]]:
    """``n`` TCP connections, all established (handshake + one request/response) and none closed,
    started within ``spread`` seconds: at the end of the trace all ``n`` are open at once.  Each
    connection has its own client address (10.64.0.0/10), i.e. ``n`` distinct address pairs."""
    g = _Gen(seed, start, spread, GenConfig())
    r = g.rng
    for i in range(n):
        a = f"10.{64 + (i >> 16)}.{(i >> 8) & 0xFF}.{i & 0xFF}"
        c = g.tcp(a, r.choice(g.servers4), 8080)
        c.handshake()
        c.send(0, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", delay=0.0002)
        c.send(1, b"HTTP/1.1 204 No Content\r\n\r\n", delay=c.rtt)
    g.out.sort(key=itemgetter(0))
    return g.out


def main(argv: list[str] | None = None) -> int:
    d = GenConfig()
    p = argparse.ArgumentParser(prog="python -m analysis.trafficgen",
                                description="Write a synthetic, realistic pcap (nothing is sent on a network).")
    p.add_argument("--out", required=True, help="output pcap file")
    p.add_argument("--packets", type=int, required=True, help="exact number of packets")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=None,
                   help="seconds over which sessions start (default: max(30, packets/3000))")
    p.add_argument("--start", type=float, default=1_700_000_000.0, help="trace start, epoch seconds")
    p.add_argument("--port-scan-ports", type=int, default=d.port_scan_ports)
    p.add_argument("--addr-scan-hosts", type=int, default=d.addr_scan_hosts)
    p.add_argument("--scans", type=int, default=None, help="scans of each kind (default: 1 per 100k packets)")
    p.add_argument("--malformed", type=int, default=None, help="malformed packets (default: 1 per 2k, >= 6)")
    p.add_argument("--ipv6-fraction", type=float, default=d.ipv6_fraction)
    a = p.parse_args(argv)
    if a.packets < 0 or (a.duration is not None and a.duration <= 0) or not 0 <= a.ipv6_fraction <= 1 \
            or a.port_scan_ports < 1 or a.port_scan_ports > 1023 or a.addr_scan_hosts < 1:
        p.error("invalid numeric argument")
    cfg = GenConfig(port_scan_ports=a.port_scan_ports, addr_scan_hosts=a.addr_scan_hosts, scans=a.scans,
                    malformed=a.malformed, ipv6_fraction=a.ipv6_fraction)
    t = time.perf_counter()
    try:
        pkts = generate(a.packets, a.seed, a.duration, a.start, cfg)
        size = write_pcap(a.out, pkts)
    except OSError as e:
        print(f"error: cannot write {a.out}: {e.strerror}", file=sys.stderr)
        return 1
    avg = sum(len(f) for _, f in pkts) / max(1, len(pkts))
    print(f"wrote {a.out}: {len(pkts)} packets, {size} bytes, mean frame {avg:.0f} B, "
          f"{time.perf_counter() - t:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

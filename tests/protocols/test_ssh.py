"""SSH analyzer: ssh.log rows from corpus traces, caps, and the auth inference."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import Conn, Recorder, corpus_dir, corpus_trace, run, streams  # noqa: E402

import analysis.protocols  # noqa: E402,F401
from analysis.logs.schema import columns  # noqa: E402
from analysis.protocols.base import REGISTRY  # noqa: E402
from analysis.protocols.ssh import SSHAnalyzer, SSHInfo, SSHOptions, SSHParser, find_alg  # noqa: E402

needs_corpus = pytest.mark.skipif(not (corpus_dir() / "zeek" / "traces").is_dir(),
                                  reason="conformance corpus not available")


def _rows(ctx: Recorder) -> list[dict]:
    return [{c.name: getattr(r, c.attr) for c in columns(type(r))} for p, r in ctx.logs if p == "ssh"]


def _ssh_conns(trace: str) -> list[Conn]:
    return [c for c in streams(corpus_trace(trace)) if c.resp_p == 22 and c.chunks]


@needs_corpus
def test_ssh_199_cisco_auth_success():
    (c,) = _ssh_conns("ssh/ssh_version_199.pcap")
    _, ctx = run(SSHAnalyzer, c)
    (row,) = _rows(ctx)
    assert row["version"] == 2 and row["auth_success"] is True and row["auth_attempts"] == 1
    assert row["direction"] is None            # both ends private: no direction
    assert (row["client"], row["server"]) == ("SSH-1.99-Cisco-1.25", "SSH-2.0-Cisco-1.25")
    assert [row[k] for k in ("cipher_alg", "mac_alg", "compression_alg", "kex_alg", "host_key_alg")] == [
        "aes128-cbc", "hmac-sha1", "none", "diffie-hellman-group1-sha1", "ssh-rsa"]
    assert row["host_key_fingerprint"] == "SHA256:j+j+wq3Bhfz+yLq2DmBoCBMyoMdLMGtr"
    assert ctx.confirmed and "ssh_auth_successful" in ctx.event_names()


@needs_corpus
def test_gre_tunnelled_gex_and_compression():
    (c,) = _ssh_conns("tunnels/gre-sample.pcap")
    _, ctx = run(SSHAnalyzer, c)
    (row,) = _rows(ctx)
    assert row["direction"] == "INBOUND" and row["version"] == 2
    assert row["compression_alg"] == "zlib"
    assert row["auth_success"] is None and row["auth_attempts"] == 0   # zlib: no inference
    assert row["kex_alg"] == "diffie-hellman-group-exchange-sha1"
    assert row["host_key_fingerprint"] == "SHA256:uBYqruQMTBP9p69Sqq9z5wFvMBG/M9+u"


@needs_corpus
@pytest.mark.parametrize("trace,side", [("ssh/ssh.client-side-half-duplex.pcap", "client"),
                                        ("ssh/ssh.server-side-half-duplex.pcap", "server")])
def test_half_duplex(trace, side):
    conns = _ssh_conns(trace)
    assert len(conns) == 20
    for c in conns:
        _, ctx = run(SSHAnalyzer, c)
        (row,) = _rows(ctx)
        other = "server" if side == "client" else "client"
        assert row[side].startswith("SSH-") and row[other] is None
        assert row["version"] is None and row["kex_alg"] is None and row["auth_attempts"] == 0
        assert ctx.violations and not ctx.confirmed


def _pkt(payload: bytes) -> bytes:
    pad = 8 - (len(payload) + 5) % 8 + 4
    return struct.pack(">IB", len(payload) + 1 + pad, pad) + payload + b"\x00" * pad


def _name_list(words) -> bytes:
    s = ",".join(words).encode()
    return struct.pack(">I", len(s)) + s


def _kexinit(kex=("curve25519-sha256",), hk=("ssh-ed25519",), enc=("aes128-ctr",), mac=("hmac-sha2-256",),
             comp=("none",), lang=()) -> bytes:
    lists = [kex, hk, enc, enc, mac, mac, comp, comp, lang, lang]
    return _pkt(b"\x14" + b"K" * 16 + b"".join(_name_list(x) for x in lists) + b"\x00" + b"\x00" * 4)


def _conn(chunks) -> Conn:
    c = Conn("Ctest", "192.168.1.5", 50000, "8.8.8.8", 22)
    c.chunks = [(o, d, 1.0 + i) for i, (o, d) in enumerate(chunks)]
    return c


def _handshake(host_key: bytes = b"\x00\x00\x00\x0bssh-ed25519KEY") -> list:
    reply = b"\x1f" + struct.pack(">I", len(host_key)) + host_key + struct.pack(">I", 4) + b"QQQQ"
    return [(True, b"SSH-2.0-OpenSSH_9.0\r\n"), (False, b"SSH-2.0-OpenSSH_8.2\r\n"),
            (True, _kexinit()), (False, _kexinit()), (True, _pkt(b"\x1e" + b"\x00\x00\x00\x04QQQQ")),
            (False, _pkt(reply) + _pkt(b"\x15")), (True, _pkt(b"\x15"))]


@pytest.mark.parametrize("sizes,success,attempts", [
    ([(True, 44), (False, 44), (True, 80), (False, 28)], True, 1),                 # "none" auth
    ([(True, 44), (False, 44), (True, 80), (False, 60), (True, 80), (False, 60),
      (True, 80), (False, 28)], True, 2),                                            # one failure then ok
    ([(True, 44), (False, 44), (True, 80), (False, 60), (True, 80), (False, 60)], False, 1),
])
def test_auth_inference_from_packet_sizes(sizes, success, attempts):
    chunks = _handshake() + [(o, b"\xee" * n) for o, n in sizes]
    _, ctx = run(SSHAnalyzer, _conn(chunks))
    (row,) = _rows(ctx)
    assert row["auth_success"] is success and row["auth_attempts"] == attempts
    assert row["direction"] == "OUTBOUND" and row["version"] == 2
    assert row["kex_alg"] == "curve25519-sha256" and row["host_key_alg"] == "ssh-ed25519"
    assert row["host_key_fingerprint"].startswith("SHA256:") and len(row["host_key_fingerprint"]) == 39


def test_kexinit_caps_weird_and_history():
    many = [f"alg{i}" for i in range(500)]
    chunks = [(True, b"SSH-2.0-x\r\n"), (False, b"SSH-2.0-y\r\n"), (True, _kexinit(kex=many, lang=many[:3]))]
    opts = SSHOptions(max_kexinit_kex_algorithms=101, max_kexinit_languages=2)
    a, ctx = run(SSHAnalyzer, _conn(chunks), opts)
    assert ("SSH_max_kexinit_kex_algorithms_exceeded", "500 > 101") in ctx.weirds
    assert ("SSH_max_kexinit_languages_exceeded", "3 > 2") in ctx.weirds
    assert "X" in ctx.history
    caps = [e for e in ctx.events if e[0] == "ssh_capabilities"][0][3]
    assert len(caps.kex_algorithms) == 101


def test_line_cap_and_garbage_are_violations():
    _, ctx = run(SSHAnalyzer, _conn([(True, b"x" * 10000)]))
    assert ctx.violations
    _, ctx = run(SSHAnalyzer, _conn([(True, b"HELLO\r\n")]))
    assert ctx.violations


def test_server_pre_banner_lines_are_skipped():
    p = SSHParser()
    evs = p.feed(False, b"Welcome\r\nSSH-2.0-srv")
    assert evs == []
    evs = p.feed(False, b"\r\n")
    assert evs[0].text == b"SSH-2.0-srv"


def test_find_alg_and_registration():
    assert find_alg(["a", "b"], ["b", "a"]) == "a"
    assert find_alg(["a"], ["b"]) == "Algorithm negotiation failed"
    spec = REGISTRY["ssh"]
    assert spec.ports == frozenset({(22, "tcp")})
    assert spec.dpd_orig[0].match(b"SSH-2.0-x") and spec.dpd_resp[0].match(b"SSH-1.99-y")
    assert not spec.dpd_orig[0].match(b"SSH-3.0")
    assert [c.name for c in columns(SSHInfo)][6:] == [
        "version", "auth_success", "auth_attempts", "direction", "client", "server", "cipher_alg", "mac_alg",
        "compression_alg", "kex_alg", "host_key_alg", "host_key_fingerprint"]

"""SSH analyzer: ssh.log as Zeek 9 writes it (``base/protocols/ssh``).

Sans-I/O :class:`SSHParser`: the identification lines, then SSH-2 binary packets in clear text
(KEXINIT, the key exchange messages that carry the server host key, NEWKEYS) per direction;
after NEWKEYS a direction is encrypted and only the sizes of its deliveries are reported, which
is all Zeek's authentication heuristic looks at.  :class:`SSHAnalyzer` applies ``main.zeek``:
client/server strings, version (1, 2, or unset), negotiated algorithms from both KEXINITs,
the host key fingerprint, and the packet-size inference of ``auth_success``/``auth_attempts``
(Zeek's ``SSH_Analyzer::ProcessEncrypted``).  The row is written when a successful login is
inferred, otherwise when the connection ends.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field as dc_field
from typing import NamedTuple

from analysis.logs.schema import Bool, ConnIdRecord, Count, Enum, String, field, log_stream
from analysis.protocols.base import Analyzer, AnalyzerContext, AnalyzerSpec, register

__all__ = ["SSHInfo", "SSHOptions", "SSHParser", "SSHAnalyzer", "SPEC"]


@log_stream("ssh")
class SSHInfo(ConnIdRecord, kw_only=True):
    version: Count | None = None
    auth_success: Bool | None = None
    auth_attempts: Count = 0
    direction: Enum | None = None
    client: String | None = None
    server: String | None = None
    cipher_alg: String | None = None
    mac_alg: String | None = None
    compression_alg: String | None = None
    kex_alg: String | None = None
    host_key_alg: String | None = None
    host_key_fingerprint: String | None = None


@dataclass
class SSHOptions:
    """Zeek's SSH options (``SSH::*``); 0 disables a cap."""

    compression_algorithms: frozenset = dc_field(
        default=frozenset({"zlib", "zlib@openssh.com"}), metadata={"zeek": "SSH::compression_algorithms"})
    disable_analyzer_after_detection: bool = dc_field(
        default=True, metadata={"zeek": "SSH::disable_analyzer_after_detection"})
    max_kexinit_kex_algorithms: int = dc_field(default=64, metadata={"zeek": "SSH::max_kexinit_kex_algorithms"})
    max_kexinit_hostkey_algorithms: int = dc_field(
        default=64, metadata={"zeek": "SSH::max_kexinit_hostkey_algorithms"})
    max_kexinit_encryption_algorithms: int = dc_field(
        default=64, metadata={"zeek": "SSH::max_kexinit_encryption_algorithms"})
    max_kexinit_mac_algorithms: int = dc_field(default=64, metadata={"zeek": "SSH::max_kexinit_mac_algorithms"})
    max_kexinit_compression_algorithms: int = dc_field(
        default=64, metadata={"zeek": "SSH::max_kexinit_compression_algorithms"})
    max_kexinit_languages: int = dc_field(default=64, metadata={"zeek": "SSH::max_kexinit_languages"})
    max_packet_length: int = dc_field(default=1 << 20, metadata={"zeek": "SSH::max_packet_length"})
    max_string_length: int = dc_field(default=1 << 20, metadata={"zeek": "SSH::max_string_length"})


_DEFAULT_OPTIONS = SSHOptions()
MAX_LINE = 4096      # an identification line longer than this is not SSH


# -- parser events ----------------------------------------------------------------------------------

class Version(NamedTuple):
    is_orig: bool
    text: bytes


class KexInit(NamedTuple):
    is_orig: bool
    cookie: bytes
    lists: tuple          # 10 name-lists as raw bytes, RFC 4253 7.1 order


class HostKey(NamedTuple):
    key: bytes


class NewKeys(NamedTuple):
    is_orig: bool


class EncryptedSegment(NamedTuple):
    is_orig: bool
    length: int


class Limit(NamedTuple):
    """A cap was hit (Zeek truncates, raises the weird and adds the ``X`` history letter)."""
    weird: str
    addl: str


class Violation(NamedTuple):
    reason: str


MSG_KEXINIT, MSG_NEWKEYS = 20, 21
_KEX_DH, _KEX_GEX, _KEX_ECDH, _KEX_GSS, _KEX_RSA = 1, 2, 3, 4, 5


def kex_kind(alg: str | None) -> int | None:
    """The key-exchange message family of a negotiated kex algorithm (None: unknown)."""
    if not alg:
        return None
    if alg.startswith("diffie-hellman-group-exchange"):
        return _KEX_GEX
    if alg.startswith("diffie-hellman-group"):
        return _KEX_DH
    if alg.startswith(("ecdh-sha2-", "curve25519", "curve448", "sntrup", "mlkem")):
        return _KEX_ECDH
    if alg.startswith("gss-"):
        return _KEX_GSS
    if alg.startswith("rsa"):
        return _KEX_RSA
    return None


def find_alg(client: list[str], server: list[str]) -> str:
    """Zeek's ``SSH::find_alg``: the client's first choice the server also offers."""
    offered = set(server)
    for a in client:
        if a in offered:
            return a
    return "Algorithm negotiation failed"


class SSHParser:
    """One connection's SSH state; ``feed`` returns the events of one delivery."""

    __slots__ = ("_buf", "_got_version", "encrypted", "kex_alg", "stopped", "max_packet", "version")

    def __init__(self, max_packet: int = 1 << 20) -> None:
        self._buf = [b"", b""]
        self._got_version = [False, False]
        self.encrypted = [False, False]
        self.kex_alg: str | None = None     # set by the analyzer once both KEXINITs are known
        self.stopped = False
        self.max_packet = max_packet
        self.version = [0, 0]               # major protocol version per side (1, 2; 199 -> 2)

    def feed(self, is_orig: bool, data: bytes) -> list:
        out: list = []
        if self.stopped or not data:
            return out
        d = 1 if is_orig else 0
        if self.encrypted[d]:
            out.append(EncryptedSegment(is_orig, len(data)))
            return out
        buf = self._buf[d] + data if self._buf[d] else data
        pos, n = 0, len(buf)
        while not self._got_version[d]:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if n - pos > MAX_LINE:
                    return self._violate(out, "SSH identification line too long")
                self._buf[d] = buf[pos:]
                return out
            line = buf[pos:nl]
            pos = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.startswith(b"SSH-"):
                self._got_version[d] = True
                self.version[d] = 2 if line[4:6] == b"2." or line[4:8] == b"1.99" else (1 if line[4:5] == b"1" else 0)
                out.append(Version(is_orig, line))
            elif is_orig:
                return self._violate(out, "malformed ssh identification")
        while n - pos >= 6 and not self.stopped:
            plen = int.from_bytes(buf[pos:pos + 4], "big")
            if self.version[0] == 1 and self.version[1] == 1:
                # SSH-1: length, 8 - length % 8 padding bytes, type, data, CRC
                if plen > self.max_packet or plen < 5:
                    return self._violate(out, f"bad SSH-1 packet length {plen}")
                end = pos + 4 + plen + 8 - plen % 8
                if end > n:
                    break
                self._ssh1_message(is_orig, buf[pos + 4 + 8 - plen % 8:end - 4], out)
                pos = end
                if self.encrypted[d]:
                    if pos < n:
                        out.append(EncryptedSegment(is_orig, n - pos))
                    pos = n
                    break
                continue
            if self.version[d] == 1:
                # an SSH-1 side whose peer did not say SSH-1: Zeek parses SSH-2 and fails
                return self._violate(out, "Binpac exception: binpac exception: invalid index for case: SSH_Key_Exchange: 3")
            if plen > self.max_packet or plen < 2:
                out.append(Limit("SSH_max_packet_length_exceeded", f"{plen} > {self.max_packet}")
                           if plen > self.max_packet else Violation("bad SSH packet length"))
                return self._violate(out, "SSH packet too long") if plen > self.max_packet else self._stop(out)
            end = pos + 4 + plen
            if end > n:
                break
            pad = buf[pos + 4]
            payload = buf[pos + 5:end - pad] if pad < plen else b""
            pos = end
            if payload:
                self._message(is_orig, payload, out)
            if self.encrypted[d]:
                if pos < n:
                    out.append(EncryptedSegment(is_orig, n - pos))
                pos = n
                break
        self._buf[d] = buf[pos:] if pos < n else b""
        return out

    def _stop(self, out: list) -> list:
        self.stopped = True
        self._buf = [b"", b""]
        return out

    def _violate(self, out: list, reason: str) -> list:
        out.append(Violation(reason))
        return self._stop(out)

    def _ssh1_message(self, is_orig: bool, p: bytes, out: list) -> None:
        if not p:
            return
        if p[0] == 2 and not is_orig:        # SSH_SMSG_PUBLIC_KEY: cookie, server key, host key
            q = 9
            parts = []
            for _ in range(4):               # server exp, mod; host exp, mod (after each bit count)
                if len(parts) in (0, 2):
                    q += 4
                if q + 2 > len(p):
                    return
                nbytes = (((p[q] << 8) | p[q + 1]) + 7) // 8
                parts.append(p[q + 2:q + 2 + nbytes])
                q += 2 + nbytes
            out.append(HostKey(parts[3] + parts[2]))   # Zeek hashes modulus + exponent
        elif p[0] == 3 and is_orig:          # SSH_CMSG_SESSION_KEY: both sides encrypt from here
            self.encrypted = [True, True]
            out.append(NewKeys(is_orig))

    def _message(self, is_orig: bool, p: bytes, out: list) -> None:
        t = p[0]
        if t == MSG_KEXINIT:
            if len(p) < 17:
                self._violate(out, "truncated KEXINIT")
                return
            lists = []
            q = 17
            for _ in range(10):
                if q + 4 > len(p):
                    self._violate(out, "truncated KEXINIT")
                    return
                ln = int.from_bytes(p[q:q + 4], "big")
                lists.append(p[q + 4:q + 4 + ln])
                q += 4 + ln
            out.append(KexInit(is_orig, p[1:17], tuple(lists)))
        elif t == MSG_NEWKEYS:
            self.encrypted[1 if is_orig else 0] = True
            out.append(NewKeys(is_orig))
        else:
            # like Zeek's binpac, every other clear-text message is read as a key-exchange
            # message of the negotiated kind: impossible before both KEXINITs were seen
            kind = kex_kind(self.kex_alg)
            if kind is None:
                self._violate(out, f"Binpac exception: binpac exception: invalid index for case: SSH_Key_Exchange: {3 if self.kex_alg is None else 0}")
                return
            if is_orig:
                return
            if (kind in (_KEX_DH, _KEX_ECDH) and t == 31) or (kind == _KEX_GEX and t == 33) \
                    or (kind == _KEX_GSS and t == 42):
                if len(p) >= 5:
                    ln = int.from_bytes(p[1:5], "big")
                    out.append(HostKey(p[5:5 + ln]))


def host_key_fingerprint(key: bytes) -> str:
    """Zeek 9's ``host_key_fingerprint``: ``SHA256:`` and the base64 of the first 24 digest bytes."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key).digest()[:24]).decode()


_LIST_CAPS = (
    ("max_kexinit_kex_algorithms", "SSH_max_kexinit_kex_algorithms_exceeded"),
    ("max_kexinit_hostkey_algorithms", "SSH_max_kexinit_hostkey_algorithms_exceeded"),
    ("max_kexinit_encryption_algorithms", "SSH_max_kexinit_encryption_algorithms_exceeded"),
    ("max_kexinit_encryption_algorithms", "SSH_max_kexinit_encryption_algorithms_exceeded"),
    ("max_kexinit_mac_algorithms", "SSH_max_kexinit_mac_algorithms_exceeded"),
    ("max_kexinit_mac_algorithms", "SSH_max_kexinit_mac_algorithms_exceeded"),
    ("max_kexinit_compression_algorithms", "SSH_max_kexinit_compression_algorithms_exceeded"),
    ("max_kexinit_compression_algorithms", "SSH_max_kexinit_compression_algorithms_exceeded"),
    ("max_kexinit_languages", "SSH_max_kexinit_languages_exceeded"),
    ("max_kexinit_languages", "SSH_max_kexinit_languages_exceeded"),
)


class Capabilities(NamedTuple):
    """Zeek's ``SSH::Capabilities`` (one side's KEXINIT)."""
    kex_algorithms: list
    server_host_key_algorithms: list
    encryption: tuple        # (client_to_server, server_to_client)
    mac: tuple
    compression: tuple
    languages: tuple
    is_server: bool


class SSHAnalyzer(Analyzer):
    """One SSH connection."""

    def __init__(self, ctx: AnalyzerContext) -> None:
        super().__init__(ctx)
        self.opts = ctx.options if isinstance(ctx.options, SSHOptions) else _DEFAULT_OPTIONS
        self.parser = SSHParser(self.opts.max_packet_length or (1 << 62))
        self.info: dict | None = None
        self.caps: Capabilities | None = None
        self.logged = False
        self.detached = False
        # ProcessEncrypted state
        self.auth_decision_made = False
        self.skipped_banner = False
        self.saw_encrypted_client_data = False
        self.service_accept_size = 0
        self.userauth_failure_size = 0

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self.detached:
            return
        events = self.parser.feed(is_orig, payload)
        for ev in events:
            self._event(ev, ts)
            if self.detached:
                return

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        self.detached = True          # Zeek stops delivering after a content gap

    def done(self, ts: float) -> None:
        info = self.info
        if info is None or self.logged:
            return
        if "client" in info and "server" in info and "auth_success" in info:
            if info["auth_success"]:
                return
            self.ctx.event("ssh_auth_failed")
            self.ctx.event("ssh_auth_result", False, info["auth_attempts"])
        self._log()

    # -- main.zeek ------------------------------------------------------------------------------

    def _session(self, ts: float) -> dict:
        info = self.info
        if info is None:
            info = self.info = {"ts": ts, "auth_attempts": 0}
            conn = self.ctx.conn
            lo, lr = _locality(conn)
            if lo != lr:
                info["direction"] = "OUTBOUND" if lo else "INBOUND"
        return info

    def _event(self, ev, ts: float) -> None:
        kind = type(ev)
        ctx = self.ctx
        if kind is EncryptedSegment:
            if not self.auth_decision_made:
                self._process_encrypted(ev.length, ev.is_orig, ts)
        elif kind is Version:
            info = self._session(ts)
            text = ev.text.decode("utf-8", "surrogateescape")
            info["client" if ev.is_orig else "server"] = text
            self._set_version()
            if ev.is_orig or ev.text:
                ctx.event("ssh_client_version" if ev.is_orig else "ssh_server_version", text)
        elif kind is KexInit:
            self._capabilities(ev, ts)
        elif kind is HostKey:
            if self.info is not None:
                self.info["host_key_fingerprint"] = host_key_fingerprint(ev.key)
            ctx.event("ssh_server_host_key", hashlib.md5(ev.key).hexdigest())
        elif kind is NewKeys:
            ctx.confirm()
        elif kind is Limit:
            ctx.add_history("X")
            ctx.weird(ev.weird, ev.addl)
        elif kind is Violation:
            ctx.violation(ev.reason)
            self.detached = True

    def _set_version(self) -> None:
        info = self.info
        c, s = info.get("client"), info.get("server")
        if not c or not s or len(c) <= 4 or len(s) <= 4:
            return
        c199 = len(c) > 7 and c[6] == "9" and c[7] == "9"
        s199 = len(s) > 7 and s[6] == "9" and s[7] == "9"
        if c[4] == "1" and s[4] == "2":
            info["version"] = 2 if c199 else 0
        elif c[4] == "2" and s[4] == "1":
            info["version"] = 2 if s199 else 0
        elif c[4] == "1" and s[4] == "1":
            info["version"] = (2 if c199 else 1) if s199 else 1
        elif c[4] == "2" and s[4] == "2":
            info["version"] = 2

    def _name_list(self, raw: bytes, cap_name: str, weird: str) -> list[str]:
        words = [w for w in raw.decode("utf-8", "surrogateescape").split(",") if w] if raw else []
        cap = getattr(self.opts, cap_name)
        if cap and len(words) > cap:
            self.ctx.add_history("X")
            self.ctx.weird(weird, f"{len(words)} > {cap}")
            words = words[:cap]
        return words

    def _capabilities(self, ev: KexInit, ts: float) -> None:
        lists = [self._name_list(raw, cap, weird) for raw, (cap, weird) in zip(ev.lists, _LIST_CAPS)]
        caps = Capabilities(lists[0], lists[1], (lists[2], lists[3]), (lists[4], lists[5]),
                            (lists[6], lists[7]), (lists[8], lists[9]), not ev.is_orig)
        self.ctx.event("ssh_capabilities", bytes(ev.cookie), caps)
        if self.info is None:
            return
        prev = self.caps
        if prev is not None and prev.is_server == caps.is_server:
            return
        if prev is None:
            self.caps = caps
            return
        client = prev if caps.is_server else caps
        server = caps if caps.is_server else prev
        info = self.info

        def bidir(c: tuple, s: tuple) -> str:
            c2s, s2c = find_alg(c[0], s[0]), find_alg(c[1], s[1])
            return c2s if c2s == s2c else f"To server: {c2s}, to client: {s2c}"

        info["cipher_alg"] = bidir(client.encryption, server.encryption)
        info["mac_alg"] = bidir(client.mac, server.mac)
        info["compression_alg"] = bidir(client.compression, server.compression)
        info["kex_alg"] = find_alg(client.kex_algorithms, server.kex_algorithms)
        info["host_key_alg"] = find_alg(client.server_host_key_algorithms, server.server_host_key_algorithms)
        self.parser.kex_alg = info["kex_alg"]

    # -- SSH_Analyzer::ProcessEncrypted: packet sizes after NEWKEYS -------------------------------

    def _process_encrypted(self, length: int, is_orig: bool, ts: float) -> None:
        if self.parser.version[0] != 2 or self.parser.version[1] != 2:
            return
        if is_orig:
            self.saw_encrypted_client_data = True
            return
        if not self.saw_encrypted_client_data:
            return
        if not self.service_accept_size:
            self.service_accept_size = length
            return
        if not self.userauth_failure_size and length + 16 == self.service_accept_size:
            self._auth_attempted(True, ts, method_none=True)
            return
        if not self.userauth_failure_size:
            if not self.skipped_banner and length - self.service_accept_size > 256:
                self.skipped_banner = True
                return
            self.userauth_failure_size = length
            return
        if length == self.userauth_failure_size:
            self._auth_attempted(False, ts)
            return
        if length - self.service_accept_size == -16:
            self._auth_attempted(True, ts)

    def _auth_attempted(self, authenticated: bool, ts: float, method_none: bool = False) -> None:
        if authenticated:
            self.auth_decision_made = True
        ctx = self.ctx
        ctx.event("ssh_auth_attempted", authenticated)
        if authenticated:
            ctx.event("ssh_auth_successful", method_none)
        info = self.info
        if info is None or info.get("auth_success"):
            return
        if info.get("compression_alg") in self.opts.compression_algorithms:
            return
        info["auth_success"] = authenticated
        info["auth_attempts"] += 1
        if authenticated and not self.logged:
            ctx.event("ssh_auth_result", True, info["auth_attempts"])
            self._log()
            if self.opts.disable_analyzer_after_detection:
                self.detached = True
                disable = getattr(ctx, "disable", None)    # Zeek's disable_analyzer, when offered
                if disable is not None:
                    disable()

    def _log(self) -> None:
        self.logged = True
        info = self.info
        c = self.ctx.conn
        self.ctx.write_log("ssh", SSHInfo(
            ts=info["ts"], uid=c.uid, orig_h=c.orig_h, orig_p=c.orig_p, resp_h=c.resp_h, resp_p=c.resp_p,
            version=info.get("version"), auth_success=info.get("auth_success"),
            auth_attempts=info["auth_attempts"], direction=info.get("direction"), client=info.get("client"),
            server=info.get("server"), cipher_alg=info.get("cipher_alg"), mac_alg=info.get("mac_alg"),
            compression_alg=info.get("compression_alg"), kex_alg=info.get("kex_alg"),
            host_key_alg=info.get("host_key_alg"), host_key_fingerprint=info.get("host_key_fingerprint")))


_LOCAL = None


def _locality(conn) -> tuple[bool, bool]:
    """(orig local?, resp local?) — the engine's answer when the view offers it, else Zeek's
    default ``Site`` (private address space is local)."""
    lo = getattr(conn, "local_orig", None)
    lr = getattr(conn, "local_resp", None)
    if lo is not None and lr is not None:
        return bool(lo), bool(lr)
    global _LOCAL
    if _LOCAL is None:
        from analysis.config import AnalysisConfig
        _LOCAL = AnalysisConfig().local_netset()
    return conn.orig_h in _LOCAL, conn.resp_h in _LOCAL


SPEC = register(AnalyzerSpec(
    name="ssh",
    factory=SSHAnalyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset({(22, "tcp")}),
    dpd_orig=(re.compile(rb"^[sS][sS][hH]-[12]\."),),
    dpd_resp=(re.compile(rb"^[sS][sS][hH]-[12]\."),),
    zeek_scripts=("base/protocols/ssh",),
    logs=("ssh",),
    options=SSHOptions,
    events=("ssh_client_version", "ssh_server_version", "ssh_capabilities", "ssh_server_host_key",
            "ssh_auth_attempted", "ssh_auth_successful", "ssh_auth_failed",
            "ssh_auth_result"),
))

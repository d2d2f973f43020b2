"""FTP control connections -> ftp.log (Zeek's ``base/protocols/ftp``), plus ftp-data expectations.

Two layers, as the analyzer contract asks:

* :class:`FTPParser` (sans-I/O): lines in (LF or CRLF ends a line), :class:`FTPRequest` /
  :class:`FTPReply` / :class:`FTPWeird` / :class:`FTPViolation` out.  It follows Zeek's FTP
  analyzer: commands are the first word upper-cased (3+ printable characters), replies carry a
  3-digit code and multi-line replies (``xyz-`` ... ``xyz ``) mark continuation lines.
* :class:`FTPAnalyzer` keeps Zeek's per-session state (``FTP::Info``): pending commands and the
  command/reply pairing, user/password, the working directory used to build ``arg`` URLs, the
  expected data channel from PORT/EPRT/PASV/EPSV, file sizes from 150/213 replies, and logs
  a row for each command in ``FTP::logged_commands`` when the next command arrives.

Data connections: an expected ``ftp-data`` connection that carries bytes is a file (files.log,
source ``FTP_DATA``) whose id is logged as ``fuid`` on the control connection's current
command (Zeek's ``files.zeek``).
"""

from __future__ import annotations

import binascii
import ipaddress
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from analysis.files import FileOptions, FileState, write_file
from analysis.logs.schema import Addr, Bool, ConnIdRecord, Count, Port, String, field as lfield, log_stream
from analysis.protocols._expect_table import ExpectTable
from analysis.protocols._starttls import start_tls
from analysis.protocols.base import Analyzer, AnalyzerSpec, register

# --------------------------------------------------------------------------------------------
# log record


@log_stream("ftp")
class FTPInfo(ConnIdRecord, kw_only=True):
    user: String | None = "<unknown>"
    password: String | None = None
    command: String | None = None
    arg: String | None = None
    mime_type: String | None = None
    file_size: Count | None = None
    reply_code: Count | None = None
    reply_msg: String | None = None
    dc_passive: Bool | None = lfield(name="data_channel.passive", default=None)
    dc_orig_h: Addr | None = lfield(name="data_channel.orig_h", default=None)
    dc_resp_h: Addr | None = lfield(name="data_channel.resp_h", default=None)
    dc_resp_p: Port | None = lfield(name="data_channel.resp_p", default=None)
    fuid: String | None = None


# --------------------------------------------------------------------------------------------
# options (Zeek defaults)


@dataclass
class FTPOptions:
    logged_commands: frozenset = field(default=frozenset({
        "APPE", "DELE", "RETR", "STOR", "STOU", "ACCT", "PORT", "PASV", "EPRT", "EPSV"}),
        metadata={"zeek": "FTP::logged_commands"})
    guest_ids: frozenset = field(default=frozenset({"anonymous", "ftp", "ftpuser", "guest"}),
                                 metadata={"zeek": "FTP::guest_ids"})
    default_capture_password: bool = field(default=False, metadata={"zeek": "FTP::default_capture_password"})
    max_pending_commands: int = field(default=20, metadata={"zeek": "FTP::max_pending_commands"})
    max_user_length: int = field(default=128, metadata={"zeek": "FTP::max_user_length"})
    max_password_length: int = field(default=128, metadata={"zeek": "FTP::max_password_length"})
    max_arg_length: int = field(default=4096, metadata={"zeek": "FTP::max_arg_length"})
    max_reply_msg_length: int = field(default=4096, metadata={"zeek": "FTP::max_reply_msg_length"})
    log_at_least_one_command: bool = field(default=True, metadata={"zeek": "FTP::log_at_least_one_command"})
    max_command_length: int = field(default=100, metadata={"zeek": "FTP::max_command_length"})
    max_line_length: int = 65536   # our cap on one buffered line (Zeek's NVT has none)


# --------------------------------------------------------------------------------------------
# sans-I/O parser


class FTPRequest(NamedTuple):
    command: str      # upper-cased
    arg: str
    ts: float


class FTPReply(NamedTuple):
    code: int         # 0 for continuation lines of a multi-line reply
    msg: str
    cont: bool
    ts: float


class FTPWeird(NamedTuple):
    name: str
    addl: str
    history: str      # a history letter to add ("" for none)


class FTPViolation(NamedTuple):
    reason: str


_WS = b" \t\r\n\v\f"
_PRINTABLE = re.compile(rb"[\x21-\x7e]+")     # Zeek: isprint() and not isspace()


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


class FTPParser:
    """Turns both directions of an FTP control stream into events (see module docstring)."""

    __slots__ = ("_buf", "_pending_reply", "confirmed", "max_command_length", "max_line_length",
                 "_dropping")

    def __init__(self, max_command_length: int = 100, max_line_length: int = 65536) -> None:
        self._buf = [b"", b""]             # partial line per direction (resp, orig)
        self._dropping = [False, False]    # inside an over-long line we discard
        self._pending_reply = 0
        self.confirmed = False
        self.max_command_length = max_command_length
        self.max_line_length = max_line_length

    def feed(self, is_orig: bool, data: bytes, ts: float) -> list:
        out: list = []
        i = 1 if is_orig else 0
        buf = self._buf[i] + data if self._buf[i] else bytes(data)
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if self._dropping[i]:
                self._dropping[i] = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if is_orig:
                self._request(line, ts, out)
            else:
                self._reply(line, ts, out)
        rest = buf[start:]
        if len(rest) > self.max_line_length:
            out.append(FTPWeird("contentline_size_exceeded", "", ""))
            rest = b""
            self._dropping[i] = True
        self._buf[i] = rest
        return out

    def has_partial(self, is_orig: bool) -> bool:
        return bool(self._buf[1 if is_orig else 0])

    def gap(self, is_orig: bool) -> None:
        """Bytes are missing: the partial line of that side is lost."""
        self._buf[1 if is_orig else 0] = b""
        self._dropping[1 if is_orig else 0] = False

    def _request(self, line: bytes, ts: float, out: list) -> None:
        if not line:
            return
        s = line.lstrip(_WS)
        n = 0
        ln = len(s)
        while n < ln and s[n] not in _WS:
            n += 1
        cmd = s[:n]
        arg = s[n:].lstrip(_WS)
        if n < 3 or _PRINTABLE.fullmatch(cmd) is None:
            if self.confirmed:
                out.append(FTPWeird("FTP_invalid_command", "", ""))
            return
        if 0 < self.max_command_length < n:
            if self.confirmed:
                out.append(FTPWeird("FTP_max_command_length_exceeded",
                                    f"{n} > {self.max_command_length}", "X"))
            return
        self.confirmed = True
        out.append(FTPRequest(_dec(cmd.upper()), _dec(arg), ts))

    def _reply(self, line: bytes, ts: float, out: list) -> None:
        if not line:
            return
        n = len(line)
        code = int(line[:3]) if n >= 3 and line[:3].isdigit() else 0
        if self._pending_reply:
            if code == self._pending_reply and n > 3 and line[3] == 0x20:
                msg = line[3:].lstrip(_WS)
                self._pending_reply = 0
                cont = False
            else:
                cont = True
                code = 0
                msg = line
        else:
            cont = False
            if code == 0:
                out.append(FTPViolation("non-numeric reply code"))
                return
            if code < 100:
                out.append(FTPViolation("invalid reply code"))
                return
            if n > 3 and line[3] == 0x2D:   # "-": multi-line reply
                self._pending_reply = code
                msg = line[4:].lstrip(_WS)
                cont = True
            elif n > 3 and line[3] != 0x20:
                out.append(FTPViolation("invalid reply line"))
                return
            else:
                msg = line[3:].lstrip(_WS)
        out.append(FTPReply(code, _dec(msg), cont, ts))


# --------------------------------------------------------------------------------------------
# Zeek's helper functions (base/utils/paths, ftp functions.bif, numbers)


def normalize_path(path: str) -> str:
    """Zeek's ``compress_path``: drop ``.`` and empty components, fold ``x/..``, no trailing /."""
    absolute = path.startswith("/")
    parts: list[str] = []
    for i, comp in enumerate(path.split("/")):
        if comp == "":
            continue
        if comp == "." and (i > 0 or absolute):
            continue
        if comp == "..":
            if parts and parts[-1] not in ("..", "~") and not parts[-1].startswith("~"):
                if parts[-1] == ".":
                    parts[-1] = ".."
                else:
                    parts.pop()
                continue
            if not parts and absolute:
                parts.append("..")
                continue
        parts.append(comp)
    out = "/".join(parts)
    return "/" + out if absolute else out


_ABS_PATH = re.compile(r"(/|[A-Za-z]:[\\/])")


def build_path(directory: str, file_name: str) -> str:
    sep = "" if directory.endswith("/") else "/"
    if _ABS_PATH.match(file_name) or directory == "":
        return file_name
    return directory + sep + file_name


def build_path_compressed(directory: str, file_name: str) -> str:
    return normalize_path(build_path(directory, file_name))


_QUOTED_DIR = re.compile(r'"((?:/|[A-Za-z]:[\\/])[^"]*)"')
_DIR = re.compile(r'(?:/|[A-Za-z]:[\\/])(?:[^" ]|\\ )*')


def extract_path(s: str) -> str:
    m = _QUOTED_DIR.search(s)
    if m:
        return m.group(1)
    m = _DIR.search(s)
    return m.group(0) if m else ""


def addr_to_uri(a: str) -> str:
    return f"[{a}]" if ":" in a else a


_DIGITS = re.compile(r"[0-9]+")


def extract_count(s: str, get_first: bool = True) -> int:
    nums = _DIGITS.findall(s)
    if not nums:
        return 0
    digits = (nums[0] if get_first else nums[-1]).lstrip("0") or "0"
    if len(digits) > 20:        # beyond a count (and beyond int()'s digit limit)
        return 0
    v = int(digits)
    return v if v < 1 << 64 else 0


_N = r"[ \t\n\v\f\r]*([+-]?[0-9]{1,12})"
_PORT6 = re.compile(",".join([_N] * 6))


def parse_ftp_port(s: str) -> tuple[str, int] | None:
    """``"10,0,0,1,4,31"`` -> ``("10.0.0.1", 1055)``; None when not valid."""
    if len(s) < 11:
        return None
    m = _PORT6.match(s)
    if not m:
        return None
    b = [int(x) for x in m.groups()]
    if any(x < 0 or x > 255 for x in b):
        return None
    return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}", (b[4] << 8) | b[5]


def parse_ftp_pasv(msg: str) -> tuple[str, int] | None:
    if not msg:
        return None
    i = msg.find("(")
    if i >= 0:
        return parse_ftp_port(msg[i + 1:])
    i = msg.find("PORT")
    if i >= 0:
        return parse_ftp_port(msg[i + 5:])
    i = msg.find(",")
    if i >= 0:
        j = i - 1
        while j >= 0 and "0" <= msg[j] <= "9":
            j -= 1
        return parse_ftp_port(msg[j + 1:])
    return None


_STRTOL = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]{1,12}")


def _strtol(s: str, pos: int) -> tuple[int, int]:
    m = _STRTOL.match(s, pos)
    if not m:
        return 0, pos
    return int(m.group(0)), m.end()


def parse_eftp(line: str | None) -> tuple[str, int] | None:
    """RFC 2428 ``<d>proto<d>addr<d>port<d>``; the address is ``::`` when absent."""
    if line is None:
        return None
    pos = 0
    n = len(line)
    while pos < n and line[pos] in " \t\n\v\f\r":
        pos += 1
    if pos >= n:
        return None
    delim = line[pos]
    pos += 1
    good = True
    addr = "::"
    _, nd = _strtol(line, pos)
    if nd >= n or line[nd] != delim:
        good = False
    pos = nd
    if pos < n:
        pos += 1
    if pos < n and line[pos] != delim:
        e = line.find(delim, pos)
        if e < 0:
            e = n
        try:
            addr = str(ipaddress.ip_address(line[pos:e]))
            good = True
        except ValueError:
            good = False
    port = 0
    e = line.find(delim, pos)
    if e >= 0:
        port, nd = _strtol(line, e + 1)
        if nd >= n or line[nd] != delim:
            good = False
        if port < 0 or port > 65535:
            port = 0
            good = False
    return (addr, port) if good else None


def parse_ftp_epsv(msg: str) -> tuple[str, int] | None:
    i = msg.find("(")
    return parse_eftp(msg[i + 1:] if i >= 0 else None)


# Zeek's base64 decoder as the ADAT check uses it: any illegal character is reported once and
# fails the decoding; so does an incomplete final group.
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def decode_base64_zeek(data: bytes) -> tuple[bytes | None, str | None]:
    """-> (decoded or None, weird addl for ``base64_illegal_encoding`` or None)."""
    for c in data:
        if c not in _B64:
            return None, f"character {c} ignored by Base64 decoding"
    stripped = data.rstrip(b"=")
    rem = len(stripped) % 4
    if rem == 1 or (len(data) % 4 and rem):
        bits = (4 - len(data) % 4) * 6
        return None, f"incomplete base64 group, padding with {bits} bits of 0"
    try:
        return binascii.a2b_base64(data), None
    except (binascii.Error, ValueError):
        return None, None


# --------------------------------------------------------------------------------------------
# session state (FTP::Info and FTP::CmdArg)

FILE_CMDS = frozenset({"APPE", "CWD", "DELE", "MKD", "RETR", "RMD", "RNFR", "RNTO",
                       "STOR", "STOU", "REST", "SIZE", "MDTM"})
DIRECTORY_CMDS = frozenset({("CWD", 250), ("CDUP", 200), ("CDUP", 250), ("PWD", 257), ("XPWD", 257)})

_R = {
    "<init>": (120, 220, 421, 0), "USER": (230, 331, 332, 421, 530, 500, 501),
    "PASS": (230, 202, 332, 421, 530, 500, 501, 503), "ACCT": (230, 202, 421, 530, 500, 501, 503),
    "CWD": (250, 421, 500, 501, 502, 530, 550), "CDUP": (200, 250, 421, 500, 501, 502, 530, 550),
    "SMNT": (202, 250, 421, 500, 501, 502, 530, 550), "REIN": (120, 220, 421, 500, 502),
    "QUIT": (221, 500, 0), "PORT": (200, 421, 500, 501, 530), "PASV": (227, 421, 500, 501, 502, 530),
    "MODE": (200, 421, 500, 501, 502, 504, 530), "TYPE": (200, 421, 500, 501, 504, 530),
    "STRU": (200, 421, 500, 501, 504, 530), "ALLO": (200, 202, 421, 500, 501, 504, 530),
    "REST": (200, 350, 421, 500, 501, 502, 530),
    "STOR": (110, 125, 150, 226, 250, 421, 425, 426, 451, 551, 552, 532, 450, 452, 553, 500, 501, 530, 550),
    "STOU": (110, 125, 150, 226, 250, 421, 425, 426, 451, 551, 552, 532, 450, 452, 553, 500, 501, 530, 550),
    "RETR": (110, 125, 150, 226, 250, 421, 425, 426, 451, 450, 500, 501, 530, 550),
    "LIST": (125, 150, 226, 250, 421, 425, 426, 451, 450, 500, 501, 502, 530, 550),
    "NLST": (125, 150, 226, 250, 421, 425, 426, 451, 450, 500, 501, 502, 530, 550),
    "APPE": (125, 150, 226, 250, 421, 425, 426, 451, 551, 552, 532, 450, 550, 452, 553, 500, 501, 502, 530),
    "RNFR": (350, 421, 450, 550, 500, 501, 502, 530), "RNTO": (250, 421, 532, 553, 500, 501, 502, 503, 530),
    "DELE": (250, 421, 450, 550, 500, 501, 502, 530), "RMD": (250, 421, 500, 501, 502, 530, 550),
    "MKD": (257, 421, 500, 501, 502, 530, 550), "PWD": (257, 421, 500, 501, 502, 550),
    "ABOR": (225, 226, 421, 500, 501, 502), "SYST": (215, 421, 500, 501, 502, 530),
    "STAT": (211, 212, 213, 421, 450, 500, 501, 502, 530), "HELP": (200, 211, 214, 421, 500, 501, 502),
    "SITE": (200, 202, 214, 500, 501, 502, 530), "NOOP": (200, 421, 500),
    "LPRT": (500, 501, 521), "FEAT": (211, 500, 502), "OPTS": (200, 451, 501), "EPSV": (229, 500, 501),
    "EPRT": (200, 500, 501, 522), "SIZE": (213, 500, 501, 550), "MDTM": (213, 500, 501, 550),
    "MLST": (150, 226, 250, 500, 501, 550), "MLSD": (150, 226, 250, 500, 501, 550),
    "CLNT": (200, 500), "MACB": (200, 500, 550), "<missing>": (0,),
}
#: Zeek's ``FTP::cmd_reply_code``: (command, reply code) pairs that belong together.
CMD_REPLY_CODE = frozenset((cmd, code) for cmd, codes in _R.items() for code in codes)
del _R

_LOOKS_LIKE_REPLY = re.compile(r"[1-9][0-9]{2} [\x20-\x7e]{10}")


class CmdArg:
    __slots__ = ("ts", "cmd", "arg", "seq", "cwd_consumed")

    def __init__(self, ts: float, cmd: str, arg: str, seq: int) -> None:
        self.ts = ts
        self.cmd = cmd
        self.arg = arg
        self.seq = seq
        self.cwd_consumed = False


class DataChannel(NamedTuple):
    passive: bool
    orig_h: str
    resp_h: str
    resp_p: int


class FTPSession:
    """Zeek's ``FTP::Info`` minus the log columns that are computed at log time."""

    __slots__ = ("ts", "user", "password", "command", "arg", "mime_type", "file_size", "reply_code",
                 "reply_msg", "data_channel", "cwd", "cmdarg", "pending", "command_seq", "passive",
                 "capture_password", "logged_command_seen", "fuid")

    def __init__(self, ts: float, capture_password: bool) -> None:
        self.ts = ts
        self.user = "<unknown>"
        self.password: str | None = None
        self.command: str | None = None
        self.arg: str | None = None
        self.mime_type: str | None = None
        self.file_size: int | None = None
        self.reply_code: int | None = None
        self.reply_msg: str | None = None
        self.data_channel: DataChannel | None = None
        self.cwd = "."
        self.cmdarg: CmdArg | None = None
        self.pending: dict[int, CmdArg] = {}
        self.command_seq = 0
        self.passive = False
        self.capture_password = capture_password
        self.logged_command_seen = False
        self.fuid: str | None = None


def get_pending_cmd(pending: dict[int, CmdArg], code: int, msg: str, ts: float) -> CmdArg:
    """Zeek's best match of a reply to the pending commands (code fits, names in the message)."""
    best = None
    best_seq = 0
    best_score = -1
    for seq, ca in pending.items():
        score = 0
        if code == 500 or (ca.cmd, code) in CMD_REPLY_CODE:
            score += 100
        if ca.cmd in msg:
            score += 20
        if ca.arg in msg:
            score += 10
        if score > best_score or (score == best_score and best_seq > seq):
            best_score, best_seq, best = score, seq, ca
    if best is None:
        best = CmdArg(ts, "<unknown>", "", 0)
    return best


#: Zeek's ``ftp_data_expected`` table: (resp_h, resp_p) -> control session.
EXPECTED = ExpectTable()


def _blen(s: str) -> int:
    return len(s.encode("utf-8", "surrogateescape")) if not s.isascii() else len(s)


def _truncate(s: str, n: int) -> str:
    return s.encode("utf-8", "surrogateescape")[:n].decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------------
# analyzer


class FTPAnalyzer(Analyzer):
    """One FTP control connection (see the module docstring)."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        o = ctx.options if isinstance(ctx.options, FTPOptions) else FTPOptions()
        self.o = o
        self.parser = FTPParser(o.max_command_length, o.max_line_length)
        self.s: FTPSession | None = None
        self.auth_requested = ""
        self.adat = False          # inspecting a GSSAPI ADAT exchange
        self.adat_first = True
        self.tls = False
        self.stopped = False
        self.confirmed = False
        self.orig_closed = False

    # -- engine interface ---------------------------------------------------------------------

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if self.stopped or self.tls:
            return
        for ev in self.parser.feed(is_orig, payload, ts):
            t = type(ev)
            if t is FTPRequest:
                if not self.confirmed:
                    self.confirmed = True
                    self.ctx.confirm()
                self._request(ev)
                if self.adat:
                    self._adat_request(ev)
            elif t is FTPReply:
                self._reply(ev)
                if self.tls:
                    return
            elif t is FTPWeird:
                if ev.history:
                    self.ctx.add_history(ev.history)
                self.ctx.weird(ev.name, ev.addl)
            else:
                if not self.parser.confirmed:
                    self.ctx.violation(ev.reason)
                    self.stopped = True
                    return

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        self.parser.gap(is_orig)

    def eof(self, is_orig: bool, ts: float) -> None:
        if is_orig:
            self.orig_closed = True

    def done(self, ts: float) -> None:
        if self.orig_closed and self.parser.has_partial(True) and not self.tls:
            self.ctx.weird("partial_ftp_request")
        s = self.s
        if s is None:
            return
        for seq in sorted(s.pending):
            s.cmdarg = s.pending[seq]
            self._message()
        if not s.logged_command_seen and self.o.log_at_least_one_command:
            self._write(s)

    # -- Zeek's event handlers ----------------------------------------------------------------

    def _session(self, ts: float) -> FTPSession:
        s = self.s
        if s is None:
            s = self.s = FTPSession(ts, self.o.default_capture_password)
            s.command_seq = 1
            s.pending[1] = CmdArg(ts, "<init>", "", 1)
        return s

    def _request(self, ev: FTPRequest) -> None:
        cmd, arg, ts = ev
        self.ctx.event("ftp_request", cmd, arg)
        s = self.s
        if s is not None and s.cmdarg is not None and s.reply_code is not None:
            if s.pending.pop(s.cmdarg.seq, None) is not None:
                self._message()
        s = self._session(ts)
        o = self.o
        if len(s.pending) < o.max_pending_commands:
            s.command_seq += 1
            s.pending[s.command_seq] = CmdArg(ts, cmd, arg, s.command_seq)
        else:
            self.ctx.weird("FTP_too_many_pending_commands", str(len(s.pending)))
        if cmd == "USER":
            if _blen(arg) > o.max_user_length:
                self.ctx.weird("FTP_user_too_long", str(_blen(arg)))
                arg = _truncate(arg, o.max_user_length)
            s.user = arg
        elif cmd == "PASS":
            if _blen(arg) > o.max_password_length:
                self.ctx.weird("FTP_password_too_long", str(_blen(arg)))
                arg = _truncate(arg, o.max_password_length)
            s.password = arg
        elif cmd == "PORT" or cmd == "EPRT":
            hp = parse_ftp_port(arg) if cmd == "PORT" else parse_eftp(arg)
            if hp is not None:
                self._expect(s, DataChannel(False, self.ctx.conn.resp_h, hp[0], hp[1]), ts)
        elif cmd == "AUTH":
            self.auth_requested = arg

    def _reply(self, ev: FTPReply) -> None:
        code, msg, cont, ts = ev
        self.ctx.event("ftp_reply", code, msg, cont)
        if not cont:
            if code == 234 and self.auth_requested == "TLS":
                if start_tls(self.ctx, "ftp_starttls"):
                    self.tls = True
            elif code == 334 and self.auth_requested == "GSSAPI":
                self.adat = True
                self.adat_first = True
        if self.adat and not cont:
            self._adat_reply(code)
        s = self._session(ts)
        if cont and code == 0 and s.reply_code is not None:
            if not _LOOKS_LIKE_REPLY.match(msg):
                return
        s.cmdarg = ca = get_pending_cmd(s.pending, code, msg, ts)
        s.reply_code = code
        s.reply_msg = msg
        if cont:
            return
        cmd = ca.cmd
        if (code == 150 and cmd == "RETR") or (code == 213 and cmd == "SIZE"):
            s.file_size = extract_count(msg, False)
        elif (code == 227 or code == 229) and (cmd == "PASV" or cmd == "EPSV"):
            hp = parse_ftp_pasv(msg) if code == 227 else parse_ftp_epsv(msg)
            if hp is not None:
                s.passive = True
                h, p = hp
                if code == 229 and h == "::":
                    h = self.ctx.conn.resp_h
                self._expect(s, DataChannel(True, self.ctx.conn.orig_h, h, p), ts)
        if (cmd, code) in DIRECTORY_CMDS and not ca.cwd_consumed:
            ca.cwd_consumed = True
            if cmd == "CWD":
                s.cwd = build_path_compressed(s.cwd, ca.arg)
            elif cmd == "CDUP":
                s.cwd = build_path_compressed(s.cwd, "/..")
            else:
                s.cwd = extract_path(msg)
        if len(s.pending) > 1:
            s.pending.pop(ca.seq, None)
            self._message()

    def _expect(self, s: FTPSession, chan: DataChannel, ts: float) -> None:
        s.passive = chan.passive
        s.data_channel = chan
        EXPECTED.add(chan.resp_h, chan.resp_p, s, ts)
        expect = getattr(self.ctx, "expect_connection", None)
        if expect is not None:
            expect(chan.orig_h, chan.resp_h, chan.resp_p, "ftp-data", timeout=300.0)

    def _hide(self, s: FTPSession) -> bool:
        return not s.capture_password and s.user.lower() not in self.o.guest_ids

    def _message(self) -> None:
        """Zeek's ``ftp_message``: finish the current command; log it when it is a logged one."""
        s = self.s
        ca = s.cmdarg
        o = self.o
        s.ts = ca.ts
        s.command = ca.cmd
        arg = ca.arg
        if ca.cmd in FILE_CMDS:
            path = build_path_compressed(s.cwd, arg)
            if not path.startswith("/"):
                path = "/" + path
            arg = f"ftp://{addr_to_uri(self.ctx.conn.resp_h)}{path}"
        if _blen(arg) > o.max_arg_length:
            self.ctx.weird("FTP_arg_too_long", str(_blen(arg)))
            arg = _truncate(arg, o.max_arg_length)
        if s.reply_msg is not None and _blen(s.reply_msg) > o.max_reply_msg_length:
            self.ctx.weird("FTP_reply_msg_too_long", str(_blen(s.reply_msg)))
            s.reply_msg = _truncate(s.reply_msg, o.max_reply_msg_length)
        hide = self._hide(s)
        if s.command == "PASS" and hide:
            arg = "<hidden>"
        s.arg = arg if arg != "" else None
        if s.password is not None and hide:
            s.password = "<hidden>"
        if s.command in o.logged_commands:
            self._write(s)
            s.logged_command_seen = True
        s.mime_type = None
        s.file_size = None
        s.data_channel = None
        s.fuid = None

    def _write(self, s: FTPSession) -> None:
        c = self.ctx.conn
        dc = s.data_channel
        self.ctx.write_log("ftp", FTPInfo(
            ts=s.ts, uid=c.uid, orig_h=c.orig_h, orig_p=c.orig_p, resp_h=c.resp_h, resp_p=c.resp_p,
            user=s.user, password=s.password, command=s.command, arg=s.arg, mime_type=s.mime_type,
            file_size=s.file_size, reply_code=s.reply_code, reply_msg=s.reply_msg,
            dc_passive=dc.passive if dc else None, dc_orig_h=dc.orig_h if dc else None,
            dc_resp_h=dc.resp_h if dc else None, dc_resp_p=dc.resp_p if dc else None, fuid=s.fuid))

    # -- GSSAPI ADAT (Zeek's FTP_ADAT analyzer): only the checks that raise weirds ---------------

    def _adat_request(self, ev: FTPRequest) -> None:
        if ev.command == "ADAT":
            if self.adat_first:
                raw = ev.arg.encode("utf-8", "surrogateescape")
                decoded, why = decode_base64_zeek(raw)
                if why is not None:
                    self.ctx.weird("base64_illegal_encoding", why, source="")
                if decoded is None:
                    self.ctx.weird("ftp_adat_bad_first_token_encoding", "", source="FTP_ADAT")
                if (decoded is None or len(decoded) < 5 or decoded[0] != 0x16
                        or len(decoded) - 5 != int.from_bytes(decoded[3:5], "big")):
                    self.adat = False
            self.adat_first = False
        elif ev.command == "AUTH":
            self.adat = False

    def _adat_reply(self, code: int) -> None:
        if code in (232, 234, 235, 421, 431, 500, 501, 503, 535, 631, 632, 633):
            self.adat = False


# --------------------------------------------------------------------------------------------
# ftp-data: expected data connections get a file id for the control session


@dataclass
class FTPDataOptions(FileOptions):
    """ftp-data carries files only: the file-analysis switches."""


class FTPDataAnalyzer(Analyzer):
    """Zeek's FTP_DATA analyzer (a file analyzer): each direction that carries bytes is a file
    (source ``FTP_DATA``) whose row is written when the connection goes away; the control
    session gets its ``fuid``, and its ``mime_type`` once the first 4096 bytes (Zeek's
    ``default_file_bof_buffer_size``) or the whole file are seen, whichever comes first."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        o = ctx.options
        self.o = o if isinstance(o, FileOptions) else None
        self.session: FTPSession | None = None
        self.started = False
        self.files: dict[bool, FileState] = {}

    def data(self, is_orig: bool, payload: bytes, ts: float) -> None:
        if not payload:
            return
        if not self.started:
            self.started = True
            c = self.ctx.conn
            self.session = EXPECTED.get(c.resp_h, c.resp_p, ts)
        f = self.files.get(is_orig)
        if f is None:
            f = self.files[is_orig] = FileState(self.ctx.uid_for("F"), "FTP_DATA", is_orig, ts, self.o)
            if self.session is not None:
                self.session.fuid = f.fuid
        if f.data(payload, ts):
            self._sniffed(f)

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        f = self.files.get(is_orig)
        if f is not None:
            f.gap(length)

    def _sniffed(self, f: FileState) -> None:
        if f.mime_type is not None and self.session is not None:
            self.session.mime_type = f.mime_type

    def done(self, ts: float) -> None:
        for f in self.files.values():
            if f.finish():
                self._sniffed(f)
            write_file(self.ctx, f)
        self.files = {}
        c = self.ctx.conn
        EXPECTED.remove(c.resp_h, c.resp_p)


#: ``base/protocols/ftp`` and the policy scripts that load it.
_FTP_SCRIPTS = ("base/protocols/ftp", "protocols/ftp/detect", "protocols/ftp/detect-bruteforcing",
                "protocols/ftp/software", "protocols/ftp/gridftp-data-detection")

FTP_SPEC = register(AnalyzerSpec(
    name="ftp",
    factory=FTPAnalyzer,
    transports=frozenset({"tcp"}),
    ports=frozenset({(21, "tcp"), (2811, "tcp")}),
    # Zeek's dpd.sig: a USER command from the client (on one of the first 16 lines: possessive
    # line skipping keeps the per-packet DPD test linear), a 120/220 greeting from the server.
    dpd_orig=(re.compile(rb"(?:[^\r\n]*+[\r\n]++){0,16}? *[uU][sS][eE][rR] "),),
    dpd_resp=(re.compile(rb"[\n\r ]*(120|220)[^0-9]"),),
    zeek_scripts=_FTP_SCRIPTS,
    logs=("ftp",),
    options=FTPOptions,
    events=("ftp_request", "ftp_reply", "ftp_starttls"),
))

FTP_DATA_SPEC = register(AnalyzerSpec(
    name="ftp-data",
    factory=FTPDataAnalyzer,
    transports=frozenset({"tcp"}),
    zeek_scripts=_FTP_SCRIPTS,
    logs=("files",),
    options=FTPDataOptions,
))

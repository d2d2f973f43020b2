"""FTP brute forcing as Zeek's ``policy/protocols/ftp/detect-bruteforcing``: notice
``FTP::Bruteforcing`` when one client had too many rejected USER/PASS commands.

Every FTP reply with a 5xx code to a ``USER`` or ``PASS`` command is one observation in the
SumStats stream ``ftp.failed_auth`` (key: the client, value: the server).  When a client's
observations within one ``bruteforce_measurement_interval`` reach ``bruteforce_threshold``, the
notice says ``<client> had <n> failed logins on <m> FTP server(s) in <mins>m<secs>s``
(identifier: the client, so the default hour of suppression applies per client).

Which command a reply answers is Zeek's ``c$ftp$cmdarg``: the engine's ``ftp_reply`` event does
not carry the FTP session, so this module keeps the pending commands of each control connection
from ``ftp_request``/``ftp_reply`` as ``base/protocols/ftp/main.zeek`` does (the analyzer's own
matching function, :func:`analysis.protocols.ftp.get_pending_cmd`, picks the command).

Options (Zeek's names; ``redef`` lines reach them, see :mod:`cluster.frameworks.options`):
:data:`bruteforce_threshold` (20), :data:`bruteforce_measurement_interval` (15 min).
"""

from __future__ import annotations

import re
from typing import Any

from analysis.protocols.ftp import CmdArg, get_pending_cmd
from cluster import api
from cluster.frameworks import notice, options, sumstats
from cluster.frameworks.sumstats import Key, Reducer, SumStat
from cluster.frameworks.zeek_time import duration_to_mins_secs

__all__ = ["BRUTEFORCING", "bruteforce_measurement_interval", "bruteforce_threshold"]

BRUTEFORCING = "FTP::Bruteforcing"

bruteforce_threshold = 20.0               # FTP::bruteforce_threshold
bruteforce_measurement_interval = 900.0   # FTP::bruteforce_measurement_interval (15 min)
max_pending_commands = 20                 # FTP::max_pending_commands (the analyzer's default)

options.declare(__name__, {
    "FTP::bruteforce_threshold": ("bruteforce_threshold", options.DOUBLE),
    "FTP::bruteforce_measurement_interval": ("bruteforce_measurement_interval", options.INTERVAL),
})

STREAM = "ftp.failed_auth"
# main.zeek: a continuation line without a code is matched to a command only if it looks like a reply
_LOOKS_LIKE_REPLY = re.compile(r"^[1-9][0-9]{2} [\x20-\x7e]{10}")


class _Session:
    """The part of ``FTP::Info`` that decides ``cmdarg``: pending commands and the last reply."""

    __slots__ = ("pending", "seq", "cmdarg", "reply_code")

    def __init__(self) -> None:
        self.pending: dict[int, CmdArg] = {1: CmdArg(0.0, "<init>", "", 1)}
        self.seq = 1
        self.cmdarg: CmdArg | None = None
        self.reply_code: int | None = None


_sessions: dict[str, _Session] = {}


def _crossed(key: Key, result: dict) -> None:
    r = result[STREAM]
    plural = "s" if r.unique > 1 else ""
    msg = (f"{key.host} had {r.num} failed logins on {r.unique} FTP server{plural} in "
           f"{duration_to_mins_secs(r.end - r.begin)}")
    notice.NOTICE(note=BRUTEFORCING, src=key.host, msg=msg, identifier=key.host)


_ss: SumStat | None = None


def _configure() -> None:
    """The SumStat with the options' current values (created once, refreshed at each run's start:
    a second standalone run in one process may come with other redefs)."""
    global _ss
    options.ensure()
    unique_max = int(bruteforce_threshold + 2)
    if _ss is None:
        _ss = sumstats.create(SumStat(
            name="ftp-detect-bruteforcing", epoch=bruteforce_measurement_interval,
            reducers=[Reducer(STREAM, {sumstats.UNIQUE}, unique_max=unique_max)],
            threshold_val=lambda key, result: result[STREAM].num + 0.0,
            threshold=bruteforce_threshold, threshold_crossed=_crossed))
    else:
        _ss.epoch, _ss.threshold = bruteforce_measurement_interval, bruteforce_threshold
        _ss.reducers[0].unique_max = unique_max


def _session(uid: str) -> _Session:
    s = _sessions.get(uid)
    if s is None:
        s = _sessions[uid] = _Session()
    return s


@api.on("ftp_request")
def _request(c: Any, command: str, arg: str) -> None:
    s = _sessions.get(c.uid)
    if s is not None and s.cmdarg is not None and s.reply_code is not None:
        s.pending.pop(s.cmdarg.seq, None)      # the previous command is done
    s = _session(c.uid)
    if len(s.pending) < max_pending_commands:
        s.seq += 1
        s.pending[s.seq] = CmdArg(0.0, command, arg, s.seq)


@api.on("ftp_reply")
def _reply(c: Any, code: int, msg: str, cont_resp: bool) -> None:
    s = _session(c.uid)
    if not (cont_resp and code == 0 and s.reply_code is not None and not _LOOKS_LIKE_REPLY.match(msg)):
        s.cmdarg = get_pending_cmd(s.pending, code, msg, 0.0)
        s.reply_code = code
        if not cont_resp and len(s.pending) > 1:
            s.pending.pop(s.cmdarg.seq, None)
    ca = s.cmdarg
    if ca is not None and (ca.cmd == "USER" or ca.cmd == "PASS") and 500 <= code < 600:
        if _ss is None:
            _configure()
        sumstats.observe(STREAM, Key(host=c.orig_h), c.resp_h)


@api.on("connection_state_remove")
def _removed(c: Any) -> None:
    if _sessions:
        _sessions.pop(c.uid, None)


@api.on(api.CLUSTER_STARTED)
def _started() -> None:
    _configure()     # every run's start (the manager sees no FTP: its SumStat is made here)
    _sessions.clear()

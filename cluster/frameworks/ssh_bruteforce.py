"""SSH password guessing as Zeek's ``policy/protocols/ssh/detect-bruteforcing``: notice
``SSH::Password_Guessing`` when one client failed to log in on too many SSH connections.

Each connection that ends with failed authentication only (``ssh_auth_failed``) is one
observation in the SumStats stream ``ssh.login.failure`` (key: the client, value: the server),
unless :data:`ignore_guessers` maps a subnet of the client to one of the server.  When a client's
count within one ``guessing_timeout`` reaches ``password_guesses_limit``, the notice says
``<client> appears to be guessing SSH passwords (seen in <n> connections).`` with
``sub`` = ``Sampled servers: `` and up to five sampled servers (identifier: the client).
``SSH::Login_By_Password_Guesser`` is declared by Zeek but not implemented there either.

Zeek raises ``ssh_auth_failed(c)`` from the connection's removal hook; the engine raises it from
the SSH analyzer's ``done`` (at the connection's removal, or when a violation detaches it), with
the connection ``c`` first like every analyzer event.

Options (Zeek's names; ``redef`` lines reach them, see :mod:`cluster.frameworks.options`):
:data:`password_guesses_limit` (30), :data:`guessing_timeout` (30 min), :data:`ignore_guessers`
(client subnet -> server subnet, empty).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cluster import api
from cluster.frameworks import notice, options, sumstats
from cluster.frameworks.sumstats import Key, Reducer, SumStat

__all__ = ["PASSWORD_GUESSING", "LOGIN_BY_PASSWORD_GUESSER", "guessing_timeout", "ignore_guessers",
           "password_guesses_limit"]

PASSWORD_GUESSING = "SSH::Password_Guessing"
LOGIN_BY_PASSWORD_GUESSER = "SSH::Login_By_Password_Guesser"

password_guesses_limit = 30.0          # SSH::password_guesses_limit
guessing_timeout = 1800.0              # SSH::guessing_timeout (30 min)
ignore_guessers: dict[str, str] = {}   # SSH::ignore_guessers: client subnet -> server subnet

options.declare(__name__, {
    "SSH::password_guesses_limit": ("password_guesses_limit", options.DOUBLE),
    "SSH::guessing_timeout": ("guessing_timeout", options.INTERVAL),
    "SSH::ignore_guessers": ("ignore_guessers", options.SUBNET_TABLE),
})

STREAM = "ssh.login.failure"
NUM_SAMPLES = 5


def _crossed(key: Key, result: dict) -> None:
    r = result[STREAM]
    sub = "Sampled servers: "
    for i, s in enumerate(r.samples):
        sub = f"{sub}{'' if i == 0 else ','} {s}"
    notice.NOTICE(note=PASSWORD_GUESSING,
                  msg=f"{key.host} appears to be guessing SSH passwords (seen in {r.num} connections).",
                  sub=sub, src=key.host, identifier=key.host)


_ss: SumStat | None = None


def _configure() -> None:
    """The SumStat with the options' current values (created once, refreshed at each run's start)."""
    global _ss
    options.ensure()
    if _ss is None:
        _ss = sumstats.create(SumStat(
            name="detect-ssh-bruteforcing", epoch=guessing_timeout,
            reducers=[Reducer(STREAM, {sumstats.SUM, sumstats.SAMPLE}, num_samples=NUM_SAMPLES)],
            threshold_val=lambda key, result: result[STREAM].sum,
            threshold=password_guesses_limit, threshold_crossed=_crossed))
    else:
        _ss.epoch, _ss.threshold = guessing_timeout, password_guesses_limit


def _ignored(client: str, server: str) -> bool:
    """``id$orig_h in ignore_guessers && id$resp_h in ignore_guessers[id$orig_h]`` (the most
    specific client subnet decides, as a Zeek subnet-indexed table lookup does)."""
    try:
        a, b = ipaddress.ip_address(client), ipaddress.ip_address(server)
    except ValueError:
        return False
    best = None
    for cnet, snet in ignore_guessers.items():
        n = ipaddress.ip_network(cnet, strict=False)
        if a in n and (best is None or n.prefixlen > best[0].prefixlen):
            best = (n, snet)
    return best is not None and b in ipaddress.ip_network(best[1], strict=False)


@api.on("ssh_auth_failed")
def failed(c: Any) -> None:
    """One connection whose authentication failed (Zeek's ``ssh_auth_failed`` handler)."""
    if _ss is None:
        _configure()
    if ignore_guessers and _ignored(c.orig_h, c.resp_h):
        return
    sumstats.observe(STREAM, Key(host=c.orig_h), c.resp_h)


@api.on(api.CLUSTER_STARTED)
def _started() -> None:
    _configure()     # every run's start (the manager sees no SSH: its SumStat is made here)

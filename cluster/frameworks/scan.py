"""Scan detection as Zeek's ``policy/misc/scan.zeek``, on SumStats and the notice framework.

Load it like ``@load misc/scan``: import it from a script given to ``starling run --script`` /
``starling analyze --script`` (``from cluster.frameworks import scan``).

Observations come from unsuccessful TCP connections.  Zeek takes them from four engine events;
this script makes the same decisions from the connection's final state and history when it is
removed (``connection_state_remove``) -- the engine raises those events too (docs/events.md),
and moving onto them is the way to Zeek's exact observation times:

===========================  ===================================  =================================
Zeek event                   our test on the removed connection   observation time
===========================  ===================================  =================================
``connection_attempt``       conn_state ``S0`` (reverse if "H")   start + ``tcp_attempt_delay`` (5 s)
``connection_rejected``      conn_state ``REJ`` (reverse if "s")  the reset (start + duration)
``connection_reset``         ``RSTO`` after S and h, no data      the reset (start + duration)
(reverse failed)             ``RSTR`` after H, no data            the reset (start + duration)
===========================  ===================================  =================================

Each failed connection is one observation in ``scan.addr.fail`` (key: scanner + port, value:
victim) and one in ``scan.port.fail`` (key: scanner + victim, value: port), unless a policy says
no (``@addr_scan_policy``/``@port_scan_policy``, Zeek's hooks: return False to skip).  Zeek's
options keep their names here: :data:`addr_scan_interval`, :data:`port_scan_interval`,
:data:`addr_scan_threshold`, :data:`port_scan_threshold` -- set them at import time of a script
(the SumStats are created when the first observation or tick needs them).
"""

from __future__ import annotations

from typing import Any, Callable

from cluster import api
from cluster.frameworks import host as _host
from cluster.frameworks import notice, sumstats
from cluster.frameworks.site import is_local_addr
from cluster.frameworks.sumstats import Key, Reducer, SumStat
from cluster.frameworks.zeek_time import duration_to_mins_secs as _mins_secs

__all__ = ["ADDRESS_SCAN", "PORT_SCAN", "addr_scan_interval", "addr_scan_policy", "addr_scan_threshold",
           "port_scan_interval", "port_scan_policy", "port_scan_threshold", "local_nets"]

ADDRESS_SCAN = "Scan::Address_Scan"
PORT_SCAN = "Scan::Port_Scan"

addr_scan_interval = 300.0     # Scan::addr_scan_interval (5 min)
port_scan_interval = 300.0     # Scan::port_scan_interval (5 min)
addr_scan_threshold = 25.0     # Scan::addr_scan_threshold
port_scan_threshold = 15.0     # Scan::port_scan_threshold
tcp_attempt_delay = 5.0        # Zeek's tcp_attempt_delay: when connection_attempt fires
local_nets: list[str] = []     # extra Site::local_nets for the notices' "local"/"remote" sub (the
                               # layout's / --local-nets networks always count)

_addr_policies: list[Callable[[str, str, str], Any]] = []
_port_policies: list[Callable[[str, str, str], Any]] = []


def addr_scan_policy(fn: Callable[[str, str, str], Any]) -> Callable[[str, str, str], Any]:
    """``hook Scan::addr_scan_policy(scanner, victim, scanned_port)``; return False to skip."""
    _addr_policies.append(fn)
    return fn


def port_scan_policy(fn: Callable[[str, str, str], Any]) -> Callable[[str, str, str], Any]:
    """``hook Scan::port_scan_policy(scanner, victim, scanned_port)``; return False to skip."""
    _port_policies.append(fn)
    return fn


def _side(addr: str) -> str:
    """Zeek's ``Site::is_local_addr(scanner) ? "local" : "remote"``."""
    return "local" if is_local_addr(addr, tuple(local_nets)) else "remote"


def _addr_crossed(key: Key, result: dict) -> None:
    r = result["scan.addr.fail"]
    msg = (f"{key.host} scanned at least {r.unique} unique hosts on port {key.str} "
           f"in {_mins_secs(r.end - r.begin)}")
    notice.NOTICE(note=ADDRESS_SCAN, src=key.host, p=key.str, sub=_side(key.host), msg=msg,
                  identifier=key.host)


def _port_crossed(key: Key, result: dict) -> None:
    r = result["scan.port.fail"]
    msg = (f"{key.host} scanned at least {r.unique} unique ports of host {key.str} "
           f"in {_mins_secs(r.end - r.begin)}")
    notice.NOTICE(note=PORT_SCAN, src=key.host, dst=key.str, sub=_side(key.host), msg=msg,
                  identifier=key.host)


_created = False


def _create() -> None:
    """Create both SumStats with the options' values at first use (after scripts set them)."""
    global _created
    if _created:
        return
    _created = True
    sumstats.create(SumStat(
        name="addr-scan", epoch=addr_scan_interval,
        reducers=[Reducer("scan.addr.fail", {sumstats.UNIQUE}, unique_max=int(addr_scan_threshold + 2))],
        threshold_val=lambda key, result: result["scan.addr.fail"].unique + 0.0,
        threshold=addr_scan_threshold, threshold_crossed=_addr_crossed))
    sumstats.create(SumStat(
        name="port-scan", epoch=port_scan_interval,
        reducers=[Reducer("scan.port.fail", {sumstats.UNIQUE}, unique_max=int(port_scan_threshold + 2))],
        threshold_val=lambda key, result: result["scan.port.fail"].unique + 0.0,
        threshold=port_scan_threshold, threshold_crossed=_port_crossed))


def _allowed(policies: list, scanner: str, victim: str, port: str) -> bool:
    for p in policies:
        if p(scanner, victim, port) is False:
            return False
    return True


def add_sumstats(c: Any, reverse: bool, ts: float) -> None:
    _create()
    scanner, victim, port = c.orig_h, c.resp_h, c.resp_p
    if reverse:
        scanner, victim, port = c.resp_h, c.orig_h, c.orig_p
    sport = f"{port}/{c.proto}"
    if _allowed(_addr_policies, scanner, victim, sport):
        sumstats.observe("scan.addr.fail", Key(scanner, sport), victim, ts)
    if _allowed(_port_policies, scanner, victim, sport):
        sumstats.observe("scan.port.fail", Key(scanner, victim), sport, ts)


def classify(c: Any, now: float | None = None) -> tuple[bool, float] | None:
    """(reverse, observation time) for a failed connection, None for any other.  ``now`` is
    the network time of the removal: an attempt removed before ``tcp_attempt_delay`` had passed
    (at the end of a trace) never had its ``connection_attempt`` in Zeek."""
    if c.proto != "tcp":
        return None
    st, hist = c.conn_state, c.history or ""
    end = c.ts + (c.duration or 0.0)
    if st == "S0":
        at = c.ts + tcp_attempt_delay
        if now is not None and now < at:
            return None
        return "H" in hist, at
    if st == "REJ":
        return "s" in hist, end
    if "D" in hist or "d" in hist:
        return None
    if st == "RSTO" and "S" in hist and "h" in hist:
        return False, end
    if st == "RSTR" and "H" in hist:
        return True, end
    return None


@api.on("connection_state_remove")
def _conn_removed(c: Any) -> None:
    got = classify(c, _host.current().network_time())
    if got is not None:
        add_sumstats(c, got[0], got[1])


@api.on(api.CLUSTER_STARTED)
def _started() -> None:
    _create()     # the manager has no connections: create its SumStats when the cluster starts

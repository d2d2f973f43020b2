"""Cluster frameworks: notice, SumStats, scan detection, known hosts/services, the proxies' store,
and the detection policy scripts (FTP/SSH brute forcing, expiring certificates).

Zeek turns the policy ones on with ``@load``; so do we: :func:`scripts_for_loads` maps those
``@load`` names to the node scripts that enable them, so ``--load policy/misc/scan`` (or a layout's
``loads``) works like ``--script cluster/frameworks/scan_script.py``.  A policy script also loads
the base scripts it needs (``policy/protocols/ssh/detect-bruteforcing`` loads
``base/protocols/ssh``): :func:`analysis_loads` gives the engine those instead of the policy names.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

_HERE = Path(__file__).resolve().parent

#: Zeek ``@load`` names (with and without the ``policy/`` prefix) -> the script that enables them.
POLICY_SCRIPTS: dict[str, Path] = {}
#: The same names -> the base scripts the Zeek policy script ``@load``s that the engine maps.
POLICY_LOADS: dict[str, tuple[str, ...]] = {}
for _name, _script, _base in (
        ("misc/scan", "scan_script.py", ()),
        ("protocols/conn/known-hosts", "known_script.py", ()),
        ("protocols/conn/known-services", "known_script.py", ()),
        ("protocols/ftp/detect-bruteforcing", "ftp_bruteforce_script.py", ("base/protocols/ftp",)),
        ("protocols/ssh/detect-bruteforcing", "ssh_bruteforce_script.py", ("base/protocols/ssh",)),
        ("protocols/ssl/expiring-certs", "expiring_certs_script.py", ("base/protocols/ssl",))):
    POLICY_SCRIPTS[_name] = POLICY_SCRIPTS[f"policy/{_name}"] = _HERE / _script
    POLICY_LOADS[_name] = POLICY_LOADS[f"policy/{_name}"] = _base


def scripts_for_loads(loads: Iterable[str]) -> list[str]:
    """The framework scripts the given ``@load`` names turn on, each once, in load order."""
    found = (POLICY_SCRIPTS.get(name.removesuffix(".zeek")) for name in loads)
    return list(dict.fromkeys(str(p) for p in found if p is not None))


def loads_for_scripts(scripts: Iterable[str]) -> list[str]:
    """The base scripts the framework node scripts among ``scripts`` load (for the engine)."""
    by_script = {str(POLICY_SCRIPTS[n]): POLICY_LOADS[n] for n in POLICY_SCRIPTS}
    return list(dict.fromkeys(x for s in scripts for x in by_script.get(str(Path(s).resolve()), ())))


def analysis_loads(loads: Iterable[str]) -> list[str]:
    """``loads`` for the engine: each framework policy name replaced by the base scripts it loads."""
    out: list[str] = []
    for name in loads:
        out.extend(POLICY_LOADS.get(name.removesuffix(".zeek"), (name,)))
    return list(dict.fromkeys(out))

"""Cluster frameworks: notice, SumStats, scan detection, known hosts/services, the proxies' store.

Zeek turns the policy ones on with ``@load``; so do we: :func:`scripts_for_loads` maps those
``@load`` names to the node scripts that enable them, so ``--load policy/misc/scan`` (or a layout's
``loads``) works like ``--script cluster/frameworks/scan_script.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

_HERE = Path(__file__).resolve().parent

#: Zeek ``@load`` names (with and without the ``policy/`` prefix) -> the script that enables them.
POLICY_SCRIPTS: dict[str, Path] = {}
for _name, _script in (("misc/scan", "scan_script.py"),
                       ("protocols/conn/known-hosts", "known_script.py"),
                       ("protocols/conn/known-services", "known_script.py")):
    POLICY_SCRIPTS[_name] = POLICY_SCRIPTS[f"policy/{_name}"] = _HERE / _script


def scripts_for_loads(loads: Iterable[str]) -> list[str]:
    """The framework scripts the given ``@load`` names turn on, each once, in load order."""
    found = (POLICY_SCRIPTS.get(name.removesuffix(".zeek")) for name in loads)
    return list(dict.fromkeys(str(p) for p in found if p is not None))

"""Zeek ``redef`` lines for the framework scripts' options (``SSH::password_guesses_limit`` ...).

The engine maps the redefs it knows onto :class:`analysis.config.AnalysisConfig`; the policy
scripts we implement as frameworks keep their options as module attributes with Zeek's names
(``ssh_bruteforce.password_guesses_limit``).  Each such module declares them here::

    options.declare(__name__, {"SSH::password_guesses_limit": ("password_guesses_limit", options.DOUBLE)})

and the run's redef lines reach them on every node: standalone, :mod:`cluster.frameworks.local`
calls :func:`install` with the ``--redef`` lines; in a cluster, :func:`ensure` (called by the
scripts before they read an option) takes them from the layout (``redefs``, or ``starling run
--redef``).  A redef wins over a value a script assigned at import time; a new run (another
host) first puts back what the previous run's redefs replaced.  Lines naming no declared option
are left to the engine; a declared option whose value does not parse keeps its value and is
reported in the returned notes.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from typing import Any, Callable, Iterable

import structlog

from cluster.frameworks import host as _host

log = structlog.get_logger(__name__)

__all__ = ["BOOL", "COUNT", "DOUBLE", "ENUM", "INTERVAL", "SUBNET_TABLE", "apply", "declare", "ensure",
           "install", "known"]

_REDEF = re.compile(r"^\s*(?:redef\s+)?([\w:]+)\s*(\+=|-=|=)\s*(.*?)\s*;?\s*$", re.S)
_UNITS = {"usec": 1e-6, "msec": 1e-3, "sec": 1.0, "min": 60.0, "hr": 3600.0, "day": 86400.0}


def DOUBLE(op: str, text: str, _cur: Any) -> float:     # noqa: N802 - Zeek's type names
    return float(text)


def COUNT(op: str, text: str, _cur: Any) -> int:      # noqa: N802
    return int(text)


def BOOL(op: str, text: str, _cur: Any) -> bool:      # noqa: N802
    return {"T": True, "F": False}[text]


def INTERVAL(op: str, text: str, _cur: Any) -> float:     # noqa: N802
    """``30 mins``, ``15mins``, ``1day``, ``2.5 hrs`` (Zeek's units, singular or plural)."""
    m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([a-z]+?)s?", text.strip())
    if not m or m.group(2) not in _UNITS:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def ENUM(op: str, text: str, _cur: Any) -> str:       # noqa: N802
    """An enum name, with or without its module (``SSL::ALL_HOSTS`` -> ``ALL_HOSTS``)."""
    name = text.strip().rsplit("::", 1)[-1]
    if not re.fullmatch(r"\w+", name):
        raise ValueError(text)
    return name


def SUBNET_TABLE(op: str, text: str, cur: Any) -> dict[str, str]:   # noqa: N802
    """``table[subnet] of subnet``: ``{ [10.0.0.0/8] = 192.168.0.0/16, ... }``; ``+=``/``-=``."""
    inner = text.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        raise ValueError(text)
    items = {}
    for k, v in re.findall(r"\[\s*([^\]]+?)\s*\]\s*=\s*([^,}\s]+)", inner):
        items[str(ipaddress.ip_network(k, strict=False))] = str(ipaddress.ip_network(v, strict=False))
    if inner[1:-1].strip() and not items:
        raise ValueError(text)
    base = dict(cur or {}) if op != "=" else {}
    if op == "-=":
        for k in items:
            base.pop(k, None)
    else:
        base.update(items)
    return base


# Zeek option name -> (module name, attribute, converter)
_declared: dict[str, tuple[str, str, Callable[[str, str, Any], Any]]] = {}
_replaced: dict[str, Any] = {}      # option -> the value the current redefs replaced
_for: Any = None                    # the host the current redefs were applied for


def declare(module: str, opts: dict[str, tuple[str, Callable[[str, str, Any], Any]]]) -> None:
    """Declare ``module``'s options: Zeek name -> (attribute, converter)."""
    for zname, (attr, conv) in opts.items():
        _declared[zname] = (module, attr, conv)


def declare_all() -> None:
    """Import every framework module that declares options (so :func:`known` sees them).  The
    modules register their event handlers too: only for a process that analyses nothing itself
    (the CLI checking a cluster's options)."""
    from cluster.frameworks import expiring_certs, ftp_bruteforce, ssh_bruteforce  # noqa: F401


def engine_notes(cfg: Any) -> list[str]:
    """``cfg.notes`` less "not used by the engine" for the redefs a *declared* framework option
    takes (the scripts' modules declare theirs when loaded; see :func:`declare_all`)."""
    from analysis.zeek_scripts import unused_redef_note

    taken = {unused_redef_note(n) for n in cfg.unused_redefs if known(n)}
    return [n for n in cfg.notes if n not in taken]


def known(name: str) -> bool:
    """True when ``name`` (``SSH::password_guesses_limit``) is a declared framework option."""
    return name in _declared


def apply(lines: Iterable[str]) -> list[str]:
    """Undo the previous redefs, then apply ``lines``; returns notes for lines that name a
    declared option but could not be applied (others are the engine's business)."""
    for zname, old in _replaced.items():
        mod, attr, _ = _declared[zname]
        setattr(sys.modules[mod], attr, old)
    _replaced.clear()
    notes: list[str] = []
    for line in lines:
        m = _REDEF.match(line)
        if not m or m.group(1) not in _declared:
            continue
        zname, op, text = m.groups()
        mod, attr, conv = _declared[zname]
        module = sys.modules.get(mod)
        if module is None:
            continue
        cur = getattr(module, attr)
        try:
            if op != "=" and conv is not SUBNET_TABLE:
                raise ValueError(f"{op} needs a table")
            new = conv(op, text, cur)
        except (ValueError, KeyError) as e:
            notes.append(f"{line.strip()!r}: value not understood ({e}); {zname} stays {cur!r}")
            continue
        _replaced.setdefault(zname, cur)
        setattr(module, attr, new)
    return notes


def install(h: Any, lines: Iterable[str]) -> list[str]:
    """Apply ``lines`` for host ``h`` (the standalone runner calls this with ``--redef``)."""
    global _for
    _for = h
    notes = apply(lines)
    for note in notes:
        log.warning("redef_not_applied", note=note)
    return notes


def ensure() -> None:
    """Apply the current host's redefs once (a cluster node's come from its layout)."""
    h = _host.current()
    if h is _for:
        return
    lines: Iterable[str] = ()
    if isinstance(h, _host.ClusterHost):
        lines = getattr(h.cluster.layout, "zeek_redefs", ()) or ()
    install(h, lines)

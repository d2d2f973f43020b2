"""What Zeek ``@load`` names and ``redef`` lines mean for an :class:`AnalysisConfig`.

Zeek users describe a run by the scripts they load and the options they redefine; the
conformance corpus does the same.  This module maps the names we understand onto our feature
switches: which log streams exist (in bare mode only the loaded scripts' logs), conn.log
extensions, ``Site::local_nets``, the likely server ports each protocol script registers (they
decide connection flips), and a few core options.  Anything else is ignored with a note in
``config.notes`` — never an error, since a Zeek configuration may mention analyzers we lack.
"""

from __future__ import annotations

import ipaddress
import re

from analysis.config import AnalysisConfig

# Ports each protocol script adds to likely_server_ports (and registers its analyzer on).
PROTOCOL_PORTS: dict[str, tuple[tuple[int, str], ...]] = {
    "dns": ((53, "udp"), (53, "tcp"), (137, "udp"), (5353, "udp"), (5355, "udp")),
    "http": tuple((p, "tcp") for p in (80, 81, 631, 1080, 3128, 8000, 8080, 8888)),
    "ssl": tuple((p, "tcp") for p in (443, 563, 585, 614, 636, 989, 990, 992, 993, 995, 5223)) + ((443, "udp"),),
    "ssh": ((22, "tcp"),),
    "ftp": ((21, "tcp"), (2811, "tcp")),
    "smtp": ((25, "tcp"), (587, "tcp")),
    "pop3": ((110, "tcp"),),
    "imap": ((143, "tcp"),),
    "irc": tuple((p, "tcp") for p in (6666, 6667, 6668, 6669)),
    "dhcp": ((67, "udp"),),
    "ntp": ((123, "udp"),),
    "snmp": ((161, "udp"), (162, "udp")),
    "syslog": ((514, "udp"),),
    "sip": ((5060, "udp"),),
    "radius": ((1812, "udp"),),
    "modbus": ((502, "tcp"),),
    "dnp3": ((20000, "tcp"), (20000, "udp")),
    "rdp": ((3389, "tcp"),),
    "mysql": ((1434, "tcp"), (3306, "tcp")),
    "smb": ((139, "tcp"), (445, "tcp")),
    "dce-rpc": ((135, "tcp"),),
    "krb": ((88, "udp"), (88, "tcp")),
    "xmpp": ((5222, "tcp"), (5269, "tcp")),
    "socks": ((1080, "tcp"),),
    "mqtt": ((1883, "tcp"),),
    "ldap": ((389, "tcp"), (389, "udp"), (3268, "tcp")),
    "quic": ((443, "udp"),),
    "postgresql": ((5432, "tcp"),),
    "redis": ((6379, "tcp"),),
    "finger": ((79, "tcp"),),
}
# base/frameworks/tunnels registers the UDP tunnel ports.
TUNNEL_PORTS = ((5072, "udp"), (3544, "udp"), (2152, "udp"), (2123, "udp"), (4789, "udp"), (6081, "udp"))

# Protocol scripts whose load pulls in the weird framework (they log weirds in bare mode).
_LOADS_WEIRD = {"http", "ftp", "smtp", "snmp", "ssl", "smb", "dce-rpc", "sip", "irc", "pop3", "dns", "dhcp",
                "rdp", "modbus", "ntlm", "krb"}
# Protocol scripts that load base/frameworks/files (they log files.log in bare mode).
_LOADS_FILES = {"http", "smtp", "ftp", "smb", "irc", "ssl", "krb", "rdp", "dce-rpc", "pop3", "imap", "ldap"}
# File-analysis scripts (each loads base/frameworks/files) and what they pull in themselves.
_FILES_SCRIPTS = {
    "base/frameworks/files": (),
    "base/files/hash": (),
    "base/files/extract": (),
    "frameworks/files/hash-all-files": ("base/files/hash",),
    "frameworks/files/extract-all-files": ("base/files/extract",),
}
# Zeek's default configuration (not bare) loads these file-analysis scripts; the option fields
# they switch default to True (see analysis/files/state.py FileOptions).
_DEFAULT_FILES_LOADS = ("base/files/hash", "base/files/extract")
# Protocol scripts that load base/frameworks/tunnels.
_LOADS_TUNNELS = {"http", "tunnels"}
# Protocol scripts that load base/protocols/conn.
_LOADS_CONN = {"conn"}

_POLICY_CONN = {"protocols/conn/mac-logging": "mac", "protocols/conn/vlan-logging": "vlan"}


def _norm(name: str) -> str:
    n = name.strip().strip('"').removesuffix(".zeek").removesuffix(".bro").rstrip("/")
    n = n.removesuffix("/__load__").removesuffix("/main")
    if n.startswith("policy/"):
        n = n[len("policy/"):]
    return n


def _all_ports() -> frozenset[tuple[int, str]]:
    ports = set(TUNNEL_PORTS)
    for v in PROTOCOL_PORTS.values():
        ports.update(v)
    return frozenset(ports)


def unused_redef_note(name: str) -> str:
    """The note for a redef the engine does not take (a framework script may: it drops the note)."""
    return f"redef {name}: not used by the engine (ignored)"


def configure(loads=(), redefs=(), bare: bool = False, config: AnalysisConfig | None = None) -> AnalysisConfig:
    """Apply Zeek load names and redef lines to ``config`` (a fresh default one when None)."""
    cfg = config if config is not None else AnalysisConfig()
    logs: set[str] = set()
    ports: set[tuple[int, str]] = set()
    exts: list[str] = list(cfg.conn_extensions)
    for raw in loads:
        n = _norm(raw)
        if n in _POLICY_CONN:
            if _POLICY_CONN[n] not in exts:
                exts.append(_POLICY_CONN[n])
            logs.add("conn")
            continue
        if n in _FILES_SCRIPTS:
            logs.add("files")
            continue
        if n.startswith("base/frameworks/notice"):
            logs.add("weird")
            continue
        if n in ("base/frameworks/tunnels", "base/protocols/tunnels"):
            logs.add("tunnel")
            ports.update(TUNNEL_PORTS)
            continue
        m = re.fullmatch(r"base/protocols/([\w-]+)", n)
        if m:
            proto = m.group(1)
            logs.add(proto)
            ports.update(PROTOCOL_PORTS.get(proto, ()))
            if proto in _LOADS_WEIRD:
                logs.add("weird")
            if proto in _LOADS_FILES:
                logs.add("files")
            if proto in _LOADS_TUNNELS:
                logs.add("tunnel")
                ports.update(TUNNEL_PORTS)
            if proto == "conn":
                logs.add("conn")
            continue
        if n in ("base/frameworks/analyzer", "frameworks/analyzer/debug-logging", "base/utils/site"):
            continue
        if n in _load_switches():
            continue
        cfg.notes.append(f"@load {raw}: not mapped (ignored)")
    if bare:
        enabled = _analyzers_for(loads)
        for spec in enabled.values():
            logs.update(spec.logs)
        cfg.analyzers = frozenset(enabled)
        cfg.logs = frozenset(logs)
        cfg.likely_server_ports = frozenset(ports)
    else:
        cfg.analyzers = None
        cfg.logs = None
        cfg.likely_server_ports = _all_ports()
    cfg.analyzer_ports = cfg.likely_server_ports
    cfg.conn_extensions = tuple(exts)
    overrides: dict[str, dict[str, object]] = {}
    # Added by the DNS helper (minimal; the core helper owns this file): an option field with
    # metadata={"zeek_load": "<script>"} is set True when that policy script is loaded, e.g.
    # DNS's original_query column for protocols/dns/log-original-query-case.
    switches = _load_switches()
    if bare:
        # switches whose script Zeek's default configuration loads default to on: off unless loaded
        for n in _DEFAULT_FILES_LOADS:
            for name, fname in switches.get(n, ()):
                overrides.setdefault(name, {})[fname] = False
    for n in _switch_loads(loads):
        for name, fname in switches.get(n, ()):
            overrides.setdefault(name, {})[fname] = True
    for line in redefs:
        apply_redef(cfg, line, overrides)
    _build_options(cfg, overrides)
    return cfg


def _switch_loads(loads) -> list[str]:
    """Normalised load names, with the scripts they load themselves (file analysis)."""
    out: list[str] = []
    for raw in loads:
        n = _norm(raw)
        out.append(n)
        out.extend(_FILES_SCRIPTS.get(n, ()))
    return out


def _load_switches() -> dict[str, list[tuple[str, str]]]:
    """Normalised policy script name -> [(analyzer, option field)] it switches on (see above)."""
    import dataclasses

    from analysis.protocols import REGISTRY

    out: dict[str, list[tuple[str, str]]] = {}
    for name, spec in REGISTRY.items():
        if spec.options is None or not dataclasses.is_dataclass(spec.options):
            continue
        for f in dataclasses.fields(spec.options):
            z = f.metadata.get("zeek_load")
            if z:
                out.setdefault(_norm(z), []).append((name, f.name))
    return out


def _analyzers_for(loads) -> dict:
    """The registered analyzers whose Zeek scripts are among ``loads`` (bare mode)."""
    from analysis.protocols import REGISTRY

    loaded = {_norm(x) for x in loads}
    out = {}
    for name, spec in REGISTRY.items():
        if any(_norm(z) in loaded for z in spec.zeek_scripts):
            out[name] = spec
    return out


def _option_index() -> dict[str, list[tuple[str, object]]]:
    """Zeek option name -> [(analyzer name, dataclass field)] over every registered analyzer
    (several for options every file-carrying analyzer shares, e.g. ``FileExtract::prefix``)."""
    import dataclasses

    from analysis.protocols import REGISTRY

    idx: dict[str, list[tuple[str, object]]] = {}
    for name, spec in REGISTRY.items():
        if spec.options is None or not dataclasses.is_dataclass(spec.options):
            continue
        for f in dataclasses.fields(spec.options):
            z = f.metadata.get("zeek")
            if z:
                idx.setdefault(z, []).append((name, f))
    return idx


def _field_default(f):
    import dataclasses

    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()                       # type: ignore[misc]
    return None


def _set_items(value: str) -> list:
    inner = value.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        raise ValueError(value)
    out: list = []
    for item in re.findall(r'"(?:[^"\\]|\\.)*"|[^,\s{}]+', inner[1:-1]):
        if item.startswith('"'):
            out.append(item[1:-1])
        elif re.fullmatch(r"\d+", item):
            out.append(int(item))
        else:
            out.append(item)
    return out


def _convert(f, current, op: str, value: str):
    """A redef's value in the Python type of the option's field (judged by its default)."""
    ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    kind = type(current)
    if isinstance(current, (set, frozenset)) or "set" in ann.lower():
        items = _set_items(value)
        base = set(current or ()) if op != "=" else set()
        result = base - set(items) if op == "-=" else base | set(items)
        return frozenset(result) if isinstance(current, frozenset) or current is None else result
    if op != "=":
        raise ValueError(value)
    if kind is bool or ann == "bool":
        return _BOOL[value]
    if kind is int or ann == "int":
        return int(value)
    if kind is float or ann == "float":
        try:
            return float(value)
        except ValueError:
            return _interval(value)
    if value.startswith('"') and value.endswith('"'):
        return value[1:-1]
    if value.startswith("/") and value.endswith("/"):
        return value[1:-1]
    return value          # enums, e.g. SSL::ALL_HOSTS, stay text


def _build_options(cfg: AnalysisConfig, overrides: dict[str, dict[str, object]]) -> None:
    """Each analyzer's options object with the redefs applied (defaults are Zeek's)."""
    from analysis.protocols import REGISTRY

    for name, vals in overrides.items():
        spec = REGISTRY.get(name)
        if spec is not None and spec.options is not None:
            try:
                cfg.analyzer_options[name] = spec.options(**vals)
            except (TypeError, ValueError) as e:
                cfg.notes.append(f"{name} options: {e} (defaults kept)")


def _redef_analyzer(cfg: AnalysisConfig, name: str, op: str, value: str,
                    overrides: dict[str, dict[str, object]] | None) -> bool:
    """Analyzer::disabled_analyzers and the analyzers' own options; False when not one of them."""
    if name == "Analyzer::disabled_analyzers":
        names = {re.sub(r"^(?:Analyzer::)?ANALYZER_", "", x).lower() for x in _set_items(value) if isinstance(x, str)}
        if op == "+=":
            cfg.disabled_analyzers = frozenset(cfg.disabled_analyzers | names)
        elif op == "-=":
            cfg.disabled_analyzers = frozenset(cfg.disabled_analyzers - names)
        else:
            cfg.disabled_analyzers = frozenset(names)
        return True
    hits = _option_index().get(name)
    if not hits:
        return False
    for aname, f in hits:
        vals = overrides.setdefault(aname, {}) if overrides is not None else {}
        current = vals.get(f.name, _field_default(f))
        vals[f.name] = _convert(f, current, op, value)
        if overrides is None:       # a lone apply_redef call: rebuild the options object now
            _build_options(cfg, {aname: vals})
    return True


_REDEF = re.compile(r"^\s*(?:redef\s+)?([\w:]+)\s*(\+?=|-=)\s*(.*?)\s*;?\s*$", re.S)
_BOOL = {"T": True, "F": False}
_INTERVAL_UNITS = {"usec": 1e-6, "usecs": 1e-6, "msec": 1e-3, "msecs": 1e-3, "sec": 1.0, "secs": 1.0,
                   "min": 60.0, "mins": 60.0, "hr": 3600.0, "hrs": 3600.0, "day": 86400.0, "days": 86400.0}
_INTERVAL_OPTIONS = {
    "tcp_inactivity_timeout", "udp_inactivity_timeout", "icmp_inactivity_timeout", "tcp_SYN_timeout",
    "tcp_session_timer", "tcp_connection_linger", "tcp_attempt_delay", "tcp_close_delay",
    "tcp_partial_close_delay", "tcp_reset_delay",
}
_COUNT_OPTIONS = {"tcp_max_initial_window", "tcp_max_above_hole_without_any_acks",
                  "tcp_excessive_data_without_further_acks"}


def _interval(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)\s*([a-z]+)", text.strip())
    if not m or m.group(2) not in _INTERVAL_UNITS:
        raise ValueError(text)
    return float(m.group(1)) * _INTERVAL_UNITS[m.group(2)]


def apply_redef(cfg: AnalysisConfig, line: str, overrides: dict[str, dict[str, object]] | None = None) -> None:
    """Apply one ``redef`` line; unknown or unparsable ones become a note.

    Analyzer options collect into ``overrides`` (analyzer -> field -> value) when given, else the
    analyzer's options object in ``cfg.analyzer_options`` is rebuilt at once."""
    m = _REDEF.match(line)
    if not m:
        cfg.notes.append(f"{line!r}: not a redef we can parse (ignored)")
        return
    name, op, value = m.group(1), m.group(2), m.group(3).strip()
    try:
        if name == "Site::local_nets":
            nets = _subnet_set(value)
            if op == "=":
                cfg.local_nets = tuple(nets)
            elif op == "+=":
                cfg.local_nets = tuple(cfg.local_nets) + tuple(nets)
            else:
                cfg.local_nets = tuple(n for n in cfg.local_nets if n not in nets)
        elif name == "Site::private_address_space_is_local" and op == "=":
            cfg.private_address_space_is_local = _BOOL[value]
        elif name == "ignore_checksums" and op == "=":
            cfg.ignore_checksums = _BOOL[value]
            if cfg.decoder is not None:
                cfg.decoder.ignore_checksums = cfg.ignore_checksums
        elif name in ("dpd_reassemble_first_packets", "dpd_match_only_beginning") and op == "=":
            setattr(cfg, name, _BOOL[value])
        elif name == "dpd_buffer_size" and op == "=":
            cfg.dpd_buffer_size = int(value)
        elif _redef_analyzer(cfg, name, op, value, overrides):
            pass
        elif name in _INTERVAL_OPTIONS and op == "=":
            setattr(cfg, name, _interval(value))
        elif name in _COUNT_OPTIONS and op == "=":
            setattr(cfg, name, int(value))
        elif name == "Weird::weird_do_not_ignore_repeats" and op in ("+=", "="):
            names = set(re.findall(r'"([^"]*)"', value))
            base = set(cfg.weird_do_not_ignore_repeats) if op == "+=" else set()
            cfg.weird_do_not_ignore_repeats = frozenset(base | names)
        else:
            cfg.unused_redefs.append(name)
            cfg.notes.append(unused_redef_note(name))
    except (KeyError, ValueError):
        cfg.notes.append(f"{line!r}: value not understood (ignored)")


def _subnet_set(value: str) -> list[str]:
    inner = value.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        raise ValueError(value)
    out = []
    for item in inner[1:-1].split(","):
        item = item.strip().strip("[]").replace("]/", "/")
        if item:
            out.append(str(ipaddress.ip_network(item.replace("[", ""), strict=False)))
    return out

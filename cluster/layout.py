"""The cluster layout: which nodes exist, where they run, and the cluster-wide settings.

A layout is a TOML file in one of two forms (``docs/layout.md`` documents both):

* the *full* form lists every node under ``[nodes.<name>]`` (role, host, port, and for workers
  an interface or a trace), like zeekctl's ``node.cfg``;
* the *short* form gives counts (``manager = 1``, ``loggers = 1``, ``proxies = 1`` and one
  ``[[capture]]`` table per interface or trace with ``workers = N``) and is expanded here into
  the full form with zeekctl's names (``manager``, ``logger-1``, ``proxy-1``, ``worker-1`` ...)
  and ports assigned upwards from ``base_port``.

Everything is parsed into frozen dataclasses so that nodes, the supervisor and the CLI share one
validated view; any mistake becomes a :class:`LayoutError` naming the file, the key, the line
when it can be found, and what is wrong.  This module knows nothing of processes or sockets.
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import math
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = [
    "DEFAULT_BASE_PORT", "DEFAULT_HOST", "Endpoints", "Layout", "LayoutError", "NodeSpec", "Role",
    "STOP_ORDER", "parse_interval",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 27760
LOG_FORMATS = ("tsv", "json")


class LayoutError(ValueError):
    """A layout that cannot be used; the message is one line meant for the user."""


class Role(enum.StrEnum):
    MANAGER = "manager"
    LOGGER = "logger"
    PROXY = "proxy"
    WORKER = "worker"


#: Roles in the order they are stopped: intake first, so that logs drain into loggers that are
#: still up, and the manager (which usually hosts the hub) last.
STOP_ORDER: tuple[Role, ...] = (Role.WORKER, Role.PROXY, Role.LOGGER, Role.MANAGER)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node process.  ``port`` is the node's own listening port (a logger's batch channel)."""

    name: str
    role: Role
    host: str
    port: int
    interface: str | None = None
    trace: Path | None = None
    scripts: tuple[Path, ...] = ()     # users' Python scripts for this node only

    @property
    def endpoint(self) -> str:
        return _tcp(self.host, self.port)

    @property
    def source(self) -> str | None:
        """What a worker reads: the interface name or the trace path."""
        if self.interface is not None:
            return self.interface
        return str(self.trace) if self.trace is not None else None


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The ZeroMQ addresses one node binds and connects to."""

    bind: str                          # the node's own port (logger: batch channel PULL)
    hub_bind: tuple[str, str] | None   # (xsub, xpub) when this node hosts the hub
    hub_xsub: str                      # connect here to publish events
    hub_xpub: str                      # connect here to subscribe to events
    loggers: tuple[str, ...]           # every logger's batch channel, to ship log batches to

    @property
    def hub(self) -> tuple[str, str]:
        """``(xsub, xpub)``: what ``broker.Endpoint(name, hub=...)`` connects to."""
        return self.hub_xsub, self.hub_xpub


@dataclass(frozen=True, slots=True)
class Layout:
    nodes: tuple[NodeSpec, ...]
    hub: str
    hub_xsub_port: int
    hub_xpub_port: int
    log_dir: Path
    log_format: str = "tsv"
    rotation_interval: float = 0.0
    gzip_archives: bool = False
    state_dir: Path = Path("state")
    local_nets: tuple[str, ...] = ()
    # Users' Python scripts loaded by every node, and the workers' analysis options, which mean
    # what `starling analyze` (zeek -r) makes of -C, --load, --redef and --bare.
    scripts: tuple[Path, ...] = ()
    ignore_checksums: bool = False
    zeek_loads: tuple[str, ...] = ()      # TOML key `loads` (the name `loads` is the parser's)
    zeek_redefs: tuple[str, ...] = ()     # TOML key `redefs`
    bare: bool = False
    source: Path | None = field(default=None, compare=False)

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Layout:
        """Read and validate a layout file (full or short form)."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise LayoutError(f"{path}: no such layout file") from None
        except IsADirectoryError:
            raise LayoutError(f"{path}: is a directory, not a layout file") from None
        except OSError as e:
            raise LayoutError(f"{path}: cannot read layout file: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise LayoutError(f"{path}: not UTF-8 text (byte {e.start})") from None
        return cls.loads(text, source=path)

    @classmethod
    def loads(cls, text: str, *, source: str | os.PathLike[str] | None = None) -> Layout:
        """Parse layout text; relative paths are taken relative to ``source``'s directory."""
        name = str(source) if source is not None else "<layout>"
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise LayoutError(f"{name}: TOML syntax error: {e}") from None
        base_dir = Path(source).resolve().parent if source is not None else Path.cwd()
        parser = _Parser(name, text)
        layout = parser.build(data, base_dir)
        return replace(layout, source=Path(source) if source is not None else None)

    @classmethod
    def local(cls, trace_or_iface: str | os.PathLike[str], *, workers: int = 1, loggers: int = 1,
              proxies: int = 1, log_dir: str | os.PathLike[str] = ".", log_format: str = "tsv",
              state_dir: str | os.PathLike[str] | None = None, local_nets: Iterable[str] = (),
              rotation_interval: float | str = 0, gzip_archives: bool = False,
              host: str = DEFAULT_HOST, base_port: int | None = None,
              scripts: Iterable[str | os.PathLike[str]] = (), ignore_checksums: bool = False,
              loads: Iterable[str] = (), redefs: Iterable[str] = (), bare: bool = False) -> Layout:
        """A one-host layout built in memory (for ``starling run``).

        An existing file is a trace, otherwise the name must be a network interface of this
        machine.  ``base_port=None`` picks free ports, so that several local runs can coexist.
        The state dir defaults to ``<log_dir>/.state`` (Zeek's ``zeek -r`` keeps ``.state`` too).
        """
        src = str(trace_or_iface)
        capture: dict[str, Any] = {"workers": workers}
        if os.path.isfile(src):
            capture["trace"] = str(Path(src).resolve())
        elif _local_interface(src):
            capture["interface"] = src
        else:
            raise LayoutError(f"{src}: no such trace file or network interface")
        log_dir = Path(log_dir).resolve()
        data: dict[str, Any] = {
            "manager": 1, "loggers": loggers, "proxies": proxies, "host": host,
            "capture": [capture],
            "cluster": {
                "log_dir": str(log_dir), "log_format": log_format,
                "rotation_interval": rotation_interval, "gzip_archives": gzip_archives,
                "state_dir": str(Path(state_dir).resolve() if state_dir else log_dir / ".state"),
                "local_nets": list(local_nets),
                "base_port": DEFAULT_BASE_PORT if base_port is None else base_port,
                "scripts": [str(Path(p).resolve()) for p in scripts],
                "ignore_checksums": ignore_checksums, "loads": list(loads), "redefs": list(redefs),
                "bare": bare,
            },
        }
        layout = _Parser("<local layout>", "").build(data, Path.cwd())
        if base_port is None:
            ports = _free_ports(host, len(layout.nodes) + 2)
            layout = replace(
                layout, hub_xsub_port=ports[0], hub_xpub_port=ports[1],
                nodes=tuple(replace(n, port=p) for n, p in zip(layout.nodes, ports[2:])))
        return layout

    # ---- queries -------------------------------------------------------------------------

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LayoutError(f"no node named {name!r} in the layout (nodes: {self.names_text()})")

    def names_text(self) -> str:
        return ", ".join(n.name for n in self.nodes)

    def by_role(self, role: Role | str) -> tuple[NodeSpec, ...]:
        role = Role(role)
        return tuple(n for n in self.nodes if n.role is role)

    @property
    def manager(self) -> NodeSpec:
        return self.by_role(Role.MANAGER)[0]

    @property
    def loggers(self) -> tuple[NodeSpec, ...]:
        return self.by_role(Role.LOGGER)

    @property
    def proxies(self) -> tuple[NodeSpec, ...]:
        return self.by_role(Role.PROXY)

    @property
    def workers(self) -> tuple[NodeSpec, ...]:
        return self.by_role(Role.WORKER)

    @property
    def hub_node(self) -> NodeSpec:
        return self.node(self.hub)

    @property
    def hub_xsub(self) -> str:
        return _tcp(self.hub_node.host, self.hub_xsub_port)

    @property
    def hub_xpub(self) -> str:
        return _tcp(self.hub_node.host, self.hub_xpub_port)

    def endpoints(self, name: str) -> Endpoints:
        spec = self.node(name)
        return Endpoints(
            bind=spec.endpoint,
            hub_bind=(self.hub_xsub, self.hub_xpub) if name == self.hub else None,
            hub_xsub=self.hub_xsub, hub_xpub=self.hub_xpub,
            loggers=tuple(n.endpoint for n in self.loggers),
        )

    def stop_order(self, names: Iterable[str] | None = None) -> list[list[NodeSpec]]:
        """Groups of nodes to stop one group after the other (the hub's node goes last)."""
        wanted = set(names) if names is not None else None
        groups: list[list[NodeSpec]] = []
        for role in STOP_ORDER:
            group = [n for n in self.by_role(role) if n.name != self.hub
                     and (wanted is None or n.name in wanted)]
            if group:
                groups.append(group)
        hub = self.hub_node
        if wanted is None or hub.name in wanted:
            if hub.role is Role.MANAGER and groups and groups[-1][0].role is Role.MANAGER:
                groups[-1].append(hub)
            else:
                groups.append([hub])
        return groups

    def scripts_for(self, name: str) -> tuple[Path, ...]:
        """The users' scripts node ``name`` loads: the cluster-wide ones, then its own, each once."""
        return tuple(dict.fromkeys(self.scripts + self.node(name).scripts))

    def source_problems(self) -> list[str]:
        """Traces, interfaces or scripts of nodes on this machine that are missing (before starting)."""
        problems = []
        missing: dict[Path, list[str]] = {}
        for n in self.nodes:
            if not _is_local_host(n.host):
                continue
            for p in self.scripts_for(n.name):
                if not p.is_file():
                    missing.setdefault(p, []).append(n.name)
            if n.trace is not None and not n.trace.is_file():
                problems.append(f"{n.name}: trace {n.trace} does not exist")
            if n.interface is not None and not _local_interface(n.interface):
                problems.append(f"{n.name}: no network interface {n.interface!r} on this machine")
        for p, names in missing.items():
            who = "every node" if p in self.scripts else ", ".join(names)
            problems.append(f"{who}: script {p} does not exist")
        return problems

    # ---- output --------------------------------------------------------------------------

    def to_toml(self) -> str:
        """The expanded full form, every default spelled out; :meth:`loads` reads it back."""
        lines = [
            "[cluster]",
            f"log_dir = {_q(str(self.log_dir))}",
            f"log_format = {_q(self.log_format)}",
            f"rotation_interval = {_num(self.rotation_interval)}",
            f"gzip_archives = {'true' if self.gzip_archives else 'false'}",
            f"state_dir = {_q(str(self.state_dir))}",
            "local_nets = [" + ", ".join(_q(n) for n in self.local_nets) + "]",
            f"hub = {_q(self.hub)}",
            f"hub_xsub_port = {self.hub_xsub_port}",
            f"hub_xpub_port = {self.hub_xpub_port}",
            f"scripts = {_array(str(p) for p in self.scripts)}",
            f"ignore_checksums = {'true' if self.ignore_checksums else 'false'}",
            f"loads = {_array(self.zeek_loads)}",
            f"redefs = {_array(self.zeek_redefs)}",
            f"bare = {'true' if self.bare else 'false'}",
        ]
        for n in self.nodes:
            lines += ["", f"[nodes.{_key(n.name)}]", f"role = {_q(n.role.value)}",
                      f"host = {_q(n.host)}", f"port = {n.port}"]
            if n.interface is not None:
                lines.append(f"interface = {_q(n.interface)}")
            if n.trace is not None:
                lines.append(f"trace = {_q(str(n.trace))}")
            if n.scripts:
                lines.append(f"scripts = {_array(str(p) for p in n.scripts)}")
        return "\n".join(lines) + "\n"


# ---- parsing -----------------------------------------------------------------------------------

_CLUSTER_KEYS = {
    "log_dir": str, "log_format": str, "rotation_interval": (int, float, str),
    "gzip_archives": bool, "state_dir": str, "local_nets": list, "hub": str,
    "hub_xsub_port": int, "hub_xpub_port": int, "base_port": int,
    "scripts": list, "ignore_checksums": bool, "loads": list, "redefs": list, "bare": bool,
}
_NODE_KEYS = {"role": str, "host": str, "port": int, "interface": str, "trace": str,
              "workers": int, "scripts": list}
_CAPTURE_KEYS = {"interface": str, "trace": str, "workers": int, "host": str, "scripts": list}
_SHORT_KEYS = {"manager": int, "loggers": int, "proxies": int, "host": str, "capture": list}
_TOP_KEYS = {"cluster": dict, "nodes": dict, **_SHORT_KEYS}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "an array", dict: "a table"}


class _Parser:
    """Turns the decoded TOML into a :class:`Layout`; knows the text only to point at lines."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text

    # -- errors
    def fail(self, where: tuple[Any, ...], msg: str) -> LayoutError:
        key = _path_text(where)
        line = _locate(self.text, where) if self.text else None
        loc = f"line {line}: " if line else ""
        return LayoutError(f"{self.name}: {loc}{key}: {msg}" if key else f"{self.name}: {loc}{msg}")

    def check_keys(self, table: Mapping[str, Any], allowed: Mapping[str, Any],
                   where: tuple[Any, ...]) -> None:
        for k, v in table.items():
            if k not in allowed:
                hint = difflib.get_close_matches(k, list(allowed), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else \
                    f" (allowed: {', '.join(sorted(allowed))})"
                raise self.fail(where + (k,), f"unknown key{extra}")
            want = allowed[k]
            types = want if isinstance(want, tuple) else (want,)
            ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
            if not ok:
                names = " or ".join(_TYPE_NAMES[t] for t in types)
                raise self.fail(where + (k,), f"must be {names}, not {_describe(v)}")

    def port(self, value: int, where: tuple[Any, ...]) -> int:
        if not 1 <= value <= 65535:
            raise self.fail(where, f"port {value} is outside 1-65535")
        return value

    def count(self, value: int, where: tuple[Any, ...], minimum: int) -> int:
        if value < minimum:
            raise self.fail(where, f"must be at least {minimum}, not {value}")
        return value

    def name_ok(self, name: str, where: tuple[Any, ...]) -> str:
        if not _NAME_RE.match(name):
            raise self.fail(where, f"bad node name {name!r} (use letters, digits, '-', '_', '.')")
        return name

    def strings(self, value: list, where: tuple[Any, ...], example: str, *,
                spaces: bool = True) -> tuple[str, ...]:
        """An array of one-line, non-empty strings (``spaces=False``: no blanks inside either)."""
        out = []
        for i, v in enumerate(value):
            if not isinstance(v, str) or not v.strip():
                raise self.fail(where, f"entry {i + 1} must be a non-empty string like {example}, "
                                f"not {_describe(v)}")
            v = v.strip()
            if "\n" in v or "\r" in v or (not spaces and any(c.isspace() for c in v)):
                raise self.fail(where, f"entry {i + 1} ({v!r}) must be "
                                + ("one line" if spaces else "one name without blanks")
                                + f", like {example}")
            out.append(v)
        return tuple(out)

    def scripts(self, table: Mapping[str, Any], where: tuple[Any, ...], base_dir: Path) -> tuple[Path, ...]:
        """``scripts = [...]``: users' Python scripts, relative to the layout file."""
        names = self.strings(table.get("scripts", []), where + ("scripts",), '"scripts/count.py"')
        return tuple(dict.fromkeys(_path(base_dir, n) for n in names))

    def host(self, value: str, where: tuple[Any, ...]) -> str:
        if not value or any(c.isspace() for c in value) or "/" in value:
            raise self.fail(where, f"bad host {value!r}")
        return value

    # -- the whole file
    def build(self, data: dict[str, Any], base_dir: Path) -> Layout:
        self.check_keys(data, _TOP_KEYS, ())
        cluster = data.get("cluster", {})
        self.check_keys(cluster, _CLUSTER_KEYS, ("cluster",))
        short = [k for k in _SHORT_KEYS if k in data]
        if "nodes" in data and short:
            raise self.fail((short[0],), "a layout uses either [nodes.<name>] tables (full form) "
                            "or manager/loggers/proxies/[[capture]] (short form), not both")
        base_port = self.port(cluster.get("base_port", DEFAULT_BASE_PORT), ("cluster", "base_port"))
        if "nodes" in data:
            drafts = self.full_nodes(data["nodes"], base_dir)
        elif short:
            drafts = self.short_nodes(data, base_dir)
        else:
            raise self.fail((), "no nodes: add [nodes.<name>] tables, or the short form "
                            "(manager = 1, loggers = 1, proxies = 1, [[capture]] ... workers = N)")
        managers = [d for d in drafts if d["role"] is Role.MANAGER]
        if not managers:
            raise self.fail(("nodes",), "no manager: a cluster needs exactly one node with "
                            "role = \"manager\"")
        if len(managers) > 1:
            raise self.fail(managers[1]["where"], "more than one manager ("
                            + ", ".join(d["name"] for d in managers) + "); a cluster has exactly one")
        seen: dict[str, tuple[Any, ...]] = {}
        for d in drafts:
            if d["name"] in seen:
                first = _path_text(seen[d["name"]])
                also = f" (also made by {first})" if first != _path_text(d["where"]) else ""
                raise self.fail(d["where"], f"duplicate node name {d['name']!r}{also}")
            seen[d["name"]] = d["where"]

        hub = cluster.get("hub", managers[0]["name"])
        if hub not in seen:
            raise self.fail(("cluster", "hub"), f"hub node {hub!r} is not in the layout "
                            f"(nodes: {', '.join(seen)})")
        hub_host = next(d["host"] for d in drafts if d["name"] == hub)

        # Ports: explicit ones first, then hand out free ones upwards from base_port.
        used: dict[tuple[str, int], str] = {}

        def claim(host: str, port: int, owner: str, where: tuple[Any, ...]) -> None:
            key = (_host_key(host), port)
            if key in used:
                raise self.fail(where, f"port {port} on {host} is used twice "
                                f"({used[key]} and {owner})")
            used[key] = owner

        hub_ports = {}
        for key in ("hub_xsub_port", "hub_xpub_port"):
            if key in cluster:
                hub_ports[key] = self.port(cluster[key], ("cluster", key))
                claim(hub_host, hub_ports[key], f"the hub's {key[4:8]}", ("cluster", key))
        for d in drafts:
            if d["port"] is not None:
                claim(d["host"], d["port"], d["name"], d["port_where"])
        next_port = base_port

        def take(host: str, owner: str, where: tuple[Any, ...]) -> int:
            nonlocal next_port
            while (_host_key(host), next_port) in used:
                next_port += 1
            if next_port > 65535:
                raise self.fail(where, f"base_port {base_port} leaves no free port for {owner} "
                                "below 65536")
            claim(host, next_port, owner, where)
            return next_port

        for key in ("hub_xsub_port", "hub_xpub_port"):
            if key not in hub_ports:
                hub_ports[key] = take(hub_host, f"the hub's {key[4:8]}", ("cluster", "base_port"))
        nodes = []
        for d in drafts:
            port = d["port"] if d["port"] is not None else take(d["host"], d["name"],
                                                                ("cluster", "base_port"))
            nodes.append(NodeSpec(name=d["name"], role=d["role"], host=d["host"], port=port,
                                  interface=d["interface"], trace=d["trace"], scripts=d["scripts"]))

        log_format = cluster.get("log_format", "tsv")
        if log_format not in LOG_FORMATS:
            raise self.fail(("cluster", "log_format"),
                            f"unknown log format {log_format!r} (use tsv or json)")
        try:
            rotation = parse_interval(cluster.get("rotation_interval", 0))
        except ValueError as e:
            raise self.fail(("cluster", "rotation_interval"), str(e)) from None
        nets = []
        for i, net in enumerate(cluster.get("local_nets", [])):
            if not isinstance(net, str):
                raise self.fail(("cluster", "local_nets"), f"entry {i + 1} must be a string "
                                f"like \"10.0.0.0/8\", not {_describe(net)}")
            try:
                nets.append(str(ipaddress.ip_network(net.strip(), strict=False)))
            except ValueError:
                raise self.fail(("cluster", "local_nets"), f"{net!r} is not a subnet "
                                "(e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")") from None
        return Layout(
            nodes=tuple(nodes), hub=hub,
            hub_xsub_port=hub_ports["hub_xsub_port"], hub_xpub_port=hub_ports["hub_xpub_port"],
            log_dir=_path(base_dir, cluster.get("log_dir", "logs")),
            log_format=log_format, rotation_interval=rotation,
            gzip_archives=cluster.get("gzip_archives", False),
            state_dir=_path(base_dir, cluster.get("state_dir", "state")),
            local_nets=tuple(nets),
            scripts=self.scripts(cluster, ("cluster",), base_dir),
            ignore_checksums=cluster.get("ignore_checksums", False),
            zeek_loads=self.strings(cluster.get("loads", []), ("cluster", "loads"),
                                    '"base/protocols/dns"', spaces=False),
            zeek_redefs=self.strings(cluster.get("redefs", []), ("cluster", "redefs"),
                                '"DNS::max_pending_msgs = 100"'),
            bare=cluster.get("bare", False),
        )

    # -- the two forms produce the same "drafts": nodes before port assignment
    def full_nodes(self, nodes: dict[str, Any], base_dir: Path) -> list[dict[str, Any]]:
        drafts: list[dict[str, Any]] = []
        if not nodes:
            raise self.fail(("nodes",), "no nodes listed")
        for name, table in nodes.items():
            where = ("nodes", name)
            if not isinstance(table, dict):
                raise self.fail(where, f"must be a table [nodes.{_key(name)}], not {_describe(table)}")
            self.name_ok(name, where)
            self.check_keys(table, _NODE_KEYS, where)
            if "role" not in table:
                raise self.fail(where, "missing key 'role' (manager, logger, proxy or worker)")
            try:
                role = Role(table["role"])
            except ValueError:
                hint = difflib.get_close_matches(table["role"], [r.value for r in Role], n=1)
                raise self.fail(where + ("role",), f"unknown role {table['role']!r}"
                                + (f" (did you mean {hint[0]!r}?)" if hint else
                                   " (use manager, logger, proxy or worker)")) from None
            host = self.host(table.get("host", DEFAULT_HOST), where + ("host",))
            port = self.port(table["port"], where + ("port",)) if "port" in table else None
            iface, trace = self.source(table, role, where, base_dir)
            scripts = self.scripts(table, where, base_dir)
            procs = 1
            if "workers" in table:
                if role is not Role.WORKER:
                    raise self.fail(where + ("workers",), f"only workers take 'workers', "
                                    f"this node is a {role.value}")
                procs = self.count(table["workers"], where + ("workers",), 1)
            if procs > 1 and port is not None and port + procs - 1 > 65535:
                raise self.fail(where + ("port",), f"ports {port}-{port + procs - 1} go past 65535")
            for i in range(procs):
                drafts.append({
                    # zeekctl names the processes of one multi-process worker <name>-1, <name>-2...
                    "name": f"{name}-{i + 1}" if procs > 1 else name, "role": role, "host": host,
                    "port": None if port is None else port + i, "interface": iface,
                    "trace": trace, "scripts": scripts, "where": where, "port_where": where + ("port",),
                })
        return drafts

    def short_nodes(self, data: dict[str, Any], base_dir: Path) -> list[dict[str, Any]]:
        host = self.host(data.get("host", DEFAULT_HOST), ("host",))
        manager = data.get("manager", 1)
        if manager != 1:
            raise self.fail(("manager",), "no manager: a cluster needs exactly one (manager = 1)"
                            if manager < 1 else f"more than one manager ({manager}); "
                            "a cluster has exactly one (manager = 1)")
        loggers = self.count(data.get("loggers", 1), ("loggers",), 0)
        proxies = self.count(data.get("proxies", 1), ("proxies",), 0)
        captures = data.get("capture", [])
        if not captures:
            raise self.fail(("capture",), "no workers: add a [[capture]] table with interface = "
                            "\"eth0\" (or trace = \"file.pcap\") and workers = N")

        def node(name: str, role: Role, where: tuple[Any, ...], node_host: str = host,
                 iface: str | None = None, trace: Path | None = None,
                 scripts: tuple[Path, ...] = ()) -> dict[str, Any]:
            return {"name": name, "role": role, "host": node_host, "port": None, "interface": iface,
                    "trace": trace, "scripts": scripts, "where": where, "port_where": where}

        drafts = [node("manager", Role.MANAGER, ("manager",))]
        drafts += [node(f"logger-{i + 1}", Role.LOGGER, ("loggers",)) for i in range(loggers)]
        drafts += [node(f"proxy-{i + 1}", Role.PROXY, ("proxies",)) for i in range(proxies)]
        n = 0
        for idx, cap in enumerate(captures):
            where = ("capture", idx)
            if not isinstance(cap, dict):
                raise self.fail(where, f"must be a [[capture]] table, not {_describe(cap)}")
            self.check_keys(cap, _CAPTURE_KEYS, where)
            iface, trace = self.source(cap, Role.WORKER, where, base_dir)
            cap_host = self.host(cap.get("host", host), where + ("host",))
            scripts = self.scripts(cap, where, base_dir)
            for _ in range(self.count(cap.get("workers", 1), where + ("workers",), 1)):
                n += 1
                drafts.append(node(f"worker-{n}", Role.WORKER, where, cap_host, iface, trace, scripts))
        return drafts

    def source(self, table: Mapping[str, Any], role: Role, where: tuple[Any, ...],
               base_dir: Path) -> tuple[str | None, Path | None]:
        iface, trace = table.get("interface"), table.get("trace")
        if role is not Role.WORKER:
            for k in ("interface", "trace"):
                if k in table:
                    raise self.fail(where + (k,), f"only workers take {k!r}, "
                                    f"this node is a {role.value}")
            return None, None
        if iface is None and trace is None:
            raise self.fail(where, "a worker needs interface = \"eth0\" (live) "
                            "or trace = \"file.pcap\"")
        if iface is not None and trace is not None:
            raise self.fail(where, "a worker takes either 'interface' or 'trace', not both")
        if iface is not None and (not iface or len(iface) > 15 or "/" in iface
                                  or any(c.isspace() for c in iface)):
            raise self.fail(where + ("interface",), f"bad interface name {iface!r}")
        if trace is not None and not trace:
            raise self.fail(where + ("trace",), "empty trace path")
        return iface, (_path(base_dir, trace) if trace is not None else None)


# ---- small helpers ------------------------------------------------------------------------------

_UNITS = {"": 1, "s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600,
          "hr": 3600, "hrs": 3600, "d": 86400, "day": 86400, "days": 86400}
_INTERVAL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_interval(value: int | float | str) -> float:
    """Seconds from a number or a Zeek-like interval (``"1 hr"``, ``"30mins"``, ``"90s"``)."""
    if isinstance(value, bool):
        raise ValueError("must be seconds or an interval like \"1 hr\"")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _INTERVAL_RE.match(value.lower())
        if not m or m.group(2) not in _UNITS:
            raise ValueError(f"bad interval {value!r} (use seconds or e.g. \"30 mins\", \"1 hr\")")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"interval must be 0 (never) or positive, not {value!r}")
    return seconds


def _tcp(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def _host_key(host: str) -> str:
    return DEFAULT_HOST if host == "localhost" else host


def _is_local_host(host: str) -> bool:
    if host in ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _local_interface(name: str) -> bool:
    try:
        return any(n == name for _, n in socket.if_nameindex())
    except OSError:
        return False


def _free_ports(host: str, n: int) -> list[int]:
    """``n`` distinct ports the kernel calls free right now (a small race we accept)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    except OSError as e:
        raise LayoutError(f"cannot find free ports on {host}: {e.strerror or e}") from None
    finally:
        for s in socks:
            s.close()


def _path(base_dir: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base_dir / p))


def _describe(v: Any) -> str:
    if isinstance(v, bool):
        return f"{str(v).lower()} (boolean)"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, str):
        return f"the string {v!r}"
    return f"{v!r} ({type(v).__name__})"


def _path_text(where: tuple[Any, ...]) -> str:
    out = ""
    for part in where:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            out += ("." if out else "") + part
    return out


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array(items: Iterable[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


def _key(s: str) -> str:
    return s if re.match(r"^[A-Za-z0-9_-]+$", s) else _q(s)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")


def _split_key(key: str) -> list[str]:
    return [p.strip().strip('"').strip("'") for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', key)]


def _locate(text: str, where: tuple[Any, ...]) -> int | None:
    """Best-effort line number of a key path (tomllib gives none for values it accepted)."""
    if not where:
        return None
    # Split the path into a table part and a final key.
    table: list[Any] = list(where)
    key: str | None = None
    if isinstance(table[-1], str) and not (len(table) == 2 and table[0] == "nodes"):
        key = table.pop()
    if table and isinstance(table[-1], int):
        target, index = [str(p) for p in table[:-1]], table[-1]
    else:
        target, index = [str(p) for p in table], None
    current: list[str] = []
    seen_arrays = -1
    in_target = not target
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _HEADER_RE.match(line)
        if m:
            current = _split_key(m.group(2))
            if current == target:
                if m.group(1) == "[[":
                    seen_arrays += 1
                    in_target = index is None or seen_arrays == index
                else:
                    in_target = True
                if in_target and key is None:
                    return lineno
            else:
                in_target = False
            continue
        if in_target and key is not None and re.match(
                rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=", line):
            return lineno
    return None

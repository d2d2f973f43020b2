"""The ``starling`` command line (also ``python -m cluster``).

``run`` and ``analyze`` process a trace; ``deploy``/``start``/``stop``/``restart``/``status`` drive a
cluster through the supervisor daemon; ``check`` validates a layout.  Every mistake a user can make
ends as one ``Error: ...`` line and a non-zero exit (2 for bad usage, 1 otherwise), and validation
always happens before anything is started.  Only this module and ``supervise`` configure logging.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import click

from cluster.layout import Layout, LayoutError
from cluster.state import (NodeStatus, StateDir, SupervisorUnavailable, offline_status, pid_alive,
                           proc_start, request, stop_orphans)

__all__ = ["main"]

_STATE_STYLE = {"running": "green", "stopped": "dim", "crashed": "bold red", "dead": "bold red",
                "hung": "bold yellow", "backoff": "yellow", "restarting": "yellow",
                "stopping": "cyan"}


class _Group(click.Group):
    """Turns the errors a user can cause into one clean ``Error:`` line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LayoutError, SupervisorUnavailable) as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Starling: a Zeek-style network-monitor cluster."""


# ---- shared options ----------------------------------------------------------------------------

def _local_nets(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    nets = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nets.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise click.BadParameter(f"{item!r} is not a subnet (e.g. 10.0.0.0/8)") from None
    return tuple(nets)


_layout_option = click.option(
    "--layout", "layout_path", envvar="STARLING_LAYOUT", required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Cluster layout file (TOML); default from $STARLING_LAYOUT.")
_format_option = click.option("--format", "log_format", type=click.Choice(["tsv", "json"]),
                              default="tsv", show_default=True, help="Log format.")
_local_nets_option = click.option("--local-nets", callback=_local_nets, metavar="CIDR,...",
                                  help="Local networks (Zeek's Site::local_nets).")
_trace_argument = click.argument("trace", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path))


# ---- processing a trace ------------------------------------------------------------------------

@main.command()
@_trace_argument
@click.option("-w", "--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker processes sharing the trace.")
@click.option("--loggers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--proxies", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--logdir", type=click.Path(file_okay=False, path_type=Path), default=".",
              show_default=True, help="Where the loggers write the logs.")
@_format_option
@_local_nets_option
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Supervisor state (default: LOGDIR/.state).")
@click.option("--script", "scripts", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A Python analysis script to load into every node (repeatable).")
@click.option("-C", "--ignore-checksums", is_flag=True, help="Ignore bad checksums (Zeek's -C).")
@click.option("--load", "loads", multiple=True, metavar="NAME", help="Load a Zeek script by name.")
@click.option("--redef", "redefs", multiple=True, metavar="LINE",
              help="A Zeek redef line, e.g. 'DNS::max_pending_msgs = 100'.")
@click.option("--bare", is_flag=True, help="Like zeek -b: only the loaded scripts' logs.")
def run(trace: Path, workers: int, loggers: int, proxies: int, logdir: Path, log_format: str,
        local_nets: tuple[str, ...], state_dir: Path | None, scripts: tuple[Path, ...],
        ignore_checksums: bool, loads: tuple[str, ...], redefs: tuple[str, ...], bare: bool) -> None:
    """Analyse TRACE with a local cluster.

    Runs a manager, loggers, proxies and workers on this host until the workers have read the
    trace, then stops the rest in order so every log is written.  -C, --load, --redef and
    --bare mean what they mean for `starling analyze`.
    """
    from cluster.run import run_command

    _check_analysis_options(loads, redefs, bare)
    sys.exit(run_command(trace, workers=workers, loggers=loggers, proxies=proxies, logdir=logdir,
                         log_format=log_format, local_nets=local_nets, state_dir=state_dir,
                         scripts=scripts, ignore_checksums=ignore_checksums, loads=loads,
                         redefs=redefs, bare=bare))


def _check_analysis_options(loads: Sequence[str], redefs: Sequence[str], bare: bool) -> None:
    """Reject a bad --load/--redef (or layout loads/redefs) before any node starts, with the
    message the workers would fail with; print what is not mapped, as `starling analyze` does."""
    from analysis.standalone import analysis_config
    from cluster.frameworks import analysis_loads, options

    try:
        cfg = analysis_config(loads=analysis_loads(loads), redefs=redefs, bare=bare)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    options.declare_all()            # this process analyses nothing: the scripts' handlers stay idle
    for note in options.engine_notes(cfg):
        click.echo(f"note: {note}", err=True)


@main.command()
@_trace_argument
@click.option("--logdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where to write the logs (created if missing).")
@_format_option
@click.option("-C", "--ignore-checksums", is_flag=True, help="Ignore bad checksums (Zeek's -C).")
@click.option("--load", "loads", multiple=True, metavar="NAME", help="Load a Zeek script by name.")
@click.option("--redef", "redefs", multiple=True, metavar="LINE",
              help="A Zeek redef line, e.g. 'Site::local_nets += { 10.0.0.0/8 }'.")
@click.option("--local-nets", metavar="CIDR,...", help="Local networks (Zeek's Site::local_nets).")
@click.option("--bare", is_flag=True, help="Like zeek -b: only the loaded scripts' logs.")
@click.option("--seed", type=int, help="Seed for reproducible connection UIDs.")
# [frameworks] users' Python scripts (notice/SumStats/scan run in-process: cluster/frameworks/local.py)
@click.option("--script", "scripts", multiple=True, metavar="PY",
              type=click.Path(exists=True, dir_okay=False), help="A Python script to load (repeatable).")
def analyze(trace: Path, logdir: Path, log_format: str, ignore_checksums: bool,
            loads: tuple[str, ...], redefs: tuple[str, ...], local_nets: str | None, bare: bool,
            seed: int | None, scripts: tuple[str, ...] = ()) -> None:
    """Analyse TRACE in this one process (no cluster), like `zeek -r`."""
    try:
        from analysis import standalone
    except ImportError:
        raise click.ClickException("standalone analysis is not available yet "
                                   "(analysis.standalone is missing)") from None
    # `python -m analysis` owns the meaning of these options; hand them over unchanged.
    argv = [str(trace), "--logdir", str(logdir), "--format", log_format]
    argv += ["-C"] if ignore_checksums else []
    argv += ["--bare"] if bare else []
    argv += ["--local-nets", local_nets] if local_nets else []
    argv += ["--seed", str(seed)] if seed is not None else []
    from cluster.frameworks import POLICY_SCRIPTS, scripts_for_loads

    scripts = (*scripts, *scripts_for_loads(loads))   # policy scripts we implement as frameworks
    for name in loads:
        if name.removesuffix(".zeek") not in POLICY_SCRIPTS:
            argv += ["--load", name]
    for line in redefs:
        argv += ["--redef", line]
    if scripts:   # [frameworks] the same run with the scripts' handlers and the frameworks' local backend
        from cluster.frameworks import local
        sys.exit(local.main(argv, list(scripts)))
    sys.exit(standalone.main(argv))


# ---- layouts -------------------------------------------------------------------------------------

@main.command()
@_layout_option
def check(layout_path: Path) -> None:
    """Validate a layout and print its expanded form."""
    layout = Layout.load(layout_path)
    _check_analysis_options(layout.zeek_loads, layout.zeek_redefs, layout.bare)
    click.echo(layout.to_toml(), nl=False)
    for problem in layout.source_problems():
        click.echo(f"warning: {problem}", err=True)


# ---- the cluster through the supervisor ----------------------------------------------------------

def _prepare(layout_path: Path) -> tuple[Layout, StateDir]:
    layout = Layout.load(layout_path)
    return layout, StateDir(layout.state_dir)


def _check_nodes(layout: Layout, nodes: Sequence[str]) -> None:
    for n in nodes:
        layout.node(n)


def _start_daemon(layout: Layout, state: StateDir, nodes: Sequence[str]) -> None:
    """Validate, install the expanded layout, start the supervisor; nothing starts on error."""
    from cluster.supervisor import spawn_daemon   # the CLI's cold start stays light

    _check_analysis_options(layout.zeek_loads, layout.zeek_redefs, layout.bare)
    problems = layout.source_problems()
    if problems:
        raise click.ClickException("; ".join(problems))
    leftovers = [r for r in offline_status(state) if r.pid]
    if leftovers:
        raise click.ClickException(
            "nodes of an earlier run are still running without a supervisor ("
            + ", ".join(f"{r.name} pid {r.pid}" for r in leftovers) + "); run `starling stop` first")
    state.root.mkdir(parents=True, exist_ok=True)
    state.layout.write_text(layout.to_toml())
    reply = spawn_daemon(state.layout, state, nodes)
    started = [n["name"] for n in reply.get("nodes", []) if n.get("state") != "stopped"]
    click.echo(f"supervisor pid {reply['supervisor']['pid']}: started {', '.join(started) or 'nothing'}")


def _command(state: StateDir, cmd: str, nodes: Sequence[str], timeout: float) -> dict[str, Any]:
    reply = request(state, {"cmd": cmd, "nodes": list(nodes)}, timeout=timeout)
    if not reply.get("ok"):
        raise click.ClickException(reply.get("error", "the supervisor refused the command"))
    return reply


def _stop_timeout(layout: Layout, grace: float) -> float:
    return (grace + 1.0) * (len(layout.stop_order()) + 1) + 5.0


_grace_option = click.option("--grace", type=click.FloatRange(min=0), default=10.0,
                             envvar="STARLING_STOP_GRACE", show_default=True,
                             help="Seconds between SIGTERM and SIGKILL when stopping a node.")


@main.command()
@_layout_option
@_grace_option
def deploy(layout_path: Path, grace: float) -> None:
    """Check, install and (re)start the whole cluster."""
    layout, state = _prepare(layout_path)
    problems = layout.source_problems()
    if problems:
        raise click.ClickException("; ".join(problems))
    if state.supervisor_pid() is not None:
        _shutdown(state, _stop_timeout(layout, grace))
        click.echo("stopped the running cluster")
    _start_daemon(layout, state, ())


@main.command()
@_layout_option
@click.argument("nodes", nargs=-1)
def start(layout_path: Path, nodes: tuple[str, ...]) -> None:
    """Start the cluster (or only NODES)."""
    layout, state = _prepare(layout_path)
    _check_nodes(layout, nodes)
    if state.supervisor_pid() is not None:
        reply = _command(state, "start", nodes, timeout=10.0)
        _print_table(reply["nodes"], supervisor=reply["supervisor"])
        return
    _start_daemon(layout, state, nodes)


@main.command()
@_layout_option
@_grace_option
@click.argument("nodes", nargs=-1)
def stop(layout_path: Path, grace: float, nodes: tuple[str, ...]) -> None:
    """Stop the cluster (or only NODES) in order.

    Workers first, then proxies, loggers and the manager last, so logs drain.  Without a
    supervisor, nodes it left running are found through its state file and stopped.
    """
    layout, state = _prepare(layout_path)
    _check_nodes(layout, nodes)
    if state.supervisor_pid() is None:
        stopped = stop_orphans(state, grace, set(nodes) or None)
        if not stopped:
            raise click.ClickException(f"the supervisor is not running (state dir {state.root}); "
                                       "nothing to stop")
        click.echo(f"supervisor not running; stopped unsupervised nodes: {', '.join(stopped)}")
        return
    if nodes:
        _command(state, "stop", nodes, timeout=_stop_timeout(layout, grace))
        click.echo(f"stopped {', '.join(nodes)}")
    else:
        _shutdown(state, _stop_timeout(layout, grace))
        click.echo("stopped the cluster")


@main.command()
@_layout_option
@_grace_option
@click.argument("nodes", nargs=-1)
def restart(layout_path: Path, grace: float, nodes: tuple[str, ...]) -> None:
    """Restart the cluster (or only NODES)."""
    layout, state = _prepare(layout_path)
    _check_nodes(layout, nodes)
    reply = _command(state, "restart", nodes, timeout=2 * _stop_timeout(layout, grace))
    _print_table(reply["nodes"], supervisor=reply["supervisor"])


def _shutdown(state: StateDir, timeout: float) -> None:
    """Ask the supervisor to stop everything and exit; wait (bounded) until it has."""
    pid = state.supervisor_pid()
    start = proc_start(pid) if pid else None
    _command(state, "shutdown", (), timeout=5.0)
    deadline = time.monotonic() + timeout
    while pid is not None and pid_alive(pid, start):   # the process, not just its pid file
        if time.monotonic() > deadline:
            raise click.ClickException(f"the supervisor (pid {pid}) is still stopping the cluster "
                                       f"after {timeout:g}s; check `starling status`")
        time.sleep(0.05)


@main.command()
@_layout_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds to wait for the supervisor before reading its state file.")
def status(layout_path: Path, as_json: bool, timeout: float) -> None:
    """Show each node's state, pid, uptime, restarts.

    Exits 1 if the supervisor is down or does not answer; the nodes are then shown from its
    last state file, checked against their live pids.
    """
    layout, state = _prepare(layout_path)
    try:
        reply = _command(state, "status", (), timeout=timeout)
        sup: dict[str, Any] = {**reply["supervisor"], "running": True}
        rows = reply["nodes"]
    except SupervisorUnavailable as e:
        sup = {"running": False, "note": str(e)}
        rows = [r.to_dict() for r in offline_status(state)]
        known = {r["name"] for r in rows}
        rows += [NodeStatus(n.name, n.role.value, n.host, "stopped").to_dict()
                 for n in layout.nodes if n.name not in known]
    if as_json:
        click.echo(json.dumps({"supervisor": sup, "nodes": rows}, indent=1))
    else:
        _print_table(rows, supervisor=sup)
    if not sup["running"]:
        sys.exit(1)


def _print_table(rows: list[dict[str, Any]], supervisor: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    if supervisor.get("running", True):
        console.print(f"supervisor: running, pid {supervisor.get('pid')}", soft_wrap=True)
    else:
        console.print(f"[bold red]{supervisor.get('note', 'the supervisor is not running')}[/]"
                      "; nodes below: its last state file, checked against live pids",
                      soft_wrap=True)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("node", "role", "host", "state", "pid", "uptime", "restarts", "detail"):
        table.add_column(col, no_wrap=col != "detail",
                         justify="right" if col in ("pid", "restarts") else "left")
    for r in rows:
        st = r.get("state", "?")
        detail = r.get("detail") or ""
        if r.get("last_exit") and st != "running":
            detail = f"{detail}; last {r['last_exit']}" if detail else f"last {r['last_exit']}"
        table.add_row(r.get("name", "?"), r.get("role", "?"), r.get("host", "?"),
                      f"[{_STATE_STYLE.get(st, 'white')}]{st}[/]",
                      str(r["pid"]) if r.get("pid") else "-", _duration(r.get("uptime")),
                      str(r.get("restarts", 0)), detail)
    console.print(table)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


# ---- the daemon itself -----------------------------------------------------------------------------

@main.command(hidden=True)
@_layout_option
@click.option("--node-command", envvar="STARLING_NODE_COMMAND",
              help="Node command template with {role} {name} {layout} {python} (tests, wrappers).")
@_grace_option
@click.argument("nodes", nargs=-1)
def supervise(layout_path: Path, node_command: str | None, grace: float,
              nodes: tuple[str, ...]) -> None:
    """Run the supervisor in the foreground (what `start` runs as a daemon)."""
    import uvloop

    from cluster import supervisor as sv

    layout, state = _prepare(layout_path)
    state.root.mkdir(parents=True, exist_ok=True)
    _configure_logging(state.log)
    try:
        command = sv.template_command(node_command) if node_command else sv.node_command
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    sup = sv.Supervisor(layout, layout_path, command=command, grace=grace)
    _check_nodes(layout, nodes)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(sup.run(nodes or None))


def _configure_logging(path: Path) -> None:
    """structlog JSON lines to the state dir (entry points only configure logging)."""
    import structlog

    stream = open(path, "a", buffering=1)   # noqa: SIM115 -- lives as long as the process
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True)

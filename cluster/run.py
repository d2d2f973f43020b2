"""``starling run TRACE --workers N``: a whole local cluster over one trace, then a summary.

:func:`run_local` builds ``Layout.local(...)`` (manager, loggers, proxies, N workers on 127.0.0.1
with free ports), runs the nodes as real processes under the supervisor's machinery
(``Supervisor.run_to_completion``: no restarts, workers exit at end of trace, the rest is stopped
in stop order so the loggers drain), and joins the bus itself as an endpoint to follow the
workers' progress events and collect every node's final statistics.

The summary says what happened and whether anything was lost: rows written per log are counted
in the files themselves and compared with the records the workers handed to the reliable channel;
drops are summed from the bus statistics of every node.  ``ok`` is false -- and ``starling run``
exits non-zero -- when a node failed, a worker did not report, or a record was lost or doubled.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

from cluster.layout import Layout
from cluster.runtime import PROGRESS_TOPIC, STATS_TOPIC

__all__ = ["run_local", "run_command", "count_rows", "print_summary"]


def count_rows(path: str | os.PathLike[str]) -> int:
    """Data rows of a TSV (lines not starting with ``#``) or JSON-lines log file."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip() and not line.startswith(b"#"):
                n += 1
    return n


def _is_log(path: Path) -> bool:
    """A Zeek TSV or JSON-lines log (what a run writes), judged by its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith((b"#separator", b"{")) or head == b""


class _state_lock:
    """Hold the supervisor's lock of the state dir briefly (the supervisor takes it for real)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def __enter__(self) -> None:
        import fcntl

        from cluster.state import SupervisorUnavailable

        self.fd = os.open(self.state.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise SupervisorUnavailable(f"another run or supervisor uses {self.state.root}") from None

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)


def _fresh_state(state_root: Path) -> None:
    """A run starts from nothing: no acknowledgement state or spill journal of an earlier run."""
    for sub in ("acks", "journal"):
        shutil.rmtree(state_root / sub, ignore_errors=True)


def run_local(trace: str | os.PathLike[str], workers: int = 2, logdir: str | os.PathLike[str] = ".",
              fmt: str = "tsv", loggers: int = 1, proxies: int = 1, progress: bool = True, *,
              state_dir: str | os.PathLike[str] | None = None, local_nets: Iterable[str] = (),
              scripts: Iterable[str] = (), grace: float = 10.0, console: Any = None,
              ignore_checksums: bool = False, loads: Iterable[str] = (), redefs: Iterable[str] = (),
              bare: bool = False) -> dict[str, Any]:
    """Run the cluster over ``trace``; returns the summary (``summary["ok"]``, ``["exit_code"]``).

    ``scripts`` are loaded by every node; ``ignore_checksums``, ``loads``, ``redefs`` and ``bare``
    configure the workers' analysis as ``starling analyze`` (zeek -r) options would."""
    import structlog
    import uvloop

    from cluster.state import StateDir
    from cluster.supervisor import Supervisor

    layout = Layout.local(trace, workers=workers, loggers=loggers, proxies=proxies, log_dir=logdir,
                          log_format=fmt, state_dir=state_dir, local_nets=tuple(local_nets),
                          scripts=scripts, ignore_checksums=ignore_checksums, loads=loads,
                          redefs=redefs, bare=bare)
    state = StateDir(layout.state_dir)
    state.root.mkdir(parents=True, exist_ok=True)
    with _state_lock(state):      # never clear the state of a run that is still going
        _fresh_state(state.root)
        layout.log_dir.mkdir(parents=True, exist_ok=True)
        for old in layout.log_dir.glob("*.log"):
            if _is_log(old):      # rows of an earlier run would be counted as ours
                old.unlink()
        state.layout.write_text(layout.to_toml())
    if not structlog.is_configured():
        from cluster.node import configure_logging
        configure_logging(state.log)
    sup = Supervisor(layout, state.layout, grace=grace, serve=False)   # scripts travel in the layout
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        summary = runner.run(_run(layout, sup, progress, console))
    if progress:
        print_summary(summary, console)
    return summary


async def _run(layout: Layout, sup: Any, show: bool, console: Any) -> dict[str, Any]:
    from broker.endpoint import Endpoint

    size = os.path.getsize(layout.workers[0].trace) if layout.workers and layout.workers[0].trace else 0
    prog: dict[str, tuple[int, int | None, int]] = {}
    stats: dict[str, dict[str, Any]] = {}
    recovered: dict[str, dict[str, Any]] = {}

    def on_progress(_name: str, args: list, _meta: Any) -> None:
        node, done, total, packets = args[0], args[1], args[2], args[3]
        prog[node] = (done, total, packets)

    def on_stats(_name: str, args: list, _meta: Any) -> None:
        st = args[0]
        if isinstance(st, dict) and isinstance(st.get("node"), str):
            stats[st["node"]] = st

    started = time.monotonic()
    started_wall = time.time()
    ep = Endpoint(f"starling-run-{os.getpid()}", (layout.hub_xsub, layout.hub_xpub))
    await ep.start()
    ep.subscribe(PROGRESS_TOPIC, on_progress)
    ep.subscribe(STATS_TOPIC, on_stats)
    bar_task = None
    if show:
        bar_task = asyncio.get_running_loop().create_task(_progress_bar(prog, size * len(layout.workers), console))
    try:
        failed = await sup.run_to_completion()
        # Final statistics were published before each node left; give the last ones a moment.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not all(n.name in stats for n in layout.nodes):
            await asyncio.sleep(0.02)
        missing = [n.name for n in layout.nodes if n.name not in stats]
        if missing:
            recovered = _stats_from_node_logs(layout, missing, started_wall)
            stats.update(recovered)
    finally:
        if bar_task is not None:
            bar_task.cancel()
            await asyncio.gather(bar_task, return_exceptions=True)
        bus = ep.stats()
        await ep.close()
    summary = _summary(layout, failed, stats, bus, time.monotonic() - started)
    summary["stats_from_node_logs"] = sorted(recovered)   # final stats that missed the bus
    return summary


def _stats_from_node_logs(layout: Layout, names: list[str], since: float) -> dict[str, dict[str, Any]]:
    """Final statistics of ``names`` from their own diagnostics files (``node_final_stats``).

    Every node logs them right after publishing them on the bus; the bus message is sent while
    the node is already leaving, so the file is the record that cannot get lost on the way.
    Only lines written since ``since`` (this run) count."""
    import json
    from datetime import datetime

    from cluster.state import StateDir

    state = StateDir(layout.state_dir)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            lines = (state.node_dir(name) / "node.log").read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            if '"node_final_stats"' not in line:
                continue
            try:
                rec = json.loads(line)
                when = datetime.fromisoformat(rec["timestamp"]).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            st = rec.get("stats")
            if when >= since and isinstance(st, dict) and st.get("node") == name:
                out[name] = st
            break
    return out


async def _progress_bar(prog: dict[str, tuple[int, int | None, int]], total: int, console: Any) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TextColumn("{task.fields[packets]:>10,} packets"), TimeElapsedColumn(),
                  console=console, transient=False) as p:
        task = p.add_task("analysing", total=total or None, packets=0)
        try:
            while True:
                done = sum(v[0] for v in prog.values())
                p.update(task, completed=done, packets=sum(v[2] for v in prog.values()))
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            p.update(task, completed=sum(v[0] for v in prog.values()),
                     packets=sum(v[2] for v in prog.values()))
            raise


def _summary(layout: Layout, failed: list, stats: dict[str, dict[str, Any]], run_bus: dict[str, Any],
             elapsed: float) -> dict[str, Any]:
    problems: list[str] = [f"{r.name} failed ({r.last_exit})" for r in failed]
    packets = connections = 0
    sent: dict[str, int] = {}
    drops = {"bus_dropped": 0, "bus_gaps": 0, "log_batches_dropped": 0, "log_records_not_queued": 0,
             "log_batches_unacked": 0, "log_batches_malformed": 0}
    for n in layout.nodes:
        st = stats.get(n.name)
        if st is None:
            problems.append(f"{n.name} sent no final statistics")
            continue
        bus, logs = st.get("bus", {}), st.get("logs", {})
        drops["bus_dropped"] += bus.get("dropped_out", 0) + bus.get("dropped_in", 0)
        drops["bus_gaps"] += bus.get("gaps", 0)
        drops["log_batches_dropped"] += logs.get("dropped_batches", 0)
        drops["log_records_not_queued"] += logs.get("errors", 0)
        drops["log_batches_unacked"] += logs.get("unacked_batches", 0)
        for path, c in logs.get("records", {}).items():
            sent[path] = sent.get(path, 0) + c
        w = st.get("writer")
        if w:
            drops["log_batches_malformed"] += w.get("malformed", 0)
        if n.role.value == "worker":
            eng = st.get("engine", {})
            packets += eng.get("packets", 0)
            connections += eng.get("connections", 0)
            if st.get("source_error"):
                problems.append(f"{n.name}: {st['source_error']}")
            elif not st.get("end_of_trace"):
                problems.append(f"{n.name} stopped before the end of its trace")
    drops["bus_dropped"] += run_bus.get("dropped_in", 0)
    drops["bus_gaps"] += run_bus.get("gaps", 0)
    rows: dict[str, int] = {}
    for f in sorted(layout.log_dir.glob("*.log")):
        rows[f.stem] = count_rows(f)
    lost = {p: sent[p] - rows.get(p, 0) for p in sent if sent[p] > rows.get(p, 0)}
    # Without every node's count the sums undercount what was sent: rows would look doubled.
    complete = all(n.name in stats for n in layout.nodes)
    duplicated = {p: rows[p] - sent.get(p, 0) for p in rows if rows[p] > sent.get(p, 0)} if complete else {}
    if lost:
        problems.append("rows lost: " + ", ".join(f"{p} {c}" for p, c in lost.items()))
    if duplicated:
        problems.append("rows duplicated: " + ", ".join(f"{p} {c}" for p, c in duplicated.items()))
    total_drops = sum(drops.values())
    if total_drops:
        problems.append("drops: " + ", ".join(f"{k} {v}" for k, v in drops.items() if v))
    ok = not problems
    return {"ok": ok, "exit_code": 0 if ok else 1, "problems": problems, "packets": packets,
            "connections": connections, "rows": rows, "records_sent": sent, "lost": lost,
            "duplicated": duplicated, "drops": total_drops, "drop_detail": drops,
            "elapsed": elapsed, "workers": len(layout.workers), "logdir": str(layout.log_dir),
            "nodes": {n: s for n, s in stats.items()}}


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    status = "[bold green]ok[/]" if summary["ok"] else "[bold red]FAILED[/]"
    console.print(f"starling run: {summary['workers']} workers -> {summary['logdir']}: {status}", soft_wrap=True)
    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(no_wrap=True)
    t.add_column(justify="right")
    t.add_row("packets", f"{summary['packets']:,}")
    t.add_row("connections", f"{summary['connections']:,}")
    for p, c in summary["rows"].items():
        t.add_row(f"{p}.log rows", f"{c:,}")
    t.add_row("drops", str(summary["drops"]))
    t.add_row("elapsed", f"{summary['elapsed']:.2f}s")
    console.print(t)
    for p in summary["problems"]:
        console.print(f"[bold red]problem:[/] {p}", soft_wrap=True)


def run_command(trace: str | os.PathLike[str], *, workers: int = 2, loggers: int = 1, proxies: int = 1,
                logdir: str | os.PathLike[str] = ".", log_format: str = "tsv", local_nets: Iterable[str] = (),
                state_dir: str | os.PathLike[str] | None = None, scripts: Iterable[str] = (),
                ignore_checksums: bool = False, loads: Iterable[str] = (), redefs: Iterable[str] = (),
                bare: bool = False) -> int:
    """What ``starling run`` does: run, print progress and the summary, return the exit status
    (0 ok, 1 something lost or a node failed, 2 bad input such as a missing trace)."""
    import sys

    from cluster.layout import LayoutError
    from cluster.state import SupervisorUnavailable

    try:
        for s in scripts:           # fail before starting anything
            if not Path(s).is_file():
                raise LayoutError(f"{s}: no such script")
        summary = run_local(trace, workers=workers, logdir=logdir, fmt=log_format, loggers=loggers,
                            proxies=proxies, progress=True, state_dir=state_dir, local_nets=local_nets,
                            scripts=scripts, ignore_checksums=ignore_checksums, loads=loads,
                            redefs=redefs, bare=bare)
    except (LayoutError, SupervisorUnavailable) as e:   # e.g. a run already uses this state dir
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as eg:
        match, rest = eg.split((LayoutError, SupervisorUnavailable))
        if match is None or rest is not None:
            raise
        e = match
        while isinstance(e, BaseExceptionGroup):
            e = e.exceptions[0]
        print(f"error: {e}", file=sys.stderr)
        return 2
    return summary["exit_code"]

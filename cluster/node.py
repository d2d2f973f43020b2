"""Front door of one node process: ``python -m cluster.node --role R --name N --layout FILE``.

``STARLING_ROLE``, ``STARLING_NAME``, ``STARLING_LAYOUT`` (the supervisor sets these three)
and ``STARLING_SCRIPTS`` (paths separated by ``:``) stand in for the options.  This is the only
place that configures structlog for a node: JSON lines into ``<state_dir>/nodes/<name>/node.log``.
Bad input (unknown node, wrong role, unreadable layout or script) is a one-line error and exit
status 2; the node's own status otherwise (0 clean, 3 log batches left unacknowledged).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Sequence

import structlog

ROLES = ("manager", "logger", "proxy", "worker")


def configure_logging(path: str | os.PathLike[str], **context: str) -> None:
    """structlog JSON lines to ``path`` (appending), with ``context`` bound to every line."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True)
    if context:
        structlog.contextvars.bind_contextvars(**context)


def node_class(role: str):
    from nodes.logger import LoggerNode
    from nodes.manager import ManagerNode
    from nodes.proxy import ProxyNode
    from nodes.worker import WorkerNode

    return {"manager": ManagerNode, "logger": LoggerNode, "proxy": ProxyNode, "worker": WorkerNode}[role]


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    ap = argparse.ArgumentParser(prog="python -m cluster.node", description="Run one Starling cluster node.")
    ap.add_argument("--role", choices=ROLES, default=env.get("STARLING_ROLE"))
    ap.add_argument("--name", default=env.get("STARLING_NAME"))
    ap.add_argument("--layout", default=env.get("STARLING_LAYOUT"))
    ap.add_argument("--script", action="append", default=None, metavar="PY",
                    help="a Python script with @cluster.on handlers (repeatable)")
    ap.add_argument("--log-file", default=None, help="diagnostics file (default in the state dir)")
    return ap


def _fail(msg: str) -> int:
    print(f"cluster.node: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    missing = [o for o in ("role", "name", "layout") if not getattr(a, o)]
    if missing:
        return _fail("missing " + ", ".join(f"--{m}" for m in missing)
                     + " (or STARLING_ROLE / STARLING_NAME / STARLING_LAYOUT)")
    if a.role not in ROLES:
        return _fail(f"unknown role {a.role!r} (use {', '.join(ROLES)})")
    from cluster.layout import Layout, LayoutError
    from cluster.state import StateDir

    try:
        layout = Layout.load(a.layout)
        spec = layout.node(a.name)
    except LayoutError as e:
        return _fail(str(e))
    if spec.role.value != a.role:
        return _fail(f"node {a.name!r} is a {spec.role.value} in {a.layout}, not a {a.role}")
    scripts = a.script if a.script is not None else \
        [s for s in os.environ.get("STARLING_SCRIPTS", "").split(os.pathsep) if s]
    log_file = a.log_file or StateDir(layout.state_dir).node_dir(a.name) / "node.log"
    configure_logging(log_file, node=a.name, role=a.role)

    import uvloop

    from cluster.runtime import ScriptError

    node = node_class(a.role)(layout, a.name, scripts=scripts,
                              heartbeat_file=os.environ.get("STARLING_HEARTBEAT"))
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(node.run())
    except (Exception, ExceptionGroup) as e:   # noqa: BLE001 - one line for the user, details in the log
        leaf = _first_leaf(e)
        if isinstance(leaf, ScriptError):
            return _fail(str(leaf))
        structlog.get_logger("cluster.node").error("node_failed", exc_info=e)
        return _fail(f"{a.name}: {type(leaf).__name__}: {leaf}")
    finally:
        let_last_messages_leave()


def let_last_messages_leave(limit: float = 2.0) -> None:
    """Terminate ZeroMQ before the process exits.

    A process that simply exits drops whatever still waits in ZeroMQ's I/O thread -- such as the
    final statistics and the goodbye a node publishes just before it leaves (a loaded machine may
    not schedule that thread in time).  Terminating the context honours each closed socket's
    linger.  In a daemon thread with a bound, so a socket left open somewhere cannot hang the exit.
    """
    import threading

    import zmq

    t = threading.Thread(target=zmq.Context.instance().destroy, kwargs={"linger": 0},
                         name="zmq-term", daemon=True)
    t.start()
    t.join(limit)


def _first_leaf(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e

if __name__ == "__main__":
    sys.exit(main())

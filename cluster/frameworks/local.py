"""Standalone mode with users' Python scripts: one process, no bus, the frameworks' local backend.

``starling analyze TRACE --logdir DIR --script my.py`` comes here (plain ``starling analyze``
stays in :mod:`analysis.standalone`).  The scripts' ``@cluster.on`` handlers get the engine's
events, and the frameworks (notice, SumStats, scan) run with a :class:`~cluster.frameworks.host.LocalHost`:
the same logic as on a cluster's manager, with notices written straight into the log directory.
The run's ``--redef`` lines reach the framework scripts' options (:mod:`cluster.frameworks.options`)
and the engine's sink raises Zeek's log events for scripts that handle them
(:mod:`cluster.frameworks.logevents`).
``starling_tick`` is dispatched after every packet batch and ``zeek_done`` after the engine has
finished, exactly as a worker node does.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable

from analysis.config import AnalysisConfig
from analysis.files.extract import install as install_extraction
from cluster import api
from cluster.frameworks import host as _host

__all__ = ["analyze_with_scripts", "main"]


class RegistryEvents:
    """The engine's EventSink: events go to the scripts' handlers (as in a worker node)."""

    __slots__ = ("_dispatch",)

    def __init__(self, registry: api.Registry) -> None:
        self._dispatch = registry.dispatch

    def event(self, name: str, args: tuple) -> None:
        self._dispatch(name, args)


def analyze_with_scripts(trace: str | os.PathLike[str], logdir: str | os.PathLike[str],
                         scripts: Iterable[str] = (), config: AnalysisConfig | None = None,
                         fmt: str = "tsv", redefs: Iterable[str] = ()) -> dict:
    """Analyse ``trace`` into ``logdir`` with ``scripts`` loaded; returns the engine's stats.
    ``redefs``: the run's Zeek redef lines, for the framework scripts' options (the engine's own
    are in ``config``).
    Raises :class:`cluster.runtime.ScriptError` for a broken script and
    :class:`analysis.sources.base.SourceError` for an unreadable trace."""
    from analysis.engine import Engine
    from analysis.logs.files import DirectoryLogSink
    from analysis.sources import open_source
    from cluster.frameworks import logevents, options
    from cluster.runtime import load_script

    for s in scripts:
        load_script(s)
    for mod in ("cluster.frameworks.notice", "cluster.frameworks.sumstats"):
        m = sys.modules.get(mod)
        if m is not None:
            m.reset()       # a second run in this process starts from nothing
    config = config if config is not None else AnalysisConfig()
    reg = api.registry()
    started = time.perf_counter()
    box: list[Engine] = []
    clock = lambda: box[0].network_time if box else 0.0   # noqa: E731
    sink = DirectoryLogSink(logdir, fmt, clock=lambda: clock() or time.time())
    h = _host.LocalHost(sink, clock, tuple(config.local_nets))
    _host.install(h)
    options.install(h, redefs)
    try:
        install_extraction(config, logdir, sink)    # extract-all-files: <logdir>/<FileExtract::prefix>
        engine = Engine(config, logevents.tap(sink, reg), RegistryEvents(reg))
        box.append(engine)
        reg.dispatch(api.CLUSTER_STARTED, ())      # zeek_init's place for the frameworks
        source = open_source(os.fspath(trace))
        try:
            for batch in source.batches():
                engine.process_batch(batch)
                reg.dispatch(_host.TICK, ())
        finally:
            source.close()
        engine.finish()
        reg.dispatch(_host.DONE, ())
    finally:
        _host.install(None)
        sink.close()
    out = engine.stats()
    out["seconds"] = time.perf_counter() - started
    return out


def main(argv: list[str], scripts: list[str]) -> int:
    """``python -m analysis`` options plus ``scripts``; 0 ok, 2 bad input (one line, no traceback)."""
    from analysis.sources.base import SourceError
    from analysis.standalone import build_parser, config_from_args
    from cluster.frameworks import loads_for_scripts, options
    from cluster.runtime import ScriptError

    a = build_parser().parse_args(argv)
    a.load = list(dict.fromkeys([*a.load, *loads_for_scripts(scripts)]))   # what the policy scripts load
    try:
        cfg = config_from_args(a)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not os.path.isfile(a.trace):
        print(f"error: {a.trace}: no such file", file=sys.stderr)
        return 2
    try:
        st = analyze_with_scripts(a.trace, a.logdir, scripts, cfg, a.format, a.redef)
    except (ScriptError, SourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in options.engine_notes(cfg):     # the loaded scripts have declared their options now
        print(f"note: {note}", file=sys.stderr)
    print(f"{a.trace}: {st['packets']} packets, {st['connections']} connections in {st['seconds']:.2f}s "
          f"-> {a.logdir}")
    return 0

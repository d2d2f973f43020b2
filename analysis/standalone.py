"""Standalone mode: ``python -m analysis TRACE --logdir DIR`` reads a trace like ``zeek -r``.

Options mirror what a Zeek user would say on the command line: ``-C`` (ignore checksums),
``--load`` script names, ``--redef`` lines, ``--bare`` (only the loaded scripts' logs),
``--local-nets``.  Bad input is a one-line error and exit status 2, never a traceback; a
finished run prints one summary line.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Iterable

from analysis.config import AnalysisConfig


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analysis",
                                 description="Analyse a pcap/pcapng trace into Zeek-format logs.")
    ap.add_argument("trace", help="pcap or pcapng file (.gz accepted)")
    ap.add_argument("--logdir", required=True, help="directory for the logs (created if missing)")
    ap.add_argument("--format", choices=("tsv", "json"), default="tsv", help="Zeek TSV (default) or JSON lines")
    ap.add_argument("-C", "--ignore-checksums", action="store_true", help="analyse packets with bad checksums")
    ap.add_argument("--local-nets", default="", help="comma-separated CIDRs for Site::local_nets")
    ap.add_argument("--load", action="append", default=[], metavar="NAME", help="Zeek script name to load")
    ap.add_argument("--redef", action="append", default=[], metavar="LINE", help="a Zeek 'redef' line")
    ap.add_argument("--bare", action="store_true", help="like zeek -b: only the loaded scripts' logs")
    ap.add_argument("--shard", default=None, metavar="I/N", help="keep only shard I of N (0-based)")
    ap.add_argument("--seed", type=int, default=None, help="seed for reproducible connection UIDs")
    return ap


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def config_from_args(a: argparse.Namespace) -> AnalysisConfig:
    """Raises ValueError with a user-facing message on a bad option."""
    return analysis_config(loads=a.load, redefs=a.redef, bare=a.bare, ignore_checksums=a.ignore_checksums,
                           local_nets=a.local_nets.split(",") if a.local_nets else (), seed=a.seed)


def analysis_config(*, loads: Iterable[str] = (), redefs: Iterable[str] = (), bare: bool = False,
                    ignore_checksums: bool = False, local_nets: Iterable[str] = (),
                    seed: int | None = None) -> AnalysisConfig:
    """The engine configuration for Zeek's command-line options (``-C``, ``--load``, ``--redef``,
    ``-b``, ``Site::local_nets``).  Public so that cluster workers build theirs the same way and a
    cluster run of a trace means what a standalone run means.  Raises ValueError with a
    user-facing message on a bad option."""
    from analysis.zeek_scripts import configure

    cfg = configure(list(loads), list(redefs), bare=bare)
    if ignore_checksums:
        cfg.ignore_checksums = True
    nets = []
    for n in local_nets:
        n = n.strip()
        if not n:
            continue
        try:
            nets.append(str(ipaddress.ip_network(n, strict=False)))
        except ValueError:
            raise ValueError(f"--local-nets: {n!r} is not a CIDR") from None
    if nets:
        cfg.local_nets = tuple(cfg.local_nets) + tuple(nets)
    cfg.uid_seed = seed
    return cfg


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard: {text!r} is not I/N") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard: need 0 <= I < N, got {text!r}")
    return i, n


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(a)
        shard = parse_shard(a.shard)
    except ValueError as e:
        return _fail(str(e))
    if not os.path.isfile(a.trace):
        return _fail(f"{a.trace}: no such file")
    for note in cfg.notes:
        print(f"note: {note}", file=sys.stderr)

    from analysis.engine import analyze_file
    from analysis.sources.base import SourceError

    try:
        st = analyze_file(a.trace, a.logdir, cfg, fmt=a.format, shard=shard)
    except SourceError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{e.filename or a.logdir}: {e.strerror or e}")
    except KeyboardInterrupt:
        return _fail("interrupted")
    logs = sorted(f for f in os.listdir(a.logdir) if f.endswith(".log"))
    print(f"{a.trace}: {st['packets']} packets, {st['connections']} connections, {st['weirds']} weirds "
          f"in {st['seconds']:.2f}s -> {a.logdir} ({', '.join(logs) or 'no logs'})")
    return 0

"""How Zeek's scripts print times and durations in notice messages (one place for all of them)."""

from __future__ import annotations

import time

__all__ = ["duration_to_mins_secs", "fmt_time"]


def duration_to_mins_secs(d: float) -> str:
    """``duration_to_mins_secs`` (``base/utils/time``): whole seconds as ``<m>m<s>s``."""
    s = int(d)
    return f"{s // 60}m{s % 60}s"


def fmt_time(t: float) -> str:
    """``fmt("%T", t)``: ``2014-03-04-23:59:59.000000000`` (UTC, nanoseconds)."""
    whole = int(t // 1)
    ns = int(round((t - whole) * 1e9))
    if ns >= 1_000_000_000:
        whole, ns = whole + 1, ns - 1_000_000_000
    return time.strftime("%Y-%m-%d-%H:%M:%S", time.gmtime(whole)) + f".{ns:09d}"

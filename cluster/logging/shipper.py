"""The worker side of logging: a :class:`~analysis.sinks.LogSink` that ships batches to loggers.

Records are collected per stream and sent as one batch (:mod:`cluster.logging.codec`) when a
stream has ``batch_records`` of them or its oldest record is ``max_delay`` seconds old
(:meth:`LogShipper.tick`, called by the node's timer).  Each stream belongs to exactly one logger,
chosen by HRW over the layout's loggers (all of them, alive or not: a stream must never be split
across two files).  Batches go through the bus's reliable channel, which sequences, retries,
spills to disk and de-duplicates; :meth:`LogShipper.drain` waits until every batch is
acknowledged, i.e. written by its logger.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import structlog

from analysis.logs.schema import LogRecord
from cluster.logging.codec import LogEncoder
from cluster.pools import hrw_pick

log = structlog.get_logger(__name__)

__all__ = ["LogShipper", "logger_for"]


def logger_for(path: str, loggers: tuple[str, ...] | list[str]) -> str:
    """The logger (by name) that writes stream ``path``: stable in every process."""
    if not loggers:
        raise ValueError("no logger to write to")
    return hrw_pick(path, loggers)  # type: ignore[return-value]


class LogShipper:
    """``write``/``flush``/``close`` as any LogSink; ``senders`` maps logger name -> BatchSender
    (anything with ``put(bytes)``, ``flush(timeout)``, ``close()``, ``stats()``)."""

    def __init__(self, senders: dict[str, Any], *, batch_records: int = 2000, max_delay: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.senders = senders
        self._loggers = tuple(senders)
        self.batch_records = batch_records
        self.max_delay = max_delay
        self._clock = clock
        self._enc = LogEncoder()
        self._pending: dict[str, list[LogRecord]] = {}
        self._types: dict[str, type] = {}
        self._since: dict[str, float] = {}
        self._route: dict[str, Any] = {}
        self.records: dict[str, int] = {}   # records handed to the channel, per stream
        self.batches = 0
        self.errors = 0
        self.closed = False

    def _sender(self, path: str) -> Any:
        s = self._route.get(path)
        if s is None:
            s = self._route[path] = self.senders[logger_for(path, self._loggers)]
        return s

    def write(self, path: str, record: LogRecord) -> None:
        lst = self._pending.get(path)
        if lst is None:
            lst = self._pending[path] = []
            self._types[path] = type(record)
            self._since[path] = self._clock()
        elif type(record) is not self._types[path]:
            self._ship(path)            # keep one record type per batch
            lst = self._pending[path] = []
            self._types[path] = type(record)
            self._since[path] = self._clock()
        lst.append(record)
        if len(lst) >= self.batch_records:
            self._ship(path)

    def _ship(self, path: str) -> None:
        lst = self._pending.pop(path, None)
        self._since.pop(path, None)
        if not lst:
            return
        try:
            data = self._enc.encode(path, lst)
            ok = self._sender(path).put(data)
        except Exception:
            self.errors += len(lst)
            log.exception("log_batch_not_queued", path=path, records=len(lst))
            return
        if ok:
            self.records[path] = self.records.get(path, 0) + len(lst)
            self.batches += 1
        else:
            self.errors += len(lst)

    def tick(self) -> None:
        """Ship streams whose oldest pending record has waited ``max_delay``."""
        if not self._since:
            return
        limit = self._clock() - self.max_delay
        for path in [p for p, t in self._since.items() if t <= limit]:
            self._ship(path)

    def flush(self) -> None:
        for path in list(self._pending):
            self._ship(path)

    def close(self) -> None:
        self.flush()
        self.closed = True

    @property
    def pending_records(self) -> int:
        return sum(len(v) for v in self._pending.values())

    async def drain(self, timeout: float | None = None) -> bool:
        """Ship everything and wait until the loggers acknowledged it; False on timeout."""
        import asyncio

        self.flush()
        try:   # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a racing cancellation
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(s.flush() for s in self.senders.values()))
            return True
        except TimeoutError:
            return False

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"records": dict(self.records), "batches": self.batches,
                               "errors": self.errors, "pending_records": self.pending_records}
        dropped = 0
        unacked = 0
        per = {}
        for name, s in self.senders.items():
            st = per[name] = s.stats()
            dropped += st.get("dropped", 0)
            unacked += getattr(s, "pending", 0)
        out["channels"] = per
        out["dropped_batches"] = dropped
        out["unacked_batches"] = unacked
        return out

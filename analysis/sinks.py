"""Where the engine's output goes: log records and script-level events.

The engine is handed sinks and never knows what is behind them: in standalone mode a
:class:`~analysis.logs.files.DirectoryLogSink` writes files; in a worker a cluster client
batches records onto the bus.  Both get the same calls, so both produce the same rows.
"""

from __future__ import annotations

from typing import Any, Protocol

from analysis.logs.schema import LogRecord


class LogSink(Protocol):
    def write(self, path: str, record: LogRecord) -> None:
        """Accept one record for log stream ``path`` (e.g. ``"conn"``).  Must not block long."""

    def flush(self) -> None:
        """Push out anything buffered (called at batch ends and on shutdown)."""

    def close(self) -> None:
        """Flush and release resources; no write follows."""


class EventSink(Protocol):
    def event(self, name: str, args: tuple[Any, ...]) -> None:
        """An engine event for user scripts, e.g. ``("connection_state_remove", (conn_info,))``."""


class ListLogSink:
    """Keeps records in memory, per stream: for tests and for embedding the engine."""

    def __init__(self) -> None:
        self.records: dict[str, list[LogRecord]] = {}

    def write(self, path: str, record: LogRecord) -> None:
        self.records.setdefault(path, []).append(record)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class NullEventSink:
    def event(self, name: str, args: tuple[Any, ...]) -> None:
        pass

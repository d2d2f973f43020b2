"""reporter.log (Zeek's ``Reporter::Info``): the engine's own errors and warnings.

Zeek reports problems that are not about traffic (a file it cannot open, a write that fails)
through its reporter, which ``base/frameworks/reporter`` logs here; without that script (bare
mode) Zeek prints them on stderr.  The runner that owns the output decides which; the engine
side only builds the record.
"""

from __future__ import annotations

from analysis.logs.schema import Enum, LogRecord, String, Time, log_stream

__all__ = ["ERROR", "INFO", "ReporterInfo", "WARNING"]

INFO, WARNING, ERROR = "Reporter::INFO", "Reporter::WARNING", "Reporter::ERROR"


@log_stream("reporter")
class ReporterInfo(LogRecord, kw_only=True):
    ts: Time
    level: Enum
    message: String
    location: String | None = None

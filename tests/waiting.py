"""Wait for a condition with a deadline, instead of sleeping a fixed time and hoping.

A fixed sleep that is long enough on a quiet laptop is too short on a loaded CI machine; polling
until the condition holds (or the deadline passes, with a message) is both faster and sturdier.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Awaitable, Callable


async def until(cond: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, step: float = 0.02,
                what: str = "condition") -> Any:
    """Poll `cond` (plain or async) until it returns something true; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(step)

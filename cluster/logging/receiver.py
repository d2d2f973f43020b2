"""A node's log-writing duty: the reliable channel's receiver feeding a LogWriterService.

Used by loggers, and by the manager when the layout has no logger (Zeek's rule).  Batches are
acknowledged only after they are written and flushed (the service's checkpoint is committed
with them), so a sender resends whatever a crashed receiver had not finished.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import structlog

from broker.reliable import BatchReceiver
from cluster.logging.service import LogWriterService

log = structlog.get_logger(__name__)

__all__ = ["LogReceiver"]


class LogReceiver:
    def __init__(self, name: str, bind: str, logdir: str | Path, fmt: str = "tsv", *, state_dir: str | Path,
                 rotation_interval: float = 0.0, gzip_archives: bool = False, fsync: bool = False) -> None:
        self.service = LogWriterService(logdir, fmt, rotation_interval=rotation_interval,
                                        gzip_archives=gzip_archives)
        self.receiver = BatchReceiver(name, bind, self.service.handle, state_dir=str(state_dir), fsync=fsync)
        self.service.resume(self.receiver.checkpoint)
        self._compressing: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self.receiver.start()

    async def rotation_loop(self) -> None:
        """Rotate at interval boundaries; compress archives in a thread, off the event loop."""
        if self.service.rotation_interval <= 0:
            return
        while True:
            await asyncio.sleep(min(0.5, self.service.rotation_interval / 4))
            if self.service.rotation_due(time.time()):
                for fn in self.service.rotate():
                    await self._compress(fn)

    async def _compress(self, fn: str) -> None:
        try:
            await asyncio.to_thread(LogWriterService.compress, fn)
        except OSError as e:
            log.error("log_compress_failed", file=fn, error=str(e))

    async def close(self) -> None:
        """Stop taking batches, close (and with rotation, archive) every file."""
        await self.receiver.close()
        for fn in self.service.close():
            await self._compress(fn)

    def stats(self) -> dict[str, Any]:
        out = self.service.stats()
        r = self.receiver.stats()
        out.update(received=r["received"], duplicates=r["duplicates"], out_of_order=r["out_of_order"],
                   malformed_frames=r["malformed"], handler_errors=r["handler_errors"])
        return out

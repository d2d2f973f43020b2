"""A logger: receives log batches over the reliable channel and writes one file per stream."""

from __future__ import annotations

from typing import Any

from cluster.layout import Role
from cluster.logging.receiver import LogReceiver
from cluster.runtime import Node


async def open_log_receiver(node: Node) -> LogReceiver:
    """Bind ``node``'s batch channel and start writing into the layout's log dir."""
    lay = node.layout
    r = LogReceiver(node.name, node.spec.endpoint, lay.log_dir, lay.log_format,
                    state_dir=node.state_dir / "acks" / node.name,
                    rotation_interval=lay.rotation_interval, gzip_archives=lay.gzip_archives)
    await r.start()
    node.spawn(r.rotation_loop(), "log-rotation")
    return r


class LoggerNode(Node):
    role = Role.LOGGER

    async def setup(self) -> None:
        self.writer = await open_log_receiver(self)

    async def finish(self) -> None:
        await self.writer.close()

    def stats(self) -> dict[str, Any]:
        return {"writer": self.writer.stats()}

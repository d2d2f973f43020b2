"""The manager: hosts the hub (unless the layout puts it elsewhere), declares ``cluster_started``
once every node of the layout is up, and writes the logs itself when the layout has no logger."""

from __future__ import annotations

from typing import Any

import structlog

from cluster.layout import Role
from cluster.runtime import BARRIER_TOPIC, Node

STARTED_TOPIC = "starling/cluster/started"
from nodes.logger import open_log_receiver

log = structlog.get_logger(__name__)


class ManagerNode(Node):
    role = Role.MANAGER

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self._started = False
        self.writer = None

    @property
    def started(self) -> bool:
        """Latched: once every node was up together the cluster has started for good."""
        if not self._started:
            others = {n.name for n in self.layout.nodes} - {self.name}
            if others <= set(self.endpoint.peers()):
                self._started = True
                log.info("cluster_all_up", nodes=len(others) + 1)
                self.dispatch_cluster_started()     # before any node hears of the start
                # For observers (the nodes themselves ask on BARRIER_TOPIC, which cannot be missed).
                self.endpoint.publish(STARTED_TOPIC, "cluster_started", sorted(others | {self.name}))
        return self._started

    async def setup(self) -> None:
        self.endpoint.serve(BARRIER_TOPIC, lambda _name, _args, _meta: self.started)
        if not self.layout.loggers:
            self.writer = await open_log_receiver(self)

    async def _barrier_passed(self) -> bool:
        return self.started

    async def finish(self) -> None:
        if self.writer is not None:
            await self.writer.close()

    def stats(self) -> dict[str, Any]:
        return {"writer": self.writer.stats()} if self.writer is not None else {}

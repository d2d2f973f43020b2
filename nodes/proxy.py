"""A proxy: a node for partitioned state; users' scripts give it work through ``proxy_pool``."""

from __future__ import annotations

from typing import Any

from cluster.layout import Role
from cluster.runtime import Node
from cluster.store import StoreServer


class ProxyNode(Node):
    role = Role.PROXY
    store: StoreServer | None = None

    # The partitioned store (cluster/store, docs/store.md): this proxy's share of the keys.
    # Started before the barrier so the other proxies can hand it keys as soon as it is up;
    # on a graceful stop its keys go to their new owners before the node leaves the bus.
    async def setup(self) -> None:
        self.store = StoreServer(self.endpoint, self.name, [n.name for n in self.layout.proxies])
        self.store.start()

    async def teardown(self) -> None:
        if self.store is not None:
            await self.store.leave()
            await self.store.close()

    def stats(self) -> dict[str, Any]:
        return {"store": self.store.stats()} if self.store is not None else {}

"""Starling's message bus: Zeek-style pub/sub, membership, request/reply and a reliable batch
channel over ZeroMQ, usable on its own.  It knows topics, messages and peers - nothing of
packets or cluster roles.  See docs/bus.md (how to use it) and docs/wire-format.md (bytes).
"""

from broker.endpoint import Endpoint, Event, Meta, Overloaded, RemoteError, RequestTimeout, Subscription
from broker.hub import Hub
from broker.membership import PeerEvent
from broker.reliable import Batch, BatchReceiver, BatchSender
from broker.wire import WireError

__all__ = [
    "Batch",
    "BatchReceiver",
    "BatchSender",
    "Endpoint",
    "Event",
    "Hub",
    "Meta",
    "Overloaded",
    "PeerEvent",
    "RemoteError",
    "RequestTimeout",
    "Subscription",
    "WireError",
]

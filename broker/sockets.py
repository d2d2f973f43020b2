"""Socket pairs for asyncio code that also wants the plain, non-awaiting API on hot paths.

The asyncio socket owns the ZeroMQ socket; the plain one is a non-owning shadow of the same
handle.  Closing the asyncio socket therefore both removes its fd watcher from the event loop
(a later socket may reuse the fd number) and closes the handle exactly once; a garbage-collected
shadow never closes a handle that may by then belong to another socket.
"""

from __future__ import annotations

import zmq
import zmq.asyncio


def async_socket(ctx: zmq.Context, kind: int) -> tuple[zmq.asyncio.Socket, zmq.Socket]:
    asock = zmq.asyncio.Socket(ctx, kind)
    return asock, zmq.Socket.shadow(asock.underlying)

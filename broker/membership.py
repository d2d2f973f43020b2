"""Peer up/down bookkeeping, sans-I/O: feed it observations and the time, get status events.

Two kinds of evidence are combined because each alone is blind somewhere:

* presence (a peer's inbox subscription appearing/disappearing at the hub) notices a dead
  process or a closed socket at once, but not a process that is alive yet hung (SIGSTOP);
* application heartbeats notice the hung process (no beat within ``timeout``), but only slowly.

A peer is identified by (name, instance).  A new instance under a known name means the old
process was restarted: the old instance is reported down (reason ``"restarted"``) before the new
one is reported up, and late messages from the old instance are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

UP, DOWN = "up", "down"


@dataclass(frozen=True, slots=True)
class PeerEvent:
    kind: str  # "up" or "down"
    name: str
    instance: str
    reason: str  # up: hello|heartbeat|presence; down: timeout|disconnected|left|restarted


@dataclass(slots=True)
class _Peer:
    instance: str
    alive: bool
    last_seen: float
    pid: int = 0
    retired: list[str] = field(default_factory=list)


class Membership:
    """Table of peers by name; every method returns the PeerEvents the observation caused."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._peers: dict[str, _Peer] = {}

    def peers(self) -> dict[str, str]:
        """Live peers: name -> instance."""
        return {n: p.instance for n, p in self._peers.items() if p.alive}

    def is_up(self, name: str) -> bool:
        p = self._peers.get(name)
        return bool(p and p.alive)

    def _see(self, name: str, instance: str, now: float, reason: str, revive: bool) -> list[PeerEvent]:
        p = self._peers.get(name)
        if p is None:
            self._peers[name] = _Peer(instance, True, now)
            return [PeerEvent(UP, name, instance, reason)]
        if p.instance != instance:
            if instance in p.retired:
                return []  # a late message from an instance already replaced
            out = []
            if p.alive:
                out.append(PeerEvent(DOWN, name, p.instance, "restarted"))
            p.retired = (p.retired + [p.instance])[-8:]
            p.instance, p.alive, p.last_seen = instance, True, now
            out.append(PeerEvent(UP, name, instance, reason))
            return out
        p.last_seen = now
        if not p.alive and revive:
            p.alive = True
            return [PeerEvent(UP, name, instance, reason)]
        return []

    def on_beat(self, name: str, instance: str, now: float, hello: bool = False) -> list[PeerEvent]:
        return self._see(name, instance, now, "hello" if hello else "heartbeat", revive=True)

    def on_presence(self, name: str, instance: str, up: bool, now: float) -> list[PeerEvent]:
        if up:
            # Presence alone never revives an instance we declared down: only beats prove life.
            return self._see(name, instance, now, "presence", revive=False)
        return self._gone(name, instance, "disconnected")

    def on_bye(self, name: str, instance: str) -> list[PeerEvent]:
        return self._gone(name, instance, "left")

    def _gone(self, name: str, instance: str, reason: str) -> list[PeerEvent]:
        p = self._peers.get(name)
        if p is None or p.instance != instance or not p.alive:
            return []
        p.alive = False
        return [PeerEvent(DOWN, name, instance, reason)]

    def tick(self, now: float) -> list[PeerEvent]:
        out = []
        for name, p in self._peers.items():
            if p.alive and now - p.last_seen > self.timeout:
                p.alive = False
                out.append(PeerEvent(DOWN, name, p.instance, "timeout"))
        return out

"""What the one-message-per-datagram analyzers (DHCP, NTP) share: the parse failure type and
Zeek's step from a parse result to protocol confirmation or violation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Malformed:
    """``parse_message`` could not read the datagram; ``reason`` becomes the violation text."""

    reason: str


def accept(analyzer, msg) -> bool:
    """A :class:`Malformed` ``msg`` is a protocol violation (False); anything else confirms the
    protocol, once per analyzer (its ``confirmed`` flag), and may be processed (True)."""
    if isinstance(msg, Malformed):
        analyzer.ctx.violation(msg.reason)
        return False
    if not analyzer.confirmed:
        analyzer.confirmed = True
        analyzer.ctx.confirm()
    return True

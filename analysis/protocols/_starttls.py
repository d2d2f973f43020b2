"""Handing a stream over to the SSL analyzer (STARTTLS and friends), written once.

An analyzer that learns that the rest of its connection is TLS (IRC ``670``, POP3 ``STLS``, SMTP
``220`` after ``STARTTLS``, FTP ``AUTH TLS``, RDP's enhanced security, XMPP ``<proceed/>``) raises
its script event, if any, and asks the engine to attach ``ssl``.  A context without ``hand_off``
(an older engine, a test recorder) simply gets no hand-off.
"""

from __future__ import annotations


def hand_to_ssl(ctx, pending: bytes = b"", is_orig: bool = True) -> bool:
    """Attach the SSL analyzer to the rest of the stream; ``pending`` bytes (side ``is_orig``)
    already belong to TLS.  False when the engine did not (or cannot) attach it."""
    hand_off = getattr(ctx, "hand_off", None)
    return bool(hand_off is not None and hand_off("ssl", pending, is_orig))


def start_tls(ctx, event: str) -> bool:
    """Raise ``event`` (e.g. ``smtp_starttls(c)``), then hand the stream to ssl."""
    ctx.event(event)
    return hand_to_ssl(ctx)

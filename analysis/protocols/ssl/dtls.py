"""DTLS (1.0/1.2) for ssl.log: the TLS parser with DTLS record and handshake framing.

One UDP datagram carries whole records (13-byte headers with epoch and sequence number);
handshake messages carry a 12-byte header with ``message_seq`` and a fragment offset/length, so
fragmented messages are reassembled (bounded: a few messages in flight, each at most
``max_handshake`` bytes).  A record with a non-zero epoch, or after the sender's
ChangeCipherSpec, is encrypted.  Events are those of :mod:`.parser`, so the SSL analyzer logic
applies unchanged (Zeek's DTLS analyzer writes ssl.log too).
"""

from __future__ import annotations

from analysis.protocols.ssl import consts as K
from analysis.protocols.ssl import parser as P

__all__ = ["DTLSParser", "DTLS_VERSIONS"]

DTLS_VERSIONS = frozenset({K.DTLSv10, K.DTLSv12, K.DTLSv13})
MAX_PENDING = 8          # fragmented handshake messages being reassembled per direction


class DTLSParser(P.TLSParser):
    __slots__ = ("_frags",)
    DTLS = True

    def __init__(self, max_handshake: int = P.MAX_HANDSHAKE) -> None:
        super().__init__(max_handshake)
        self._frags: dict[tuple[bool, int], tuple[int, int, dict[int, bytes]]] = {}

    def feed(self, is_orig: bool, data: bytes) -> list:
        """One datagram in, its events out (records never span datagrams)."""
        out: list = []
        if self.stopped or not data:
            return out
        d = 1 if is_orig else 0
        pos, n = 0, len(data)
        while n - pos >= 13 and not self.stopped:
            ctype = data[pos]
            version = (data[pos + 1] << 8) | data[pos + 2]
            epoch = (data[pos + 3] << 8) | data[pos + 4]
            length = (data[pos + 11] << 8) | data[pos + 12]
            if version not in DTLS_VERSIONS:
                return self._violate(out, f"Invalid version in DTLS connection. Packet reported version: {version}")
            if self.record_version is None:
                if not 20 <= ctype <= 30:
                    return self._violate(out, f"Invalid type in DTLS connection. Version: {version}, Type: {ctype}")
                self.record_version = version
            body = data[pos + 13:pos + 13 + length]
            pos += 13 + length
            if epoch != 0 or self.encrypted[d]:
                self.encrypted[d] = True
                out.append(P.Encrypted(is_orig, version, ctype, length))
                if not self.established and self.encrypted[0] and self.encrypted[1]:
                    self.established = True
                    out.append(P.ESTABLISHED)
                continue
            if ctype == K.HANDSHAKE:
                self._dtls_handshake(is_orig, version, body, out)
            else:
                self._plaintext(is_orig, version, ctype, body, out)
        return out

    def _dtls_handshake(self, is_orig: bool, rv: int, body: bytes, out: list) -> None:
        p, n = 0, len(body)
        while n - p >= 12 and not self.stopped:
            mtype = body[p]
            mlen = int.from_bytes(body[p + 1:p + 4], "big")
            mseq = (body[p + 4] << 8) | body[p + 5]
            off = int.from_bytes(body[p + 6:p + 9], "big")
            flen = int.from_bytes(body[p + 9:p + 12], "big")
            frag = body[p + 12:p + 12 + flen]
            p += 12 + flen
            if mlen > self.max_handshake:
                self._violate(out, f"handshake message too large ({mlen} bytes)")
                return
            if off == 0 and flen == mlen:
                msg = frag
            else:
                msg = self._reassemble(is_orig, mtype, mlen, mseq, off, frag, out)
                if msg is None:
                    continue
            try:
                self._message(is_orig, rv, mtype, msg, out)
            except (IndexError, ValueError) as e:
                self._violate(out, f"malformed handshake message type {mtype}: {e or 'truncated'}")
                return

    def _reassemble(self, is_orig, mtype, mlen, mseq, off, frag, out) -> bytes | None:
        key = (is_orig, mseq)
        entry = self._frags.get(key)
        if entry is None:
            if sum(1 for k in self._frags if k[0] == is_orig) >= MAX_PENDING:
                self._violate(out, "too many fragmented DTLS handshake messages")
                return None
            entry = self._frags[key] = (mtype, mlen, {})
        if off + len(frag) > mlen:
            return None
        parts = entry[2]
        parts[off] = bytes(frag)
        have, buf = 0, []
        for o in sorted(parts):
            if o > have:
                return None
            piece = parts[o]
            if o + len(piece) > have:
                buf.append(piece[have - o:])
                have = o + len(piece)
        if have < mlen:
            return None
        del self._frags[key]
        return b"".join(buf)

"""The packet decoder: frames in, :class:`~analysis.packet.Packet` objects out.

API (what the connection table codes against)::

    dec = Decoder(DecoderOptions(ignore_checksums=False), weirds)
    dec.decode_batch((link_type, [(ts, wire_len, data), ...]), emit)   # the hot loop
    dec.decode(link_type, ts, wire_len, data, emit)                   # one frame
    dec.stats   # frames, packets, fast_path, weirds, bad_checksum, fragments, reassembled, ...

``emit(packet)`` is called once per decoded packet; for a UDP tunnel (VXLAN, Geneve, GTPv1,
Teredo, AYIYA) the outer UDP packet comes first, then the inner one with ``encap`` filled in.
"""

from analysis.decode.decoder import Decoder
from analysis.decode.options import DecoderOptions

__all__ = ["Decoder", "DecoderOptions"]

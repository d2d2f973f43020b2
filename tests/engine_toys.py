"""Toy analyzers and frame helpers for the reassembly/DPD/fast-path tests (not a test module)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from analysis.config import AnalysisConfig
from analysis.engine import Engine
from analysis.pcapwriter import LINKTYPE_ETHERNET
from analysis.protocols.base import Analyzer, AnalyzerSpec
from analysis.sinks import ListLogSink
from decoder_frames import tcp4_frame, udp4_frame


class Recorder(Analyzer):
    """Records every call; confirms on the first data; a b"BAD" payload is a violation;
    b"STARTTLS\\r\\n" hands the rest of the stream to ``echo2``."""

    instances: list["Recorder"] = []

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.calls: list[tuple] = []
        self.stream = {True: bytearray(), False: bytearray()}
        Recorder.instances.append(self)

    def data(self, is_orig, payload, ts):
        assert type(payload) is bytes
        self.calls.append(("data", is_orig, payload))
        self.stream[is_orig] += payload
        if b"BAD" in payload:
            self.ctx.violation("bad")
            return
        self.ctx.confirm()
        i = payload.find(b"STARTTLS\r\n")
        if i >= 0:
            self.ctx.hand_off("echo2", payload[i + 10:], is_orig)

    def gap(self, is_orig, length, ts):
        self.calls.append(("gap", is_orig, length))

    def eof(self, is_orig, ts):
        self.calls.append(("eof", is_orig))

    def done(self, ts):
        self.calls.append(("done",))


class Recorder2(Recorder):
    pass


@dataclass
class ToyOptions:
    verbs: frozenset = field(default=frozenset({"GET"}), metadata={"zeek": "Toy::verbs"})
    limit: int = field(default=10, metadata={"zeek": "Toy::limit"})
    timeout: float = field(default=5.0, metadata={"zeek": "Toy::timeout"})
    on: bool = field(default=False, metadata={"zeek": "Toy::on"})


def specs(**over) -> dict[str, AnalyzerSpec]:
    echo = AnalyzerSpec(name="echo", factory=Recorder, transports=frozenset({"tcp", "udp"}),
                        ports=frozenset({(7, "tcp"), (7, "udp")}), options=ToyOptions,
                        zeek_scripts=("base/protocols/echo",), logs=("echo",))
    echo2 = AnalyzerSpec(name="echo2", factory=Recorder2, transports=frozenset({"tcp"}),
                         dpd_orig=(re.compile(rb"HELLO"),), dpd_resp=(re.compile(rb"WORLD"),))
    out = {"echo": echo, "echo2": echo2}
    out.update(over)
    return out


def run(frames, cfg=None, analyzer_specs=None, events=None):
    Recorder.instances.clear()
    sink = ListLogSink()
    eng = Engine(cfg or AnalysisConfig(uid_seed=1, strict_analyzers=True), sink, events,
                 analyzer_specs=specs() if analyzer_specs is None else analyzer_specs)
    eng.process_batch((LINKTYPE_ETHERNET, [(ts, len(f), f) for ts, f in frames]))
    eng.finish()
    return eng, sink


class Conv:
    """Builds one TCP conversation's frames with absolute sequence numbers."""

    def __init__(self, sport=40000, dport=7, isn_o=1000, isn_r=5000, t=1_700_000_000.0):
        self.sport, self.dport = sport, dport
        self.o = isn_o          # next seq of the originator
        self.r = isn_r
        self.t = t
        self.frames: list[tuple[float, bytes]] = []

    def _add(self, frame):
        self.t += 0.01
        self.frames.append((self.t, frame))

    def handshake(self):
        self._add(tcp4_frame(sport=self.sport, dport=self.dport, payload=b"", flags=0x02, seq=self.o, ack=0))
        self._add(tcp4_frame("10.0.0.2", "10.0.0.1", self.dport, self.sport, b"", flags=0x12, seq=self.r,
                             ack=(self.o + 1) & 0xFFFFFFFF))
        self.o = (self.o + 1) & 0xFFFFFFFF
        self.r = (self.r + 1) & 0xFFFFFFFF
        self._add(tcp4_frame(sport=self.sport, dport=self.dport, payload=b"", flags=0x10, seq=self.o, ack=self.r))
        return self

    def seg(self, is_orig, data, off=0, flags=0x18, advance=True):
        """``data`` at offset ``off`` from the side's next seq (advance the side by len(data)+off)."""
        if is_orig:
            seq = (self.o + off) & 0xFFFFFFFF
            self._add(tcp4_frame(sport=self.sport, dport=self.dport, payload=data, flags=flags, seq=seq, ack=self.r))
            if advance:
                self.o = (self.o + off + len(data)) & 0xFFFFFFFF
        else:
            seq = (self.r + off) & 0xFFFFFFFF
            self._add(tcp4_frame("10.0.0.2", "10.0.0.1", self.dport, self.sport, data, flags=flags, seq=seq,
                                 ack=self.o))
            if advance:
                self.r = (self.r + off + len(data)) & 0xFFFFFFFF
        return self

    def ack(self, is_orig):
        """A pure ACK from ``is_orig`` acknowledging everything the peer's counter says."""
        return self.seg(is_orig, b"", flags=0x10)

    def fin(self, is_orig):
        self.seg(is_orig, b"", flags=0x11)
        if is_orig:
            self.o = (self.o + 1) & 0xFFFFFFFF
        else:
            self.r = (self.r + 1) & 0xFFFFFFFF
        return self


def udp_frames(n=3, dport=7):
    return [(1_700_000_000.0 + i, udp4_frame(sport=3333, dport=dport, payload=b"dgram%d" % i)) for i in range(n)]

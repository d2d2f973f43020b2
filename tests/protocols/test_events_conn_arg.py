"""Every protocol-analyzer event reaches the event sink with its connection ``c`` first, once, as
Zeek's ``event http_request(c: connection, ...)``: the real engine over a generated trace and a
few corpus traces, with an event sink that checks each analyzer event against the logs."""

from __future__ import annotations

from collections import defaultdict

import pytest

from analysis.config import AnalysisConfig
from analysis.engine import Engine
from analysis.pcapwriter import LINKTYPE_ETHERNET
from analysis.protocols import REGISTRY
from analysis.sinks import ListLogSink
from analysis.sources import open_source
from analysis.trafficgen import generate

from harness import corpus_trace

#: the engine's own events (analysis/conn, analysis/dpd.py): not analyzer events
ENGINE_EVENTS = {"new_connection", "partial_connection", "analyzer_confirmation_info",
                 "analyzer_violation_info", "content_gap"}

#: event name -> the analyzers that declare it (ssl and dtls share theirs)
DECLARED: dict[str, set[str]] = defaultdict(set)
for _name, _spec in REGISTRY.items():
    for _ev in _spec.events:
        DECLARED[_ev].add(_name)
#: analyzers that run another one's parser inside their own (SMB pipes carry DCE/RPC), whose
#: service is then the carrier's
CARRIES = {"smb": {"dce_rpc"}}


class ConnCheckingSink:
    """An EventSink that records, for each analyzer event, what its first argument says about
    the connection at the moment the event is raised."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple, tuple]] = []

    def event(self, name: str, args: tuple) -> None:
        if name in ENGINE_EVENTS or name.startswith("connection_"):
            return
        c = args[0] if args else None
        ident = tuple(getattr(c, a, None) for a in ("uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto"))
        self.seen.append((name, args, ident))


def _run(batches, config: AnalysisConfig) -> tuple[ConnCheckingSink, ListLogSink]:
    events, logs = ConnCheckingSink(), ListLogSink()
    eng = Engine(config, logs, events)
    for b in batches:
        eng.process_batch(b)
    eng.finish()
    return events, logs


def _check(events: ConnCheckingSink, logs: ListLogSink, expect: set[str]) -> None:
    conns = {r.uid: r for r in logs.records.get("conn", [])}
    names = {name for name, _, _ in events.seen}
    assert expect <= names, f"the trace should raise {sorted(expect - names)}"
    views: dict[str, object] = {}
    for name, args, (uid, orig_h, orig_p, resp_h, resp_p, proto) in events.seen:
        assert name in DECLARED, f"{name}: no analyzer declares it (AnalyzerSpec.events)"
        assert uid in conns, f"{name}: first argument {args[:1]!r} is not a connection of conn.log"
        row = conns[uid]
        assert (row.orig_h, row.orig_p, row.resp_h, row.resp_p, row.proto) == (orig_h, orig_p, resp_h, resp_p, proto), \
            f"{name}: c is not the flow of uid {uid}"
        c = args[0]
        assert not any(a is c or type(a) is type(c) for a in args[1:]), f"{name}: the connection is passed twice"
        assert views.setdefault(uid, c) is c, f"{name}: another connection object for uid {uid}"
        if row.service:         # an analyzer may raise events before it confirms (or without ever)
            owners = DECLARED[name] | {outer for outer, inner in CARRIES.items() if inner & DECLARED[name]}
            assert set(row.service.split(",")) & owners, f"{name} on {uid}, whose service is {row.service}"


def _corpus(rel: str) -> list:
    path = corpus_trace(rel)
    if path is None:
        pytest.skip(f"corpus trace {rel} not available (STARLING_CONFORMANCE)")
    src = open_source(path)
    try:
        return list(src.batches())
    finally:
        src.close()


def test_generated_trace_events_carry_their_connection():
    pkts = generate(1500, seed=11)
    batches = [(LINKTYPE_ETHERNET, [(ts, len(f), f) for ts, f in pkts[i:i + 256]]) for i in range(0, len(pkts), 256)]
    events, logs = _run(batches, AnalysisConfig(uid_seed=1))
    _check(events, logs, {"http_request", "http_reply", "http_header", "http_message_done", "dns_message",
                          "dns_request", "dns_A_reply", "dns_end", "ssl_client_hello", "ssl_server_hello",
                          "ssh_client_version", "ssh_server_version", "ssh_capabilities"})
    # the connection is that of the request/version the event reports, not just any flow
    http = {(r.uid, r.method, r.uri) for r in logs.records["http"]}
    reqs = [(a[0].uid, a[1], a[2]) for n, a, _ in events.seen if n == "http_request"]
    assert reqs and all(r in http for r in reqs)
    ssh = {(r.uid, r.client) for r in logs.records["ssh"]}
    assert all((a[0].uid, a[1]) in ssh for n, a, _ in events.seen if n == "ssh_client_version")
    dns = {(r.uid, r.query) for r in logs.records["dns"]}
    assert all((a[0].uid, a[2].lower()) in dns for n, a, _ in events.seen if n == "dns_request")


@pytest.mark.parametrize("rel,expect", [
    ("ftp/ipv6-multiline-reply.pcap", {"ftp_request", "ftp_reply"}),
    ("smtp.pcap", {"smtp_request", "smtp_reply"}),
    ("tls/pop3-starttls.pcap", {"pop3_request", "pop3_reply", "pop3_starttls", "ssl_client_hello"}),
    ("tls/irc-starttls.pcap", {"irc_starttls", "ssl_client_hello"}),
    ("tls/xmpp-dialback-starttls.pcap", {"xmpp_starttls", "ssl_client_hello"}),
    ("tls/certificate-request-failed.pcap", {"ssl_certificate_request", "ssl_alert"}),
    ("ssh/sshguess.pcap", {"ssh_auth_attempted", "ssh_auth_failed", "ssh_auth_result"}),
    ("dhcp/dhcp.pcap", {"dhcp_message"}),
    ("sip/invalid-content-length.pcap", {"sip_request", "sip_header", "sip_all_headers"}),
    ("smb/smb2readwrite.pcap", {"smb2_message"}),
    ("dce-rpc/dce_rpc_netlogon.pcapng", {"dce_rpc_bind", "dce_rpc_request", "dce_rpc_response"}),
    ("modbus/modbus-and-non-modbus-p502.pcap", {"modbus_message"}),
    ("websocket/broker-websocket.pcap", {"http_connection_upgrade", "websocket_established", "websocket_frame",
                                          "websocket_close"}),
    ("rdp/rdp-no-cookie-mstshash.pcap", {"rdp_begin_encryption", "ssl_client_hello", "ssl_established"}),
    ("snmp/snmp-oid-subidentifier-too-long.pcap", {"snmp_get_request"}),
    ("smb/fragment-state-exhaustion.pcap", {"smb1_message", "dce_rpc_message"}),     # DCE/RPC in an SMB pipe
    ("tunnels/gre-sample.pcap", {"ntp_message"}),                                   # inside GRE tunnels
    ("irc-dcc-state-growth.pcapng", {"irc_dcc_message"}),
])
def test_corpus_trace_events_carry_their_connection(rel, expect):
    events, logs = _run(_corpus(rel), AnalysisConfig(uid_seed=1, ignore_checksums=True))
    assert events.seen, f"{rel}: no analyzer event at all"
    _check(events, logs, expect)

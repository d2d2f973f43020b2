"""Example cluster script: find hosts that send more than a threshold, cluster-wide.

    starling run trace.pcap --workers 4 --script examples/big_talkers.py   # (CLI wiring pending)
    python -m cluster.node --role worker --name worker-1 --layout L.toml --script examples/big_talkers.py

Workers see only their share of the traffic, so each one forwards the bytes of every finished
connection to the proxy that owns the originator address (``publish_hrw``: the same host always
lands on the same proxy, in every worker process).  The proxy keeps the running total and writes
one row to its own log stream, ``big_talkers.log``, when a host crosses the threshold.  The
logger needs no copy of this file: the stream's columns travel with every batch.
"""

from analysis.logs.schema import Addr, Count, LogRecord, String, Time, log_stream
from cluster import api as cluster

THRESHOLD = 5_000  # IP bytes sent by one host (tiny, so the 30 s sample trace shows a few)


@log_stream("big_talkers")
class BigTalker(LogRecord, kw_only=True):
    ts: Time
    host: Addr
    bytes: Count
    seen_by: String


totals: dict[str, int] = {}
reported: set[str] = set()


@cluster.on("connection_state_remove")          # engine event, raised on the worker
def conn_done(c):
    sent = c.orig_ip_bytes or 0
    if sent:
        cluster.publish_hrw(cluster.proxy_pool(), c.orig_h, "talker_bytes", c.ts, c.orig_h, sent)


@cluster.on("talker_bytes")                       # published by the workers, handled on a proxy
def add_bytes(ts, host, sent):
    total = totals[host] = totals.get(host, 0) + sent
    if total >= THRESHOLD and host not in reported:
        reported.add(host)
        cluster.log_write("big_talkers", BigTalker(ts=ts, host=host, bytes=total,
                                                   seen_by=cluster.current().name))


@cluster.node_down
def forget(name, node_id):
    # A proxy that went away takes its totals with it; keys move to the live proxies (HRW).
    pass

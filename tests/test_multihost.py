"""A cluster over three "hosts": Linux network namespaces joined by a bridge, documentation
addresses (192.0.2.0/24) that exist only inside them.  The manager and the logger share one
namespace, each worker has its own; every node is a real ``python -m cluster.node`` process run
with ``ip netns exec``.  Both workers read the sample trace and keep their shares, and the
logger's files hold the rows `starling analyze` writes for the same trace.

Skipped unless we may create namespaces (root, iproute2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analysis.engine import analyze_file
from analysis.sources import open_source
from cluster.layout import Layout
from tests.cluster_procs import ProcCluster
from tests.netns import NetnsUnavailable, Star
from tests.test_cluster_run import assert_same_logs, sample_trace

pytestmark = pytest.mark.timeout(90)

HOSTS = {"mgr": "192.0.2.1", "w1": "192.0.2.2", "w2": "192.0.2.3"}


@pytest.fixture
def star():
    net = Star(HOSTS)
    try:
        net.create()
    except (NetnsUnavailable, FileNotFoundError) as e:
        pytest.skip(f"cannot create network namespaces: {e}")
    try:
        yield net
    finally:
        net.remove()


class NetnsCluster(ProcCluster):
    """Each node started inside the namespace of its host."""

    def __init__(self, *a, namespaces: dict[str, str], **kw) -> None:
        super().__init__(*a, **kw)
        self.namespaces = namespaces          # host address -> namespace

    def start(self, name: str) -> subprocess.Popen:
        spec = self.layout.node(name)
        cmd = ["ip", "netns", "exec", self.namespaces[spec.host], sys.executable, "-m", "cluster.node",
               "--role", spec.role.value, "--name", name, "--layout", str(self.layout_file)]
        with open(self.workdir / f"{name}.stderr", "ab") as err:
            p = subprocess.Popen(cmd, env=self.env, stdout=err, stderr=err, stdin=subprocess.DEVNULL)
        self.procs[name] = p
        return p


def layout_text(trace: Path, tmp_path: Path) -> str:
    m, w1, w2 = HOSTS["mgr"], HOSTS["w1"], HOSTS["w2"]
    return f'''
[cluster]
log_dir = "{tmp_path / 'logs'}"
state_dir = "{tmp_path / 'state'}"
hub_xsub_port = 27760
hub_xpub_port = 27761

[nodes.manager]
role = "manager"
host = "{m}"
port = 27762

[nodes.logger-1]
role = "logger"
host = "{m}"
port = 27763

[nodes.worker-1]
role = "worker"
host = "{w1}"
trace = "{trace}"

[nodes.worker-2]
role = "worker"
host = "{w2}"
trace = "{trace}"
'''


def test_three_hosts_same_rows_as_standalone(tmp_path, star):
    trace = sample_trace()
    layout = Layout.loads(layout_text(trace, tmp_path), source=tmp_path / "cluster.toml")
    assert {n.host for n in layout.workers} == {HOSTS["w1"], HOSTS["w2"]}
    c = NetnsCluster(layout, tmp_path / "run",
                     namespaces={a: star.ns(label) for label, a in HOSTS.items()})
    try:
        c.start_all()
        codes = c.wait_workers(60)
        codes.update(c.stop_all())
    finally:
        c.kill_all()
    assert all(v == 0 for v in codes.values()), (codes, {n: c.stderr(n)[-800:] for n in codes})

    # Each worker did a share of the packets, and no packet was read twice.
    total = sum(len(b[1]) for b in open_source(trace).batches())
    shares = {n.name: c.final_stats(n.name)["packets_read"] for n in layout.workers}
    assert all(shares.values()) and sum(shares.values()) == total, shares

    sa = tmp_path / "standalone"
    analyze_file(trace, sa)
    counts = assert_same_logs(sa, layout.log_dir)
    assert sum(counts.values()) > 0

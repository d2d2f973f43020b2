"""Suite-wide policy for tests that run real processes and real sockets.

Those tests start whole clusters (manager, loggers, proxies, workers), kill nodes with -9,
SIGSTOP peers and wait on heartbeats: what they check is exact (rows, notices, keys, exit
codes), but *when* things happen depends on how busy the machine is.  On a loaded 2-core CI
machine a scheduling hiccup can push one step past a deadline.  Such a test gets two more tries
(pytest-rerunfailures); every retry is printed in the summary (``R`` / ``RERUN``), so a flaky
test stays visible and a real bug, which fails every try, still fails the run.  Tests of pure
logic (decoders, analyzers, writers, conformance) are deterministic and get no retry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Test modules (paths under tests/) whose tests run real processes or depend on wall-clock timing.
REAL_PROCESS_MODULES = frozenset({
    "broker/test_bus_cli.py", "broker/test_bus_membership.py", "broker/test_bus_pubsub.py",
    "broker/test_bus_reliable.py",
    "frameworks/test_detections.py", "frameworks/test_known.py", "frameworks/test_notice.py",
    "frameworks/test_scan.py", "frameworks/test_store.py", "frameworks/test_store_cluster.py",
    "frameworks/test_sumstats.py",
    "test_cli.py", "test_cluster_logging.py", "test_cluster_run.py", "test_deploy.py",
    "test_live.py", "test_multihost.py", "test_node_runtime.py", "test_pools.py",
    "test_supervisor.py",
})
RETRIES = 2

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return
    for item in items:
        try:
            rel = item.path.relative_to(_HERE).as_posix()
        except ValueError:
            continue
        if rel in REAL_PROCESS_MODULES and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=RETRIES, reruns_delay=1))

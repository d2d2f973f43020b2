"""Layout files: both forms, the shipped examples, and a clear error for every kind of bad file."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from cluster.layout import STOP_ORDER, Layout, LayoutError, Role, parse_interval

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "cluster.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


FULL = """\
    [cluster]
    log_dir = "out/logs"
    log_format = "json"
    rotation_interval = "30 mins"
    gzip_archives = true
    state_dir = "/var/tmp/starling-state"
    local_nets = ["10.0.0.0/8", "192.168.1.7/24", "2001:db8::/32"]
    hub_xsub_port = 5000
    hub_xpub_port = 5001

    [nodes.manager]
    role = "manager"
    port = 5002

    [nodes.logger-1]
    role = "logger"
    port = 5003

    [nodes.proxy-1]
    role = "proxy"
    port = 5004

    [nodes.worker-a]
    role = "worker"
    interface = "eth0"
    workers = 2
    port = 5010

    [nodes.worker-b]
    role = "worker"
    host = "10.1.1.1"
    trace = "traces/x.pcap"
    """


def test_full_form(tmp_path):
    lay = Layout.load(write(tmp_path, FULL))
    assert [n.name for n in lay.nodes] == ["manager", "logger-1", "proxy-1", "worker-a-1",
                                            "worker-a-2", "worker-b"]
    assert [n.port for n in lay.workers] == [5010, 5011, 27760]   # worker-b: other host, base_port
    assert lay.log_dir == tmp_path / "out" / "logs"
    assert lay.log_format == "json" and lay.gzip_archives is True
    assert lay.rotation_interval == 1800.0
    assert lay.state_dir == Path("/var/tmp/starling-state")
    assert lay.local_nets == ("10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32")
    assert lay.node("worker-b").trace == tmp_path / "traces" / "x.pcap"
    assert lay.node("worker-b").host == "10.1.1.1"
    assert lay.node("worker-a-2").interface == "eth0"
    assert lay.hub == "manager" and lay.hub_node.role is Role.MANAGER
    ep = lay.endpoints("manager")
    assert ep.hub_bind == ("tcp://127.0.0.1:5000", "tcp://127.0.0.1:5001")
    assert lay.endpoints("worker-b").hub_bind is None
    assert lay.endpoints("worker-b").hub == ("tcp://127.0.0.1:5000", "tcp://127.0.0.1:5001")
    assert lay.endpoints("worker-b").loggers == ("tcp://127.0.0.1:5003",)
    assert lay.endpoints("worker-b").bind == "tcp://10.1.1.1:27760"


def test_auto_ports_fill_gaps_per_host(tmp_path):
    # worker-b has no port: base_port 5000 is taken by the hub on 127.0.0.1, but worker-b lives on
    # another host, so ports are counted per host.
    lay = Layout.load(write(tmp_path, FULL.replace("    [cluster]\n", "    [cluster]\n    base_port = 5000\n")))
    assert lay.node("worker-b").port == 5000
    lay = Layout.load(write(tmp_path, FULL))
    assert lay.node("worker-b").port == 27760


def test_short_form_expands_like_zeekctl(tmp_path):
    lay = Layout.load(write(tmp_path, """\
        manager = 1
        loggers = 2
        proxies = 1
        [cluster]
        base_port = 40000
        [[capture]]
        interface = "eth0"
        workers = 2
        [[capture]]
        trace = "a.pcap"
        """))
    assert [(n.name, n.role.value, n.port) for n in lay.nodes] == [
        ("manager", "manager", 40002), ("logger-1", "logger", 40003), ("logger-2", "logger", 40004),
        ("proxy-1", "proxy", 40005), ("worker-1", "worker", 40006), ("worker-2", "worker", 40007),
        ("worker-3", "worker", 40008)]
    assert (lay.hub_xsub_port, lay.hub_xpub_port) == (40000, 40001)
    assert lay.node("worker-3").trace == tmp_path / "a.pcap"
    assert lay.log_dir == tmp_path / "logs" and lay.log_format == "tsv"
    assert lay.rotation_interval == 0


def test_round_trip_of_expanded_form(tmp_path):
    lay = Layout.load(write(tmp_path, FULL))
    again = Layout.loads(lay.to_toml(), source=tmp_path / "elsewhere" / "x.toml")
    assert again == lay


@pytest.mark.parametrize("name", ["cluster.toml", "short.toml"])
def test_shipped_examples_load(name):
    lay = Layout.load(REPO / "examples" / name)
    assert len(lay.by_role("manager")) == 1
    assert lay.workers and lay.loggers
    assert Layout.loads(lay.to_toml(), source=REPO / "examples" / name) == lay


def test_examples_in_the_docs_load():
    import re
    text = (REPO / "docs" / "layout.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    full, short = (Layout.loads(b, source=REPO / "docs" / "x.toml") for b in blocks)
    assert [n.name for n in full.workers] == ["worker-1-1", "worker-1-2", "worker-1-3",
                                              "worker-1-4", "worker-2"]
    assert [n.name for n in short.workers] == [f"worker-{i}" for i in range(1, 6)]
    assert full.ignore_checksums and not full.bare and "base/protocols/dns" in full.zeek_loads
    assert [p.name for p in full.scripts_for("worker-1-2")] == ["count.py", "eth0-only.py"]
    assert [p.name for p in short.scripts_for("worker-4")] == ["monday.py"]


def test_stop_order_and_hub_last(tmp_path):
    lay = Layout.load(write(tmp_path, FULL))
    roles = [[n.role for n in g] for g in lay.stop_order()]
    assert roles == [[Role.WORKER] * 3, [Role.PROXY], [Role.LOGGER], [Role.MANAGER]]
    assert STOP_ORDER == (Role.WORKER, Role.PROXY, Role.LOGGER, Role.MANAGER)
    # A hub on a proxy is stopped after everything else, manager included.
    lay = Layout.load(write(tmp_path, FULL.replace("hub_xsub_port", 'hub = "proxy-1"\n    hub_xsub_port')))
    assert [n.name for n in lay.stop_order()[-1]] == ["proxy-1"]
    assert [n.name for n in lay.stop_order()[-2]] == ["manager"]
    assert lay.endpoints("proxy-1").hub_bind is not None


def test_local_layout(tmp_path):
    trace = tmp_path / "t.pcap"
    trace.write_bytes(b"")
    lay = Layout.local(trace, workers=3, log_dir=tmp_path / "logs", log_format="json")
    assert [n.name for n in lay.nodes] == ["manager", "logger-1", "proxy-1", "worker-1",
                                            "worker-2", "worker-3"]
    assert all(n.trace == trace for n in lay.workers)
    assert lay.state_dir == tmp_path / "logs" / ".state"
    ports = [lay.hub_xsub_port, lay.hub_xpub_port] + [n.port for n in lay.nodes]
    assert len(set(ports)) == len(ports) and all(p > 0 for p in ports)
    assert Layout.loads(lay.to_toml()) == lay
    assert Layout.local("lo", workers=1, base_port=30000).workers[0].interface == "lo"
    with pytest.raises(LayoutError, match="no such trace file or network interface"):
        Layout.local(tmp_path / "missing.pcap")


def test_source_problems(tmp_path):
    lay = Layout.load(write(tmp_path, FULL))
    problems = lay.source_problems()
    # worker-b is on another host: not checked here; eth0 may or may not exist on this machine.
    assert not any("worker-b" in p for p in problems)
    lay = Layout.load(write(tmp_path, FULL.replace('host = "10.1.1.1"\n', "")))
    assert any("worker-b" in p and "does not exist" in p for p in lay.source_problems())


def test_parse_interval():
    assert parse_interval(90) == 90.0
    assert parse_interval("1 hr") == 3600.0
    assert parse_interval("1.5mins") == 90.0
    assert parse_interval("2 days") == 172800.0
    for bad in ("soon", "-1", "1 fortnight", True, -5):
        with pytest.raises(ValueError):
            parse_interval(bad)


BAD_CASES = [
    # (file text, expected fragments of the one-line message)
    ('[nodes.manager]\nrole = "manager"\n[nodes.w]\nrole = "worker"\ninterfce = "eth0"\n',
     ["line 5", "nodes.w.interfce", "unknown key", "did you mean 'interface'"]),
    ('[cluster]\nlog_dirr = "x"\n[nodes.manager]\nrole = "manager"\n',
     ["line 2", "cluster.log_dirr", "did you mean 'log_dir'"]),
    ('[nodes.manager]\nrole = "manager"\nport = "27760"\n',
     ["line 3", "nodes.manager.port", "must be an integer, not the string '27760'"]),
    ('[nodes.manager]\nrole = "manager"\nport = 70000\n',
     ["line 3", "nodes.manager.port", "outside 1-65535"]),
    ('[nodes.manager]\nrole = "manager"\nport = 0\n', ["outside 1-65535"]),
    ('[nodes.manager]\nrole = "manager"\nport = 5000\n[nodes.l]\nrole = "logger"\nport = 5000\n',
     ["line 6", "nodes.l.port", "port 5000 on 127.0.0.1 is used twice (manager and l)"]),
    ('[cluster]\nhub_xsub_port = 5000\n[nodes.manager]\nrole = "manager"\nport = 5000\n',
     ["nodes.manager.port", "used twice"]),
    ('[nodes.manager]\nrole = "manager"\n[nodes.manager]\nrole = "logger"\n',
     ["TOML syntax error", "line 3"]),
    ('[nodes.w]\nrole = "worker"\nworkers = 2\ninterface = "eth0"\n[nodes.w-1]\nrole = "worker"\n'
     'interface = "eth0"\n[nodes.manager]\nrole = "manager"\n', ["duplicate node name 'w-1'"]),
    ('[nodes.w]\nrole = "worker"\ninterface = "eth0"\n', ["no manager"]),
    ('manager = 0\n[[capture]]\ninterface = "eth0"\n', ["line 1", "no manager"]),
    ('manager = 2\n[[capture]]\ninterface = "eth0"\n', ["line 1", "more than one manager"]),
    ('[nodes.m1]\nrole = "manager"\n[nodes.m2]\nrole = "manager"\n',
     ["line 3", "nodes.m2", "more than one manager (m1, m2)"]),
    ('[nodes.manager]\nrole = "manager"\n[nodes.w]\nrole = "worker"\n',
     ["line 3", "nodes.w", "a worker needs interface"]),
    ('[nodes.manager]\nrole = "manager"\n[nodes.w]\nrole = "worker"\ninterface = "eth0"\n'
     'trace = "x.pcap"\n', ["either 'interface' or 'trace', not both"]),
    ('[nodes.manager]\nrole = "manager"\ninterface = "eth0"\n',
     ["line 3", "only workers take 'interface'"]),
    ('[nodes.manager]\nrole = "manger"\n', ["line 2", "unknown role 'manger'", "did you mean 'manager'"]),
    ('[nodes.manager]\nrole = "boss"\n', ["unknown role 'boss'", "manager, logger, proxy or worker"]),
    ('[nodes.manager]\nhost = "x"\n', ["line 1", "missing key 'role'"]),
    ('[cluster]\nbase_port = 65535\n[nodes.manager]\nrole = "manager"\n',
     ["leaves no free port"]),
    ('[cluster]\nlog_format = "xml"\n[nodes.manager]\nrole = "manager"\n',
     ["line 2", "unknown log format 'xml'"]),
    ('[cluster]\nrotation_interval = "sometimes"\n[nodes.manager]\nrole = "manager"\n',
     ["cluster.rotation_interval", "bad interval"]),
    ('[cluster]\nlocal_nets = ["10.0.0.0/33"]\n[nodes.manager]\nrole = "manager"\n',
     ["line 2", "'10.0.0.0/33' is not a subnet"]),
    ('[cluster]\ngzip_archives = "yes"\n[nodes.manager]\nrole = "manager"\n',
     ["cluster.gzip_archives", "must be true or false"]),
    ('[cluster]\nhub = "nobody"\n[nodes.manager]\nrole = "manager"\n',
     ["cluster.hub", "hub node 'nobody' is not in the layout"]),
    ('manager = 1\n[nodes.manager]\nrole = "manager"\n', ["not both"]),
    ('manager = 1\n', ["no workers"]),
    ('loggers = 1\n[[capture]]\ninterface = "eth0"\nworkers = 0\n',
     ["line 4", "capture[1].workers", "at least 1"]),
    ('loggers = 1\n[[capture]]\ninterface = "eth0"\n[[capture]]\nintreface = "eth1"\n',
     ["line 5", "capture[2].intreface", "did you mean 'interface'"]),
    ('[cluster]\nlog_dir = "x"\n', ["no nodes"]),
    ('[nodes.manager\nrole = "manager"\n', ["TOML syntax error", "line 1"]),
    ('[nodes."bad name"]\nrole = "manager"\n', ["bad node name 'bad name'"]),
    ('[nodes.manager]\nrole = "manager"\n[nodes.l]\nrole = "logger"\nworkers = 2\n',
     ["only workers take 'workers'"]),
    ('colour = 1\n', ["line 1", "colour", "unknown key"]),
    ('[cluster]\nignore_checksum = true\n[nodes.manager]\nrole = "manager"\n',
     ["line 2", "cluster.ignore_checksum", "did you mean 'ignore_checksums'"]),
    ('[cluster]\nbare = "yes"\n[nodes.manager]\nrole = "manager"\n',
     ["line 2", "cluster.bare", "must be true or false"]),
    ('[cluster]\nloads = "base/protocols/dns"\n[nodes.manager]\nrole = "manager"\n',
     ["line 2", "cluster.loads", "must be an array"]),
    ('[cluster]\nloads = ["base/protocols/dns", "a b"]\n[nodes.manager]\nrole = "manager"\n',
     ["line 2", "cluster.loads", "entry 2 ('a b') must be one name without blanks"]),
    ('[cluster]\nredefs = [3]\n[nodes.manager]\nrole = "manager"\n',
     ["line 2", "cluster.redefs", "entry 1 must be a non-empty string", "not 3 (int)"]),
    ('[cluster]\nredefs = ["a\\nb"]\n[nodes.manager]\nrole = "manager"\n',
     ["cluster.redefs", "must be one line"]),
    ('[cluster]\nscripts = [""]\n[nodes.manager]\nrole = "manager"\n',
     ["line 2", "cluster.scripts", "entry 1 must be a non-empty string"]),
    ('[nodes.manager]\nrole = "manager"\nscripts = "x.py"\n',
     ["line 3", "nodes.manager.scripts", "must be an array"]),
    ('loggers = 1\n[[capture]]\ninterface = "eth0"\nscripts = [1]\n',
     ["line 4", "capture[1].scripts", "entry 1 must be a non-empty string"]),
]


@pytest.mark.parametrize("text,fragments", BAD_CASES, ids=range(len(BAD_CASES)))
def test_bad_layouts_name_file_key_and_problem(tmp_path, text, fragments):
    path = write(tmp_path, text, "bad.toml")
    with pytest.raises(LayoutError) as info:
        Layout.load(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_unreadable_files(tmp_path):
    with pytest.raises(LayoutError, match="no such layout file"):
        Layout.load(tmp_path / "nope.toml")
    with pytest.raises(LayoutError, match="is a directory"):
        Layout.load(tmp_path)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LayoutError, match="not UTF-8"):
        Layout.load(binary)
    locked = write(tmp_path, FULL, "locked.toml")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):   # root reads anything
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(LayoutError, match="cannot read layout file"):
            Layout.load(locked)
    finally:
        locked.chmod(0o644)


ANALYSIS = """\
    [cluster]
    scripts = ["scripts/common.py"]
    ignore_checksums = true
    loads = ["base/protocols/dns", "policy/protocols/conn/mac-logging"]
    redefs = ['redef FTP::logged_commands += { "USER", "PASS" };', "redef dns_max_queries=3;"]
    bare = true

    [nodes.manager]
    role = "manager"
    scripts = ["scripts/manager.py", "scripts/common.py"]

    [nodes.w]
    role = "worker"
    trace = "t.pcap"
    workers = 2
    scripts = ["/abs/worker.py"]
"""


def test_scripts_and_analysis_options(tmp_path):
    lay = Layout.load(write(tmp_path, ANALYSIS))
    assert lay.scripts == (tmp_path / "scripts" / "common.py",)
    assert lay.ignore_checksums and lay.bare
    assert lay.zeek_loads == ("base/protocols/dns", "policy/protocols/conn/mac-logging")
    assert lay.zeek_redefs[0] == 'redef FTP::logged_commands += { "USER", "PASS" };'
    # cluster-wide first, then the node's own, each once; every process of a multi-worker has them
    assert lay.scripts_for("manager") == (tmp_path / "scripts" / "common.py", tmp_path / "scripts" / "manager.py")
    assert lay.scripts_for("w-2") == (tmp_path / "scripts" / "common.py", Path("/abs/worker.py"))
    assert Layout.loads(lay.to_toml(), source=tmp_path / "again.toml") == lay   # quotes survive
    problems = lay.source_problems()
    assert f"every node: script {tmp_path / 'scripts' / 'common.py'} does not exist" in problems
    assert "w-1, w-2: script /abs/worker.py does not exist" in problems
    # defaults: nothing loaded, checksums checked, the full default configuration
    plain = Layout.load(write(tmp_path, FULL, "plain.toml"))
    assert (plain.scripts, plain.ignore_checksums, plain.zeek_loads, plain.zeek_redefs, plain.bare) == \
        ((), False, (), (), False)


def test_local_layout_carries_run_options(tmp_path):
    trace = tmp_path / "t.pcap"
    trace.write_bytes(b"")
    script = tmp_path / "s.py"
    lay = Layout.local(trace, workers=2, log_dir=tmp_path / "o", scripts=[script], ignore_checksums=True,
                       loads=["base/protocols/dns"], redefs=["redef dns_max_queries=3;"], bare=True)
    again = Layout.loads(lay.to_toml())
    assert again.scripts == (script,) and again.ignore_checksums and again.bare
    assert again.zeek_loads == ("base/protocols/dns",) and again.zeek_redefs == ("redef dns_max_queries=3;",)

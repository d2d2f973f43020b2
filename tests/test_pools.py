"""Pools: HRW is stable across processes and moves few keys when membership changes."""

from __future__ import annotations

import json
import subprocess
import sys

from cluster.pools import Pool, hrw_pick, key_bytes
from cluster.supervisor import child_env

NODES = [f"proxy-{i}" for i in range(1, 6)]
KEYS = [f"10.0.{i // 256}.{i % 256}" for i in range(2000)] + list(range(300)) + [b"\x00raw", ("a", 1)]


def picks(members, keys=KEYS):
    return [hrw_pick(k, members) for k in keys]


def test_stable_across_processes_with_different_hash_seeds():
    code = ("import json, sys; sys.path[:0] = [%r]; from tests.test_pools import picks, NODES;"
            "print(json.dumps(picks(NODES)))") % (str(__import__('pathlib').Path(__file__).parent.parent),)
    outs = []
    for seed in ("1", "2"):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env=child_env({"PYTHONHASHSEED": seed}))
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(r.stdout))
    assert outs[0] == outs[1] == picks(NODES)


def test_spread_is_roughly_even():
    counts = {n: 0 for n in NODES}
    for p in picks(NODES):
        counts[p] += 1
    expected = len(KEYS) / len(NODES)
    assert all(0.75 * expected < c < 1.25 * expected for c in counts.values()), counts


def test_removing_a_node_moves_only_its_keys():
    before = picks(NODES)
    after = picks([n for n in NODES if n != "proxy-3"])
    for b, a in zip(before, after):
        if b != "proxy-3":
            assert a == b
        else:
            assert a != "proxy-3"
    moved = sum(b != a for b, a in zip(before, after))
    assert 0 < moved < 0.3 * len(KEYS)


def test_adding_a_node_moves_about_one_nth():
    before = picks(NODES)
    after = picks(NODES + ["proxy-6"])
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert all(a == "proxy-6" for _, a in moved)   # keys only ever move to the new node
    assert 0.08 * len(KEYS) < len(moved) < 0.26 * len(KEYS)


def test_order_of_members_does_not_matter():
    assert picks(NODES) == picks(list(reversed(NODES)))


def test_pool_follows_up_and_down():
    p = Pool("proxy", NODES, alive=NODES)
    owner = p.hrw("10.1.2.3")
    p.down(owner)
    assert p.hrw("10.1.2.3") not in (owner, None)
    p.up(owner)
    assert p.hrw("10.1.2.3") == owner
    p.up("not-a-member")
    assert "not-a-member" not in p.alive
    for n in NODES:
        p.down(n)
    assert p.hrw("x") is None and p.rr() is None


def test_round_robin_cycles_live_members_per_key():
    p = Pool("worker", ["w1", "w2", "w3"], alive=["w1", "w2", "w3"])
    assert [p.rr("a") for _ in range(6)] == ["w1", "w2", "w3", "w1", "w2", "w3"]
    assert p.rr("b") == "w1"                       # each key has its own sequence
    p.down("w2")
    assert {p.rr("a") for _ in range(4)} == {"w1", "w3"}


def test_key_bytes_distinguishes_types():
    assert key_bytes("1") != key_bytes(1) != key_bytes(b"1")

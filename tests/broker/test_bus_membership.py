"""Peer up/down: the sans-I/O table, then real peer processes (SIGSTOP, kill -9, restart)."""

import asyncio
import inspect
import os
import signal
import time

import pytest

from broker.endpoint import Endpoint
from broker.membership import Membership, PeerEvent

pytestmark = pytest.mark.timeout(60)  # a hang fails fast, with stacks, instead of at 120 s


def test_table_rules():
    m = Membership(timeout=2.0)
    assert m.on_presence("w1", "a" * 16, True, 0.0) == [PeerEvent("up", "w1", "a" * 16, "presence")]
    assert m.on_beat("w1", "a" * 16, 1.0) == []
    assert m.tick(2.9) == []
    assert m.tick(3.1) == [PeerEvent("down", "w1", "a" * 16, "timeout")]
    assert m.on_presence("w1", "a" * 16, True, 3.2) == []  # presence alone does not revive
    assert m.on_beat("w1", "a" * 16, 3.3) == [PeerEvent("up", "w1", "a" * 16, "heartbeat")]
    # restart: the old instance goes down first, late traffic from it is ignored
    assert m.on_beat("w1", "b" * 16, 4.0, hello=True) == [
        PeerEvent("down", "w1", "a" * 16, "restarted"),
        PeerEvent("up", "w1", "b" * 16, "hello"),
    ]
    assert m.on_beat("w1", "a" * 16, 4.1) == []
    assert m.on_presence("w1", "a" * 16, False, 4.2) == []
    assert m.peers() == {"w1": "b" * 16}
    assert m.on_bye("w1", "b" * 16) == [PeerEvent("down", "w1", "b" * 16, "left")]
    assert m.on_presence("w1", "b" * 16, False, 5.0) == []  # already down: reported once


def test_default_timeout_within_three_seconds():
    sig = inspect.signature(Endpoint.__init__).parameters
    assert sig["peer_timeout"].default <= 3.0
    assert sig["heartbeat_interval"].default < sig["peer_timeout"].default


async def wait_event(events, pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in events:
            if pred(e):
                return e
        await asyncio.sleep(0.01)
    raise AssertionError(f"no matching peer event in {timeout}s: {events}")


def peer_args(hub, name):
    return ("--hub-in", hub.in_addr, "--hub-out", hub.out_addr, "--name", name, "--interval", "0.2", "--timeout", "1.0")


async def test_sigstop_detected_then_sigcont_and_kill(hub, procs):
    async with Endpoint("obs", hub.addresses, heartbeat_interval=0.2, peer_timeout=1.0) as obs:
        events = []
        obs.on_peer(events.append)
        p, info = procs.start("bus_peer.py", *peer_args(hub, "w1"))
        await obs.wait_for_peers(["w1"], 10)
        assert obs.peers()["w1"] == info["instance"]
        # a request proves the peer's inbox and service are reachable
        assert (await obs.request("svc/w1", "ping", 1))[:2] == ["w1", info["instance"]]

        os.kill(p.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        e = await wait_event(events, lambda e: e.kind == "down" and e.name == "w1", 5)
        took = time.monotonic() - t0
        assert e.reason == "timeout" and e.instance == info["instance"]
        assert took <= 1.0 + 0.2 + 1.0, took  # timeout + one beat + slack for a loaded machine
        assert "w1" not in obs.peers()

        events.clear()
        os.kill(p.pid, signal.SIGCONT)
        e = await wait_event(events, lambda e: e.kind == "up", 5)
        assert e.name == "w1" and e.instance == info["instance"] and e.reason == "heartbeat"

        events.clear()
        p.kill()  # kill -9: the hub notices the closed connection -> presence gone
        t0 = time.monotonic()
        e = await wait_event(events, lambda e: e.kind == "down", 5)
        assert e.reason in ("disconnected", "timeout")
        assert time.monotonic() - t0 < 2.5       # the 1 s timeout at the latest, plus slack for CI


async def test_restart_is_new_instance_and_old_goes_down(hub, procs):
    async with Endpoint("obs", hub.addresses, heartbeat_interval=0.2, peer_timeout=3.0) as obs:
        events = []
        obs.on_peer(events.append)
        p1, i1 = procs.start("bus_peer.py", *peer_args(hub, "w1"))
        await obs.wait_for_peers(["w1"], 10)
        os.kill(p1.pid, signal.SIGSTOP)  # hung, not dead: only the restart can tell us
        events.clear()
        p2, i2 = procs.start("bus_peer.py", *peer_args(hub, "w1"))
        assert i2["instance"] != i1["instance"]
        up = await wait_event(events, lambda e: e.kind == "up" and e.instance == i2["instance"], 5)
        kinds = [(e.kind, e.instance, e.reason) for e in events]
        assert ("down", i1["instance"], "restarted") in kinds
        assert kinds.index(("down", i1["instance"], "restarted")) < events.index(up)
        assert obs.peers() == {"w1": i2["instance"]}
        # the restarted peer answers; the old one is gone for good even once it resumes
        assert (await obs.request("svc/w1", "ping"))[1] == i2["instance"]
        os.kill(p1.pid, signal.SIGCONT)
        await asyncio.sleep(0.6)
        assert obs.peers() == {"w1": i2["instance"]}


async def test_late_joiner_sees_existing_peers_both_ways(hub, procs):
    p, info = procs.start("bus_peer.py", *peer_args(hub, "early"))
    await asyncio.sleep(0.3)
    async with Endpoint("late", hub.addresses, heartbeat_interval=0.2, peer_timeout=1.0) as late:
        await late.wait_for_peers(["early"], 5)
        # and the early peer saw us: it only starts its own wait after we exist
        p2, _ = procs.start("bus_peer.py", *peer_args(hub, "third"), "--wait-for", "late")
        await late.wait_for_peers(["early", "third"], 5)
        assert (await late.request("svc/early", "ping"))[0] == "early"


async def test_clean_close_reports_left(hub):
    async with Endpoint("obs", hub.addresses, heartbeat_interval=0.2, peer_timeout=3.0) as obs:
        events = []
        obs.on_peer(events.append)
        async with Endpoint("w2", hub.addresses, heartbeat_interval=0.2) as w2:
            await obs.wait_for_peers(["w2"], 5)
            inst = w2.instance
        t0 = time.monotonic()
        await wait_event(events, lambda e: e.kind == "down" and e.reason in ("left", "disconnected"), 3)
        assert time.monotonic() - t0 < 2.5  # the bye or the closed connection, not the 3 s timeout
        await asyncio.sleep(0.5)
        # final: nothing revives it.  (On a badly overloaded machine a connection may flap
        # earlier, which is reported as down/up in between; the end state is what counts.)
        last = events[-1]
        assert (last.kind, last.name, last.instance) == ("down", "w2", inst), events
        assert last.reason in ("left", "disconnected")  # bye and socket close race: both true
        assert "w2" not in obs.peers()

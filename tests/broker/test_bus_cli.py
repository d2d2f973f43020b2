"""The runnable entry points: python -m broker.hub and python -m broker.demo."""

import asyncio
import json
import os
import signal
import subprocess
import sys

from broker.endpoint import Endpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {"PYTHONPATH": ROOT}


async def test_hub_process_forwards_and_stops_on_sigterm():
    p = subprocess.Popen(
        [sys.executable, "-m", "broker.hub", "--bind", "tcp://127.0.0.1:*"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=ENV,
    )
    try:
        info = json.loads(p.stdout.readline())
        addrs = (info["in"], info["out"])
        async with Endpoint("a", addrs) as a, Endpoint("b", addrs) as b:
            got = asyncio.get_running_loop().create_future()
            b.subscribe("x", lambda n, args, m: got.done() or got.set_result(args))
            await a.wait_subscribed("x")
            a.publish("x", "e", 42)
            assert await asyncio.wait_for(got, 5) == [42]
        p.send_signal(signal.SIGTERM)
        assert p.wait(5) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_hub_bad_address_is_a_clear_error():
    r = subprocess.run(
        [sys.executable, "-m", "broker.hub", "--bind", "tcp://256.1.1.1:1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=20,
    )
    assert r.returncode == 2
    assert "cannot bind" in r.stderr and "Traceback" not in r.stderr


def test_demo_runs_to_completion():
    r = subprocess.run(
        [sys.executable, "-m", "broker.demo", "--events", "200"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "received 201 events" in r.stdout and "result   OK" in r.stdout
    assert "peer up   worker-1" in r.stdout and "peer down worker-1" in r.stdout


def test_address_derivation():
    from broker.hub import derive_addresses

    assert derive_addresses("tcp://127.0.0.1:5555") == ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")
    assert derive_addresses("ipc:///tmp/s") == ("ipc:///tmp/s.in", "ipc:///tmp/s.out")
    assert derive_addresses(("a", "b")) == ("a", "b")


async def test_inproc_and_ipc_transports(tmp_path):
    from broker.hub import Hub

    for base in ("inproc://starling-test-hub", f"ipc://{tmp_path}/hub"):
        async with Hub(base) as hub:
            async with Endpoint("a", base) as a, Endpoint("b", base) as b:
                got = asyncio.get_running_loop().create_future()
                b.subscribe("t", lambda n, args, m: got.done() or got.set_result((n, args)))
                await a.wait_subscribed("t")
                a.publish("t", "e", base)
                assert await asyncio.wait_for(got, 5) == ("e", [base])
                assert hub.addresses[0].startswith(base.split(":")[0])

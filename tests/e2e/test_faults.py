"""Faults the gateway must ride out with real engines: an engine that hangs, and the
gateway itself restarted under load.

(An engine killed mid-load is in test_gateway.py, next to the tests that share its setup.)
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import urllib.error
import urllib.parse

import httpx
import pytest

from inframind.api.config import PipelineConfig
from inframind.api.pipeline import PolicySource
from inframind.localstack.processes import start_gateway, wait_for
from inframind.vocab import Depth, Topology
from support.dataplane import get_json, pool, until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

BUDGET_S = 40


async def _ask(client: httpx.AsyncClient, i: int) -> dict:
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "demo", "messages": [{"role": "user", "content": f"question {i}"}]},
        headers={"X-InfraMind-Budget": str(BUDGET_S)},
    )
    assert r.status_code == 200, r.text
    return r.json()["inframind"]


def _breaker(gw_url: str, endpoint: str) -> str:
    for p in get_json(f"{gw_url}/v1/inframind/pools")["pools"]:
        if endpoint in p["endpoints"]:
            return p["endpoints"][endpoint]["breaker"]
    raise AssertionError(f"{endpoint} is in no pool")


def _turns_away(url: str) -> bool:
    """A new connection is refused, or closed with no answer: nothing was processed, so a
    client may retry it anywhere."""
    try:
        get_json(f"{url}/healthz", timeout=2)
    except urllib.error.URLError as err:
        return isinstance(err.reason, ConnectionRefusedError)
    except (http.client.RemoteDisconnected, ConnectionResetError):
        return True
    return False


async def test_a_hung_engine_is_timed_out_taken_out_and_probed_back_in(engines, gateway):
    hung, healthy = engines["beta"], engines["alpha"]
    gw = gateway(
        PipelineConfig(
            pipeline="demo",
            pools=[pool(hung), pool(healthy)],
            policy=PolicySource(heuristic="round-robin"),  # sends calls to both, blindly
            topologies=[Topology.SINGLE],
            depths=[Depth.CONCISE],
        )
    )
    # SIGSTOP freezes the API server with its socket open: connections are accepted by
    # the kernel and never answered, the way a wedged engine behaves.
    os.kill(hung.process.pid, signal.SIGSTOP)
    try:
        async with httpx.AsyncClient(base_url=gw.url, timeout=2 * BUDGET_S) as client:
            first = await asyncio.gather(*(_ask(client, i) for i in range(4)))
            # Calls sent to the hung engine gave up on it and were answered by the other
            # pool, inside their budget; none waited out the whole budget there.
            steps = [s for t in first for s in t["steps"]]
            assert all(s["endpoint"] == healthy.url for s in steps), steps
            assert any(s["attempts"] >= 2 for s in steps), steps
            assert all(t["met_budget"] for t in first), first
            assert _breaker(gw.url, hung.url) == "open"
            # While it stays hung, its breaker stays open and new calls do not try it.
            later = await asyncio.gather(*(_ask(client, i) for i in range(4, 8)))
            assert all(s["attempts"] == 1 for t in later for s in t["steps"]), later
            assert _breaker(gw.url, hung.url) == "open"
    finally:
        os.kill(hung.process.pid, signal.SIGCONT)
    # Once it answers a scrape again, the breaker lets calls try it, and a good one closes it.
    await until(lambda: _breaker(gw.url, hung.url) != "open", "the breaker to probe")
    async with httpx.AsyncClient(base_url=gw.url, timeout=2 * BUDGET_S) as client:
        back = [await _ask(client, i) for i in range(8, 12)]  # round-robin: two go to it
    assert any(s["endpoint"] == hung.url for t in back for s in t["steps"]), back
    assert _breaker(gw.url, hung.url) == "closed"


async def test_a_gateway_restarted_under_load_drains_its_calls_and_keeps_its_config(
    engines, gateway
):
    gw = gateway(
        PipelineConfig(
            pipeline="demo",
            pools=[pool(engines["alpha"])],
            topologies=[Topology.SINGLE],
            depths=[Depth.DEEPTHINK],  # long calls, so several are in flight at the stop
        )
    )
    port = urllib.parse.urlsplit(gw.url).port
    async with httpx.AsyncClient(base_url=gw.url, timeout=2 * BUDGET_S) as client:
        in_flight = [asyncio.create_task(_ask(client, i)) for i in range(4)]
        await until(lambda: sum(p["inflight"] for p in gw.pools()["pools"]) >= 2, "calls")
        # A rolling update: SIGTERM. The gateway stops taking connections and finishes
        # the calls it holds (Kubernetes gives it terminationGracePeriodSeconds).
        gw.process.send_signal(signal.SIGTERM)
        # New clients get a connection error (always safe to retry, on another replica)...
        await until(lambda: _turns_away(gw.url), "the gateway to stop taking connections")
        # ...while the calls it holds still get their answers.
        drained = await asyncio.gather(*in_flight)
    assert all(t["steps"][0]["completion_tokens"] > 0 for t in drained), drained
    assert await asyncio.to_thread(gw.process.wait, 30) == 0
    # The replacement reads the same pipeline config (a ConfigMap in a cluster) and serves.
    gw.process = start_gateway(gw.config_path, port, gw.log, gw.trace_log)
    wait_for(lambda: get_json(f"{gw.url}/readyz", timeout=1).get("ready"), 30, "gateway /readyz")
    async with httpx.AsyncClient(base_url=gw.url, timeout=2 * BUDGET_S) as client:
        again = await _ask(client, 100)
    assert again["pipeline"] == "demo" and again["steps"][0]["depth"] == "deepthink"

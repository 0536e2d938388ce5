"""Faults the gateway must ride out with real engines: an engine that hangs, the gateway
itself restarted under load, and ten times more calls than the engine can serve.

(An engine killed mid-load is in test_gateway.py, next to the tests that share its setup.)
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import os
import random
import signal
import urllib.error
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from inframind.api.config import PipelineConfig
from inframind.api.pipeline import PolicySource
from inframind.controller.loads import build_routing
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
        in_flight: list[asyncio.Task] = []

        async def two_calls_held() -> bool:
            # The random-weight model may draw its end of text after a few tokens, so a
            # wave of calls can be over before a poll sees it: send another wave then.
            if all(t.done() for t in in_flight) and len(in_flight) < 40:
                n = len(in_flight)
                in_flight.extend(asyncio.create_task(_ask(client, n + i)) for i in range(4))
            pools = (await asyncio.to_thread(gw.pools))["pools"]
            return sum(p["inflight"] for p in pools) >= 2

        await until(two_calls_held, "two calls in flight on the gateway")
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


@dataclass
class _Outcome:
    sheddable: bool
    status: int | None = None  # None: no HTTP answer at all (a lost call)
    code: str = ""
    message: str = ""
    retry_after: str | None = None
    trace: dict | None = None


def _overload_pipeline(engine) -> PipelineConfig:
    return PipelineConfig(
        pipeline="demo",
        pools=[pool(engine, max_num_seqs=2)],
        topologies=[Topology.SINGLE],
        depths=[Depth.CONCISE],
        routing=build_routing(  # the admission classes the operator's loop writes
            [{"load": {"source": "prometheus", "stale": False, "kvUsagePercent": 0}}]
        ),
    )


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def test_overload_keeps_tight_budgets_sheds_loose_ones_early_and_loses_nothing(
    engines, gateway
):
    """20 calls/s for 8 s at a 2-slot engine, a tenth of them tight (10 s, not sheddable),
    the rest loose (30 s, sheddable); about a third of the loose ones get shed. The bench
    (`--scenario overload`, in `make bench`) runs the longer 10x case and reports figures:
    there the tight class does *not* keep its SLO on 2 cores, so here it is held to 80 %
    (its runs so far: 16/16 at 12 calls/s, 20/20 at 20)."""
    gw = gateway(_overload_pipeline(engines["beta"]))
    routed_before = gw.pools()["pools"][0]["routed"]
    rss_before = peak_rss = _rss_mib(gw.process.pid)
    rng = random.Random(7)
    outcomes: list[_Outcome] = []

    async def one(client: httpx.AsyncClient, sheddable: bool) -> None:
        out = _Outcome(sheddable)
        outcomes.append(out)
        budget = 30 if sheddable else 10
        body = {
            "model": "demo",
            "messages": [{"role": "user", "content": "Name three prime numbers and why."}],
            "inframind": {"budget_s": budget, "sheddable": sheddable},
        }
        try:
            r = await client.post("/v1/chat/completions", json=body, timeout=budget + 30)
        except httpx.HTTPError as exc:
            out.message = repr(exc)
            return
        out.status, payload = r.status_code, r.json()
        out.retry_after = r.headers.get("Retry-After")
        if r.status_code == 200:
            out.trace = payload["inframind"]
        else:
            error = payload["error"]
            out.code, out.message, out.trace = (
                error["code"],
                error["message"],
                error.get("inframind"),
            )

    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(base_url=gw.url, limits=limits) as client:
        calls = []
        for _ in range(160):  # Poisson arrivals at 20/s: bounded in count and time
            calls.append(asyncio.create_task(one(client, sheddable=rng.random() > 0.1)))
            await asyncio.sleep(rng.expovariate(20.0))
            peak_rss = max(peak_rss, _rss_mib(gw.process.pid))
        while not all(c.done() for c in calls):
            peak_rss = max(peak_rss, _rss_mib(gw.process.pid))
            await asyncio.sleep(0.5)

    lost = [o for o in outcomes if o.status is None]
    assert not lost, lost  # every call got an answer: 200, or an error that says why
    assert {o.status for o in outcomes} <= {200, 429, 503}, outcomes
    shed = [o for o in outcomes if o.status == 429]
    loose = [o for o in outcomes if o.sheddable]
    # The overload was real: loose calls were shed, and some were still answered.
    assert len(shed) >= 10 and any(o.status == 200 for o in loose), outcomes
    # Only sheddable calls are shed, each refused at admission (code "shed", before any
    # engine call) with Retry-After and a reason.
    assert all(o.sheddable and o.code == "shed" and o.message for o in shed), shed
    assert all(o.retry_after and int(o.retry_after) >= 1 for o in shed), shed
    # Shed early, not left to time out: no loose call was given up on for lack of time.
    assert not [o for o in loose if o.status == 503 and "within" in o.message], loose
    # Tight calls go first (EDF priority) and are never shed: most keep their budget.
    tight = [o for o in outcomes if not o.sheddable]
    kept = [o for o in tight if o.status == 200 and o.trace["met_budget"]]
    assert len(kept) >= 0.8 * len(tight), tight
    # Failures of tight calls name their cause and carry their trace.
    assert all(o.message and o.trace for o in outcomes if o.status == 503), outcomes
    # Engine calls were made for admitted calls only: the pool's routed count grew by
    # exactly the attempts in their traces.
    attempts = sum(s["attempts"] for o in outcomes if o.trace for s in o.trace["steps"])
    assert gw.pools()["pools"][0]["routed"] - routed_before == attempts
    # Nothing queues without bound in the gateway.
    assert peak_rss - rss_before < 40, (rss_before, peak_rss)


async def test_a_burst_arriving_at_once_is_shed_past_the_class_threshold(engines, gateway):
    """Thirty loose calls sent together at a 2-slot engine; a 30 s budget is the 'standard'
    class, which allows 4 requests per batch slot: most must be shed, though none of the
    burst has reached the engine yet when the rest arrives (each admitted call counts as
    load before the next is looked at). Before that, all thirty were admitted. The exact
    count (2 x 4 + 1) is asserted in the unit test; here calls that finish during the
    burst on a slow machine may let a few more in."""
    gw = gateway(_overload_pipeline(engines["beta"]))
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "Name three prime numbers and why."}],
        "inframind": {"budget_s": 30, "sheddable": True},
    }
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=60) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body) for _ in range(30))
        )
    codes = collections.Counter(r.status_code for r in answers)
    assert set(codes) <= {200, 429} and codes[200] >= 1, codes
    assert codes[429] >= 15, codes  # 9 admitted when nothing finishes during the burst

"""Deadline rescue: a step still unanswered near its deadline races a second call elsewhere.

Two loopback engines: `first`, which the policy always picks (the best prior), and
`other`, where the rescue goes. A 3 s budget sends the rescue 1.5 s in (RESCUE_MIN_S
before the deadline); each engine is scripted to answer, fail or hang around that.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import closing

import pytest
from aiohttp import web

from inframind.api.config import PipelineConfig, PoolConfig
from inframind.orchestrator.runner import Runner
from inframind.orchestrator.wire import EngineClient
from inframind.policy.base import Limits
from inframind.policy.heuristics import SingleBest
from inframind.policy.plans import build_plan
from inframind.policy.types import Query
from inframind.telemetry.scrape import EngineScraper
from inframind.telemetry.snapshot import Endpoints, LiveView
from inframind.vocab import Depth, TaskFamily, Topology
from support.dataplane import ROLE, serve_handler, sse_answer

pytestmark = pytest.mark.unit

BUDGET_S = 3.0  # the rescue goes out at 1.5 s
USER = [{"role": "user", "content": "2+2?"}]


def _engine(answer: str | None, after_s: float, calls: list[str]):
    """An engine that accepts at once and, `after_s` later, answers `answer` (None: HTTP
    500 instead of an answer). A call whose client went away is noted, as vLLM aborts it."""

    async def chat(request: web.Request) -> web.StreamResponse:
        calls.append("called")
        if answer is None:
            await asyncio.sleep(after_s)
            return web.json_response({"error": {"message": "engine fell over"}}, status=500)
        resp = await sse_answer(request, ROLE, done=False)
        until = time.monotonic() + after_s
        while time.monotonic() < until:
            if request.transport is None or request.transport.is_closing():
                calls.append("client left")
                return resp
            await asyncio.sleep(0.02)
        chunk = {"choices": [{"delta": {"content": answer}, "finish_reason": "stop"}]}
        await resp.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
        return resp

    return chat


async def _race(
    first: tuple[str | None, float],
    other: tuple[str | None, float],
    cancel_after_s: float | None = None,
):
    """Run one single-step query, cancelled after `cancel_after_s` if given, as a client
    that goes away; (its outcome or error, the step's trace, each engine's calls)."""
    calls: dict[str, list[str]] = {"first": [], "other": []}
    servers, urls = [], {}
    for name, (answer, after_s) in (("first", first), ("other", other)):
        server, url = await serve_handler(_engine(answer, after_s, calls[name]))
        servers.append(server)
        urls[name] = url
    pools = [
        PoolConfig.model_validate(
            {
                "name": name,
                "model": "m",
                "servedModelName": "m",
                "endpoints": [urls[name]],
                "profile": {"accuracy": {"math": {"flash": quality}}},
            }
        )
        for name, quality in (("first", 0.9), ("other", 0.5))
    ]
    view = LiveView(EngineScraper(list(urls.values())), Endpoints())
    view.configure(PipelineConfig(pipeline="p", pools=pools))
    policy = SingleBest(Limits(topologies=(Topology.SINGLE,), depths=(Depth.FLASH,)))
    try:
        with closing(EngineClient()) as client:
            runner = Runner("p", client, view, policy)
            query = Query(1, TaskFamily.MATH, budget_s=BUDGET_S, arrival_s=time.time())
            run = asyncio.ensure_future(runner.run(query, USER, build_plan(Topology.SINGLE)))
            if cancel_after_s is not None:
                await asyncio.sleep(cancel_after_s)
                run.cancel()
            try:
                outcome = await run
            except (Exception, asyncio.CancelledError) as exc:  # the test looks at it
                await asyncio.sleep(0.2)
                return exc, None, calls
            await asyncio.sleep(0.2)  # the loser's engine notices its client went away
            return outcome, outcome.trace.steps[0], calls
    finally:
        for server in servers:
            await server.cleanup()


async def test_a_late_call_is_rescued_by_a_quicker_answer_elsewhere():
    outcome, step, calls = await _race(first=("slow", 10.0), other=("quick", 0.1))
    assert outcome.text == "quick" and outcome.trace.met_budget
    assert step.rescue == "answered" and step.pool == "other" and step.attempts == 2
    assert step.replaced["pool"] == "first"
    assert calls["first"] == ["called", "client left"]  # the first call was dropped, not left


async def test_a_first_call_that_answers_before_its_rescue_stands():
    outcome, step, calls = await _race(first=("first", 2.0), other=("late", 10.0))
    assert outcome.text == "first"
    assert step.rescue == "cancelled" and step.pool == "first" and step.replaced is None
    assert calls["other"] == ["called", "client left"]


async def test_a_failed_rescue_leaves_the_first_call_to_answer():
    outcome, step, _ = await _race(first=("first", 2.0), other=(None, 0.0))
    assert outcome.text == "first"
    assert step.rescue == "failed" and step.pool == "first"


async def test_a_call_answered_long_before_its_deadline_sends_no_rescue():
    outcome, step, calls = await _race(first=("first", 0.1), other=("other", 0.1))
    assert outcome.text == "first" and step.rescue is None
    assert calls["other"] == []


async def test_a_cancelled_query_cancels_both_racing_calls():
    """A client that goes away mid-race cancels the query: the rescue does not swallow
    that cancellation, and neither call is left running."""
    error, _, calls = await _race(first=("a", 10.0), other=("b", 10.0), cancel_after_s=2.0)
    assert isinstance(error, asyncio.CancelledError)
    assert calls == {"first": ["called", "client left"], "other": ["called", "client left"]}

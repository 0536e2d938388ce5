"""Pure parts of the data plane: task guess, answer combination, context fitting,
admission control, and the live view's pessimism about missing signals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import closing
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession, web

from inframind.api.config import EndpointRoute, PipelineConfig, PoolConfig, Routing
from inframind.api.pipeline import Budget, PolicySource
from inframind.gateway.app import Gateway, create_app
from inframind.orchestrator.runner import Outcome, QueryTrace, combine, fit_context, infer_task
from inframind.orchestrator.scheduler import admit
from inframind.orchestrator.wire import EngineClient
from inframind.policy.base import Limits
from inframind.policy.heuristics import BudgetGreedy
from inframind.policy.plans import build_plan
from inframind.policy.types import ClusterSnapshot, PoolLoad, PoolProfile, Query, StepContext
from inframind.settings import Settings
from inframind.telemetry.scrape import EngineScraper
from inframind.telemetry.snapshot import Endpoints, LiveView, profile_from_config
from inframind.vocab import TaskFamily, Topology
from support.dataplane import FOUR, ROLE, serve_app, serve_handler, sse_answer, until

pytestmark = pytest.mark.unit


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_task_is_guessed_from_the_user_turn():
    assert infer_task(_user("Write a Python function that sorts")) is TaskFamily.CODE
    assert infer_task(_user("Solve 3x + 4 = 10")) is TaskFamily.MATH
    assert infer_task(_user("Who painted the Night Watch?")) is TaskFamily.KNOWLEDGE


def test_parallel_answers_combine_to_the_majority():
    assert combine(["42", " 41 ", "42"]) == "42"
    assert combine(["a", "b", "c"]) == "a"


def test_context_keeps_each_answers_tail_within_the_limit():
    fitted = fit_context(["x" * 1000 + "ANSWER", "short"], max_chars=400)
    assert fitted[0].endswith("ANSWER") and len(fitted[0]) <= 204
    assert fitted[1] == "short"


def _profile(name: str) -> PoolProfile:
    return PoolProfile(name, "m", np.full((3, 3), 0.7), np.full((3, 3), 200.0), tpot_s=0.02)


def test_a_query_that_cannot_meet_its_budget_is_shed_with_a_retry_hint():
    busy = PoolLoad(waiting=300, running=32)
    snap = ClusterSnapshot(0.0, (_profile("a"),), (busy,))
    query = Query(1, TaskFamily.MATH, budget_s=2.0, arrival_s=0.0)
    verdict = admit(snap, query, sheddable=True, inflight=0, max_inflight=100)
    assert not verdict.admitted and verdict.retry_after_s >= 1 and "budget" in verdict.reason
    # The same query, marked not sheddable, is admitted and takes its chance.
    assert admit(snap, query, sheddable=False, inflight=0, max_inflight=100).admitted


def test_a_full_gateway_sheds_only_sheddable_queries():
    snap = ClusterSnapshot(0.0, (_profile("a"),), (PoolLoad(),))
    query = Query(1, TaskFamily.MATH, budget_s=30.0, arrival_s=0.0)
    assert not admit(snap, query, True, inflight=10, max_inflight=10).admitted
    assert admit(snap, query, False, inflight=10, max_inflight=10).admitted


def test_profiles_fill_missing_priors_and_respect_given_ones():
    pool = PoolConfig.model_validate(
        {
            "name": "p",
            "model": "m",
            "servedModelName": "m",
            "endpoints": ["http://127.0.0.1:1"],
            "profile": {"accuracy": {"math": {"concise": 0.9}}},
        }
    )
    prof = profile_from_config(pool)
    assert prof.prior(TaskFamily.MATH, "concise") == pytest.approx(0.9)
    assert prof.prior(TaskFamily.CODE, "flash") < prof.prior(TaskFamily.CODE, "deepthink")


def test_unscraped_pools_are_stale_and_a_broken_endpoint_leaves_routing():
    config = PipelineConfig(
        pipeline="p",
        pools=[
            PoolConfig(
                name="a", model="m", served_model_name="m", endpoints=["http://127.0.0.1:1"]
            ),
            PoolConfig(
                name="b", model="m", served_model_name="m", endpoints=["http://127.0.0.1:2"]
            ),
        ],
    )
    endpoints = Endpoints(open_for_s=60)
    view = LiveView(EngineScraper([]), endpoints)
    view.configure(config)
    snap = view.snapshot()
    assert all(load.stale for load in snap.loads)  # never scraped: not "idle"
    endpoints.failed("http://127.0.0.1:1")
    assert not view.snapshot().loads[0].available
    assert view.pick_endpoint(0) is None and view.pick_endpoint(1) == "http://127.0.0.1:2"
    endpoints.succeeded("http://127.0.0.1:1")
    assert view.snapshot().loads[0].available


def _pools_view(
    scraper: EngineScraper,
    names: tuple[str, ...],
    urls: list[str],
    endpoints: Endpoints | None = None,
) -> LiveView:
    """A live view of pipeline "p": one pool per name, on the engine at the same place."""
    view = LiveView(scraper, endpoints or Endpoints())
    view.configure(
        PipelineConfig(
            pipeline="p",
            pools=[
                PoolConfig(name=n, model="m", served_model_name="m", endpoints=[u])
                for n, u in zip(names, urls, strict=True)
            ],
        )
    )
    return view


def _one_pool_view(url: str, endpoints: Endpoints | None = None) -> LiveView:
    """A live view of pipeline "p" with one pool "a" on the engine at `url`."""
    return _pools_view(EngineScraper([url], interval_s=1.0, timeout_s=1.0), ("a",), [url],
                       endpoints)  # fmt: skip


async def _gateway_in_front_of(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], **config: Any
) -> tuple[web.AppRunner, Gateway, web.AppRunner, str]:
    """An engine served by `handler` as pool "a" of pipeline "p", and a gateway in front
    of it on loopback: (engine runner, gateway, gateway runner, gateway URL)."""
    engine, url = await serve_handler(handler)
    pool = PoolConfig(name="a", model="m", served_model_name="m", endpoints=[url])
    gateway = Gateway(Settings(), config=PipelineConfig(pipeline="p", pools=[pool], **config))
    server, base = await serve_app(create_app(gateway))
    return engine, gateway, server, base


async def _metrics_server(handler) -> tuple[web.AppRunner, str]:
    """A real HTTP server on loopback serving `handler` as /metrics; clean up its runner."""
    return await serve_handler(handler, "GET", "/metrics")


async def _idle_engine(chat) -> tuple[web.AppRunner, str]:
    """An engine's HTTP side: `chat` answers completions; its /metrics reads idle."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/metrics", metrics)
    return await serve_app(app)


def _slow_answer(delay_s: float):
    """A chat handler that starts its stream at once and answers "4" after `delay_s`."""

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = await sse_answer(request, ROLE, done=False)
        await asyncio.sleep(delay_s)
        await resp.write(f"data: {json.dumps(FOUR)}\n\ndata: [DONE]\n\n".encode())
        return resp

    return chat


async def test_an_engine_too_busy_to_answer_metrics_keeps_its_last_load():
    """A saturated CPU engine can take longer than the scrape timeout to serve /metrics: its
    last values stay (flagged stale), so it does not suddenly look less busy than a pool
    that answers."""
    hang = asyncio.Event()

    def metrics(waiting: int, running: int, kv: float) -> str:
        return (
            f'vllm:num_requests_waiting{{model_name="m"}} {waiting}\n'
            f'vllm:num_requests_running{{model_name="m"}} {running}\n'
            f'vllm:kv_cache_usage_perc{{model_name="m"}} {kv}\n'
        )

    async def busy(_: web.Request) -> web.Response:
        if hang.is_set():
            await asyncio.sleep(2)
        return web.Response(text=metrics(40, 8, 0.98))

    async def answering(_: web.Request) -> web.Response:
        return web.Response(text=metrics(0, 28, 0.5))

    served = [await _metrics_server(h) for h in (busy, answering)]
    runners, urls = [r for r, _ in served], [u for _, u in served]
    try:
        # Stale after 3 s without a good scrape: wide enough that the answering endpoint
        # stays fresh on a loaded CI machine (a 0.3 s horizon made it flaky).
        scraper = EngineScraper(urls, interval_s=1.0, timeout_s=0.2)
        async with ClientSession() as session:
            await scraper.scrape_once(session)
            hang.set()
            await asyncio.sleep(3.2)  # past the busy engine's staleness horizon
            await scraper.scrape_once(session)  # the busy engine times out
        view = _pools_view(scraper, ("busy", "answering"), urls, Endpoints(open_for_s=60))
        snap = view.snapshot()
        assert snap.loads[0].stale and not snap.loads[1].stale
        assert snap.loads[0].waiting == 40  # last known, not forgotten
        query = Query(1, TaskFamily.KNOWLEDGE, budget_s=60.0, arrival_s=snap.now)
        plan = build_plan(Topology.SINGLE)
        step = StepContext(query, plan, 0, 0, plan.waves[0][0], snap.now)
        assert BudgetGreedy().choose(snap, step).pool == 1
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_an_engine_without_a_kv_gauge_is_marked_stale_not_read_as_empty():
    """Missing is not zero: without its KV-cache gauge an engine's pressure is unknown,
    and its pool says so (stale, with the reason) rather than look 0 % full. The gauge's
    older name counts as the gauge."""

    def serving(text: str):
        async def handler(_: web.Request) -> web.Response:
            return web.Response(text=text)

        return handler

    counts = "vllm:num_requests_waiting 0\nvllm:num_requests_running 2\n"
    served = [
        await _metrics_server(serving(counts)),
        await _metrics_server(serving(counts + "vllm:gpu_cache_usage_perc 0.6\n")),
    ]
    runners, urls = [r for r, _ in served], [u for _, u in served]
    try:
        scraper = EngineScraper(urls, interval_s=1.0, timeout_s=1.0)
        async with ClientSession() as session:
            await scraper.scrape_once(session)
        loads = scraper.loads()
        assert loads[urls[0]].stale and loads[urls[0]].kv_usage is None
        assert "KV-cache pressure unknown" in loads[urls[0]].error
        assert not loads[urls[1]].stale and loads[urls[1]].kv_usage == 0.6
        view = _pools_view(scraper, ("no-kv", "old-name"), urls)
        snap = view.snapshot()
        assert snap.loads[0].stale and not snap.loads[1].stale
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_the_gateway_waits_for_an_engine_slow_to_serve_its_metrics():
    """An idle engine's API server beside a flooded one took over a second to serve /metrics.
    The gateway waits INFRAMIND_SCRAPE_TIMEOUT_SECONDS (2.5 s by default) for it, so it is
    read rather than flagged stale; a shorter setting gives up on it."""

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(1.2)
        return web.Response(
            text='vllm:num_requests_waiting{model_name="m"} 3\n'
            'vllm:num_requests_running{model_name="m"} 5\n'
        )

    runner, url = await _metrics_server(slow)
    try:
        async with ClientSession() as session:
            for settings, read in (
                (Settings(), True),
                (Settings(scrape_timeout_seconds=0.5), False),
            ):
                scraper = Gateway(settings).scraper
                scraper.set_endpoints([url])
                await scraper.scrape_once(session)
                assert (scraper.last_ok(url) is not None) is read, settings.scrape_timeout_seconds
    finally:
        await runner.cleanup()


def test_the_operators_routing_advice_counts_only_while_fresh():
    a, b = "http://127.0.0.1:1", "http://127.0.0.1:2"
    pool = PoolConfig(
        name="p",
        model="m",
        served_model_name="m",
        endpoints=[a, b],
        routes={a: EndpointRoute(weight=0.1, eligible=False, reason="KV cache full")},
    )
    view = LiveView(EngineScraper([]), Endpoints(open_for_s=60))
    view.configure(PipelineConfig(pipeline="p", pools=[pool], routing=Routing(stale=False)))
    view.endpoints.inflight[b] = 5  # busier by our own count, but eligible
    assert view.pick_endpoint(0) == b
    assert view.pick_endpoint(0, exclude=[b]) == a  # out of routing, not out of reach
    view.configure(PipelineConfig(pipeline="p", pools=[pool], routing=Routing(stale=True)))
    assert view.pick_endpoint(0) == a  # stale advice is ignored: least work wins


async def test_one_calm_scrape_of_a_flapping_engine_does_not_make_it_look_idle():
    """Under KV preemption vLLM's gauges flap between a long queue and zero; the endpoint's
    load is the busiest of its recent scrapes."""
    readings = iter([(40, 8, 0.98), (0, 0, 0.0)])

    async def flapping(_: web.Request) -> web.Response:
        waiting, running, kv = next(readings)
        return web.Response(
            text=f"vllm:num_requests_waiting {waiting}\nvllm:num_requests_running {running}\n"
            f"vllm:kv_cache_usage_perc {kv}\n"
        )

    runner, url = await _metrics_server(flapping)
    try:
        scraper = EngineScraper([url], interval_s=0.1, timeout_s=1.0)
        async with ClientSession() as session:
            await scraper.scrape_once(session)
            await scraper.scrape_once(session)  # the calm-looking one
        load = scraper.loads()[url]
        assert not load.stale
        assert (load.waiting, load.running, load.kv_usage) == (40, 8, 0.98)
    finally:
        await runner.cleanup()


async def test_an_opened_breaker_probes_back_in_only_after_the_engine_answers_a_scrape():
    alive = asyncio.Event()

    async def engine(_: web.Request) -> web.Response:
        if not alive.is_set():
            return web.Response(status=503, text="hung")
        return web.Response(text="vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n")

    runner, url = await _metrics_server(engine)
    try:
        scraper = EngineScraper([url], interval_s=1.0, timeout_s=1.0)
        endpoints = Endpoints(open_for_s=0.0)  # the open period itself is not what is tested
        view = LiveView(scraper, endpoints)
        view.configure(
            PipelineConfig(
                pipeline="p",
                pools=[PoolConfig(name="a", model="m", served_model_name="m", endpoints=[url])],
            )
        )
        endpoints.failed(url)  # a call to it timed out
        async with ClientSession() as session:
            await scraper.scrape_once(session)
            # Its open period is over, but nothing has heard from it since: no trial call.
            assert endpoints.state(url) == "open" and view.pick_endpoint(0) is None
            alive.set()
            await scraper.scrape_once(session)
        assert endpoints.state(url) == "probing" and view.pick_endpoint(0) == url
        endpoints.succeeded(url)  # the trial call worked
        assert endpoints.state(url) == "closed"
    finally:
        await runner.cleanup()


async def test_with_every_breaker_open_an_engine_that_answers_scrapes_is_still_called(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One 5xx from the only engine opened its breaker (nothing else was in flight). While
    the engine answers its scrapes, refusing every call for the open time would turn a
    blip into an outage: it stays in routing as a last resort. An engine unheard from
    since (down, hung) stays out, so calls fail fast; and where another endpoint is in
    routing, the open one is not used."""
    up = asyncio.Event()

    async def metrics(_: web.Request) -> web.Response:
        if not up.is_set():
            return web.Response(status=503, text="down")
        return web.Response(text="vllm:num_requests_waiting 0\nvllm:num_requests_running 1\n")

    served = [await _metrics_server(metrics) for _ in range(2)]
    runners, (only, spare) = [r for r, _ in served], [u for _, u in served]

    def view_of(*urls: str) -> tuple[LiveView, EngineScraper, Endpoints]:
        scraper = EngineScraper(list(urls), interval_s=1.0, timeout_s=1.0)
        endpoints = Endpoints(open_for_s=60.0)  # open for the whole test
        view = LiveView(scraper, endpoints)
        pools = [PoolConfig(name=f"p{i}", model="m", served_model_name="m", endpoints=[u])
                 for i, u in enumerate(urls)]  # fmt: skip
        view.configure(PipelineConfig(pipeline="p", pools=pools))
        return view, scraper, endpoints

    try:
        view, scraper, endpoints = view_of(only)
        endpoints.failed(only)
        async with ClientSession() as session:
            await scraper.scrape_once(session)  # no answer: down
            assert endpoints.state(only) == "open" and view.pick_endpoint(0) is None
            assert not view.snapshot().loads[0].available
            up.set()
            await scraper.scrape_once(session)  # it answers
        assert endpoints.state(only) == "open"  # the breaker itself has not changed
        assert view.pick_endpoint(0) == only and view.snapshot().loads[0].available
        assert view.routable() == {only}
        # Said once when it began, not on every snapshot and pick while it lasts.
        assert sum("last resort" in r.getMessage() for r in caplog.records) == 1
        assert view.pick_endpoint(0, exclude=[only]) is None  # a step tries it once

        view, scraper, endpoints = view_of(only, spare)
        endpoints.failed(only)
        async with ClientSession() as session:
            await scraper.scrape_once(session)
        assert view.pick_endpoint(0) is None and view.pick_endpoint(1) == spare
        assert not view.snapshot().loads[0].available
    finally:
        for runner in runners:
            await runner.cleanup()


def test_a_breaker_that_keeps_failing_stays_open_longer():
    endpoints = Endpoints(open_for_s=10.0, failures_to_open=1, heard_from=lambda _: None)
    url = "http://127.0.0.1:1"
    periods = []
    for _ in range(5):
        endpoints.failed(url)
        periods.append(endpoints._open_until[url] - endpoints._opened_at[url])
    assert periods == [10.0, 20.0, 40.0, 60.0, 60.0]


async def test_an_answer_that_breaks_off_mid_stream_is_retryable_not_a_crash():
    from inframind.orchestrator.engine import EngineUnavailable, chat

    async def dying_engine(request: web.Request) -> web.StreamResponse:
        delta = {"choices": [{"delta": {"content": "The answer is"}, "finish_reason": None}]}
        resp = await sse_answer(request, delta, done=False)
        request.transport.close()  # killed mid-answer: the chunked body never ends
        return resp

    runner, url = await serve_handler(dying_engine)
    try:
        with (
            closing(EngineClient()) as engines,
            pytest.raises(EngineUnavailable, match="broke off"),
        ):
            await chat(engines, url, {"model": "m", "messages": []}, timeout_s=10)
    finally:
        await runner.cleanup()


async def test_a_connection_the_engine_dropped_before_answering_is_retried_once():
    from inframind.orchestrator.engine import chat

    calls = 0

    async def flaky_engine(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            request.transport.close()  # as an idle keep-alive connection closed under us
            return web.Response()
        return await sse_answer(request, FOUR)

    runner, url = await serve_handler(flaky_engine)
    try:
        with closing(EngineClient()) as engines:
            result = await chat(engines, url, {"model": "m", "messages": []}, timeout_s=10)
        assert result.text == "4" and calls == 2
    finally:
        await runner.cleanup()


async def test_time_to_first_token_counts_a_token_that_has_no_text_yet():
    """vLLM's role chunk comes with the first token; text may follow much later (a token
    that decodes to half a character). The engine took the call up at the first chunk."""
    from inframind.orchestrator.engine import chat

    async def slow_text_engine(request: web.Request) -> web.StreamResponse:
        resp = await sse_answer(request, ROLE, done=False)
        await asyncio.sleep(0.5)
        await resp.write(f"data: {json.dumps(FOUR)}\n\ndata: [DONE]\n\n".encode())
        return resp

    runner, url = await serve_handler(slow_text_engine)
    try:
        with closing(EngineClient()) as engines:
            result = await chat(engines, url, {"model": "m", "messages": []}, timeout_s=10)
    finally:
        await runner.cleanup()
    assert result.text == "4"
    assert result.ttft_s is not None and result.ttft_s < result.latency_s - 0.4


async def test_a_connection_reset_while_sending_the_request_is_retried_once():
    """aiohttp's "Can not write request body" / "Connection reset" is an OS error while
    the request goes out: the engine never had it whole, so it is safe to send again."""
    from inframind.orchestrator.engine import chat

    calls = 0

    async def resetting_engine(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            request.transport.abort()  # RST while the client still writes its body
            return web.Response()
        await request.read()
        return await sse_answer(request, FOUR)

    runner, url = await serve_handler(resetting_engine, max_body=16 * 2**20)
    long_prompt = [{"role": "user", "content": "x" * 8_000_000}]  # still sending at the RST
    try:
        with closing(EngineClient()) as engines:
            result = await chat(engines, url, {"model": "m", "messages": long_prompt}, 10)
        assert result.text == "4" and calls == 2
    finally:
        await runner.cleanup()


async def test_a_whole_answer_is_asked_for_in_one_piece_after_its_first_token():
    from inframind.orchestrator.engine import chat, chat_stream

    bodies: list[dict] = []

    async def engine(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.json())
        return await sse_answer(request, FOUR)

    runner, url = await serve_handler(engine)
    body = {"model": "m", "messages": [], "max_tokens": 300}
    try:
        with closing(EngineClient()) as engines:
            await chat(engines, url, body, timeout_s=10)
            async for _ in chat_stream(engines, url, body, timeout_s=10):
                pass
    finally:
        await runner.cleanup()
    collected, relayed = bodies
    # Collected calls: one SSE event for the first token, then the rest at once.
    assert collected["stream"] is True and collected["stream_interval"] == 300
    # Calls relayed to a streaming client keep vLLM's token-by-token pace.
    assert "stream_interval" not in relayed


def test_a_calls_queueing_is_not_charged_to_the_pools_decoding_speed():
    from inframind.telemetry.snapshot import _Speed

    speed = _Speed()
    for _ in range(10):  # warm: 0.1 s to first token, 100 tokens at 10 ms
        speed.observe(1.1, 100, 0.1)
    # One call queued 5 s before its first token, then decoded at the same pace.
    speed.observe(6.0, 100, 5.0)
    assert speed.tpot_s == pytest.approx(0.01, rel=0.01)
    assert speed.ttft_s > 0.9  # the queueing shows where it belongs


def test_observed_speeds_reach_the_policies_at_once_then_at_most_once_a_second(monkeypatch):
    """A new profile tuple makes every policy rebuild its per-profile tables, which cost
    more than a decision: per completed call that was most of the gateway's own time."""
    from inframind.telemetry import snapshot as snapshot_module

    clock = [1000.0]
    monkeypatch.setattr(snapshot_module.time, "monotonic", lambda: clock[0])
    view = LiveView(EngineScraper([]), Endpoints())
    view.configure(
        PipelineConfig(
            pipeline="p",
            pools=[PoolConfig(name="a", model="m", served_model_name="m", endpoints=["http://x"])],
        )
    )
    prior = view.snapshot().profiles
    view.observe(0, 2.0, 100, 0.5)  # the first samples are published at once
    assert view.snapshot().profiles[0].ttft_s == 0.5 and view.snapshot().profiles is not prior
    for _ in range(10):
        view.observe(0, 2.0, 100, 0.5)
    published = view.snapshot().profiles
    for _ in range(50):  # a burst within the second: one tuple, the policies' caches stay warm
        view.observe(0, 9.0, 100, 5.0)
    assert view.snapshot().profiles is published and published[0].ttft_s == 0.5
    clock[0] += snapshot_module.PROFILE_REFRESH_S
    view.observe(0, 9.0, 100, 5.0)  # the next call after a second publishes them all
    assert view.snapshot().profiles[0].ttft_s > 4.0
    # The operator rewrites the config as its routing advice changes: what was learned
    # holds through the reload, rather than the priors until the next call.
    measured = view.snapshot().profiles[0].ttft_s
    view.configure(
        PipelineConfig(
            pipeline="p",
            pools=[PoolConfig(name="a", model="m", served_model_name="m", endpoints=["http://x"])],
        )
    )
    assert view.snapshot().profiles[0].ttft_s == measured


async def test_a_call_that_outruns_its_budget_on_a_live_engine_leaves_it_in_routing():
    """Slow for one budget is not broken: the step fails (or goes elsewhere), but the
    breaker stays closed, or a burst of tight budgets would empty the routing table."""
    import time

    from inframind.orchestrator.runner import PipelineFailed, Runner
    from inframind.policy.types import Query

    async def slow_engine(request: web.Request) -> web.StreamResponse:
        resp = await sse_answer(request, ROLE, done=False)  # accepted, as vLLM does at once
        await asyncio.sleep(4)  # still generating when the 2 s step timeout fires
        return resp

    runner, url = await serve_handler(slow_engine)
    try:
        endpoints = Endpoints(open_for_s=60.0, failures_to_open=1)
        view = _one_pool_view(url, endpoints)
        with closing(EngineClient()) as engines:
            pipeline = Runner("p", engines, view, BudgetGreedy())
            query = Query(id=1, task=TaskFamily.MATH, budget_s=0.5, arrival_s=time.time())
            plan = build_plan(Topology.SINGLE)
            with pytest.raises(PipelineFailed, match="not finished within"):
                await pipeline.run(query, [{"role": "user", "content": "2+2?"}], plan)
        assert endpoints.state(url) == "closed"
    finally:
        await runner.cleanup()


async def test_a_query_that_fails_fast_is_traced_as_a_missed_budget():
    """Its client got no answer, however quickly: the trace (which feeds retraining) and the
    SLO must not count it as met."""
    import time

    from inframind.orchestrator.runner import PipelineFailed, Runner
    from inframind.policy.types import Query

    async def broken_engine(request: web.Request) -> web.Response:
        return web.json_response({"error": "engine is shutting down"}, status=500)

    runner, url = await serve_handler(broken_engine)
    try:
        view = _one_pool_view(url)
        with closing(EngineClient()) as engines:
            pipeline = Runner("p", engines, view, BudgetGreedy())
            query = Query(id=1, task=TaskFamily.MATH, budget_s=30.0, arrival_s=time.time())
            with pytest.raises(PipelineFailed) as failed:
                await pipeline.run(
                    query, [{"role": "user", "content": "2+2?"}], build_plan(Topology.SINGLE)
                )
        trace = failed.value.trace
        assert trace["latency_s"] < query.budget_s  # failed well within the budget
        assert trace["met_budget"] is False
        assert trace["steps"] and all(st["error"] for st in trace["steps"])
    finally:
        await runner.cleanup()


def _answered(met: bool) -> Outcome:
    trace = QueryTrace("q", "p", "math", "single/1x1", "single", "budget-greedy", None, 10.0)
    trace.latency_s, trace.met_budget = (5.0, True) if met else (12.0, False)
    return Outcome("4", 10, 1, trace)


async def test_budget_greedy_turns_cautious_while_a_pipeline_misses_its_slo_target():
    """spec.budget.sloTarget steers budget-greedy's safety from the gateway's own outcomes:
    misses make it plan with less of the budget, kept through config reloads, and it
    returns to the default as answers come back within budget, never past it."""
    pool = PoolConfig(name="p", model="m", served_model_name="m", endpoints=["http://127.0.0.1:1"])
    config = PipelineConfig(pipeline="p", pools=[pool], budget=Budget(slo_target=0.99))
    gateway = Gateway(Settings(), config=config)
    app = web.Application()
    await gateway.start(app)

    def safety() -> float | None:
        return gateway.metrics.registry.get_sample_value(
            "inframind_budget_safety", {"pipeline": "p"}
        )

    try:
        assert gateway.runner.policy.safety == safety() == BudgetGreedy.safety
        for _ in range(3):
            gateway._account(_answered(met=False))
        cautious = gateway.runner.policy.safety
        assert cautious < 0.5 and safety() == cautious
        gateway.apply_config(config.model_copy(update={"max_agents": 4}))  # a reload
        assert gateway.runner.policy.safety == cautious
        for _ in range(100):
            gateway._account(_answered(met=True))
        assert cautious < gateway.runner.policy.safety < BudgetGreedy.safety
        for _ in range(2000):
            gateway._account(_answered(met=True))
        assert gateway.runner.policy.safety == BudgetGreedy.safety
        # Another policy does not plan with a safety: the gauge goes with budget-greedy.
        gateway.apply_config(config.model_copy(update={"policy": PolicySource(heuristic="moa")}))
        gateway._account(_answered(met=False))
        assert safety() is None
    finally:
        await gateway.stop(app)


async def test_a_query_the_gateway_could_not_answer_in_time_counts_as_a_slo_miss():
    """To its client a 503 is a budget that passed without an answer: budget-greedy's
    SLO tuner must count it, or a plan too bold for its engines never turns cautious."""
    import httpx

    async def slow_engine(request: web.Request) -> web.StreamResponse:
        resp = await sse_answer(request, ROLE, done=False)
        await asyncio.sleep(3)  # still generating when the budget runs out
        return resp

    engine, gateway, server, base = await _gateway_in_front_of(
        slow_engine, budget=Budget(slo_target=0.99)
    )
    try:
        body = {
            "model": "p",
            "messages": [{"role": "user", "content": "2+2?"}],
            "inframind": {"budget_s": 1.0, "sheddable": False},
        }
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.post(f"{base}/v1/chat/completions", json=body)
        assert resp.status_code == 503, resp.text
        assert "not finished within" in resp.json()["error"]["message"]
        assert resp.json()["error"]["inframind"]["met_budget"] is False
        sample = gateway.metrics.registry.get_sample_value
        # ...and so does the SLO the burn-rate alerts read, or an outage never fires one.
        assert sample("inframind_slo_total", {"pipeline": "p", "result": "missed"}) == 1
        assert gateway.runner.policy.safety < BudgetGreedy.safety
        assert (
            gateway.metrics.registry.get_sample_value("inframind_budget_safety", {"pipeline": "p"})
            == gateway.runner.policy.safety
        )
    finally:
        await server.cleanup()
        await engine.cleanup()


async def test_a_pipeline_with_no_pool_answers_503_with_a_reason_and_is_not_ready():
    """The operator writes an empty pool list when the pipeline selects no usable pool."""
    import httpx

    gateway = Gateway(Settings(), config=PipelineConfig(pipeline="p", pools=[]))
    server, base = await serve_app(create_app(gateway))
    body = {"model": "p", "messages": [{"role": "user", "content": "2+2?"}]}
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.post(f"{base}/v1/chat/completions", json=body)
            ready = await client.get(f"{base}/readyz")
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "no_pools"
        assert "no model pool" in resp.json()["error"]["message"]
        assert ready.status_code == 503
    finally:
        await server.cleanup()


async def test_one_engine_error_does_not_refuse_the_next_calls_while_the_engine_is_up():
    """The gateway's only engine answers one call with a 500. That call fails (nowhere
    else to go), and the breaker opens; the next call, once the engine has answered a
    scrape, is answered instead of refused for the breaker's open time."""
    import httpx

    calls = 0

    async def engine(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.json_response({"error": {"message": "internal"}}, status=500)
        return await sse_answer(request, FOUR)

    engine_runner, url = await _idle_engine(engine)
    pool = PoolConfig(name="only", model="m", served_model_name="m", endpoints=[url])
    gateway = Gateway(Settings(), config=PipelineConfig(pipeline="p", pools=[pool]))
    server, base = await serve_app(create_app(gateway))
    body = {"model": "p", "messages": [{"role": "user", "content": "2+2?"}]}
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            first = await client.post(f"{base}/v1/chat/completions", json=body)
            assert first.status_code == 503 and "HTTP 500" in first.json()["error"]["message"]
            assert gateway.endpoints.state(url) == "open"
            await asyncio.sleep(1.5)  # the gateway scrapes each engine every second
            second = await client.post(f"{base}/v1/chat/completions", json=body)
            view = (await client.get(f"{base}/v1/inframind/pools")).json()
        assert second.status_code == 200, second.text
        assert second.json()["choices"][0]["message"]["content"] == "4"
        assert gateway.endpoints.state(url) == "closed"  # the answer closed the breaker
        assert view["pools"][0]["endpoints"][url]["in_routing"] is True
    finally:
        await server.cleanup()
        await engine_runner.cleanup()


@pytest.mark.parametrize("topology", [Topology.SINGLE, Topology.ENSEMBLE])
async def test_a_burst_is_admitted_up_to_its_class_threshold_and_no_further(topology):
    """Thirty loose calls at once at a 2-slot engine; a 30 s budget is the 'standard'
    class, shed once the pools hold more than 4 requests per batch slot. Each admitted
    call counts as load before the next is looked at: one-step plans exactly 2 x 4 plus
    the one that finds the pools at 4.0 (not above it). An ensemble's proposers count
    as soon as it is admitted, though they start as tasks: before, all thirty ensembles
    were admitted and 27 waited out their budget for batch slots (503)."""
    import collections

    import httpx

    from inframind.controller.loads import build_routing

    # None of the burst finishes while the rest arrives.
    engine, url = await _idle_engine(_slow_answer(1.5))
    config = PipelineConfig(
        pipeline="p",
        pools=[PoolConfig(name="b", model="m", served_model_name="m", endpoints=[url],
                          max_num_seqs=2)],
        topologies=[topology],
        # What the operator's loop writes for a calm, freshly observed cluster.
        routing=build_routing([{"load": {"source": "prometheus", "stale": False}}]),
    )  # fmt: skip
    assert [(c.name, c.max_occupancy) for c in config.routing.admission][1] == ("standard", 4.0)
    gateway = Gateway(Settings(), config=config)
    server, base = await serve_app(create_app(gateway))
    body = {
        "model": "p",
        "messages": [{"role": "user", "content": "Name three primes."}],
        "inframind": {"budget_s": 30, "sheddable": True},
    }
    try:
        limits = httpx.Limits(max_connections=None)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for _ in range(30))
            )
        assert gateway.runner.pending == 0  # every counted step started, nothing left over
    finally:
        await server.cleanup()
        await engine.cleanup()
    codes = collections.Counter(a.status_code for a in answers)
    if topology is Topology.SINGLE:
        assert codes == {200: 9, 429: 21}, codes
    else:  # 3 proposers each: at most 3 ensembles before the pools pass 4 per slot
        assert set(codes) == {200, 429} and 1 <= codes[200] <= 3, codes
    shed = next(a for a in answers if a.status_code == 429)
    assert "above the 4 allowed for the 'standard' class" in shed.json()["error"]["message"]
    assert shed.headers["Retry-After"]


def test_numpy_numbers_in_a_response_are_plain_json_numbers():
    """json.dumps took numpy scalars (a float64 is a float); orjson refuses them unless
    told. A load or a trace value computed with numpy must not turn an answer into a 500."""
    from inframind.gateway.app import _json

    resp = _json({"kv_usage": np.float64(0.5), "waiting": np.int64(3), "ok": np.bool_(True)})
    assert json.loads(resp.body) == {"kv_usage": 0.5, "waiting": 3, "ok": True}


async def test_steps_not_started_yet_still_count_after_a_config_reload():
    """A config reload replaces the runner while an ensemble's proposers have been created
    but have not started (so hold no endpoint): the new runner's admission still counts
    them. Each runner used to keep its own count, so the new one started at 0."""
    import time

    engine, url = await _idle_engine(_slow_answer(0.2))
    config = PipelineConfig(
        pipeline="p",
        pools=[PoolConfig(name="b", model="m", served_model_name="m", endpoints=[url],
                          max_num_seqs=2)],
        topologies=[Topology.ENSEMBLE],
    )  # fmt: skip
    gateway = Gateway(Settings(), config=config)
    gateway.apply_config(config)
    old = gateway.runner
    query = Query(id="q-1", task=TaskFamily.MATH, budget_s=30, arrival_s=time.time())
    plan, _, _ = old.plan(query)
    width = len(plan.waves[0])
    assert plan.topology is Topology.ENSEMBLE and width > 1
    messages = [{"role": "user", "content": "2+2?"}]
    try:
        run = asyncio.create_task(old.run(query, messages, plan))
        await asyncio.sleep(0)  # run() reaches its first wave: proposers created, not started
        gateway.apply_config(config)
        assert gateway.runner is not old
        assert gateway.runner.pending == width
        outcome = await run
        assert outcome.text and gateway.runner.pending == 0
    finally:
        gateway._engines.close()
        await engine.cleanup()


async def test_a_republished_policy_file_is_loaded_and_a_refused_one_is_not_retried(tmp_path):
    """The gateway watches its policy artifact, not only its config: a ConfigMap the
    kubelet refreshed brings a new version without a config change or a restart."""
    from inframind.api.pipeline import ConfigMapKeyRef
    from inframind.policy.features import (
        EXECUTOR_ACTIONS,
        EXECUTOR_FEATURES,
        PLANNER_ACTIONS,
        PLANNER_FEATURES,
    )
    from inframind.policy.runtime import write_policy_file

    rng = np.random.default_rng(0)

    def publish(version: str, **meta) -> None:
        layers = [
            [(rng.normal(size=(n_in, 8)), np.zeros(8)), (rng.normal(size=(8, n)), np.zeros(n))]
            for n_in, n in ((len(PLANNER_FEATURES), PLANNER_ACTIONS),
                            (len(EXECUTOR_FEATURES), EXECUTOR_ACTIONS))
        ]  # fmt: skip
        staged = tmp_path / "staged.npz"
        write_policy_file(staged, *layers, version=version, **meta)
        staged.replace(tmp_path / "policy.npz")  # a new file at the same path

    config = PipelineConfig(
        pipeline="p",
        pools=[PoolConfig(name="b", model="m", served_model_name="m",
                          endpoints=["http://127.0.0.1:9"])],
        policy=PolicySource(config_map_ref=ConfigMapKeyRef(name="inframind-policy"),
                            fallback="least-queue"),
    )  # fmt: skip
    (tmp_path / "pipeline.json").write_text(config.model_dump_json(by_alias=True))
    gateway = Gateway(Settings(), config_path=tmp_path / "pipeline.json")
    try:
        gateway.reload_if_changed()  # not published yet: the fallback serves
        assert gateway.policy_version == "heuristic:least-queue"
        publish("v1")
        gateway.reload_if_changed()
        assert gateway.policy_version == "v1"
        runner = gateway.runner
        gateway.reload_if_changed()  # nothing changed: the same runner keeps serving
        assert gateway.runner is runner
        publish("v2")
        gateway.reload_if_changed()
        assert gateway.policy_version == "v2" and gateway.runner is not runner
        assert gateway.runner.policy_version == "v2"  # what its traces will name
        publish("v3", feature_schema="someone-elses")  # refused: the fallback serves, once
        gateway.reload_if_changed()
        assert gateway.policy_version == "heuristic:least-queue"
        runner = gateway.runner
        gateway.reload_if_changed()
        assert gateway.runner is runner
        publish("v4")  # copied in place, caught half-written: refused, not a crash
        whole = (tmp_path / "policy.npz").read_bytes()
        (tmp_path / "policy.npz").write_bytes(whole[: len(whole) // 2])
        gateway.reload_if_changed()
        assert gateway.policy_version == "heuristic:least-queue"
        (tmp_path / "policy.npz").write_bytes(whole)  # the copy completes
        gateway.reload_if_changed()
        assert gateway.policy_version == "v4"
    finally:
        gateway._engines.close()


def test_a_trace_volume_that_cannot_be_written_loses_no_trace_and_stops_nothing(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # a file where the trace folder should be: mkdir fails
    gateway = Gateway(Settings(), trace_log=blocker / "p" / "pod.jsonl")
    try:
        gateway._traces.extend(['{"id": "q1"}', '{"id": "q2"}'])
        gateway._flush_traces()
        gateway._flush_traces()  # still failing: one warning, not one per attempt
        assert list(gateway._traces) == ['{"id": "q1"}', '{"id": "q2"}']
        assert sum("cannot append traces" in r.message for r in caplog.records) == 1
        gateway.trace_log = tmp_path / "p" / "pod.jsonl"  # the volume is back
        gateway._traces.append('{"id": "q3"}')
        gateway._flush_traces()
        assert gateway.trace_log.read_text().splitlines() == [
            '{"id": "q1"}', '{"id": "q2"}', '{"id": "q3"}'
        ]  # fmt: skip
        assert not gateway._traces
    finally:
        gateway._engines.close()


async def test_the_clients_system_message_reaches_every_agent_of_the_pipeline():
    """A persona or an output format the client asks for holds for each agent step, after
    the step's own role and depth instructions."""
    import time

    from inframind.orchestrator.runner import Runner
    from inframind.policy.types import Query

    seen: list[list[dict]] = []

    async def engine(request: web.Request) -> web.StreamResponse:
        seen.append((await request.json())["messages"])
        return await sse_answer(request, ROLE, FOUR)

    runner, url = await serve_handler(engine)
    try:
        view = _one_pool_view(url)
        messages = [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "2+2?"},
        ]
        with closing(EngineClient()) as engines:
            pipeline = Runner("p", engines, view, BudgetGreedy())
            query = Query(id=1, task=TaskFamily.MATH, budget_s=30.0, arrival_s=time.time())
            await pipeline.run(query, messages, build_plan(Topology.CHAIN))
        assert len(seen) == 2  # drafter, then refiner
        for sent in seen:
            systems = [m["content"] for m in sent if m["role"] == "system"]
            assert len(systems) == 1 and systems[0].endswith("\n\nAnswer in French.")
            assert {"role": "user", "content": "2+2?"} in sent
    finally:
        await runner.cleanup()


async def test_a_streaming_client_that_leaves_cancels_its_call_and_fails_nothing():
    """Closing a stream is the client's choice: the engine's call is dropped at once (vLLM
    aborts a request whose connection closes), and neither the SLO nor budget-greedy's
    tuner counts it as the pipeline's failure."""
    engine_saw_close = asyncio.Event()

    async def slow_engine(request: web.Request) -> web.StreamResponse:
        resp = await sse_answer(request, ROLE, done=False)
        try:
            for i in range(200):
                delta = {"choices": [{"delta": {"content": f"t{i} "}}]}
                await resp.write(b"data: " + json.dumps(delta).encode() + b"\n\n")
                await asyncio.sleep(0.05)
        except ConnectionResetError:
            engine_saw_close.set()
        return resp

    engine, gateway, server, base = await _gateway_in_front_of(
        slow_engine, budget=Budget(slo_target=0.99)
    )
    body = {"model": "p", "stream": True, "messages": [{"role": "user", "content": "count"}]}
    try:
        safety = gateway.runner.policy.safety
        url_chat = f"{base}/v1/chat/completions"
        async with ClientSession() as client, client.post(url_chat, json=body) as resp:
            assert resp.status == 200
            await resp.content.readline()  # the role chunk
            await resp.content.readline()
            await resp.content.readline()  # some text: the engine is generating
        # leaving the block closed the connection mid-answer
        await asyncio.wait_for(engine_saw_close.wait(), 5)  # well before its 10 s of text
        sample = gateway.metrics.registry.get_sample_value
        await until(lambda: sample("inframind_requests_total", {"pipeline": "p", "code": "499"}),
                    "the closed stream counted as 499", timeout_s=5)  # fmt: skip
        assert sample("inframind_requests_total", {"pipeline": "p", "code": "503"}) is None
        assert sample("inframind_slo_total", {"pipeline": "p", "result": "missed"}) is None
        assert gateway.runner.policy.safety == safety
    finally:
        await server.cleanup()
        await engine.cleanup()


async def test_a_streamed_request_refused_before_any_text_gets_its_http_status():
    """The 200 waits for the first text, so a prompt the engine refuses is a 400 with a
    reason for a streaming client too, not a 200 followed by an error event."""
    import httpx

    async def refusing_engine(request: web.Request) -> web.Response:
        message = "This model's maximum context length is 2048 tokens."
        return web.json_response({"error": {"message": message}}, status=400)

    engine, _, server, base = await _gateway_in_front_of(refusing_engine)
    body = {"model": "p", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.post(f"{base}/v1/chat/completions", json=body)
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert "maximum context length" in error["message"] and error["inframind"]["steps"]
    finally:
        await server.cleanup()
        await engine.cleanup()


async def test_an_answer_cut_at_its_depths_token_cap_says_length_as_openai_does():
    import httpx

    async def engine(request: web.Request) -> web.StreamResponse:
        cut = {"choices": [{"delta": {"content": "Step 1: let"}, "finish_reason": "length"}]}
        return await sse_answer(request, ROLE, cut)

    engine_runner, _, server, base = await _gateway_in_front_of(
        engine, topologies=[Topology.SINGLE]
    )
    body = {"model": "p", "messages": [{"role": "user", "content": "2+2?"}]}
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            plain = await client.post(f"{base}/v1/chat/completions", json=body)
            streamed = await client.post(
                f"{base}/v1/chat/completions", json={**body, "stream": True}
            )
        assert plain.json()["choices"][0]["finish_reason"] == "length"
        events = [
            json.loads(line[6:])
            for line in streamed.text.splitlines()
            if line.startswith("data: {")
        ]
        assert events[-1]["choices"][0]["finish_reason"] == "length"
    finally:
        await server.cleanup()
        await engine_runner.cleanup()


def test_the_depth_mix_counts_answered_steps_and_gauges_follow_the_endpoints():
    from inframind.orchestrator.runner import StepTrace

    one = PoolConfig(name="a", model="m", served_model_name="m", endpoints=["http://e1:8000"])
    two = PoolConfig(name="b", model="m", served_model_name="m", endpoints=["http://e2:8000"])
    gateway = Gateway(Settings(), config=PipelineConfig(pipeline="p", pools=[one, two]))
    try:
        gateway.apply_config(gateway._pending_config)
        gateway._step(StepTrace(0, 0, "solver", "a", "flash", latency_s=0.2))
        gateway._step(StepTrace(0, 0, "solver", "a", "deepthink", error="HTTP 500"))
        assert gateway.depth_mix == {"a": {"flash": 1}}

        def series() -> set[str]:
            return {
                s.labels["endpoint"]
                for metric in gateway.metrics.registry.collect()
                if metric.name == "inframind_inflight"
                for s in metric.samples
            }

        gateway._update_gauges()
        assert series() == {"http://e1:8000", "http://e2:8000"}
        gateway.apply_config(PipelineConfig(pipeline="p", pools=[one]))  # b removed
        gateway._update_gauges()
        assert series() == {"http://e1:8000"}
    finally:
        gateway._engines.close()


async def test_readiness_needs_an_engine_that_answers_not_only_a_config():
    """A gateway whose only engine refuses connections is not ready, and says why; the
    same gateway is ready once an engine answers its /metrics."""
    import httpx

    from inframind.localstack.engines import free_port

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n")

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    pool = PoolConfig(name="a", model="m", served_model_name="m", endpoints=[down])
    gateway = Gateway(Settings(), config=PipelineConfig(pipeline="p", pools=[pool]))
    server, base = await serve_app(create_app(gateway))
    engine = None
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await asyncio.sleep(1.5)  # a scrape round has failed
            resp = await client.get(f"{base}/readyz")
            assert resp.status_code == 503, resp.text
            (reason,) = resp.json()["reasons"]
            assert "answered its /metrics" in reason and "ClientConnector" in reason
            engine, up = await _metrics_server(metrics)
            gateway.apply_config(PipelineConfig(pipeline="p", pools=[pool.model_copy(
                update={"endpoints": [up]})]))  # fmt: skip
            await until(
                lambda: httpx.get(f"{base}/readyz").status_code == 200, "ready", timeout_s=10
            )
    finally:
        await server.cleanup()
        if engine is not None:
            await engine.cleanup()


async def test_an_fcfs_pipeline_ranks_its_calls_by_arrival_plus_its_default_budget():
    """vLLM serves a call without a priority (0) before every other: an FCFS pipeline
    sharing priority-scheduled engines with EDF ones would jump all their queues."""
    import time

    from inframind.orchestrator.runner import Runner
    from inframind.policy.types import Query
    from inframind.vocab import SchedulerKind

    sent: list[int | None] = []

    async def engine(request: web.Request) -> web.StreamResponse:
        sent.append((await request.json()).get("priority"))
        return await sse_answer(request, ROLE, FOUR)

    runner, url = await serve_handler(engine)
    try:
        view = _one_pool_view(url)
        fcfs = BudgetGreedy(Limits(scheduler=SchedulerKind.FCFS))
        with closing(EngineClient()) as engines:
            pipeline = Runner("p", engines, view, fcfs, default_budget_s=20.0)
            now = time.time()
            for i, budget in enumerate((5.0, 60.0)):  # FCFS: the budget does not rank it
                query = Query(id=i, task=TaskFamily.MATH, budget_s=budget, arrival_s=now + i)
                await pipeline.run(query, [{"role": "user", "content": "2+2?"}],
                                   build_plan(Topology.SINGLE))  # fmt: skip
        assert sent == [int((now + 20.0) * 1000), int((now + 1 + 20.0) * 1000)]
    finally:
        await runner.cleanup()


def test_the_gateway_queries_prometheus_with_the_configured_timeout():
    settings = Settings(prometheus_url="http://prom:9090", prometheus_timeout_seconds=7.5)
    gateway = Gateway(settings)
    try:
        assert gateway.prometheus is not None and gateway.prometheus.timeout_s == 7.5
    finally:
        gateway._engines.close()

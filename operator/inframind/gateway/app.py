"""The OpenAI-compatible gateway: HTTP in, pipeline runs against vLLM pools, trace out.

Routes: POST /v1/chat/completions (plain and streaming), GET /v1/models,
/healthz, /readyz, /metrics and GET /v1/inframind/pools (the live view the
demo prints). The pipeline config is a file (the operator's ConfigMap,
mounted) re-read whenever it changes; a bad new config is refused and the
last good one keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from ..api.config import PipelineConfig
from ..orchestrator.runner import (
    ClientGone,
    Outcome,
    PipelineFailed,
    Runner,
    StepTrace,
    infer_task,
)
from ..orchestrator.scheduler import admit
from ..orchestrator.slots import SlotQueue
from ..orchestrator.wire import EngineClient
from ..policy.base import Limits, Policy
from ..policy.heuristics import BudgetGreedy, SafetyTuner
from ..policy.runtime import load_policy, policy_file
from ..policy.types import Query
from ..settings import Settings
from ..telemetry.prometheus import PrometheusSource
from ..telemetry.scrape import EngineScraper
from ..telemetry.snapshot import Endpoints, LiveView
from .metrics import GatewayMetrics
from .openapi import openapi_document
from .requests import PipelineRequest, RequestError, parse_request

log = logging.getLogger("inframind.gateway")

CHAT_PATH = "/v1/chat/completions"

# The status counted for a streamed query whose client went away before its answer was
# complete (nginx's "client closed request"); it never reaches the client.
CLIENT_CLOSED = 499


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """A file's identity and version (None: absent). Follows symlinks: the kubelet refreshes
    a mounted ConfigMap by pointing its files at a new directory, which changes the inode."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _dumps(data: Any) -> bytes:
    """JSON by orjson (json.dumps was a tenth of the gateway's own time per call). Unlike
    json, orjson refuses numpy scalars unless told: a numpy float in a trace or a load must
    not turn an answered query into a 500."""
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(data), status=status, content_type="application/json")


def _sse(data: Any) -> bytes:
    """One server-sent event carrying `data` as JSON."""
    return b"data: " + _dumps(data) + b"\n\n"


def _usage(outcome: Outcome) -> dict[str, int]:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
    }


def _error(status: int, message: str, code: str, **extra: Any) -> web.Response:
    """OpenAI's error shape (as RequestError's), with `extra` fields beside the message."""
    body = RequestError(status, message, code).body()
    body["error"].update(extra)
    return _json(body, status)


class Gateway:
    """State of one gateway process; the aiohttp handlers are thin methods on it."""

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None = None,
        config: PipelineConfig | None = None,
        trace_log: Path | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.metrics = GatewayMetrics()
        self.endpoints = Endpoints()
        self.scraper = EngineScraper(
            [],
            interval_s=settings.scrape_interval_seconds,
            timeout_s=settings.scrape_timeout_seconds,
        )
        # Prometheus, when configured, fills in for engines the direct scrape cannot reach.
        self.prometheus = (
            PrometheusSource(
                settings.prometheus_url,
                interval_s=max(2.0, settings.scrape_interval_seconds),
                timeout_s=settings.prometheus_timeout_seconds,
            )
            if settings.prometheus_url
            else None
        )
        self.view = LiveView(self.scraper, self.endpoints, prometheus=self.prometheus)
        self.slots = SlotQueue()  # outlives config reloads, as the calls holding slots do
        # Tunes budget-greedy to the pipeline's sloTarget; outlives reloads of the same target.
        self.tuner: SafetyTuner | None = None
        self.config: PipelineConfig | None = None
        self.runner: Runner | None = None
        self.policy_version = "-"
        self.config_error: str | None = None
        self.queries_inflight = 0
        self.depth_mix: dict[str, dict[str, int]] = {}
        self.trace_log = trace_log
        self._traces: deque[str] = deque(maxlen=10_000)
        self._trace_error = False
        self._mtime: float | None = None
        # What the policy artifact's file looked like when it was last loaded (None: absent).
        self._policy_stamp: tuple[int, int, int] | None = None
        self._gauged: set[str] = set()  # endpoints with inflight/queued series
        self._session: aiohttp.ClientSession | None = None  # scrapes; engine calls: _engines
        self._engines = EngineClient()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._pending_config = config
        # Query ids: unique across gateway replicas and restarts (their traces are merged
        # for training) without a uuid4 per call: a random prefix per process, a counter.
        self._id_prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)

    # -- lifecycle -----------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        # Idle connections are dropped before vLLM's server (uvicorn, 5 s keep-alive) drops
        # them: reusing one it is closing at that instant gave "Server disconnected" errors
        # under load (the overload bench caught 3 in 340 calls with aiohttp's 15 s default).
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=30, keepalive_timeout=3.0)
        self._session = aiohttp.ClientSession(connector=connector)
        if self._pending_config is not None:
            self.apply_config(self._pending_config)
        self.reload_if_changed()
        self._tasks = [
            asyncio.create_task(self.scraper.run(self._session, self._stop), name="scrape"),
            asyncio.create_task(self._background(), name="config-watch"),
        ]
        if self.prometheus is not None:
            self._tasks.append(
                asyncio.create_task(self.prometheus.run(self._stop), name="prometheus")
            )

    async def stop(self, app: web.Application) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._flush_traces()
        if self._session is not None:
            await self._session.close()
        self._engines.close()

    async def _background(self) -> None:
        while not self._stop.is_set():
            try:
                self.reload_if_changed()
                self._flush_traces()
                self._update_gauges()
            except Exception:
                # This task is the only one that reloads config and writes traces: a bug
                # in one pass must not end it for the life of the process.
                log.exception("config watch failed; trying again in the next poll")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.config_poll_seconds)

    def _update_gauges(self) -> None:
        """Per-endpoint gauges of the endpoints served now; an endpoint a reload dropped
        loses its series rather than keep showing its last value."""
        current = self.scraper.endpoints
        for url in self._gauged.difference(current):
            self.metrics.inflight.remove(url)
            self.metrics.queued.remove(url)
        for url in current:
            self.metrics.inflight.labels(url).set(self.endpoints.inflight.get(url, 0))
            self.metrics.queued.labels(url).set(self.slots.queued(url))
        self._gauged = set(current)

    # -- configuration -------------------------------------------------------

    def reload_if_changed(self) -> None:
        if self.config_path is None:
            return
        try:
            mtime = self.config_path.stat().st_mtime
        except FileNotFoundError:
            if self.config is None:
                self.config_error = f"config file {self.config_path} does not exist yet"
            return
        if mtime == self._mtime:
            self._reload_policy_if_changed()
            return
        self._mtime = mtime
        try:
            config = PipelineConfig.model_validate_json(self.config_path.read_bytes())
        except (ValidationError, ValueError, OSError) as exc:
            self.metrics.config_errors.inc()
            self.config_error = f"config {self.config_path} refused: {exc}"
            log.warning("%s; keeping the last good configuration", self.config_error)
            return
        self.apply_config(config)

    def _policy_path(self, config: PipelineConfig) -> Path | None:
        return policy_file(config.policy, self.config_path.parent if self.config_path else None)

    def _reload_policy_if_changed(self) -> None:
        """A new version of the trained policy (a ConfigMap the kubelet refreshed, or a file
        replaced) is loaded as a config change is: in-flight queries finish on the old one."""
        if self.config is None:
            return
        path = self._policy_path(self.config)
        if path is not None and _stamp(path) != self._policy_stamp:
            self.apply_config(self.config)

    def apply_config(self, config: PipelineConfig) -> None:
        target = config.budget.slo_target
        if self.tuner is None or self.tuner.target != target:
            self.tuner = SafetyTuner(target)
        path = self._policy_path(config)
        # Taken before loading: a file replaced while it loads is loaded again next time.
        self._policy_stamp = _stamp(path) if path is not None else None
        policy, version, warning = load_policy(
            config.policy,
            Limits(
                topologies=tuple(config.topologies),
                depths=tuple(config.depths),
                max_agents=config.max_agents,
                scheduler=config.scheduler,
                roles=tuple(config.roles) if config.roles is not None else None,
            ),
            base_dir=self.config_path.parent if self.config_path else None,
            tuner=self.tuner,
            pools=len(config.pools),
        )
        if warning:
            log.warning("pipeline %s: %s", config.pipeline, warning)
        self.view.configure(config)
        self.runner = Runner(
            config.pipeline,
            self._engines,
            self.view,
            policy,
            on_step=self._step,
            slots=self.slots,
            rescue=self.settings.gateway_rescue,
            policy_version=version,
            default_budget_s=config.budget.default_seconds,
        )
        old = self.config
        self.config = config
        self.config_error = None
        self.policy_version = version
        self.metrics.policy.clear()
        self.metrics.policy.labels(config.pipeline, policy.name, version).set(1)
        self.metrics.safety.clear()
        if self._tuned(policy):
            self.metrics.safety.labels(config.pipeline).set(self.tuner.safety)
        log.info(
            "pipeline %s: %s pools, policy %s (%s)%s",
            config.pipeline,
            len(config.pools),
            policy.name,
            version,
            " (reloaded)" if old is not None else "",
        )

    def _step(self, step: StepTrace) -> None:
        self.metrics.stepped(step.pool, step.depth, not step.error, step.latency_s)
        if step.rescue is not None:
            self.metrics.rescues.labels(step.rescue).inc()
        if not step.error:  # the mix of answers; failed steps show in the step counter
            mix = self.depth_mix.setdefault(step.pool, {})
            mix[step.depth] = mix.get(step.depth, 0) + 1

    def _flush_traces(self) -> None:
        if self.trace_log is None or not self._traces:
            return
        try:
            self.trace_log.parent.mkdir(parents=True, exist_ok=True)
            with self.trace_log.open("a") as f:
                f.write("\n".join(self._traces) + "\n")
        except OSError as exc:
            # A full or read-only volume must not stop the config watch that calls this: keep
            # the newest traces in memory (the deque is bounded) and try again next time.
            if not self._trace_error:
                log.warning(
                    "cannot append traces to %s: %s; keeping the newest %d in memory",
                    self.trace_log, exc, self._traces.maxlen,
                )  # fmt: skip
            self._trace_error = True
            return
        if self._trace_error:
            log.info("traces are written to %s again", self.trace_log)
        self._trace_error = False
        self._traces.clear()

    # -- handlers ------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        reasons = []
        if self.config is None:
            reasons.append(self.config_error or "no pipeline configuration loaded")
        elif not self.view.routable():
            reasons.append(f"pipeline {self.config.pipeline} has no pool endpoint in routing")
        elif not self.view.reachable():
            loads = self.view.loads()
            errors = sorted({loads[u].error for u in loads if loads[u].error})
            reasons.append(
                f"no pool endpoint of pipeline {self.config.pipeline} answered its /metrics "
                f"in the last {self.scraper.stale_after_s:g} s"
                + (f" ({'; '.join(errors)})" if errors else "")
            )
        if reasons:
            return _json({"ready": False, "reasons": reasons}, 503)
        return _json({"ready": True, "pipeline": self.config.pipeline})

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def models(self, request: web.Request) -> web.Response:
        data = []
        if self.config is not None:
            data.append(
                {
                    "id": self.config.pipeline,
                    "object": "model",
                    "created": 0,
                    "owned_by": "inframind",
                    "pools": [p.name for p in self.config.pools],
                }
            )
        return _json({"object": "list", "data": data})

    async def pools(self, request: web.Request) -> web.Response:
        """Live per-pool view: load, routing counts, depth mix (what `make demo` prints)."""
        if self.config is None:
            return _json({"pools": []})
        snap = self.view.snapshot()
        loads = self.view.loads()
        routable = self.view.routable()
        out = []
        for pool, load in zip(self.config.pools, snap.loads, strict=True):
            out.append(
                {
                    "name": pool.name,
                    "waiting": load.waiting,
                    "running": load.running,
                    "kv_usage": load.kv_usage,
                    "inflight": load.inflight,
                    # Of those, held here for a free batch slot (pools with max_num_seqs).
                    "queued": sum(self.slots.queued(u) for u in pool.endpoints),
                    "stale": load.stale,
                    "available": load.available,
                    "routed": sum(self.endpoints.routed.get(u, 0) for u in pool.endpoints),
                    "depths": self.depth_mix.get(pool.name, {}),
                    "endpoints": {
                        u: {
                            "error": loads[u].error if u in loads else "not scraped",
                            "breaker": self.endpoints.state(u),
                            # False only while out of routing; an open breaker can still
                            # be in it, as a last resort (LiveView.routable).
                            "in_routing": u in routable,
                        }
                        for u in pool.endpoints
                    },
                }
            )
        return _json(
            {"pipeline": self.config.pipeline, "policy_version": self.policy_version, "pools": out}
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if self.config is None or self.runner is None:
            return self.refused(503, self.config_error or "no pipeline configured", "not_ready")
        config, runner = self.config, self.runner
        if not config.pools:  # the operator found no valid pool for the pipeline's selector
            return self.refused(
                503,
                f"pipeline {config.pipeline} has no model pool: it selects no usable "
                "ModelPool (see the AgentPipeline's status and events)",
                "no_pools",
            )
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:  # invalid UTF-8 included
            return self.refused(400, "the body is not valid JSON", "invalid_json")
        except web.HTTPRequestEntityTooLarge:
            limit = self.settings.gateway_max_body_bytes
            return self.refused(
                413, f"the body is larger than this gateway's {limit} bytes", "body_too_large"
            )
        try:
            req = parse_request(
                body,
                request.headers,
                {config.pipeline: config},
                self.settings.gateway_max_prompt_chars,
            )
        except RequestError as exc:
            return self.refused(exc.status, str(exc), exc.code, param=exc.param)

        query = Query(
            id=f"{self._id_prefix}-{next(self._ids)}",
            task=req.task or infer_task(req.messages),
            budget_s=req.budget_s,
            arrival_s=time.time(),
            prompt_tokens=max(1, req.prompt_chars // 4),
        )
        plan, snapshot, decision_us = runner.plan(query)
        self.metrics.decision_seconds.observe(decision_us / 1e6)
        verdict = admit(
            snapshot,
            query,
            req.sheddable,
            self.queries_inflight,
            self.settings.gateway_max_inflight,
            () if config.routing.stale else config.routing.admission,
            runner.pending,
        )
        if not verdict.admitted:
            self.metrics.shed.labels(config.pipeline, verdict.cause).inc()
            self.metrics.requests.labels(config.pipeline, "429").inc()
            resp = _error(429, verdict.reason, "shed", retry_after_s=verdict.retry_after_s)
            resp.headers["Retry-After"] = str(verdict.retry_after_s)
            return resp
        self.metrics.decided(config.pipeline, plan.topology.value, plan.label)

        self.queries_inflight += 1
        try:
            if req.stream:
                return await self._stream(request, req, runner, query, plan, decision_us)
            try:
                # No await since the plan: its snapshot is still the cluster's state.
                outcome = await runner.run(
                    query, req.messages, plan, decision_us, snapshot=snapshot
                )
            except PipelineFailed as exc:
                self._account_failure(config.pipeline, exc)
                return _error(exc.status, str(exc), "pipeline_failed", inframind=exc.trace)
            return _json(self._completion(req, outcome, self._account(outcome)))
        finally:
            self.queries_inflight -= 1

    def refused(self, status: int, message: str, code: str, **extra: Any) -> web.Response:
        """An error answered before any pipeline work, counted as every request is."""
        pipeline = self.config.pipeline if self.config is not None else "-"
        self.metrics.requests.labels(pipeline, str(status)).inc()
        return _error(status, message, code, **extra)

    def _account(self, outcome: Outcome) -> dict[str, Any]:
        """Count an answered query; its trace as the response and the trace log show it."""
        trace = outcome.trace
        self.metrics.answered(trace.pipeline, trace.latency_s, bool(trace.met_budget))
        self._observe(bool(trace.met_budget))
        shown = trace.to_dict()
        self._record(shown)
        return shown

    def _account_failure(self, pipeline: str, exc: PipelineFailed) -> None:
        self.metrics.failed(pipeline, exc.status)
        if exc.status >= 500:  # no answer within the budget, and not the client's doing
            self._observe(met_budget=False)
        self._record(exc.trace)

    def _observe(self, met_budget: bool) -> None:
        """Tell the policy how a query ended (budget-greedy tunes its safety to the SLO target).

        A query the gateway failed to answer (502, 503) counts as a miss: to its client the
        budget passed without an answer, and a plan too bold for the time left is one cause.
        """
        if self.runner is None:
            return
        policy = self.runner.policy
        policy.observe(met_budget)
        if self._tuned(policy):
            self.metrics.safety.labels(self.runner.pipeline).set(self.tuner.safety)

    def _tuned(self, policy: Policy) -> bool:
        """Whether this policy plans with the pipeline's SLO tuner (budget-greedy does)."""
        tuner = self.tuner
        return tuner is not None and isinstance(policy, BudgetGreedy) and policy.tuner is tuner

    def _record(self, trace: dict[str, Any]) -> None:
        if self.trace_log is not None:
            self._traces.append(_dumps(trace).decode())

    def _completion(
        self, req: PipelineRequest, outcome: Outcome, trace: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{outcome.trace.id}",  # the query's id, as when streamed
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.pipeline,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": outcome.text},
                    "finish_reason": outcome.finish_reason,
                }
            ],
            "usage": _usage(outcome),
            "inframind": trace,
        }

    async def _stream(
        self,
        request: web.Request,
        req: PipelineRequest,
        runner: Runner,
        query: Query,
        plan: Any,
        decision_us: float,
    ) -> web.StreamResponse:
        """Server-sent events, OpenAI's chunks. The 200 and its headers wait for the first
        text: until then a failure (a prompt the engine refused, no engine answering) is
        still an HTTP error with its status, as without streaming."""
        resp: web.StreamResponse | None = None
        cid = f"chatcmpl-{query.id}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            return _sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": req.pipeline,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    **extra,
                }
            )

        async def send(data: bytes) -> None:
            nonlocal resp
            try:
                if resp is None:
                    resp = web.StreamResponse(
                        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
                    )
                    await resp.prepare(request)
                    await resp.write(chunk({"role": "assistant", "content": ""}))
                await resp.write(data)
            except ConnectionResetError as exc:  # aiohttp's, when the client has gone
                raise ClientGone(str(exc)) from None

        async def on_delta(text: str) -> None:
            await send(chunk({"content": text}))

        try:
            outcome = await runner.run(query, req.messages, plan, decision_us, on_delta=on_delta)
        except ClientGone:
            # Nobody to answer, and not the pipeline's failure: no SLO miss, no tuner signal.
            self.metrics.failed(req.pipeline, CLIENT_CLOSED)
            log.info("query %s: the client closed the stream; its calls are cancelled", query.id)
            return resp if resp is not None else web.Response(status=CLIENT_CLOSED)
        except PipelineFailed as exc:
            self._account_failure(req.pipeline, exc)
            if resp is None:
                return _error(exc.status, str(exc), "pipeline_failed", inframind=exc.trace)
            last = _sse(
                {"error": {"message": str(exc), "code": "pipeline_failed", "inframind": exc.trace}}
            )
        except Exception as exc:  # an engine error after text was streamed
            self.metrics.failed(req.pipeline, 502)
            self._observe(met_budget=False)
            message = f"the answer broke off: {exc}"
            if resp is None:
                return _error(502, message, "stream_broken")
            last = _sse({"error": {"message": message, "code": "stream_broken"}})
        else:
            trace = self._account(outcome)
            last = chunk({}, outcome.finish_reason, usage=_usage(outcome), inframind=trace)
        with contextlib.suppress(ClientGone, ConnectionResetError):
            await send(last)
            await send(b"data: [DONE]\n\n")
            await resp.write_eof()
        return resp


def _auth_middleware(gateway: Gateway):
    """Bearer-token check on the API routes. Probes and /metrics stay open (the kubelet and
    Prometheus call them). A pipeline that asks for auth while no token reached this process
    is refused, closed rather than open, with a reason an operator can act on."""
    token = gateway.settings.gateway_token
    expected = f"Bearer {token.get_secret_value()}".encode() if token is not None else None

    @web.middleware
    async def check(request: web.Request, handler):
        if not request.path.startswith("/v1/"):
            return await handler(request)
        # Refused chat calls count in inframind_requests_total like every other chat call.
        refuse = gateway.refused if request.path == CHAT_PATH else _error
        if expected is None:
            if gateway.config is not None and gateway.config.auth:
                return refuse(
                    503,
                    "this pipeline requires a bearer token but the gateway has none: set "
                    "INFRAMIND_GATEWAY_TOKEN (the operator maps spec.gateway.authSecretRef)",
                    "auth_not_configured",
                )
            return await handler(request)
        sent = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(sent, expected):
            resp = refuse(
                401,
                "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                "unauthorized",
            )
            resp.headers["WWW-Authenticate"] = 'Bearer realm="inframind"'
            return resp
        return await handler(request)

    return check


def create_app(gateway: Gateway) -> web.Application:
    app = web.Application(
        client_max_size=gateway.settings.gateway_max_body_bytes,
        middlewares=[_auth_middleware(gateway)],
    )
    app.on_startup.append(gateway.start)
    app.on_cleanup.append(gateway.stop)
    app.router.add_post(CHAT_PATH, gateway.chat)
    app.router.add_get("/v1/models", gateway.models)
    app.router.add_get("/v1/inframind/pools", gateway.pools)
    app.router.add_get("/healthz", gateway.healthz)
    app.router.add_get("/readyz", gateway.readyz)
    app.router.add_get("/metrics", gateway.metrics_page)
    document = openapi_document()

    async def openapi(_: web.Request) -> web.Response:
        return _json(document)

    app.router.add_get("/openapi.json", openapi)
    return app

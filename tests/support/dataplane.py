"""Helpers for tests that drive real engines and gateways: configs, metrics, processes."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from inframind.api.config import PipelineConfig, PoolConfig
from inframind.localstack.engines import Engine


def pool(engine: Engine, *, max_num_seqs: int | None = None, **profile: Any) -> PoolConfig:
    """The engine as a pool; `max_num_seqs` gives the gateway its batch slots, as a
    ModelPool's maxNumSeqs does (without it the gateway assumes 32)."""
    return PoolConfig(
        name=f"pool-{engine.spec.name}",
        model="tiny",
        served_model_name=engine.spec.name,
        endpoints=[engine.url],
        max_num_seqs=max_num_seqs,
        profile=profile or {},
    )


async def serve_app(
    app: web.Application,
    *,
    keepalive_timeout: float = 75.0,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free loopback port (https with `ssl_context`; idle connections
    closed after `keepalive_timeout`, aiohttp's default): (its runner, to clean up; its
    base URL)."""
    runner = web.AppRunner(app, keepalive_timeout=keepalive_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"{'https' if ssl_context else 'http'}://{host}:{port}"


async def serve_handler(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    method: str = "POST",
    path: str = "/v1/chat/completions",
    max_body: int = 2**20,
    **serve: Any,
) -> tuple[web.AppRunner, str]:
    """One handler on one route, served on loopback (by default an engine's chat
    completions; `serve` goes to serve_app): (its runner, to clean up; its base URL)."""
    app = web.Application(client_max_size=max_body)
    app.router.add_route(method, path, handler)
    return await serve_app(app, **serve)


# Chunks of a vLLM chat stream: the role (sent with the first token), and an answer.
ROLE = {"choices": [{"delta": {"role": "assistant", "content": ""}}]}
FOUR = {"choices": [{"delta": {"content": "4"}, "finish_reason": "stop"}]}


async def sse_answer(
    request: web.Request, *chunks: dict, done: bool = True, headers: dict | None = None
) -> web.StreamResponse:
    """Answer as vLLM streams: headers at once (the call is accepted), one event per chunk,
    then `[DONE]` unless `done` is False (the caller writes more, or breaks off)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **(headers or {})})
    await resp.prepare(request)
    for chunk in chunks:
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
    if done:
        await resp.write(b"data: [DONE]\n\n")
    return resp


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


async def until(
    condition: Callable[[], Any],
    what: str,
    timeout_s: float = 60,
    every_s: float = 0.25,
) -> None:
    """Poll `condition` (sync: run in a thread; or async) until it is true.

    A poll that fails to connect or times out (a gateway or engine too busy on two
    shared cores to answer within its HTTP timeout) means "not yet", not "gave up":
    only the deadline ends the wait, and the failure names the last such error."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            if inspect.iscoroutinefunction(condition):
                ok = await condition()
            else:
                ok = await asyncio.to_thread(condition)
            if ok:
                return
        except OSError as exc:  # urllib's URLError and socket timeouts are OSErrors
            last_error = exc
        if time.monotonic() >= deadline:
            extra = f"; last poll failed: {last_error!r}" if last_error else ""
            pytest.fail(f"gave up waiting for {what} after {timeout_s:.0f} s{extra}")
        await asyncio.sleep(every_s)


def engine_metric(engine: Engine, name: str) -> float:
    """One gauge/counter value from an engine's /metrics (summed over label sets).

    Patient on purpose: a CPU engine busy with a flood on two shared cores can take
    several seconds to answer, and a test that polls it should wait, not fail."""
    with urllib.request.urlopen(f"{engine.url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class GatewayProc:
    url: str
    config_path: Path
    trace_log: Path
    log: Path
    process: Any

    def write_config(self, config: PipelineConfig) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(config.model_dump_json(by_alias=True))
        tmp.replace(self.config_path)  # atomic, as a kubelet swaps a ConfigMap volume

    def pools(self) -> dict:
        return get_json(f"{self.url}/v1/inframind/pools")

    def traces(self) -> list[dict]:
        if not self.trace_log.exists():
            return []
        return [json.loads(line) for line in self.trace_log.read_text().splitlines() if line]


@contextlib.asynccontextmanager
async def engine_flooded(
    engine: Engine, n: int, tokens: int, max_s: float = 240
) -> AsyncIterator[None]:
    """Keep `n` long fixed-length requests, sent around the gateway, in flight at an engine
    for as long as the block runs: each one finished is sent again, so the load outlasts the
    checks however fast this machine decodes. Bounded in time by `max_s`; on exit the
    requests are dropped, and vLLM aborts them."""
    body = {
        "model": engine.spec.name,
        "messages": [{"role": "user", "content": "fill the cache " * 40}],
        "max_tokens": tokens,
        "min_tokens": tokens,
        "ignore_eos": True,
    }
    stop_at = time.monotonic() + max_s

    async def keep_one(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            try:
                r = await client.post(f"{engine.url}/v1/chat/completions", json=body)
            except httpx.TransportError:  # a connection dropped under load: send again
                await asyncio.sleep(0.1)
                continue
            r.raise_for_status()

    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        workers = [asyncio.create_task(keep_one(client)) for _ in range(n)]
        try:
            yield
        finally:
            for w in workers:
                w.cancel()
            results = await asyncio.gather(*workers, return_exceptions=True)
            # Raised here, a failure of the block itself stays attached as its context: a
            # flood that broke off early explains a check that failed for want of load.
            failed = [r for r in results if isinstance(r, Exception)]
            assert not failed, f"the flood of {engine.spec.name} failed: {failed[0]!r}"


def engine_core_pids(engine: Engine) -> list[int]:
    """The processes under an engine's API server (vLLM's EngineCore and its workers):
    stopping them freezes scheduling while the API server still accepts requests."""
    found, todo = [], [engine.process.pid]
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            found += [int(c) for c in children]
            todo += [int(c) for c in children]
    assert found, f"no processes under {engine.spec.name}'s API server"
    return found

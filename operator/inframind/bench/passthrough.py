"""The floor of a Python proxy: aiohttp in, aiohttp out, nothing decided in between.

Benchmark equipment only (`inframind bench --scenario gateway` runs it beside
the gateway and vllm-router). It forwards `POST /v1/chat/completions` to one
upstream over a pooled keep-alive connection and hands the answer back as it
came: no parsing, no plan, no trace. What the InfraMind gateway adds above
this path is its own logic; what this path adds above calling the upstream
directly is the cost of a Python (aiohttp) hop, which no gateway written this
way goes below.

    python -m inframind.bench.passthrough --port 8300 --upstream http://127.0.0.1:8200
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

from .instant import serve

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def forward(request: web.Request) -> web.Response:
    body = await request.read()
    session = request.app[SESSION]
    async with session.post(
        f"{request.app[UPSTREAM]}/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    ) as upstream:
        payload = await upstream.read()
        return web.Response(
            body=payload, status=upstream.status, content_type=upstream.content_type
        )


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _session(app: web.Application):
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app[SESSION].close()


def app(upstream: str) -> web.Application:
    a = web.Application()
    a[UPSTREAM] = upstream.rstrip("/")
    a.cleanup_ctx.append(_session)
    a.router.add_post("/v1/chat/completions", forward)
    a.router.add_get("/healthz", healthz)
    return a


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    serve(app(args.upstream), args.port)


if __name__ == "__main__":
    main()

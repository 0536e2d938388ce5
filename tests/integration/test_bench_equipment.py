"""The overhead bench's reference paths answer like the upstream behind them.

A floor that answered with errors, or from somewhere else, would be a fast and
meaningless row in `make bench`; so the pass-through is checked against the
instant upstream it forwards to, both on loopback.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from inframind.bench import instant, passthrough

pytestmark = pytest.mark.integration


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def test_pass_through_forwards_bodies_and_statuses_unchanged():
    upstream, up_url = await _serve(instant.app())
    proxy, proxy_url = await _serve(passthrough.app(up_url))
    body = {"model": instant.MODEL, "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{up_url}/v1/chat/completions", json=body) as r:
                direct = await r.json()
            async with s.post(f"{proxy_url}/v1/chat/completions", json=body) as r:
                assert r.status == 200
                assert r.content_type == "application/json"
                forwarded = await r.json()
            async with s.post(f"{proxy_url}/v1/chat/completions", data=b"not json") as r:
                assert r.status >= 400  # the upstream's refusal, passed on
    finally:
        await proxy.cleanup()
        await upstream.cleanup()
    forwarded.pop("created"), direct.pop("created")
    assert forwarded == direct
    assert forwarded["choices"][0]["message"]["content"] == instant.ANSWER

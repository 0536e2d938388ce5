"""The overhead bench's reference paths answer like the upstream behind them.

A floor that answered with errors, or from somewhere else, would be a fast and
meaningless row in `make bench`; so the pass-through is checked against the
instant upstream it forwards to, both on loopback.
"""

from __future__ import annotations

import aiohttp
import pytest

from inframind.bench import instant, passthrough
from support.dataplane import serve_app

pytestmark = pytest.mark.integration


async def test_pass_through_forwards_bodies_and_statuses_unchanged():
    upstream, up_url = await serve_app(instant.app())
    proxy, proxy_url = await serve_app(passthrough.app(up_url))
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

"""The overhead bench's reference paths answer like the upstream behind them.

A floor that answered with errors, or from somewhere else, would be a fast and
meaningless row in `make bench`; so both pass-throughs are checked against the
instant upstream they forward to, all on loopback.
"""

from __future__ import annotations

import aiohttp
import pytest

from inframind.bench import instant, passthrough
from support.dataplane import serve_app, serve_handler

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("server", ["aiohttp", "raw"])
async def test_pass_through_forwards_bodies_and_statuses_unchanged(server):
    upstream, up_url = await serve_app(instant.app())
    if server == "aiohttp":
        proxy, proxy_url = await serve_app(passthrough.app(up_url))
        stop = proxy.cleanup
    else:
        raw = await passthrough.start_raw(up_url)
        proxy_url = f"http://127.0.0.1:{raw.sockets[0].getsockname()[1]}"

        async def stop() -> None:
            raw.close()
            await raw.wait_closed()

    body = {"model": instant.MODEL, "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{up_url}/v1/chat/completions", json=body) as r:
                direct = await r.json()
            for _ in range(2):  # the second over the kept-alive connection
                async with s.post(f"{proxy_url}/v1/chat/completions", json=body) as r:
                    assert r.status == 200
                    assert r.content_type == "application/json"
                    forwarded = await r.json()
            async with s.post(f"{proxy_url}/v1/chat/completions", data=b"not json") as r:
                assert r.status >= 400  # the upstream's refusal, passed on
            async with s.get(f"{proxy_url}/healthz") as r:
                assert r.status == 200
    finally:
        await stop()
        await upstream.cleanup()
    forwarded.pop("created"), direct.pop("created")
    assert forwarded == direct
    assert forwarded["choices"][0]["message"]["content"] == instant.ANSWER


async def test_the_bench_client_keeps_one_connection_per_path_and_survives_a_close():
    """The overhead bench times calls as the OpenAI SDK makes them, on a kept-alive
    connection; a server that closes an idle one (uvicorn does after 5 s) costs a
    reconnect, not a failed run. Errors are not timed as answers."""
    import asyncio

    from aiohttp import web

    from inframind.bench.overhead import _Client

    peers: list[tuple] = []

    async def chat(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))
        if (await request.json()).get("bad"):
            return web.json_response({"error": "bad"}, status=400)
        return web.json_response({"ok": True})

    runner, base = await serve_handler(chat, keepalive_timeout=0.2)  # idle ones closed quickly
    url = f"{base}/v1/chat/completions"
    client = _Client(keep_alive=True)
    try:
        for pause in (0.0, 0.0, 0.6, 0.0):  # the third call finds its connection closed
            await asyncio.sleep(pause)
            assert await asyncio.to_thread(client.post, url, {}) > 0
        with pytest.raises(RuntimeError, match="HTTP 400"):
            await asyncio.to_thread(client.post, url, {"bad": 1})
    finally:
        client.close()
        await runner.cleanup()
    assert len(peers) == 5
    assert len(set(peers[:2])) == 1 and len(set(peers[2:])) == 1 and peers[0] != peers[2]

"""Two floors under the gateway: proxies that forward and decide nothing.

Benchmark equipment only (`inframind bench --scenario gateway` runs them beside
the gateway and vllm-router). Each forwards `POST /v1/chat/completions` to one
upstream over a pooled keep-alive connection (the gateway's own engine client,
`orchestrator.wire`) and hands the answer back as it came: no parsing, no plan,
no trace, on uvloop as the gateway is.

- `--server aiohttp` takes requests with aiohttp's server, as the gateway
  does: what this row adds above calling the upstream directly is what any
  gateway built like ours pays before doing anything; the gateway's row
  minus this one is its own work.
- `--server raw` takes them with a bare asyncio protocol and httptools: the
  floor of a hop written in Python at all, and what replacing aiohttp's
  server on the hot path could win.

    python -m inframind.bench.passthrough --port 8300 --upstream http://127.0.0.1:8200
"""

from __future__ import annotations

import argparse
import asyncio

import httptools
import uvloop
from aiohttp import web

from ..orchestrator.wire import EngineClient

UPSTREAM = web.AppKey("upstream", str)
CLIENT = web.AppKey("client", EngineClient)
PATH = "/v1/chat/completions"


async def _forward(client: EngineClient, upstream: str, body: bytes) -> tuple[int, bytes]:
    async with await client.post(upstream, PATH, body) as resp:
        return resp.status, await resp.read()


# -- aiohttp's server ---------------------------------------------------------------


async def forward(request: web.Request) -> web.Response:
    status, payload = await _forward(
        request.app[CLIENT], request.app[UPSTREAM], await request.read()
    )
    return web.Response(body=payload, status=status, content_type="application/json")


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _client(app: web.Application):
    app[CLIENT] = EngineClient()
    yield
    app[CLIENT].close()


def app(upstream: str) -> web.Application:
    a = web.Application()
    a[UPSTREAM] = upstream.rstrip("/")
    a.cleanup_ctx.append(_client)
    a.router.add_post(PATH, forward)
    a.router.add_get("/healthz", healthz)
    return a


# -- a bare asyncio protocol ----------------------------------------------------------


class RawProxy(asyncio.Protocol):
    """HTTP/1.1 in through httptools. Bench equipment: a client that pipelines requests on
    one connection may get the answers out of order."""

    def __init__(self, client: EngineClient, upstream: str) -> None:
        self.client, self.upstream = client, upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.relays: set[asyncio.Task] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, b'{"error":"bad request"}', keep_alive=False)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, body = self.url, b"".join(self.body)
        self.url, self.body = b"", []
        keep_alive = self.parser.should_keep_alive()
        if url == b"/healthz":
            self._send(200, b'{"ok":true}', keep_alive)
        elif url == PATH.encode() and self.parser.get_method() == b"POST":
            relay = asyncio.ensure_future(self._relay(body, keep_alive))
            self.relays.add(relay)
            relay.add_done_callback(self.relays.discard)
        else:
            self._send(404, b'{"error":"not found"}', keep_alive)

    async def _relay(self, body: bytes, keep_alive: bool) -> None:
        try:
            status, payload = await _forward(self.client, self.upstream, body)
        except OSError:
            status, payload = 502, b'{"error":"upstream unreachable"}'
        self._send(status, payload, keep_alive)

    def _send(self, status: int, payload: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        close = b"" if keep_alive else b"Connection: close\r\n"
        head = b"HTTP/1.1 %d -\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
        self.transport.write(head % (status, len(payload), close) + payload)
        if not keep_alive:
            self.transport.close()


async def start_raw(upstream: str, port: int = 0) -> asyncio.Server:
    """The bare proxy listening on 127.0.0.1:`port` (0: any free port)."""
    client = EngineClient()
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: RawProxy(client, upstream.rstrip("/")), "127.0.0.1", port
    )


async def serve_raw(upstream: str, port: int) -> None:
    async with await start_raw(upstream, port) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--server", choices=("aiohttp", "raw"), default="aiohttp")
    args = parser.parse_args()
    if args.server == "raw":
        uvloop.run(serve_raw(args.upstream, args.port))
    else:
        web.run_app(
            app(args.upstream),
            host="127.0.0.1",
            port=args.port,
            print=None,
            access_log=None,
            loop=uvloop.new_event_loop(),
        )


if __name__ == "__main__":
    main()

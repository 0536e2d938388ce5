"""The engine-call client: what it does with connections and with answers that go wrong.

Real loopback servers (aiohttp, or a bare asyncio one where a server must misbehave in
ways aiohttp will not) stand in for the engine's HTTP side; vLLM itself is in the e2e
tests."""

from __future__ import annotations

import asyncio
from contextlib import closing

import pytest
from aiohttp import web

from inframind.orchestrator import wire
from inframind.orchestrator.engine import EngineRejected, EngineUnavailable, chat, chat_stream
from inframind.orchestrator.wire import EngineClient
from support.dataplane import FOUR, serve_app, serve_handler, sse_answer

pytestmark = pytest.mark.unit

USAGE = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1}}
ASK = {"model": "m", "messages": [{"role": "user", "content": "2+2?"}]}


async def _answer(request: web.Request, *, close: bool = False) -> web.StreamResponse:
    return await sse_answer(
        request, FOUR, USAGE, headers={"Connection": "close"} if close else None
    )


async def test_consecutive_calls_share_a_connection_and_read_the_whole_answer():
    runner, url = await serve_handler(_answer)
    try:
        with closing(EngineClient()) as client:
            results = [await chat(client, url, ASK, timeout_s=5) for _ in range(3)]
        assert [r.text for r in results] == ["4", "4", "4"]
        assert results[0].prompt_tokens == 7 and results[0].finish_reason == "stop"
        assert client.connects == 1
    finally:
        await runner.cleanup()


async def test_a_connection_the_server_closes_or_that_sat_idle_too_long_is_not_reused(
    monkeypatch,
):
    async def closing_answer(request: web.Request) -> web.StreamResponse:
        return await _answer(request, close=True)

    runner, url = await serve_handler(closing_answer)
    try:
        with closing(EngineClient()) as client:
            for _ in range(2):
                assert (await chat(client, url, ASK, timeout_s=5)).text == "4"
        assert client.connects == 2  # "Connection: close" was honoured, nothing failed
    finally:
        await runner.cleanup()

    runner, url = await serve_handler(_answer)
    monkeypatch.setattr(wire, "IDLE_S", 0.05)
    try:
        with closing(EngineClient()) as client:
            await chat(client, url, ASK, timeout_s=5)
            await asyncio.sleep(0.1)  # longer than a connection may sit idle
            await chat(client, url, ASK, timeout_s=5)
        assert client.connects == 2
    finally:
        await runner.cleanup()


async def test_an_engine_that_refuses_or_errs_says_so_and_is_asked_once():
    runner, url = await serve_handler(_answer)
    await runner.cleanup()  # nothing listens there any more
    with closing(EngineClient()) as client:
        with pytest.raises(EngineUnavailable, match=r"ConnectionRefused|Connect call failed"):
            await chat(client, url, ASK, timeout_s=5)
        assert client.connects == 1  # a refusal is not a stale connection: no retry

    async def erring(request: web.Request) -> web.Response:
        status = 503 if (await request.json())["model"] == "busy" else 400
        return web.json_response({"error": {"message": "max_tokens too large"}}, status=status)

    runner, url = await serve_handler(erring)
    try:
        with closing(EngineClient()) as client:
            with pytest.raises(EngineRejected, match="HTTP 400: max_tokens too large"):
                await chat(client, url, ASK, timeout_s=5)
            with pytest.raises(EngineUnavailable, match="HTTP 503"):
                await chat(client, url, {**ASK, "model": "busy"}, timeout_s=5)
            assert client.connects == 1  # an error answer was read whole: still reusable
    finally:
        await runner.cleanup()


async def test_a_server_that_does_not_speak_http_is_an_unavailable_engine():
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with closing(EngineClient()) as client, pytest.raises(EngineUnavailable):
            await chat(client, f"http://127.0.0.1:{port}", ASK, timeout_s=5)
    finally:
        server.close()
        await server.wait_closed()


async def test_an_engine_that_never_answers_or_stops_midway_is_timed_out():
    """A hung engine keeps the socket open and says nothing: the call gives up at its start
    timeout, or at its whole timeout once the answer has begun, and the connection is
    not pooled for the next call."""
    stop_after_role, done = asyncio.Event(), asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        if stop_after_role.is_set():  # headers and a first event, then nothing more
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"6\r\ndata: \r\n")
        await done.wait()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        with closing(EngineClient()) as client:
            with pytest.raises(EngineUnavailable, match=r"did not accept the call within 0\.3 s"):
                await chat(client, url, ASK, timeout_s=5, start_timeout_s=0.3)
            stop_after_role.set()
            with pytest.raises(EngineUnavailable, match=r"not finished within 0\.50 s"):
                await chat(client, url, ASK, timeout_s=0.5, start_timeout_s=0.3)
            assert client.connects == 2 and not client._idle.get(client._target(url))
    finally:
        done.set()
        server.close()
        await server.wait_closed()


async def test_an_endpoint_with_a_path_prefix_or_a_user_is_called_as_its_url_says():
    seen: list[tuple[str, str | None]] = []

    async def prefixed(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, request.headers.get("Authorization")))
        return await _answer(request)

    app = web.Application()
    app.router.add_post("/engines/a/v1/chat/completions", prefixed)
    runner, url = await serve_app(app)
    try:
        with closing(EngineClient()) as client:
            assert (await chat(client, f"{url}/engines/a/", ASK, timeout_s=5)).text == "4"
            with_user = url.replace("http://", "http://svc:p%40ss@")
            assert (await chat(client, f"{with_user}/engines/a", ASK, timeout_s=5)).text == "4"
        assert seen == [
            ("/engines/a/v1/chat/completions", None),
            ("/engines/a/v1/chat/completions", "Basic c3ZjOnBAc3M="),  # svc:p@ss
        ]
        with closing(EngineClient()) as client, pytest.raises(ValueError, match="http"):
            await client.post("ftp://127.0.0.1:1", "/x", b"{}")
    finally:
        await runner.cleanup()


async def test_an_https_endpoint_is_verified_against_the_trusted_certificates(
    tmp_path, monkeypatch
):
    """TLS with the system's trust store (SSL_CERT_FILE honoured, as for aiohttp before):
    a certificate it trusts answers; one it does not is an unavailable engine, not a
    silently unverified call."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl binary to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    runner, url = await serve_handler(_answer, ssl_context=server_tls)
    try:
        with closing(EngineClient()) as client, pytest.raises(EngineUnavailable, match="CERT"):
            await chat(client, url, ASK, timeout_s=5)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        with closing(EngineClient()) as client:
            results = [await chat(client, url, ASK, timeout_s=5) for _ in range(2)]
        assert [r.text for r in results] == ["4", "4"] and client.connects == 1
    finally:
        await runner.cleanup()


async def test_bytes_that_are_not_utf8_in_an_answer_become_replacement_characters():
    async def latin1(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"delta":{"content":"caf\xe9"}}]}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        return resp

    runner, url = await serve_handler(latin1)
    try:
        with closing(EngineClient()) as client:
            assert (await chat(client, url, ASK, timeout_s=5)).text == "caf\ufffd"
    finally:
        await runner.cleanup()


async def test_a_long_answer_read_slowly_holds_the_engine_back_instead_of_piling_up():
    """A streamed answer relayed to a slow client: past wire.HIGH_WATER unread, the
    connection stops reading (TCP then holds the engine back), and reads on as the
    reader catches up. The whole answer arrives, and the connection is pooled after."""
    piece = "x" * 65536
    pieces = 64  # 4 MiB, four times the high-water mark

    async def long_answer(request: web.Request) -> web.StreamResponse:
        chunk = {"choices": [{"delta": {"content": piece}}]}
        return await sse_answer(request, *[chunk] * pieces, USAGE)

    runner, url = await serve_handler(long_answer)
    try:
        with closing(EngineClient()) as client:
            text = []
            async for item in chat_stream(client, url, ASK, timeout_s=30):
                if isinstance(item, str):
                    text.append(item)
                    await asyncio.sleep(0.02)  # the client this is relayed to is slow
            assert "".join(text) == piece * pieces
            (conn,) = client._idle[client._target(url)]  # pooled: read to its end
            assert conn.pauses >= 1 and not conn.paused
    finally:
        await runner.cleanup()

"""A lean HTTP/1.1 client for the one request the data plane makes on every agent step.

Why not aiohttp's client, which the rest of the gateway uses (metrics scrapes,
Prometheus): side by side in one run, a pass-through in front of an upstream
that answers at once added 0.26 ms less per call with this client than with
aiohttp's; with uvloop as well, the gateway's added latency fell by about a
quarter (`inframind bench --scenario gateway`, README). This client does what an
engine call needs and no more: one POST on a pooled keep-alive connection, a
response parsed by httptools (llhttp, the parser Node.js uses), and the body
handed over as it arrives, de-chunked; reading pauses while more than
HIGH_WATER of it waits unread.

Failures keep the meaning the runner acts on:
- `Disconnected`: the connection closed before the response began. A pooled
  connection the engine dropped while idle does this; so does an engine that
  died. The request is sent once more on a new connection (`post`), since the
  engine never answered it.
- `BrokeOff`: the connection closed in the middle of the response body.
- `ConnectionRefusedError` and other `OSError`s from connecting pass through.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections import deque
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import httptools

# vLLM's API server (uvicorn) closes a connection idle for 5 s. One idle longer than this
# is not reused: sending on a connection the server is closing at that instant fails.
IDLE_S = 3.0
# Read flow control: past this much of a body received and not yet taken by the reader
# (a streamed answer relayed to a slow client), the connection stops reading until the
# reader has caught up, and TCP holds the engine back instead of this process's memory.
HIGH_WATER = 1 << 20


class Disconnected(ConnectionError):
    """The connection closed before the response began."""


class BrokeOff(ConnectionError):
    """The connection closed in the middle of the response."""


class _Target(NamedTuple):
    """Where an endpoint URL points, parsed once; connections are pooled per target."""

    https: bool
    host: str
    port: int
    prefix: bytes  # the URL's path, prepended to every request's
    headers: bytes  # Host, and Basic authorization when the URL carries a user


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.keep_alive = False
        self.headers_done = False
        self.complete = False
        self.lost: BaseException | None = None
        self.body: deque[bytes] = deque()
        self.buffered = 0  # bytes in `body`
        self.paused = False  # reading paused at HIGH_WATER
        self.waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.pauses = 0  # times reading was paused, for tests of flow control

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.lost = exc
            self.transport.close()  # type: ignore[union-attr]
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = exc or ConnectionResetError("the server closed the connection")
        self._wake()

    # -- httptools callbacks -----------------------------------------------------

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Read here: llhttp resets its flags once the message is complete.
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.pauses += 1
            self.transport.pause_reading()  # type: ignore[union-attr]

    def taken(self) -> None:
        """The reader took everything buffered: read on."""
        self.body.clear()
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        self.complete = True

    # -- used by Response --------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, deadline: float | None = None) -> None:
        """Until something arrives or the connection is lost; past `deadline` (the loop's
        clock), TimeoutError. A timer on the waiter adds 1.2 us to a wait; asyncio.timeout,
        which cancels the task instead, added 3.5 us (uvloop, measured in isolation)."""
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    @property
    def reusable(self) -> bool:
        return (
            self.lost is None
            and self.transport is not None
            and not self.transport.is_closing()
            and time.monotonic() - self.idle_since < IDLE_S
        )

    def start(self, request: bytes) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status, self.keep_alive, self.headers_done, self.complete = 0, False, False, False
        self.taken()
        self.transport.write(request)  # type: ignore[union-attr]


class Response:
    """A response whose headers have arrived; read its body, then `release()` it."""

    def __init__(self, client: EngineClient, key: _Target, conn: _Connection) -> None:
        self._client, self._key, self._conn = client, key, conn
        self.status = conn.status

    async def next_chunk(self, deadline: float | None = None) -> bytes | None:
        """The next piece of the body (as much as has arrived), or None at its end.

        `deadline` is on the loop's clock; past it, TimeoutError."""
        conn = self._conn
        while True:
            if conn.body:
                data = b"".join(conn.body)  # one piece: that piece itself, not a copy
                conn.taken()
                return data
            if conn.complete:
                return None
            if conn.lost is not None:
                raise BrokeOff(f"the answer broke off: {conn.lost}") from conn.lost
            await conn.wait(deadline)

    async def read(self, deadline: float | None = None) -> bytes:
        parts = []
        while (chunk := await self.next_chunk(deadline)) is not None:
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Back to the pool if the whole response was read and the server keeps the
        connection; closed otherwise (an unread rest would be read as the next answer)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.complete and conn.lost is None and conn.keep_alive:
            conn.idle_since = time.monotonic()
            self._client._idle.setdefault(self._key, []).append(conn)
        else:
            conn.transport.close()  # type: ignore[union-attr]

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()


class EngineClient:
    """Pooled keep-alive connections to engines, for `post`."""

    def __init__(self) -> None:
        self._idle: dict[_Target, list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._ssl: ssl.SSLContext | None = None
        self.connects = 0  # connections opened, for tests of reuse

    def _target(self, url: str) -> _Target:
        """The endpoint URL parsed, once; a user in it becomes Basic authorization (as
        aiohttp's client did)."""
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            https = parts.scheme == "https"
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            port = parts.port or (443 if https else 80)
            headers = b"Host: " + parts.netloc.rsplit("@", 1)[-1].encode()
            if parts.username is not None:
                user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                headers += b"\r\nAuthorization: Basic " + base64.b64encode(user.encode())
            target = _Target(https, parts.hostname, port, parts.path.rstrip("/").encode(), headers)
            self._targets[url] = target
        return target

    async def _connect(self, key: _Target, deadline: float | None = None) -> _Connection:
        if key.https and self._ssl is None:
            self._ssl = ssl.create_default_context()
        self.connects += 1
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline):
            _, conn = await loop.create_connection(
                _Connection, key.host, key.port, ssl=self._ssl if key.https else None
            )
        return conn

    def _pooled(self, key: _Target) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.reusable:
                return conn
            conn.transport.close()  # type: ignore[union-attr]
        return None

    async def post(
        self, url: str, path: str, body: bytes, deadline: float | None = None
    ) -> Response:
        """POST `body` (JSON) to `url` + `path`; returns once the response headers arrive.

        A connection that closes before the response begins is retried once on a new
        connection: the engine did not answer that request. Refused connections are not.
        Past `deadline` (the loop's clock), connecting or waiting for the headers raises
        TimeoutError."""
        key = self._target(url)
        request = b"".join(
            (
                b"POST ", key.prefix, path.encode(), b" HTTP/1.1\r\n", key.headers,
                b"\r\nContent-Type: application/json\r\nAccept: */*\r\nContent-Length: ",
                str(len(body)).encode(), b"\r\n\r\n", body,
            )
        )  # fmt: skip
        conn = self._pooled(key) or await self._connect(key, deadline)
        for attempt in (1, 2):
            try:
                conn.start(request)
                while not conn.headers_done:
                    if conn.lost is not None:
                        raise Disconnected(f"closed before answering: {conn.lost}")
                    await conn.wait(deadline)
            except Disconnected:
                conn.transport.close()  # type: ignore[union-attr]
                if attempt == 2:
                    raise
                conn = await self._connect(key, deadline)
            except BaseException:
                conn.transport.close()  # type: ignore[union-attr]
                raise
            else:
                return Response(self, key, conn)
        raise AssertionError("unreachable")

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.transport.close()  # type: ignore[union-attr]
        self._idle.clear()

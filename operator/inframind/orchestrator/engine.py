"""One agent step as one OpenAI-compatible call to a vLLM engine, with priority and a deadline.

Failures are sorted into two kinds the runner acts on differently: an
`EngineUnavailable` (connection refused or reset, 5xx, timeout) means "try
another endpoint"; an `EngineRejected` (4xx) means the request itself is
wrong and retrying elsewhere will not help.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httptools
import orjson

from .wire import BrokeOff, EngineClient, Response


class EngineError(Exception):
    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint


class EngineUnavailable(EngineError):
    """The engine could not answer (down, overloaded, too slow): another endpoint may."""


class TooSlow(EngineUnavailable):
    """The engine took the call but had not finished it when the step's time ran out.

    Alive, only slow for this budget: the step may go elsewhere, but it is no sign of a
    broken engine, and it must not take the engine out of routing for everyone."""


class EngineRejected(EngineError):
    """The engine refused the request as invalid (4xx): retrying elsewhere will not help."""

    def __init__(self, endpoint: str, status: int, message: str) -> None:
        super().__init__(endpoint, f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True, slots=True)
class CallResult:
    endpoint: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    latency_s: float
    ttft_s: float | None = None


def build_request(
    model: str,
    messages: Sequence[dict[str, str]],
    max_tokens: int,
    priority: int | None,
    temperature: float = 0.7,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": list(messages),
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    if priority is not None:
        # vLLM serves lower values first under --scheduling-policy priority.
        body["priority"] = priority
    return body


async def _raise_for(resp: Response, endpoint: str, deadline: float) -> None:
    if resp.status < 400:
        return
    text = (await resp.read(deadline))[:500].decode("utf-8", "replace")
    try:
        text = json.loads(text).get("error", {}).get("message", text)
    except (ValueError, AttributeError):
        pass
    if resp.status >= 500 or resp.status == 429:
        raise EngineUnavailable(endpoint, f"HTTP {resp.status}: {text}")
    raise EngineRejected(endpoint, resp.status, text)


def _event(data: bytes) -> dict[str, Any]:
    """One SSE event's JSON. orjson reads the bytes as they came (0.6 us for a typical
    event against 2.3 us for json.loads on decoded text); undecodable bytes become
    U+FFFD, as in the text, rather than fail the call."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8", "replace"))


async def chat(
    client: EngineClient,
    endpoint: str,
    body: dict[str, Any],
    timeout_s: float,
    start_timeout_s: float | None = None,
) -> CallResult:
    """One call, answered whole; raises EngineError subclasses.

    Streamed from the engine all the same: vLLM sends a streamed response's headers as
    soon as it accepts the request, queued or not, so a hung engine shows within
    `start_timeout_s` instead of eating the step's whole budget (a plain response's
    headers come only with the answer). It also measures the time to first token.
    """
    # The whole answer is wanted at once: vLLM's per-request `stream_interval` sends the
    # first token at once (TTFT, a sign of life) and then the rest in one piece, instead of
    # one SSE event per token for its API server to write and this process to parse, on
    # CPUs the engines need. Servers without the field ignore it.
    body = {**body, "stream_interval": max(1, int(body.get("max_tokens") or 1))}
    result: CallResult | None = None
    async for item in chat_stream(client, endpoint, body, timeout_s, start_timeout_s):
        if isinstance(item, CallResult):
            result = item
    assert result is not None  # chat_stream always ends with one
    return result


async def chat_stream(
    client: EngineClient,
    endpoint: str,
    body: dict[str, Any],
    timeout_s: float,
    start_timeout_s: float | None = None,
) -> AsyncIterator[str | CallResult]:
    """Stream a call: yields text deltas as they arrive, then one final CallResult.

    `timeout_s` bounds the whole call; `start_timeout_s` the wait for the engine to
    accept it (response headers), which only a hung or unreachable engine overruns.
    """
    started = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    usage: dict[str, Any] = {}
    finish: str | None = None
    total = max(timeout_s, 0.05)
    start_limit = total if start_timeout_s is None else min(start_timeout_s, total)
    now = asyncio.get_running_loop().time()
    deadline = now + total
    payload = orjson.dumps(
        {**body, "stream": True, "stream_options": {"include_usage": True}},
        option=orjson.OPT_SERIALIZE_NUMPY,  # as json.dumps took numpy scalars, e.g. a priority
    )
    accepted = done = False
    resp: Response | None = None
    try:
        try:
            resp = await client.post(endpoint, "/v1/chat/completions", payload, now + start_limit)
        except TimeoutError as exc:
            if start_limit >= total:  # the step's whole time ran out first
                raise EngineUnavailable(endpoint, f"no answer within {timeout_s:.2f} s") from exc
            raise EngineUnavailable(
                endpoint, f"did not accept the call within {start_limit:.1f} s (hung?)"
            ) from exc
        await _raise_for(resp, endpoint, deadline)
        accepted = True
        # Read to the end of the body even after [DONE] (vLLM's chunked terminator
        # follows at once): a response left unread closes its connection instead of
        # returning it to the pool, and every call then paid for a new connection.
        pending = b""
        while (data := await resp.next_chunk(deadline)) is not None:
            if done:
                continue
            lines = (pending + data).split(b"\n")
            pending = lines.pop()  # a line still arriving
            for raw in lines:
                if not raw.startswith(b"data:"):
                    continue
                event = raw[5:].strip()
                if event == b"[DONE]":
                    done = True
                    break
                chunk = _event(event)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or ():
                    if ttft is None:
                        # vLLM sends its first chunk (the role) with the first token, which
                        # may decode to no text yet: that is when the engine took the call up.
                        ttft = time.perf_counter() - started
                    delta = (choice.get("delta") or {}).get("content")
                    finish = choice.get("finish_reason") or finish
                    if delta:
                        parts.append(delta)
                        yield delta
    except BrokeOff as exc:
        # The stream broke off mid-answer (an engine killed while streaming).
        if not done:
            raise EngineUnavailable(endpoint, str(exc)) from exc
    except TimeoutError as exc:
        if done:
            pass  # the whole answer came ([DONE]); only the body's end was late
        elif accepted:
            raise TooSlow(endpoint, f"not finished within {timeout_s:.2f} s") from exc
        else:
            raise EngineUnavailable(endpoint, f"no answer within {timeout_s:.2f} s") from exc
    except (OSError, httptools.HttpParserError) as exc:  # refused, reset, not HTTP
        # After TimeoutError, which is an OSError too.
        raise EngineUnavailable(endpoint, f"{type(exc).__name__}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise EngineUnavailable(endpoint, f"not an OpenAI stream: {exc}") from exc
    finally:
        if resp is not None:
            resp.release()
    yield CallResult(
        endpoint=endpoint,
        text="".join(parts),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=finish,
        latency_s=time.perf_counter() - started,
        ttft_s=ttft,
    )

"""An upstream that answers at once, shaped like vLLM's OpenAI server: for measuring what a
proxy in front of it adds, to the tens of microseconds a real engine's jitter hides.

Benchmark equipment only (`inframind bench --scenario gateway` starts it beside the
real engine); no test uses it in place of vLLM. It serves what the gateway and
vllm-router read from an engine: `/v1/chat/completions` (plain, or streamed as
vLLM streams: a role chunk with the first token, the text, a usage chunk,
`[DONE]`), `/v1/models` (with `max_model_len`), `/metrics` (an idle engine's
gauges) and `/health`.

    python -m inframind.bench.instant --port 8200   # binds 127.0.0.1
"""

from __future__ import annotations

import argparse
import json
import time

from aiohttp import web

MODEL = "bench"
ANSWER = "Paris."
METRICS = (
    "# TYPE vllm:num_requests_running gauge\n"
    f'vllm:num_requests_running{{model_name="{MODEL}"}} 0.0\n'
    "# TYPE vllm:num_requests_waiting gauge\n"
    f'vllm:num_requests_waiting{{model_name="{MODEL}"}} 0.0\n'
    "# TYPE vllm:kv_cache_usage_perc gauge\n"
    f'vllm:kv_cache_usage_perc{{model_name="{MODEL}"}} 0.0\n'
)


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    body = {
        "id": "chatcmpl-instant",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    usage = {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "chatcmpl-instant",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ANSWER},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(
        _chunk({"role": "assistant", "content": ""})
        + _chunk({"content": ANSWER})
        + _chunk({}, finish="stop")
        + _chunk({}, usage=usage)
        + b"data: [DONE]\n\n"
    )
    await resp.write_eof()
    return resp


async def models(_: web.Request) -> web.Response:
    return web.json_response(
        {"object": "list", "data": [{"id": MODEL, "object": "model", "max_model_len": 2048}]}
    )


async def metrics(_: web.Request) -> web.Response:
    return web.Response(text=METRICS, content_type="text/plain")


async def health(_: web.Request) -> web.Response:
    return web.Response()


def app() -> web.Application:
    a = web.Application()
    a.router.add_post("/v1/chat/completions", chat)
    a.router.add_get("/v1/models", models)
    a.router.add_get("/metrics", metrics)
    a.router.add_get("/health", health)
    return a


def serve(application: web.Application, port: int) -> None:
    """Run a piece of bench equipment on loopback until it is stopped, quietly."""
    web.run_app(application, host="127.0.0.1", port=port, print=None, access_log=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    serve(app(), parser.parse_args().port)


if __name__ == "__main__":
    main()

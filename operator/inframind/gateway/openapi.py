"""The gateway's HTTP API as an OpenAPI 3.0 document, served at GET /openapi.json.

Written out by hand to match `requests.parse_request` and the handlers in `app`:
what a client may send and every status it may get back, each error with a reason
(OpenAI's error object). Clients and API tools read it; the tests fuzz the gateway
against it (schemathesis) and require no 5xx and a reason on every 4xx.
"""

from __future__ import annotations

from typing import Any

from ..vocab import TaskFamily
from .requests import BUDGET_HEADER, ROLES, TASK_HEADER

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string"},
                "code": {"type": "string"},
                "param": {"type": "string", "nullable": True},
            },
        }
    },
}

_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": sorted(ROLES)},
        "content": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
                    },
                    "description": "content parts; the text ones are joined",
                },
            ]
        },
    },
}

_CHAT_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {"type": "string", "description": "the pipeline's name"},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "stream": {"type": "boolean", "default": False},
        "inframind": {
            "type": "object",
            "description": "InfraMind's extension: deadline, task hint, shedding",
            "properties": {
                "budget_s": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                "task": {"type": "string", "enum": [t.value for t in TaskFamily]},
                "sheddable": {"type": "boolean", "default": True},
            },
        },
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "the request is malformed; the message says what to fix",
        401: "a bearer token is required or wrong",
        404: "unknown pipeline",
        413: "body or prompt too large",
        429: "shed under load; retry after Retry-After seconds",
        502: "an engine refused a later agent step of the plan",
        503: "no engine answered within the budget (the error carries the trace under "
        "'inframind'), or not ready: no pipeline config, or auth required but no token set",
    }
    return {
        str(c): {
            "description": reasons[c],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for c in codes
    }


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


def openapi_document() -> dict[str, Any]:
    header = {"in": "header", "required": False}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "InfraMind gateway",
            "version": "v1",
            "description": "OpenAI-compatible chat completions, each answered by a "
            "multi-agent pipeline planned from live cluster load.",
        },
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "summary": "Answer a chat with the pipeline named by 'model'",
                    "parameters": [
                        {
                            **header,
                            "name": BUDGET_HEADER,
                            "schema": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                            "description": "latency budget in seconds (overrides the body's)",
                        },
                        {
                            **header,
                            "name": TASK_HEADER,
                            "schema": {"type": "string", "enum": [t.value for t in TaskFamily]},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ChatRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "the answer, with the decision trace under "
                            "'inframind' (streamed as server-sent events when stream is true)",
                            "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(400, 401, 404, 413, 429, 502, 503),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "The pipelines this gateway serves, as OpenAI models",
                    "responses": {"200": _json("model list"), **_errors(401, 503)},
                }
            },
            "/v1/inframind/pools": {
                "get": {
                    "summary": "Live per-pool load, routing counts and breaker states",
                    "responses": {"200": _json("pool view"), **_errors(401, 503)},
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json("alive")}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: a pipeline is configured and an engine reachable",
                    "responses": {"200": _json("ready"), "503": _json("not ready, with reasons")},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": _json("OpenAPI 3.0")}}
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": {"Error": _ERROR, "ChatRequest": _CHAT_REQUEST}},
    }

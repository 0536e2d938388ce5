"""Turn an OpenAI chat-completions request into a validated pipeline request, or a clear 4xx.

Pure functions of the body and headers: no web framework objects here, so the
rules are testable on their own and identical for every server that uses them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from ..api.config import PipelineConfig
from ..vocab import TaskFamily

BUDGET_HEADER = "X-InfraMind-Budget"
TASK_HEADER = "X-InfraMind-Task"
ROLES = {"system", "user", "assistant"}


class RequestError(Exception):
    """A request the client must fix; carries the HTTP status and an OpenAI-style error."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": str(self),
                "type": "invalid_request_error",
                "code": self.code,
                "param": self.param,
            }
        }


@dataclass(frozen=True, slots=True)
class PipelineRequest:
    pipeline: str
    messages: list[dict[str, str]]
    budget_s: float
    task: TaskFamily | None
    stream: bool
    prompt_chars: int
    sheddable: bool


def _number(value: Any, what: str, param: str) -> float:
    try:
        if isinstance(value, bool):  # JSON true is no number of seconds, though int(True) is
            raise TypeError
        out = float(value)
    except (TypeError, ValueError):
        raise RequestError(
            400, f"{what} must be a number of seconds, got {value!r}", "invalid_budget", param
        ) from None
    if not math.isfinite(out) or out <= 0:
        raise RequestError(
            400,
            f"{what} must be a positive number of seconds, got {value!r}",
            "invalid_budget",
            param,
        )
    return out


def parse_request(
    body: Any,
    headers: Mapping[str, str],
    pipelines: Mapping[str, PipelineConfig],
    max_prompt_chars: int,
) -> PipelineRequest:
    """Validate a chat-completions body against the pipelines this gateway serves.

    `headers` are looked up case-insensitively; aiohttp's already are."""
    if not isinstance(headers, CIMultiDict | CIMultiDictProxy):
        headers = CIMultiDict(headers)
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object", "invalid_body")
    model = body.get("model")
    if model is None and len(pipelines) == 1:
        model = next(iter(pipelines))
    if not isinstance(model, str) or model not in pipelines:
        served = ", ".join(sorted(pipelines)) or "none"
        raise RequestError(
            404,
            f"unknown pipeline {model!r}: set 'model' to one this gateway serves ({served})",
            "model_not_found",
            "model",
        )
    config = pipelines[model]

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            400,
            "'messages' must be a non-empty list of {role, content}",
            "invalid_messages",
            "messages",
        )
    clean: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if not isinstance(role, str) or role not in ROLES:
            raise RequestError(
                400,
                f"messages[{i}] needs a role of system, user or assistant",
                "invalid_messages",
                "messages",
            )
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            texts = [p.get("text", "") for p in content if isinstance(p, dict)]
            content = "".join(texts) if all(isinstance(t, str) for t in texts) else None
        if not isinstance(content, str):
            raise RequestError(
                400, f"messages[{i}].content must be text", "invalid_messages", "messages"
            )
        clean.append({"role": role, "content": content})
    if not any(m["role"] == "user" and m["content"].strip() for m in clean):
        raise RequestError(
            400, "'messages' has no non-empty user message", "invalid_messages", "messages"
        )
    chars = sum(len(m["content"]) for m in clean)
    if chars > max_prompt_chars:
        raise RequestError(
            413,
            f"the prompt has {chars} characters; this gateway accepts at most {max_prompt_chars}",
            "prompt_too_long",
            "messages",
        )

    ext = body.get("inframind")
    if ext is None:
        ext = {}
    elif not isinstance(ext, dict):
        raise RequestError(
            400,
            "'inframind' must be an object like {\"budget_s\": 20}",
            "invalid_body",
            "inframind",
        )
    header_budget = headers.get(BUDGET_HEADER)
    if header_budget is not None:
        budget = _number(header_budget, f"header {BUDGET_HEADER}", BUDGET_HEADER)
    elif "budget_s" in ext:
        budget = _number(ext["budget_s"], "inframind.budget_s", "inframind.budget_s")
    else:
        budget = config.budget.default_seconds
    if budget > config.budget.max_seconds:
        raise RequestError(
            400,
            f"budget {budget:g} s exceeds the pipeline's maximum of "
            f"{config.budget.max_seconds:g} s",
            "invalid_budget",
            "inframind.budget_s",
        )

    task_raw = headers.get(TASK_HEADER) or ext.get("task")
    task = None
    if task_raw is not None:
        try:
            task = TaskFamily(str(task_raw).lower())
        except ValueError:
            names = ", ".join(t.value for t in TaskFamily)
            raise RequestError(
                400,
                f"unknown task {task_raw!r}; use one of {names}",
                "invalid_task",
                "inframind.task",
            ) from None

    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, "'stream' must be true or false", "invalid_body", "stream")
    sheddable = ext.get("sheddable", True)
    if not isinstance(sheddable, bool):
        raise RequestError(
            400,
            "'inframind.sheddable' must be true or false",
            "invalid_body",
            "inframind.sheddable",
        )
    return PipelineRequest(model, clean, budget, task, stream, chars, sheddable)

"""Gateway request validation: every bad request is a 4xx that says what to fix."""

from __future__ import annotations

import pytest

from inframind.api.config import PipelineConfig
from inframind.gateway.requests import RequestError, parse_request
from inframind.vocab import TaskFamily

pytestmark = pytest.mark.unit

PIPES = {
    "chat": PipelineConfig.model_validate(
        {
            "pipeline": "chat",
            "pools": [{"name": "a", "model": "m", "servedModelName": "a"}],
            "budget": {"defaultSeconds": 5, "maxSeconds": 20},
        }
    )
}
USER = [{"role": "user", "content": "hi"}]


def parse(body, headers=None, limit=1000):
    return parse_request(body, headers or {}, PIPES, limit)


def test_a_plain_request_gets_the_pipeline_default_budget() -> None:
    req = parse({"model": "chat", "messages": USER})
    assert (req.pipeline, req.budget_s, req.stream, req.task) == ("chat", 5.0, False, None)


def test_budget_comes_from_the_header_before_the_body_extension() -> None:
    body = {"model": "chat", "messages": USER, "inframind": {"budget_s": 7, "task": "math"}}
    assert parse(body).budget_s == 7.0
    assert parse(body).task is TaskFamily.MATH
    assert parse(body, {"x-inframind-budget": "2.5"}).budget_s == 2.5


def test_model_may_be_omitted_when_the_gateway_serves_one_pipeline() -> None:
    assert parse({"messages": USER}).pipeline == "chat"


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        ([], {}, 400, "JSON object"),
        ({"model": "nope", "messages": USER}, {}, 404, "serves (chat)"),
        ({"model": "chat"}, {}, 400, "non-empty list"),
        ({"model": "chat", "messages": []}, {}, 400, "non-empty list"),
        ({"model": "chat", "messages": [{"role": "robot", "content": "x"}]}, {}, 400, "role of"),
        ({"model": "chat", "messages": [{"role": "user", "content": 3}]}, {}, 400, "must be text"),
        (
            {"model": "chat", "messages": [{"role": "system", "content": "x"}]},
            {},
            400,
            "no non-empty user",
        ),
        (
            {"model": "chat", "messages": [{"role": "user", "content": "x" * 1001}]},
            {},
            413,
            "at most 1000",
        ),
        ({"model": "chat", "messages": USER}, {"X-InfraMind-Budget": "0"}, 400, "positive number"),
        (
            {"model": "chat", "messages": USER},
            {"X-InfraMind-Budget": "soon"},
            400,
            "must be a number",
        ),
        ({"model": "chat", "messages": USER, "inframind": {"budget_s": -1}}, {}, 400, "positive"),
        (
            {"model": "chat", "messages": USER, "inframind": {"budget_s": 99}},
            {},
            400,
            "maximum of 20",
        ),
        (
            {"model": "chat", "messages": USER, "inframind": {"task": "poetry"}},
            {},
            400,
            "unknown task",
        ),
        ({"model": "chat", "messages": USER, "stream": "yes"}, {}, 400, "true or false"),
        # Shapes that used to fail inside the parser and answer 500:
        ({"model": "chat", "messages": [{"role": ["user"], "content": "x"}]}, {}, 400, "role of"),
        (
            {"model": "chat", "messages": [{"role": "user", "content": [{"text": 5}]}]},
            {},
            400,
            "must be text",
        ),
        # ...and ones that were quietly taken for something else:
        ({"model": "chat", "messages": USER, "inframind": {"budget_s": True}}, {}, 400, "number"),
        ({"model": "chat", "messages": USER, "inframind": []}, {}, 400, "must be an object"),
        ({"model": "chat", "messages": USER, "inframind": False}, {}, 400, "must be an object"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_reason(body, headers, status, says) -> None:
    with pytest.raises(RequestError) as info:
        parse(body, headers)
    assert info.value.status == status
    assert says in str(info.value)
    assert info.value.body()["error"]["message"] == str(info.value)


def test_text_content_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "2 + "}, {"type": "image_url"}]
    parts.append({"type": "text", "text": "2?"})
    req = parse({"model": "chat", "messages": [{"role": "user", "content": parts}]})
    assert req.messages == [{"role": "user", "content": "2 + 2?"}]

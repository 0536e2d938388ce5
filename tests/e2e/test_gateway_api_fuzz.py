"""The gateway's OpenAPI document, fuzzed with schemathesis against a real gateway and engine.

Valid and invalid requests (schemathesis' positive and negative modes), derived from
GET /openapi.json: the gateway must never answer 5xx, every 4xx must carry a reason in
OpenAI's error shape, and every answer must match the document.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from inframind.api.config import PipelineConfig
from inframind.api.pipeline import Budget
from inframind.localstack.engines import free_port
from inframind.localstack.processes import start_gateway, stop_process, wait_for
from inframind.vocab import Depth, Topology
from support.dataplane import get_json, pool

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

EXAMPLES = 40  # per operation; the chat operation makes real (short) engine calls


@pytest.fixture(scope="module")
def gateway_api(engines, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    work: Path = tmp_path_factory.mktemp("api-fuzz")
    config = work / "pipeline.json"
    config.write_text(
        PipelineConfig(
            pipeline="demo",
            pools=[pool(engines["alpha"])],
            topologies=[Topology.SINGLE],
            depths=[Depth.FLASH],  # keep each valid call short
            budget=Budget(default_seconds=30, max_seconds=120),
        ).model_dump_json(by_alias=True)
    )
    port = free_port()
    proc = start_gateway(config, port, work / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get_json(f"{url}/readyz", timeout=1).get("ready"), 30, "gateway /readyz")
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        schema.config.update(base_url=url, request_timeout=120)
        yield schema
    finally:
        stop_process(proc)


# schemathesis' own pytest integration (from_fixture) does not run on pytest 9.2 (it sets
# a node attribute pytest dropped), so each operation's strategy is driven by hypothesis.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_every_4xx_says_why(gateway_api, mode: GenerationMode) -> None:
    operations = [result.ok() for result in gateway_api.get_all_operations()]
    assert len(operations) == 6, [op.label for op in operations]
    for operation in operations:
        inputs = (operation.body, operation.headers, operation.query, operation.path_parameters)
        if mode is GenerationMode.NEGATIVE and not any(len(x) for x in inputs):
            continue  # nothing to get wrong in a bare GET

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case) -> None:
            # Conformance, not acceptance: a request can match the document and still be
            # refused for a reason no schema states (no user message, budget over the cap).
            response = case.call_and_validate(
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                ]
            )
            if 400 <= response.status_code < 500:
                error = response.json()["error"]
                assert error["message"] and error["code"], response.text

        check()

"""The API models accept the examples and refuse bad specs with messages a user can act on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from inframind.api import AgentPipelineSpec, ModelPoolSpec
from inframind.api.pipeline import HeuristicName

pytestmark = pytest.mark.unit

EXAMPLES = sorted((Path(__file__).parents[2] / "manifests" / "examples").glob("*.yaml"))
SPECS = {"ModelPool": ModelPoolSpec, "AgentPipeline": AgentPipelineSpec}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_manifest_is_a_valid_spec(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        SPECS[doc["kind"]].model_validate(doc["spec"])


def test_examples_cover_five_managed_pools_an_external_pool_and_two_pipelines() -> None:
    docs = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    pools = [d for d in docs if d["kind"] == "ModelPool"]
    assert sum("managed" in d["spec"] for d in pools) == 5
    assert sum("endpoints" in d["spec"] for d in pools) == 1
    assert sum(d["kind"] == "AgentPipeline" for d in docs) == 2


def _error(model, spec) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(spec)
    return str(info.value)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"model": "m"}, "needs either 'managed'"),
        ({"model": "m", "endpoints": []}, "spec.endpoints is empty"),
        ({"model": "m", "endpoints": ["ftp://x"]}, "not an http(s) URL"),
        ({"model": "m", "endpoints": ["http://x:80/v1/chat"]}, "give the server root"),
        ({"model": "m", "endpoints": ["http://x:99999"]}, "malformed port"),
        ({"model": "m", "endpoints": ["http://a", "http://a"]}, "same URL twice"),
        ({"model": "m", "managed": {}, "endpoints": ["http://a"]}, "not both"),
        ({"model": "m", "managed": {"replicaz": 2}}, "Extra inputs"),
        ({"model": "m", "managed": {}, "maxNumSeqs": 8}, "set spec.managed.engine.maxNumSeqs"),
        (
            {"model": "m", "managed": {"engine": {"extraArgs": ["--port=1"]}}},
            "which the operator owns",
        ),
        (
            {
                "model": "m",
                "endpoints": ["http://a"],
                "profile": {"accuracy": {"math": {"flash": 72}}},
            },
            "write 0.72, not 72",
        ),
    ],
)
def test_bad_modelpool_spec_says_what_to_fix(spec: dict, says: str) -> None:
    assert says in _error(ModelPoolSpec, spec)


def _env(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({}, "needs 'pools'"),
        ({"pools": []}, "spec.pools is empty"),
        ({"pools": ["a", "a"]}, "more than once"),
        ({"pools": ["a"], "poolSelector": {"matchLabels": {}}}, "use one of them"),
        ({"pools": ["a"], "budget": {"defaultSeconds": 0}}, "greater than 0"),
        ({"pools": ["a"], "budget": {"defaultSeconds": 100, "maxSeconds": 10}}, "exceeds"),
        ({"pools": ["a"], "topologies": ["star"]}, "'single'"),
        ({"pools": ["a"], "maxAgents": 1}, "raise maxAgents"),
        ({"pools": ["a"], "policy": {"heuristic": "magic"}}, "budget-greedy"),
        ({"pools": ["a"], "topologies": ["ensemble"], "maxAgents": 3}, "raise maxAgents to 4"),
        (
            {"pools": ["a"], "topologies": ["single", "verify"], "roles": ["solver"]},
            "leaves verify no plan: it needs verifier",
        ),
        ({"pools": ["a"], "policy": {"heuristic": "moa", "path": "/p"}}, "choose one source"),
        (
            {
                "pools": ["a"],
                "gateway": {"env": [{"name": "INFRAMIND_GATEWAY_PORT", "value": "1"}]},
            },
            "not a gateway setting; use one of INFRAMIND_GATEWAY_MAX_INFLIGHT",
        ),
        (
            {
                "pools": ["a"],
                "gateway": {"env": [{"name": "INFRAMIND_GATEWAY_RESCUE", "value": "?"}]},
            },
            "INFRAMIND_GATEWAY_RESCUE='?': Input should be a valid boolean",
        ),
        (
            {
                "pools": ["a"],
                "gateway": {"env": [_env("INFRAMIND_GATEWAY_MAX_INFLIGHT", "8")] * 2},
            },
            "sets INFRAMIND_GATEWAY_MAX_INFLIGHT more than once",
        ),
    ],
)
def test_bad_pipeline_spec_says_what_to_fix(spec: dict, says: str) -> None:
    assert says in _error(AgentPipelineSpec, spec)


def test_pipeline_defaults_to_every_topology_edf_and_the_budget_greedy_policy() -> None:
    spec = AgentPipelineSpec.model_validate({"pools": ["a"]})
    assert [t.value for t in spec.topologies] == ["single", "chain", "debate", "ensemble", "verify"]
    assert spec.scheduler.value == "edf"
    assert spec.policy.reference == "heuristic:budget-greedy"


def test_endpoint_urls_are_normalised_to_the_server_root() -> None:
    spec = ModelPoolSpec.model_validate({"model": "m", "endpoints": ["http://h:8000/v1/"]})
    assert spec.endpoints == ["http://h:8000"]


def test_heuristic_names_in_the_api_are_a_closed_list() -> None:
    assert "budget-greedy" in HeuristicName.__args__

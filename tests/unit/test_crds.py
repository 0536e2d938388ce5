"""The committed CRDs are exactly what the API models generate, and valid Kubernetes objects."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from inframind.api.crdgen import check_crds, render_crds

pytestmark = pytest.mark.unit

CRDS = Path(__file__).parents[2] / "crds"


def test_committed_crds_match_the_api_models() -> None:
    problems = check_crds(CRDS)
    assert not problems, "crds/ drifted from operator/inframind/api: run `make crds`\n" + "".join(
        problems
    )


@pytest.mark.parametrize("name", sorted(render_crds()))
def test_generated_crd_passes_kubernetes_schema_validation(name: str) -> None:
    crd = yaml.safe_load(render_crds()[name])
    kubernetes_validate.validate(crd, "1.32", strict=True)


def _walk(node: dict, path: str = ""):
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("name", sorted(render_crds()))
def test_schema_is_structural(name: str) -> None:
    crd = yaml.safe_load(render_crds()[name])
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "type" in node, f"{path} has no type"
        assert not {"$ref", "anyOf", "oneOf", "allOf"} & node.keys(), f"{path} is not structural"


def test_modelpool_crd_shows_queue_and_kv_columns_and_short_names() -> None:
    crd = yaml.safe_load(render_crds()["inframind.io_modelpools.yaml"])
    version = crd["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Queue"] == ".status.load.waiting"
    assert columns["KV%"] == ".status.load.kvUsagePercent"
    assert version["subresources"] == {"status": {}}
    assert "mp" in crd["spec"]["names"]["shortNames"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["model"]
    engine = spec["properties"]["managed"]["properties"]["engine"]["properties"]
    assert engine["gpuMemoryUtilization"]["exclusiveMinimum"] is True


def test_pipeline_crd_enumerates_topologies_and_bounds_the_budget() -> None:
    crd = yaml.safe_load(render_crds()["inframind.io_agentpipelines.yaml"])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    topo = spec["properties"]["topologies"]["items"]
    assert topo["enum"] == ["single", "chain", "debate", "ensemble", "verify"]
    budget = spec["properties"]["budget"]["properties"]["defaultSeconds"]
    assert budget["minimum"] == 0 and budget["exclusiveMinimum"] is True
    assert (
        spec["x-kubernetes-validations"][0]["rule"] == "has(self.pools) != has(self.poolSelector)"
    )

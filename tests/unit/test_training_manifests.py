"""Retraining manifests: valid Kubernetes objects that run training and publish the ConfigMap."""

from __future__ import annotations

import base64
from pathlib import Path

import kubernetes_validate
import numpy as np
import pytest
import yaml

from inframind.api.pipeline import AgentPipelineSpec
from inframind.policy.runtime import write_policy_file
from inframind_training.publish import VERSION_ANNOTATION, build_configmap, main

pytestmark = pytest.mark.unit

DIR = Path(__file__).parents[2] / "manifests" / "training"


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DIR / name).read_text()) if d]


@pytest.mark.parametrize("name", ["cronjob.yaml", "rbac.yaml"])
def test_core_objects_pass_kubernetes_schema_validation(name):
    for doc in docs(name):
        kubernetes_validate.validate(doc, "1.32", strict=True)


def test_jobs_fine_tune_from_traces_and_publish_the_configmap_the_pipeline_mounts():
    (cron,) = docs("cronjob.yaml")
    (ray,) = docs("rayjob.yaml")
    (pipeline,) = docs("pipeline-learned.yaml")
    script = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    for text in (script, ray["spec"]["entrypoint"]):
        assert "inframind_training.train --finetune" in text and "--traces /traces" in text
        assert "--traces-days 14" in text  # the recent load, not the claim's whole history
        assert "inframind_training.publish" in text and "--configmap inframind-policy" in text
    assert ray["apiVersion"] == "ray.io/v1" and ray["spec"]["shutdownAfterJobFinishes"]
    spec = AgentPipelineSpec.model_validate(pipeline["spec"])
    assert spec.policy.config_map_ref is not None
    assert spec.policy.config_map_ref.name == "inframind-policy"
    assert spec.policy.config_map_ref.key == "policy.npz"
    assert cron["spec"]["schedule"] == spec.retraining.schedule


def test_the_jobs_image_is_the_one_policy_training_dockerfile_builds():
    """The Dockerfile cannot be built here (no container registry), so hold it to what the
    jobs expect of the image: its tag, the train extra, the working directory and user."""
    import re
    import tomllib

    dockerfile = (DIR.parents[1] / "policy_training" / "Dockerfile").read_text()
    (tag,) = re.findall(r"docker build -f policy_training/Dockerfile -t (\S+) \.", dockerfile)
    (cron,) = docs("cronjob.yaml")
    (ray,) = docs("rayjob.yaml")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    head = ray["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"] + head["containers"]] == [tag, tag]
    assert 'pip install ".[train]"' in dockerfile
    extras = tomllib.loads((DIR.parents[1] / "pyproject.toml").read_text())["project"]
    (torch_pin,) = [r for r in extras["optional-dependencies"]["train"] if r.startswith("torch")]
    assert f"pip install {torch_pin} --index-url https://download.pytorch.org/whl/cpu" in dockerfile
    workdir = pod["containers"][0]["workingDir"]
    assert (
        f"COPY policy_training {workdir}" in dockerfile
        and f"cd {workdir}" in ray["spec"]["entrypoint"]
    )
    user = pod["securityContext"]["runAsUser"]
    assert re.findall(r"^USER (\S+)", dockerfile, re.M) == [f"{user}:{user}"]


def test_published_configmap_carries_the_artifact_and_its_version(tmp_path, capsys):
    path = tmp_path / "p.npz"
    layers = [(np.zeros((2, 2)), np.zeros(2))]
    write_policy_file(path, layers, layers, "2026-test")
    body = build_configmap("inframind-policy", "inframind", path.read_bytes(), {"version": "v7"})
    kubernetes_validate.validate(body, "1.32", strict=True)
    assert base64.b64decode(body["binaryData"]["policy.npz"]) == path.read_bytes()
    assert body["metadata"]["annotations"][VERSION_ANNOTATION] == "v7"
    assert main(["--file", str(path), "--namespace", "inframind", "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["metadata"]["annotations"][VERSION_ANNOTATION] == "2026-test"

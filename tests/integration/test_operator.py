"""The real operator process against the API emulator, driven with kubectl as a user would."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from conftest import RESYNC_SECONDS, ControlPlane

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
MANAGED = ["r1-32b", "mistral-24b", "qwen-coder-14b", "llama-8b", "llama-3b"]


def phase(cp: ControlPlane, plural: str, ns: str, name: str) -> str | None:
    obj = cp.custom(plural, ns, name) or {}
    return (obj.get("status") or {}).get("phase")


def condition(obj: dict | None, type_: str = "Ready") -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def gateway_config(cp: ControlPlane, ns: str, pipeline: str) -> dict | None:
    cm = cp.read("ConfigMap", ns, f"inframind-gw-{pipeline}")
    return json.loads(cm["data"]["pipeline.json"]) if cm else None


def apply(cp: ControlPlane, ns: str, doc: dict) -> None:
    cp.kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(doc))


def test_examples_converge_to_vllm_deployments_gateways_and_ready_status(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp, ns = control_plane, namespace
    out = cp.kubectl("apply", "-n", ns, "-f", str(EXAMPLES)).stdout
    assert out.count("created") == 8

    # Managed pools get a vLLM Deployment + Service, owned by the pool, and wait for replicas.
    for pool in MANAGED:
        dep = cp.wait(
            lambda p=pool: cp.read("Deployment", ns, f"vllm-{p}"), f"Deployment of {pool}"
        )
        assert dep["metadata"]["ownerReferences"][0]["name"] == pool
        assert "priority" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
        cp.wait(lambda p=pool: cp.read("Service", ns, f"vllm-{p}"), f"Service of {pool}")
        cp.wait(lambda p=pool: phase(cp, "modelpools", ns, p) == "Pending", f"{pool} Pending")
    # The external pool is ready at once with its endpoints; the chat pipeline selects it by label.
    external = cp.wait(
        lambda: (
            phase(cp, "modelpools", ns, "shared-llama-8b") == "Ready"
            and cp.custom("modelpools", ns, "shared-llama-8b")
        ),
        "external pool Ready",
    )
    assert len(external["status"]["endpoints"]) == 2

    # Replicas come up (what kubelet would report): pools publish endpoints, pipelines go Ready.
    for pool in MANAGED:
        cp.mark_ready(ns, f"vllm-{pool}")
    for pool in MANAGED:
        cp.wait(lambda p=pool: phase(cp, "modelpools", ns, p) == "Ready", f"{pool} Ready")
    reasoning = cp.wait(
        lambda: (
            phase(cp, "agentpipelines", ns, "reasoning") == "Ready"
            and cp.custom("agentpipelines", ns, "reasoning")
        ),
        "reasoning pipeline Ready",
    )
    assert reasoning["status"]["readyPools"] == 5
    config = cp.wait(
        lambda: (
            (c := gateway_config(cp, ns, "reasoning"))
            and all(p["endpoints"] for p in c["pools"])
            and c
        ),
        "reasoning gateway config with endpoints",
    )
    assert [p["name"] for p in config["pools"]] == MANAGED
    assert config["pools"][0]["endpoints"] == [f"http://vllm-r1-32b.{ns}.svc.cluster.local:8000"]
    chat = cp.wait(
        lambda: (
            phase(cp, "agentpipelines", ns, "chat") == "Ready" and gateway_config(cp, ns, "chat")
        ),
        "chat pipeline Ready",
    )
    assert sorted(p["name"] for p in chat["pools"]) == ["llama-3b", "llama-8b", "shared-llama-8b"]
    gw = cp.read("Deployment", ns, "inframind-gw-reasoning")
    assert gw["spec"]["replicas"] == 2
    table = cp.kubectl("get", "modelpools", "-n", ns).stdout
    assert "Ready" in table and "KV%" in table


def test_spec_changes_converge_and_status_follows_the_generation(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp, ns = control_plane, namespace
    pool = yaml.safe_load((EXAMPLES / "modelpool-llama-8b.yaml").read_text())
    pipe = {
        "apiVersion": "inframind.io/v1alpha1",
        "kind": "AgentPipeline",
        "metadata": {"name": "p"},
        "spec": {"pools": ["llama-8b"], "topologies": ["single"], "budget": {"defaultSeconds": 10}},
    }
    apply(cp, ns, pool)
    apply(cp, ns, pipe)
    cp.wait(lambda: cp.read("Deployment", ns, "vllm-llama-8b"), "vLLM Deployment")
    cp.mark_ready(ns, "vllm-llama-8b")
    cp.wait(lambda: phase(cp, "agentpipelines", ns, "p") == "Ready", "pipeline Ready")

    pool["spec"]["managed"]["replicas"] = 3
    pool["spec"]["managed"]["engine"]["maxNumSeqs"] = 64
    apply(cp, ns, pool)
    dep = cp.wait(
        lambda: (
            (d := cp.read("Deployment", ns, "vllm-llama-8b")) and d["spec"]["replicas"] == 3 and d
        ),
        "Deployment scaled to 3",
    )
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-num-seqs") + 1] == "64"
    obj = cp.wait(
        lambda: (
            (o := cp.custom("modelpools", ns, "llama-8b"))
            and o["status"].get("observedGeneration") == o["metadata"]["generation"]
            and o
        ),
        "observedGeneration to catch up",
    )
    assert obj["status"]["phase"] == "Degraded"  # 1 of 3 replicas ready
    assert condition(obj, "Degraded")["status"] == "True"

    pipe["spec"]["budget"]["defaultSeconds"] = 42
    apply(cp, ns, pipe)
    cp.wait(
        lambda: (gateway_config(cp, ns, "p") or {}).get("budget", {}).get("defaultSeconds") == 42,
        "new budget in the gateway ConfigMap",
    )


def test_pool_changes_reach_every_pipeline_that_uses_it(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp, ns = control_plane, namespace
    external = yaml.safe_load((EXAMPLES / "modelpool-external.yaml").read_text())
    apply(cp, ns, external)
    for name in ("a", "b"):
        apply(
            cp,
            ns,
            {
                "apiVersion": "inframind.io/v1alpha1",
                "kind": "AgentPipeline",
                "metadata": {"name": name},
                "spec": {"pools": ["shared-llama-8b"], "topologies": ["single"]},
            },
        )
    for name in ("a", "b"):
        cp.wait(lambda n=name: gateway_config(cp, ns, n), f"gateway config of {name}")
    external["spec"]["endpoints"] = ["http://10.1.2.3:8000"]
    apply(cp, ns, external)
    for name in ("a", "b"):
        cp.wait(
            lambda n=name: (
                gateway_config(cp, ns, n)["pools"][0]["endpoints"] == ["http://10.1.2.3:8000"]
            ),
            f"new endpoint in {name}'s gateway config",
        )


def test_deleting_resources_cleans_up_and_dependents_report_the_missing_pool(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp, ns = control_plane, namespace
    cp.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "modelpool-llama-8b.yaml"))
    apply(
        cp,
        ns,
        {
            "apiVersion": "inframind.io/v1alpha1",
            "kind": "AgentPipeline",
            "metadata": {"name": "p"},
            "spec": {"pools": ["llama-8b"], "topologies": ["single"]},
        },
    )
    cp.wait(lambda: cp.read("ConfigMap", ns, "inframind-gw-p"), "gateway ConfigMap")
    cp.kubectl("delete", "-n", ns, "modelpool", "llama-8b", "--wait=true")
    cp.wait(lambda: cp.read("Deployment", ns, "vllm-llama-8b") is None, "vLLM Deployment removed")
    cp.wait(lambda: cp.read("Service", ns, "vllm-llama-8b") is None, "vLLM Service removed")
    pipe = cp.wait(
        lambda: (
            condition(cp.custom("agentpipelines", ns, "p")).get("reason") == "PoolNotFound"
            and cp.custom("agentpipelines", ns, "p")
        ),
        "pipeline to report the missing pool",
    )
    assert "'llama-8b' not found" in condition(pipe)["message"]
    # The gateway keeps its last valid configuration: nothing is lost.
    assert cp.read("ConfigMap", ns, "inframind-gw-p") is not None

    cp.kubectl("delete", "-n", ns, "agentpipeline", "p", "--wait=true")
    cp.wait(
        lambda: cp.read("Deployment", ns, "inframind-gw-p") is None, "gateway Deployment removed"
    )
    cp.wait(lambda: cp.read("ConfigMap", ns, "inframind-gw-p") is None, "ConfigMap removed")
    cp.wait(lambda: cp.read("Service", ns, "inframind-gw-p") is None, "gateway Service removed")


def test_switching_a_pool_from_managed_to_external_stops_its_vllm(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp, ns = control_plane, namespace
    pool = yaml.safe_load((EXAMPLES / "modelpool-llama-3b.yaml").read_text())
    apply(cp, ns, pool)
    cp.wait(lambda: cp.read("Deployment", ns, "vllm-llama-3b"), "vLLM Deployment")
    del pool["spec"]["managed"]
    pool["spec"]["endpoints"] = ["http://vllm.elsewhere:8000"]
    apply(cp, ns, pool)
    cp.wait(lambda: cp.read("Deployment", ns, "vllm-llama-3b") is None, "vLLM Deployment removed")
    obj = cp.wait(
        lambda: (
            phase(cp, "modelpools", ns, "llama-3b") == "Ready"
            and cp.custom("modelpools", ns, "llama-3b")
        ),
        "pool Ready",
    )
    assert obj["status"]["mode"] == "external"


BAD_SPECS = {
    # name -> (kind, spec, words the message must contain)
    "no-endpoints": ("ModelPool", {"model": "m", "endpoints": []}, "spec.endpoints is empty"),
    "bad-url": ("ModelPool", {"model": "m", "endpoints": ["localhost:8000"]}, "not an http(s) URL"),
    "both-modes": (
        "ModelPool",
        {"model": "m", "endpoints": ["http://a"], "managed": {}},
        "not both",
    ),
    "unknown-pool": (
        "AgentPipeline",
        {"pools": ["nope"], "topologies": ["single"]},
        "'nope' not found",
    ),
    "zero-budget": (
        "AgentPipeline",
        {"pools": ["x"], "budget": {"defaultSeconds": 0}},
        "budget.defaultSeconds",
    ),
    "bad-topology": (
        "AgentPipeline",
        {"pools": ["x"], "topologies": ["star"]},
        "spec.topologies.0",
    ),
}


def test_bad_specs_get_a_condition_and_one_warning_event_and_the_operator_survives(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp, ns = control_plane, namespace
    for name, (kind, spec, _) in BAD_SPECS.items():
        apply(
            cp,
            ns,
            {
                "apiVersion": "inframind.io/v1alpha1",
                "kind": kind,
                "metadata": {"name": name},
                "spec": spec,
            },
        )
    for name, (kind, _, words) in BAD_SPECS.items():
        plural = kind.lower() + "s"
        obj = cp.wait(
            lambda n=name, p=plural: (
                condition(cp.custom(p, ns, n)).get("status") == "False" and cp.custom(p, ns, n)
            ),
            f"Ready=False on {name}",
        )
        ready = condition(obj)
        assert words in ready["message"], (name, ready["message"])
        assert obj["status"]["phase"] == "Invalid"
        cp.wait(
            lambda n=name: [e for e in cp.events(ns, n) if e["type"] == "Warning"],
            f"Event on {name}",
        )
    # Several resync periods later: still one Event each, and the operator is alive.
    time.sleep(3 * RESYNC_SECONDS)
    for name in BAD_SPECS:
        warnings = [
            e
            for e in cp.events(ns, name)
            if e["type"] == "Warning" and e["source"]["component"] == "inframind-operator"
        ]
        assert len(warnings) == 1, (name, [w["message"] for w in warnings])
    assert cp.operator.poll() is None
    described = cp.kubectl("describe", "agentpipeline", "unknown-pool", "-n", ns).stdout
    assert "PoolNotFound" in described

    # Fixing the spec clears the condition.
    apply(
        cp,
        ns,
        {
            "apiVersion": "inframind.io/v1alpha1",
            "kind": "ModelPool",
            "metadata": {"name": "nope"},
            "spec": {"model": "m", "endpoints": ["http://a:1"]},
        },
    )
    cp.wait(
        lambda: phase(cp, "agentpipelines", ns, "unknown-pool") == "Ready", "fixed pipeline Ready"
    )


def test_a_published_policy_version_shows_in_the_pipelines_status_and_events(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    from inframind_training.publish import build_configmap
    from support.training import write_committed_policy_as

    cp, ns = control_plane, namespace
    apply(cp, ns, yaml.safe_load((EXAMPLES / "modelpool-external.yaml").read_text()))
    apply(
        cp,
        ns,
        {
            "apiVersion": "inframind.io/v1alpha1",
            "kind": "AgentPipeline",
            "metadata": {"name": "learned"},
            "spec": {
                "pools": ["shared-llama-8b"],
                "policy": {"configMapRef": {"name": "inframind-policy"}, "fallback": "least-queue"},
            },
        },
    )
    # Nothing published yet: the pipeline serves (the fallback), and says what is missing.
    obj = cp.wait(
        lambda: (
            condition(cp.custom("agentpipelines", ns, "learned"), "PolicyAvailable")
            and cp.custom("agentpipelines", ns, "learned")
        ),
        "PolicyAvailable on the pipeline",
    )
    available = condition(obj, "PolicyAvailable")
    assert (available["status"], available["reason"]) == ("False", "PolicyNotPublished")
    assert (
        "least-queue" in available["message"]
        and "inframind_training.publish" in available["message"]
    )
    assert condition(obj)["status"] == "True" and obj["status"].get("policyVersion") is None
    cp.wait(
        lambda: [e for e in cp.events(ns, "learned") if e["reason"] == "PolicyNotPublished"],
        "a Warning Event naming the missing policy",
    )

    # A retraining job publishes version by version (as inframind_training.publish does).
    def publish(version: str) -> None:
        path = tmp_path / f"{version}.npz"
        meta = write_committed_policy_as(path, version)
        cp.kubectl(
            "apply", "-f", "-",
            stdin=yaml.safe_dump(build_configmap("inframind-policy", ns, path.read_bytes(), meta)),
        )  # fmt: skip

    for version in ("v7", "v8"):
        publish(version)
        obj = cp.wait(
            lambda v=version: (
                ((cp.custom("agentpipelines", ns, "learned") or {}).get("status", {})).get(
                    "policyVersion"
                )
                == v
                and cp.custom("agentpipelines", ns, "learned")
            ),
            f"policyVersion {version} in the status",
        )
        assert condition(obj, "PolicyAvailable")["reason"] == "PolicyPublished"
        cp.wait(
            lambda v=version: [
                e for e in cp.events(ns, "learned")
                if e["reason"] == "PolicyPublished" and v in e["message"]
            ],
            f"a Normal Event for {version}",
        )  # fmt: skip
    described = cp.kubectl("describe", "agentpipeline", "learned", "-n", ns).stdout
    assert "PolicyPublished" in described and "v8" in described

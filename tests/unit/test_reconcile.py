"""Pure builders: desired objects and status computed from specs alone."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from inframind.api import AgentPipelineSpec, ModelPoolSpec
from inframind.api.config import PoolConfig
from inframind.controller import reconcile as r
from inframind.settings import Settings
from inframind.telemetry.snapshot import DEFAULT_MAX_RUNNING, profile_from_config

pytestmark = pytest.mark.unit

SETTINGS = Settings(vllm_image="vllm/vllm-openai:test", gateway_image="inframind:test")
POOL_OWNER = {
    "apiVersion": "inframind.io/v1alpha1",
    "kind": "ModelPool",
    "metadata": {"name": "llama-8b", "namespace": "ml", "uid": "uid-1"},
}
PIPE_OWNER = {
    "apiVersion": "inframind.io/v1alpha1",
    "kind": "AgentPipeline",
    "metadata": {"name": "chat", "namespace": "ml", "uid": "uid-2"},
}


def managed(**managed) -> ModelPoolSpec:
    return ModelPoolSpec.model_validate(
        {"model": "meta-llama/Llama-3.1-8B-Instruct", "managed": managed}
    )


def pool_obj(name: str, labels=None, endpoints=None, spec=None) -> dict:
    return {
        "metadata": {"name": name, "namespace": "ml", "labels": labels or {}},
        "spec": spec or {"model": f"m-{name}", "endpoints": ["http://127.0.0.1:1"]},
        "status": {"endpoints": endpoints if endpoints is not None else ["http://127.0.0.1:1"]},
    }


def test_vllm_deployment_runs_priority_scheduling_with_gpu_requests_and_probes() -> None:
    spec = managed(gpus=2, engine={"maxNumSeqs": 64, "extraArgs": ["--enable-prefix-caching"]})
    dep = r.build_vllm_deployment("llama-8b", "ml", spec, SETTINGS, POOL_OWNER)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--scheduling-policy") + 1] == "priority"
    assert args[args.index("--served-model-name") + 1] == "llama-8b"
    assert args[args.index("--max-num-seqs") + 1] == "64"
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[-1] == "--enable-prefix-caching"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["image"] == "vllm/vllm-openai:test"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    tolerations = dep["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_owned_objects_point_at_their_owner_for_garbage_collection() -> None:
    spec = managed()
    for obj in (
        r.build_vllm_deployment("llama-8b", "ml", spec, SETTINGS, POOL_OWNER),
        r.build_vllm_service("llama-8b", "ml", spec, SETTINGS, POOL_OWNER),
    ):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "inframind.io/v1alpha1",
            "kind": "ModelPool",
            "name": "llama-8b",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }


@pytest.mark.parametrize("builder", ["vllm", "gateway"])
def test_pods_meet_the_restricted_pod_security_standard(builder: str) -> None:
    if builder == "vllm":
        dep = r.build_vllm_deployment("p", "ml", managed(), SETTINGS, POOL_OWNER)
    else:
        spec = AgentPipelineSpec.model_validate({"pools": ["p"]})
        dep = r.build_gateway_deployment("chat", "ml", spec, SETTINGS, PIPE_OWNER)
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}


def test_hf_token_comes_from_a_secret_reference_not_a_literal() -> None:
    spec = managed(hfTokenSecretRef={"name": "hf", "key": "token"})
    dep = r.build_vllm_deployment("p", "ml", spec, SETTINGS, POOL_OWNER)
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
    }


def test_desired_hash_changes_with_the_spec_and_only_with_it() -> None:
    a = r.build_vllm_deployment("p", "ml", managed(replicas=1), SETTINGS, POOL_OWNER)
    b = r.build_vllm_deployment("p", "ml", managed(replicas=1), SETTINGS, POOL_OWNER)
    c = r.build_vllm_deployment("p", "ml", managed(replicas=2), SETTINGS, POOL_OWNER)
    h = lambda d: d["metadata"]["annotations"][r.HASH_ANNOTATION]  # noqa: E731
    assert h(a) == h(b) != h(c)


def test_managed_pool_publishes_its_service_endpoint_once_a_replica_is_ready() -> None:
    spec = managed(replicas=2)
    pending = r.build_modelpool_status("p", "ml", spec, 3, SETTINGS, {"status": {}})
    assert pending["phase"] == "Pending" and pending["endpoints"] == []
    partial = r.build_modelpool_status(
        "p", "ml", spec, 3, SETTINGS, {"status": {"readyReplicas": 1}}
    )
    assert partial["phase"] == "Degraded"
    assert partial["endpoints"] == ["http://vllm-p.ml.svc.cluster.local:8000"]
    ready = r.build_modelpool_status("p", "ml", spec, 3, SETTINGS, {"status": {"readyReplicas": 2}})
    assert ready["phase"] == "Ready" and ready["observedGeneration"] == 3
    conds = {c["type"]: c for c in ready["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Degraded"]["status"] == "False"


def test_invalid_spec_becomes_a_ready_false_condition_with_the_reason() -> None:
    problem = r.validate_spec(ModelPoolSpec, {"model": "m", "endpoints": ["nope"]})
    assert isinstance(problem, r.SpecProblem)
    status = r.build_modelpool_status("p", "ml", problem, 1, SETTINGS)
    ready = status["conditions"][0]
    assert status["phase"] == "Invalid"
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert ready["message"].startswith("spec.endpoints.0: endpoint 'nope' is not an http(s) URL")


def test_condition_keeps_its_transition_time_while_status_is_unchanged() -> None:
    first = r.build_condition("Ready", True, "A", "", 1, None, now="2026-01-01T00:00:00Z")
    again = r.build_condition("Ready", True, "B", "x", 2, [first], now="2026-02-02T00:00:00Z")
    flipped = r.build_condition("Ready", False, "C", "", 3, [again], now="2026-03-03T00:00:00Z")
    assert again["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert flipped["lastTransitionTime"] == "2026-03-03T00:00:00Z"
    assert not r.condition_changed([first], dict(first))
    assert r.condition_changed([first], again)


def test_pipeline_selects_pools_by_name_and_reports_missing_ones() -> None:
    spec = AgentPipelineSpec.model_validate({"pools": ["b", "zz", "a"]})
    found, missing = r.select_pools(spec, [pool_obj("a"), pool_obj("b")])
    assert [p["metadata"]["name"] for p in found] == ["b", "a"]
    assert missing == ["zz"]
    status = r.build_pipeline_status("chat", "ml", spec, 1, SETTINGS, found, missing)
    ready = status["conditions"][0]
    assert ready["reason"] == "PoolNotFound"
    assert "'zz' not found in namespace 'ml'" in ready["message"]


def test_pipeline_selects_pools_by_label_and_ignores_pools_being_deleted() -> None:
    spec = AgentPipelineSpec.model_validate(
        {"poolSelector": {"matchLabels": {"tier": "fast"}}, "topologies": ["single"]}
    )
    gone = pool_obj("c", {"tier": "fast"})
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    found, missing = r.select_pools(
        spec, [pool_obj("a", {"tier": "fast"}), pool_obj("b", {"tier": "slow"}), gone]
    )
    assert [p["metadata"]["name"] for p in found] == ["a"] and missing == []
    assert r.pipeline_uses_pool(spec.to_k8s(), pool_obj("a", {"tier": "fast"}))
    assert not r.pipeline_uses_pool(spec.to_k8s(), pool_obj("b", {"tier": "slow"}))


def test_gateway_config_carries_ready_endpoints_budget_scheduler_and_policy() -> None:
    spec = AgentPipelineSpec.model_validate(
        {"pools": ["a", "b"], "budget": {"defaultSeconds": 5}, "scheduler": "fcfs"}
    )
    pools = [pool_obj("a"), pool_obj("b", endpoints=[])]
    config = r.build_pipeline_config("chat", "ml", spec, pools)
    assert [p["endpoints"] for p in config["pools"]] == [["http://127.0.0.1:1"], []]
    assert config["budget"]["defaultSeconds"] == 5
    assert config["scheduler"] == "fcfs"
    assert config["policy"]["heuristic"] == "budget-greedy"
    cm = r.build_gateway_configmap("chat", "ml", config, PIPE_OWNER)
    assert json.loads(cm["data"]["pipeline.json"]) == config
    status = r.build_pipeline_status("chat", "ml", spec, 4, SETTINGS, pools, [], config)
    assert status["phase"] == "Degraded" and status["readyPools"] == 1
    assert status["gatewayUrl"] == "http://inframind-gw-chat.ml.svc.cluster.local"


def test_gateway_reads_its_token_from_the_secret_and_its_config_from_the_configmap() -> None:
    spec = AgentPipelineSpec.model_validate(
        {"pools": ["a"], "gateway": {"authSecretRef": {"name": "gw", "key": "token"}}}
    )
    dep = r.build_gateway_deployment("chat", "ml", spec, SETTINGS, PIPE_OWNER)
    pod = dep["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["INFRAMIND_GATEWAY_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "gw",
        "key": "token",
    }
    assert pod["volumes"][0] == {"name": "config", "configMap": {"name": "inframind-gw-chat"}}
    # Config reaches gateways by the mounted file; no pod-template hash, so no restart.
    assert "checksum/config" not in dep["spec"]["template"]["metadata"].get("annotations", {})


def test_gateway_settings_reach_its_pods_and_the_operators_prometheus_by_default(
    monkeypatch,
) -> None:
    """spec.gateway.env tunes the gateway; where the operator reads engine metrics from
    Prometheus, its gateways get the same URL as their second source."""
    from inframind.settings import Settings

    operator = SETTINGS.model_copy(update={"prometheus_url": "http://prom.monitoring:9090"})
    given = [{"name": "INFRAMIND_GATEWAY_MAX_INFLIGHT", "value": "64"},
             {"name": "INFRAMIND_GATEWAY_RESCUE", "value": "false"}]  # fmt: skip
    spec = AgentPipelineSpec.model_validate({"pools": ["a"], "gateway": {"env": given}})
    dep = r.build_gateway_deployment("chat", "ml", spec, operator, PIPE_OWNER)
    kubernetes_validate.validate(dep, "1.32", strict=True)
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name, value in env.items():  # as the gateway process reads them
        monkeypatch.setenv(name, value)
    gateway = Settings()
    assert gateway.prometheus_url == "http://prom.monitoring:9090"
    assert gateway.gateway_max_inflight == 64 and gateway.gateway_rescue is False

    own = [*given, {"name": "INFRAMIND_PROMETHEUS_URL", "value": "http://prom.ml:9090"}]
    spec = AgentPipelineSpec.model_validate({"pools": ["a"], "gateway": {"env": own}})
    dep = r.build_gateway_deployment("chat", "ml", spec, operator, PIPE_OWNER)
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == "INFRAMIND_PROMETHEUS_URL"] == [
        "http://prom.ml:9090"
    ]


def test_a_policy_published_to_a_configmap_is_mounted_beside_the_gateway_config() -> None:
    spec = AgentPipelineSpec.model_validate(
        {"pools": ["a"], "policy": {"configMapRef": {"name": "inframind-policy"}}}
    )
    dep = r.build_gateway_deployment("chat", "ml", spec, SETTINGS, PIPE_OWNER)
    kubernetes_validate.validate(dep, "1.32", strict=True)
    pod = dep["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "config"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    own, policy = volume["projected"]["sources"]
    # One directory: the gateway's pipeline.json and, beside it, the key the spec names.
    assert mount["mountPath"] == r.CONFIG_DIR
    assert own == {"configMap": {"name": "inframind-gw-chat"}}
    assert policy["configMap"]["name"] == "inframind-policy"
    assert policy["configMap"]["items"] == [{"key": "policy.npz", "path": "policy.npz"}]
    # Not yet published: the pod still starts and serves the fallback heuristic.
    assert policy["configMap"]["optional"] is True
    config = r.build_pipeline_config("chat", "ml", spec, [])
    assert config["policy"]["configMapRef"] == {"name": "inframind-policy", "key": "policy.npz"}


def test_the_status_reports_the_published_policy_version_and_never_blocks_readiness() -> None:
    from inframind_training.publish import build_configmap

    spec = AgentPipelineSpec.model_validate(
        {"pools": ["a"], "policy": {"configMapRef": {"name": "inframind-policy"}}}
    )
    pools = [pool_obj("a", endpoints=["http://10.0.0.1:8000"])]
    config = r.build_pipeline_config("chat", "ml", spec, pools)

    def status(cm):
        return r.build_pipeline_status(
            "chat", "ml", spec, 3, SETTINGS, pools, [], config, policy_configmap=cm
        )

    def conds(st):
        return {c["type"]: c for c in st["conditions"]}

    unpublished = status(None)
    assert unpublished["policyVersion"] is None and unpublished["phase"] == "Ready"
    missing = conds(unpublished)["PolicyAvailable"]
    assert (missing["status"], missing["reason"]) == ("False", "PolicyNotPublished")
    assert "budget-greedy" in missing["message"]  # the fallback that serves meanwhile
    published = status(build_configmap("inframind-policy", "ml", b"npz", {"version": "v7"}))
    assert published["policyVersion"] == "v7"
    available = conds(published)["PolicyAvailable"]
    assert (available["status"], available["reason"]) == ("True", "PolicyPublished")
    assert "v7" in available["message"]
    # A heuristic pipeline has no policy to publish: no such condition.
    plain = AgentPipelineSpec.model_validate({"pools": ["a"]})
    st = r.build_pipeline_status("chat", "ml", plain, 3, SETTINGS, pools, [], config)
    assert "PolicyAvailable" not in conds(st) and "policyVersion" not in st


def test_with_retraining_on_each_gateway_pod_appends_traces_to_its_own_file_on_the_claim():
    spec = AgentPipelineSpec.model_validate(
        {"pools": ["a"], "retraining": {"enabled": True, "tracesClaimName": "traces-ml"}}
    )
    dep = r.build_gateway_deployment("chat", "ml", spec, SETTINGS, PIPE_OWNER)
    kubernetes_validate.validate(dep, "1.32", strict=True)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    args = container["args"]
    # $(POD_NAME) is expanded by the kubelet: one file per replica, no interleaved lines.
    assert args[args.index("--trace-log") + 1] == "/traces/chat/$(POD_NAME).jsonl"
    assert {"name": "traces", "mountPath": "/traces"} in container["volumeMounts"]
    assert {"name": "traces", "persistentVolumeClaim": {"claimName": "traces-ml"}} in pod["volumes"]
    # Off (the default): no claim to wait for, no trace file.
    plain = r.build_gateway_deployment(
        "chat", "ml", AgentPipelineSpec.model_validate({"pools": ["a"]}), SETTINGS, PIPE_OWNER
    )
    plain_pod = plain["spec"]["template"]["spec"]
    assert "--trace-log" not in plain_pod["containers"][0]["args"]
    assert [v["name"] for v in plain_pod["volumes"]] == ["config", "tmp"]


@pytest.mark.parametrize("key", ["pipeline.json", "..", "policies/v2.npz"])
def test_a_policy_key_that_cannot_sit_beside_the_gateway_config_is_refused(key: str) -> None:
    problem = r.validate_spec(
        AgentPipelineSpec, {"pools": ["a"], "policy": {"configMapRef": {"name": "p", "key": key}}}
    )
    assert isinstance(problem, r.SpecProblem)
    assert "configMapRef" in problem.message and "key" in problem.message


def test_gateway_config_tells_a_managed_pools_batch_slots_to_the_gateway() -> None:
    spec = AgentPipelineSpec.model_validate({"pools": ["managed", "external", "declared"]})
    managed_spec = {"model": "m", "managed": {"engine": {"maxNumSeqs": 4}}}
    declared_spec = {"model": "m", "endpoints": ["http://vllm-2:8000"], "maxNumSeqs": 6}
    pools = [
        pool_obj("managed", spec=managed_spec),
        pool_obj("external"),
        pool_obj("declared", spec=declared_spec),
    ]
    config = r.build_pipeline_config("chat", "ml", spec, pools)
    assert [p.get("maxNumSeqs") for p in config["pools"]] == [4, None, 6]
    # The gateway's occupancy and latency estimates count those slots, not a guess.
    profiles = [profile_from_config(PoolConfig.model_validate(p)) for p in config["pools"]]
    assert [p.max_running for p in profiles] == [4, DEFAULT_MAX_RUNNING, 6]

"""Pure reconcile logic: from specs and observed objects to desired objects and status.

Nothing here performs I/O or imports kopf or kubernetes; every function is a
plain mapping from data to data, so the whole desired state of a resource can
be computed (and tested) from its spec alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from ..api import API_VERSION, AgentPipelineSpec, ModelPoolSpec
from ..api.common import GATEWAY_CONFIG_KEY, POLICY_VERSION_ANNOTATION, now_rfc3339
from ..api.config import PipelineConfig, PoolConfig
from ..settings import Settings, env_name
from .loads import build_routes, build_routing

MANAGED_BY = "inframind"
HASH_ANNOTATION = "inframind.io/desired-hash"
POOL_LABEL = "inframind.io/pool"
PIPELINE_LABEL = "inframind.io/pipeline"
CONFIG_KEY = GATEWAY_CONFIG_KEY
CONFIG_DIR = "/etc/inframind"
TRACES_DIR = "/traces"

Obj = dict[str, Any]
M = TypeVar("M", bound=BaseModel)


# --- validation -------------------------------------------------------------


@dataclass(frozen=True)
class SpecProblem:
    """Why a spec cannot be reconciled, worded for the person who wrote it."""

    reason: str
    message: str


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in ("spec", *err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check its spelling against the CRD (kubectl explain)"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def validate_spec(model: type[M], spec: Mapping[str, Any] | None) -> M | SpecProblem:
    """Parse a CR spec with the API model; a bad spec becomes a SpecProblem, never an exception."""
    try:
        return model.model_validate(dict(spec or {}))
    except ValidationError as exc:
        return SpecProblem("InvalidSpec", _format_errors(exc))


# --- conditions -------------------------------------------------------------


def build_condition(
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    previous: Sequence[Mapping[str, Any]] | None = None,
    now: str | None = None,
) -> Obj:
    """A metav1.Condition; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    stamp = now or now_rfc3339()
    for old in previous or ():
        if (
            old.get("type") == type_
            and old.get("status") == value
            and old.get("lastTransitionTime")
        ):
            stamp = old["lastTransitionTime"]
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": stamp,
        "observedGeneration": generation,
    }


def condition_changed(previous: Sequence[Mapping[str, Any]] | None, new: Mapping[str, Any]) -> bool:
    """Whether a condition differs from its previous version in status, reason or message.

    Events are posted on such changes only, so a resync loop over an unchanged
    bad spec does not flood the namespace with identical Events.
    """
    for old in previous or ():
        if old.get("type") == new["type"]:
            return any(old.get(k) != new[k] for k in ("status", "reason", "message"))
    return True


# --- common metadata ----------------------------------------------------------


def build_owner_reference(owner: Mapping[str, Any]) -> Obj:
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_labels(
    component: str, instance: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "inframind",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    labels.update(extra or {})
    return labels


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _finish(obj: Obj, owner: Mapping[str, Any]) -> Obj:
    """Attach the owner reference and the hash that tells adapters whether to write."""
    meta = obj["metadata"]
    meta["ownerReferences"] = [build_owner_reference(owner)]
    meta.setdefault("annotations", {})[HASH_ANNOTATION] = content_hash(
        {k: v for k, v in obj.items() if k != "status"}
    )
    return obj


def _restricted_container_security() -> Obj:
    # The "restricted" Pod Security Standard, container part.
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _restricted_pod_security() -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --- ModelPool ----------------------------------------------------------------


def vllm_object_name(pool: str) -> str:
    return f"vllm-{pool}"


def served_name(pool: str, spec: ModelPoolSpec) -> str:
    return spec.served_model_name or pool


def build_vllm_args(pool: str, spec: ModelPoolSpec, settings: Settings) -> list[str]:
    assert spec.managed is not None
    engine = spec.managed.engine
    args = [
        "--model",
        spec.model,
        "--served-model-name",
        served_name(pool, spec),
        "--host",
        "0.0.0.0",
        "--port",
        str(settings.vllm_port),
        # EDF only works if vLLM orders its queue by the request's priority.
        "--scheduling-policy",
        "priority",
        "--max-model-len",
        str(engine.max_model_len),
        "--gpu-memory-utilization",
        str(engine.gpu_memory_utilization),
        "--max-num-seqs",
        str(engine.max_num_seqs),
        "--dtype",
        engine.dtype,
    ]
    tp = engine.tensor_parallel_size or max(spec.managed.gpus, 1)
    if tp > 1:
        args += ["--tensor-parallel-size", str(tp)]
    return args + list(engine.extra_args)


def build_vllm_deployment(
    pool: str, namespace: str, spec: ModelPoolSpec, settings: Settings, owner: Mapping[str, Any]
) -> Obj:
    """The vLLM Deployment of a managed pool: priority scheduling, probes, GPUs, restricted pod."""
    assert spec.managed is not None, "only managed pools have a Deployment"
    managed = spec.managed
    name = vllm_object_name(pool)
    selector = {"app.kubernetes.io/instance": name, POOL_LABEL: pool}
    labels = build_labels("model-pool", name, {POOL_LABEL: pool})
    resources: Obj = {
        "requests": {"cpu": managed.cpu, "memory": managed.memory},
        "limits": {"memory": managed.memory},
    }
    if managed.gpus:
        resources["requests"]["nvidia.com/gpu"] = str(managed.gpus)
        resources["limits"]["nvidia.com/gpu"] = str(managed.gpus)
    env = [
        # The root filesystem is read-only: every cache goes to the emptyDir.
        {"name": "HOME", "value": "/cache"},
        {"name": "HF_HOME", "value": "/cache/huggingface"},
        {"name": "VLLM_CACHE_ROOT", "value": "/cache/vllm"},
        {"name": "XDG_CACHE_HOME", "value": "/cache"},
    ]
    if managed.hf_token_secret_ref is not None:
        ref = managed.hf_token_secret_ref
        env.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )
    http_get = {"path": "/health", "port": "http"}
    container = {
        "name": "vllm",
        "image": managed.image or settings.vllm_image,
        "args": build_vllm_args(pool, spec, settings),
        "ports": [{"name": "http", "containerPort": settings.vllm_port, "protocol": "TCP"}],
        "env": env,
        "resources": resources,
        # Loading a large model takes minutes: the startup probe covers it so
        # that liveness can stay strict afterwards.
        "startupProbe": {"httpGet": http_get, "periodSeconds": 10, "failureThreshold": 90},
        "readinessProbe": {"httpGet": http_get, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": http_get, "periodSeconds": 15, "failureThreshold": 4},
        "securityContext": _restricted_container_security(),
        "volumeMounts": [
            {"name": "cache", "mountPath": "/cache"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }
    pod_spec: Obj = {
        "securityContext": _restricted_pod_security(),
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [
            {"name": "cache", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            # NCCL needs a large /dev/shm for tensor parallelism.
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
        ],
    }
    if managed.node_selector:
        pod_spec["nodeSelector"] = dict(managed.node_selector)
    tolerations = [t.to_k8s() for t in managed.tolerations]
    if managed.gpus and not any(t.get("key") == "nvidia.com/gpu" for t in tolerations):
        tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        pod_spec["tolerations"] = tolerations
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": managed.replicas,
            "selector": {"matchLabels": selector},
            # GPUs are scarce: never surge a second copy of a large model.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    return _finish(deployment, owner)


def build_vllm_service(
    pool: str, namespace: str, spec: ModelPoolSpec, settings: Settings, owner: Mapping[str, Any]
) -> Obj:
    name = vllm_object_name(pool)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": build_labels("model-pool", name, {POOL_LABEL: pool}),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/instance": name, POOL_LABEL: pool},
            "ports": [{"name": "http", "port": settings.vllm_port, "targetPort": "http"}],
        },
    }
    return _finish(service, owner)


def build_pool_endpoints(
    pool: str, namespace: str, spec: ModelPoolSpec, settings: Settings
) -> list[str]:
    if spec.endpoints is not None:
        return list(spec.endpoints)
    host = f"{vllm_object_name(pool)}.{namespace}.svc.{settings.cluster_domain}"
    return [f"http://{host}:{settings.vllm_port}"]


Phase = Literal["Pending", "Ready", "Degraded", "Invalid"]


def build_modelpool_status(
    pool: str,
    namespace: str,
    spec: ModelPoolSpec | SpecProblem,
    generation: int | None,
    settings: Settings,
    deployment: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
    now: str | None = None,
) -> Obj:
    """Status of a ModelPool from its spec and (managed mode) its Deployment's status."""
    prev_conditions = (previous or {}).get("conditions")

    def cond(type_: str, ok: bool, reason: str, message: str) -> Obj:
        return build_condition(type_, ok, reason, message, generation, prev_conditions, now)

    if isinstance(spec, SpecProblem):
        return {
            "phase": "Invalid",
            "observedGeneration": generation,
            "conditions": [
                cond("Ready", False, spec.reason, spec.message),
                cond(
                    "Degraded",
                    True,
                    spec.reason,
                    "the spec must be fixed before the pool can serve",
                ),
            ],
        }
    endpoints = build_pool_endpoints(pool, namespace, spec, settings)
    status: Obj = {"mode": spec.mode, "observedGeneration": generation}
    if spec.managed is None:
        status.update(
            phase="Ready",
            endpoints=endpoints,
            replicas=len(endpoints),
            readyReplicas=len(endpoints),
        )
        status["conditions"] = [
            cond("Ready", True, "EndpointsConfigured", f"{len(endpoints)} external endpoint(s)"),
            cond("Degraded", False, "EndpointsConfigured", ""),
            *_loop_conditions(prev_conditions),
        ]
        return status

    want = spec.managed.replicas
    dep_status = (deployment or {}).get("status") or {}
    ready = int(dep_status.get("readyReplicas") or 0)
    status.update(replicas=want, readyReplicas=ready)
    if deployment is None:
        phase: Phase = "Pending"
        ready_cond = cond(
            "Ready", False, "DeploymentMissing", "the vLLM Deployment is being created"
        )
        degraded = cond("Degraded", False, "Progressing", "")
    elif want == 0:
        phase = "Pending"
        ready_cond = cond("Ready", False, "ScaledToZero", "spec.managed.replicas is 0")
        degraded = cond("Degraded", False, "ScaledToZero", "")
    elif ready == 0:
        phase = "Pending"
        ready_cond = cond(
            "Ready",
            False,
            "NoReadyReplicas",
            f"0/{want} vLLM replicas ready (model loading or unschedulable)",
        )
        degraded = cond("Degraded", False, "Progressing", "")
    elif ready < want:
        phase = "Degraded"
        ready_cond = cond("Ready", True, "PartiallyReady", f"{ready}/{want} vLLM replicas ready")
        degraded = cond(
            "Degraded", True, "ReplicasUnavailable", f"{want - ready} replica(s) not ready"
        )
    else:
        phase = "Ready"
        ready_cond = cond("Ready", True, "ReplicasReady", f"{ready}/{want} vLLM replicas ready")
        degraded = cond("Degraded", False, "ReplicasReady", "")
    status["phase"] = phase
    # Only a pool with a ready replica publishes endpoints: the gateway routes to them.
    status["endpoints"] = endpoints if ready > 0 else []
    status["conditions"] = [ready_cond, degraded, *_loop_conditions(prev_conditions)]
    return status


LOAD_CONDITION = "LoadObserved"


def _loop_conditions(previous: Sequence[Mapping[str, Any]] | None) -> list[Obj]:
    """Conditions the metrics loop owns: a spec reconcile keeps them as they are (else the
    two writers would flap the list, and each flap would post an Event)."""
    return [dict(c) for c in previous or () if c.get("type") == LOAD_CONDITION]


# --- AgentPipeline --------------------------------------------------------------


def gateway_object_name(pipeline: str) -> str:
    return f"inframind-gw-{pipeline}"


def _labels_match(selector: Mapping[str, str], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def select_pools(
    spec: AgentPipelineSpec, pools: Iterable[Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """The pools a pipeline uses (in spec order) and the names it asks for that are missing."""
    # A pool being deleted is already gone as far as routing is concerned.
    by_name = {
        p["metadata"]["name"]: p for p in pools if not p["metadata"].get("deletionTimestamp")
    }
    if spec.pools is not None:
        found = [by_name[n] for n in spec.pools if n in by_name]
        return found, [n for n in spec.pools if n not in by_name]
    assert spec.pool_selector is not None
    match = spec.pool_selector.match_labels
    chosen = [
        p
        for name, p in sorted(by_name.items())
        if _labels_match(match, p["metadata"].get("labels"))
    ]
    return chosen, []


def pipeline_uses_pool(spec: Mapping[str, Any] | None, pool: Mapping[str, Any]) -> bool:
    """Whether a pipeline spec (raw, possibly invalid) refers to a pool, by name or by labels."""
    spec = spec or {}
    name = pool["metadata"]["name"]
    if isinstance(spec.get("pools"), list):
        return name in spec["pools"]
    selector = (spec.get("poolSelector") or {}).get("matchLabels")
    if isinstance(selector, dict):
        return _labels_match(selector, pool["metadata"].get("labels"))
    return False


def build_pipeline_config(
    pipeline: str, namespace: str, spec: AgentPipelineSpec, pools: Sequence[Mapping[str, Any]]
) -> Obj:
    """The resolved configuration the gateway runs (api.config.PipelineConfig, as a dict)."""
    resolved, statuses = [], []
    for pool in pools:
        name = pool["metadata"]["name"]
        parsed = validate_spec(ModelPoolSpec, pool.get("spec"))
        if isinstance(parsed, SpecProblem):
            continue  # the pool reports its own problem; route around it
        endpoints = list((pool.get("status") or {}).get("endpoints") or [])
        routes = build_routes(pool.get("status"))
        resolved.append(
            PoolConfig(
                name=name,
                model=parsed.model,
                served_model_name=served_name(name, parsed),
                endpoints=endpoints,
                priority_scheduling_enabled=parsed.priority_scheduling_enabled,
                profile=parsed.profile,
                max_num_seqs=parsed.managed.engine.max_num_seqs
                if parsed.managed
                else parsed.max_num_seqs,
                routes={u: r for u, r in routes.items() if u in endpoints},
            )
        )
        statuses.append(pool.get("status"))
    config = PipelineConfig(
        pipeline=pipeline,
        namespace=namespace,
        pools=resolved,
        topologies=spec.topologies,
        roles=spec.roles,
        max_agents=spec.max_agents,
        depths=spec.depths,
        budget=spec.budget,
        scheduler=spec.scheduler,
        policy=spec.policy,
        auth=spec.gateway.auth_secret_ref is not None,
        routing=build_routing(statuses),
    )
    return config.model_dump(mode="json", by_alias=True, exclude_none=True)


def build_gateway_configmap(
    pipeline: str, namespace: str, config: Mapping[str, Any], owner: Mapping[str, Any]
) -> Obj:
    name = gateway_object_name(pipeline)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": build_labels("gateway", name, {PIPELINE_LABEL: pipeline}),
        },
        "data": {CONFIG_KEY: json.dumps(config, indent=2, sort_keys=True)},
    }
    return _finish(configmap, owner)


def build_gateway_deployment(
    pipeline: str,
    namespace: str,
    spec: AgentPipelineSpec,
    settings: Settings,
    owner: Mapping[str, Any],
) -> Obj:
    """The gateway Deployment; config changes reach it through the mounted ConfigMap, no restart."""
    name = gateway_object_name(pipeline)
    gw = spec.gateway
    selector = {"app.kubernetes.io/instance": name, PIPELINE_LABEL: pipeline}
    labels = build_labels("gateway", name, {PIPELINE_LABEL: pipeline})
    env: list[Obj] = [
        {"name": "INFRAMIND_GATEWAY_PORT", "value": str(settings.gateway_port)},
    ]
    prometheus = env_name("prometheus_url")
    if settings.prometheus_url and prometheus not in {e.name for e in gw.env}:
        # Where the operator reads engine metrics, its gateways can too: their second
        # source when a direct scrape fails.
        env.append({"name": prometheus, "value": settings.prometheus_url})
    env += [{"name": e.name, "value": e.value} for e in gw.env]
    if gw.auth_secret_ref is not None:
        ref = gw.auth_secret_ref
        env.append(
            {
                "name": "INFRAMIND_GATEWAY_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    args = ["gateway", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"]
    mounts: list[Obj] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[Obj] = [build_gateway_config_volume(name, spec), {"name": "tmp", "emptyDir": {}}]
    if spec.retraining.enabled:
        # One file per pod, so replicas never interleave lines on a shared volume; the
        # kubelet expands $(POD_NAME) from the env below.
        env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        args += ["--trace-log", f"{TRACES_DIR}/{pipeline}/$(POD_NAME).jsonl"]
        mounts.append({"name": "traces", "mountPath": TRACES_DIR})
        claim = spec.retraining.traces_claim_name
        volumes.append({"name": "traces", "persistentVolumeClaim": {"claimName": claim}})
    container = {
        "name": "gateway",
        "image": gw.image or settings.gateway_image,
        "args": args,
        "ports": [{"name": "http", "containerPort": settings.gateway_port, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {"cpu": gw.cpu, "memory": gw.memory},
            "limits": {"memory": gw.memory},
        },
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "securityContext": _restricted_container_security(),
        "volumeMounts": mounts,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": gw.replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(settings.gateway_port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "securityContext": _restricted_pod_security(),
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    return _finish(deployment, owner)


def build_gateway_config_volume(configmap: str, spec: AgentPipelineSpec) -> Obj:
    """The gateway's config directory: its own ConfigMap, and the trained policy beside it.

    A policy in a ConfigMap (`spec.policy.configMapRef`) is projected into the same
    directory under its key, where the gateway looks for it. The kubelet refreshes both
    files in place when either ConfigMap changes, and the gateway reloads, so a newly
    published policy version rolls out without a restart. The policy source is
    optional: until the first version is published the gateway starts and serves
    `spec.policy.fallback`, saying why.
    """
    ref = spec.policy.config_map_ref
    if ref is None:
        return {"name": "config", "configMap": {"name": configmap}}
    return {
        "name": "config",
        "projected": {
            "sources": [
                {"configMap": {"name": configmap}},
                {
                    "configMap": {
                        "name": ref.name,
                        "items": [{"key": ref.key, "path": ref.key}],
                        "optional": True,
                    }
                },
            ]
        },
    }


def build_gateway_service(
    pipeline: str, namespace: str, settings: Settings, owner: Mapping[str, Any]
) -> Obj:
    name = gateway_object_name(pipeline)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": build_labels("gateway", name, {PIPELINE_LABEL: pipeline}),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/instance": name, PIPELINE_LABEL: pipeline},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    return _finish(service, owner)


def gateway_url(pipeline: str, namespace: str, settings: Settings) -> str:
    return f"http://{gateway_object_name(pipeline)}.{namespace}.svc.{settings.cluster_domain}"


def build_pipeline_status(
    pipeline: str,
    namespace: str,
    spec: AgentPipelineSpec | SpecProblem,
    generation: int | None,
    settings: Settings,
    pools: Sequence[Mapping[str, Any]] = (),
    missing: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
    now: str | None = None,
    policy_configmap: Mapping[str, Any] | None = None,
) -> Obj:
    """The pipeline's status. `policy_configmap` is the ConfigMap `spec.policy.configMapRef`
    names, as read (None: absent); it adds the published version and a PolicyAvailable
    condition, and never changes Ready: until a version is published the fallback serves."""
    status = _pipeline_pools_status(
        pipeline, namespace, spec, generation, settings, pools, missing, config, previous, now
    )
    if isinstance(spec, AgentPipelineSpec) and spec.policy.config_map_ref is not None:
        version, ok, reason, message = build_policy_availability(spec, policy_configmap)
        status["policyVersion"] = version
        prev = (previous or {}).get("conditions")
        status["conditions"].append(
            build_condition("PolicyAvailable", ok, reason, message, generation, prev, now)
        )
    return status


def build_policy_availability(
    spec: AgentPipelineSpec, configmap: Mapping[str, Any] | None
) -> tuple[str | None, bool, str, str]:
    """(published version, available, reason, message) of a policy kept in a ConfigMap."""
    ref = spec.policy.config_map_ref
    assert ref is not None
    data = {**((configmap or {}).get("data") or {}), **((configmap or {}).get("binaryData") or {})}
    if ref.key not in data:
        missing = (
            f"ConfigMap {ref.name!r} has no key {ref.key!r} yet"
            if configmap
            else f"ConfigMap {ref.name!r} does not exist yet"
        )
        return (
            None,
            False,
            "PolicyNotPublished",
            f"{missing}: the gateways serve {spec.policy.fallback} until a retraining job "
            "publishes a policy (python -m inframind_training.publish)",
        )
    annotations = (configmap or {}).get("metadata", {}).get("annotations") or {}
    version = annotations.get(POLICY_VERSION_ANNOTATION, "unknown")
    return (
        version,
        True,
        "PolicyPublished",
        f"version {version} in ConfigMap {ref.name!r}; gateways load a new version within "
        "a minute of its publication, without a restart",
    )


def _pipeline_pools_status(
    pipeline: str,
    namespace: str,
    spec: AgentPipelineSpec | SpecProblem,
    generation: int | None,
    settings: Settings,
    pools: Sequence[Mapping[str, Any]],
    missing: Sequence[str],
    config: Mapping[str, Any] | None,
    previous: Mapping[str, Any] | None,
    now: str | None,
) -> Obj:
    prev_conditions = (previous or {}).get("conditions")

    def cond(type_: str, ok: bool, reason: str, message: str) -> Obj:
        return build_condition(type_, ok, reason, message, generation, prev_conditions, now)

    if isinstance(spec, SpecProblem):
        return {
            "phase": "Invalid",
            "observedGeneration": generation,
            "conditions": [
                cond("Ready", False, spec.reason, spec.message),
                cond(
                    "Degraded",
                    True,
                    spec.reason,
                    "the spec must be fixed before the pipeline serves",
                ),
            ],
        }
    status: Obj = {
        "observedGeneration": generation,
        "policy": spec.policy.reference,
        "pools": [p["metadata"]["name"] for p in pools],
    }
    if missing:
        names = ", ".join(repr(n) for n in missing)
        status["phase"] = "Invalid"
        status["readyPools"] = 0
        status["conditions"] = [
            cond(
                "Ready",
                False,
                "PoolNotFound",
                f"ModelPool {names} not found in namespace {namespace!r}: create it "
                "or remove it from spec.pools",
            ),
            cond(
                "Degraded", True, "PoolNotFound", "the gateway keeps its last valid configuration"
            ),
        ]
        return status
    if not pools:
        status["phase"] = "Invalid"
        status["readyPools"] = 0
        status["conditions"] = [
            cond(
                "Ready",
                False,
                "NoPoolSelected",
                "spec.poolSelector matches no ModelPool in this namespace: "
                "label a pool or fix the selector",
            ),
            cond("Degraded", True, "NoPoolSelected", ""),
        ]
        return status
    ready_pools = [p for p in (config or {}).get("pools", []) if p.get("endpoints")]
    status["readyPools"] = len(ready_pools)
    status["gatewayUrl"] = gateway_url(pipeline, namespace, settings)
    if config is not None:
        status["configHash"] = content_hash(config)
    if not ready_pools:
        status["phase"] = "Pending"
        status["conditions"] = [
            cond("Ready", False, "NoReadyPools", "no selected ModelPool has a ready endpoint yet"),
            cond("Degraded", False, "Progressing", ""),
        ]
    elif len(ready_pools) < len(pools):
        waiting = sorted({p["metadata"]["name"] for p in pools} - {p["name"] for p in ready_pools})
        status["phase"] = "Degraded"
        status["conditions"] = [
            cond(
                "Ready", True, "PoolsPartiallyReady", f"{len(ready_pools)}/{len(pools)} pools ready"
            ),
            cond("Degraded", True, "PoolsNotReady", f"not ready: {', '.join(waiting)}"),
        ]
    else:
        status["phase"] = "Ready"
        status["conditions"] = [
            cond("Ready", True, "PoolsReady", f"{len(ready_pools)} pool(s) ready"),
            cond("Degraded", False, "PoolsReady", ""),
        ]
    return status

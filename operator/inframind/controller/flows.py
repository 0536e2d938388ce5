"""Reconcile flows: read what exists, compute what should (pure), write the difference.

Each flow is level-based: it recomputes the whole desired state from the
current spec, so running it again, or after a crash, converges to the same
objects. Handlers call these; these call `reconcile` (pure) and `adapters` (I/O).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..api import AgentPipelineSpec, ModelPoolSpec
from ..settings import Settings
from . import adapters
from .reconcile import (
    SpecProblem,
    build_gateway_configmap,
    build_gateway_deployment,
    build_gateway_service,
    build_modelpool_status,
    build_pipeline_config,
    build_pipeline_status,
    build_vllm_deployment,
    build_vllm_service,
    condition_changed,
    pipeline_uses_pool,
    select_pools,
    validate_spec,
    vllm_object_name,
)

log = logging.getLogger(__name__)

MODELPOOLS = "modelpools"
AGENTPIPELINES = "agentpipelines"

# Reasons that mean "the user must change something", reported as Warning Events.
_USER_ERRORS = {"InvalidSpec", "PoolNotFound", "NoPoolSelected"}

Obj = dict[str, Any]


def _ids(body: Mapping[str, Any]) -> tuple[str, str, int | None]:
    meta = body["metadata"]
    return meta["name"], meta.get("namespace") or "default", meta.get("generation")


async def _publish_status(plural: str, body: Mapping[str, Any], status: Obj) -> Obj:
    """Patch status if it changed, and post an Event when the Ready condition changes."""
    name, namespace, _ = _ids(body)
    previous = body.get("status") or {}
    if any(previous.get(k) != v for k, v in status.items()):
        await adapters.patch_custom_status(plural, namespace, name, status)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    if condition_changed(previous.get("conditions"), ready):
        warning = ready["status"] != "True" and ready["reason"] in _USER_ERRORS
        await adapters.post_event(
            body, "Warning" if warning else "Normal", ready["reason"], ready["message"] or "ready"
        )
    return status


async def reconcile_model_pool(body: Mapping[str, Any], settings: Settings) -> Obj:
    """Converge a ModelPool: its vLLM Deployment and Service (managed mode) and its status."""
    name, namespace, generation = _ids(body)
    spec = validate_spec(ModelPoolSpec, body.get("spec"))
    deployment = None
    if not isinstance(spec, SpecProblem):
        if spec.managed is not None:
            deployment = await adapters.ensure_object(
                build_vllm_deployment(name, namespace, spec, settings, body)
            )
            await adapters.ensure_object(build_vllm_service(name, namespace, spec, settings, body))
        else:
            # A pool switched from managed to external must not leave vLLM running.
            for kind in ("Deployment", "Service"):
                await adapters.delete_object(kind, namespace, vllm_object_name(name))
    status = build_modelpool_status(
        name, namespace, spec, generation, settings, deployment, previous=body.get("status")
    )
    previous_endpoints = (body.get("status") or {}).get("endpoints")
    await _publish_status(MODELPOOLS, body, status)
    if status.get("endpoints") != previous_endpoints:
        await reconcile_dependents(namespace, body, settings)
    return status


async def reconcile_dependents(namespace: str, pool: Mapping[str, Any], settings: Settings) -> None:
    """Re-reconcile every pipeline that uses (or used) a pool, after it changed or went away."""
    pool_name = pool["metadata"]["name"]
    for pipeline in await adapters.list_custom(AGENTPIPELINES, namespace):
        used_before = pool_name in ((pipeline.get("status") or {}).get("pools") or [])
        if used_before or pipeline_uses_pool(pipeline.get("spec"), pool):
            try:
                await reconcile_pipeline(pipeline, settings)
            except adapters.TransientApiError as exc:
                # Its own resync timer will converge it; one failure must not block the others.
                log.warning(
                    "re-reconcile of pipeline %s deferred: %s", pipeline["metadata"]["name"], exc
                )


async def reconcile_pipeline(body: Mapping[str, Any], settings: Settings) -> Obj:
    """Converge an AgentPipeline: resolve pools, then gateway ConfigMap, Deployment, Service."""
    name, namespace, generation = _ids(body)
    spec = validate_spec(AgentPipelineSpec, body.get("spec"))
    if isinstance(spec, SpecProblem):
        status = build_pipeline_status(
            name, namespace, spec, generation, settings, previous=body.get("status")
        )
        return await _publish_status(AGENTPIPELINES, body, status)
    selected, missing = select_pools(spec, await adapters.list_custom(MODELPOOLS, namespace))
    config = None
    if selected and not missing:
        config = build_pipeline_config(name, namespace, spec, selected)
        await adapters.ensure_object(build_gateway_configmap(name, namespace, config, body))
        await adapters.ensure_object(
            build_gateway_deployment(name, namespace, spec, settings, body)
        )
        await adapters.ensure_object(build_gateway_service(name, namespace, settings, body))
    status = build_pipeline_status(
        name, namespace, spec, generation, settings, selected, missing, config, body.get("status")
    )
    return await _publish_status(AGENTPIPELINES, body, status)


async def pool_deployment_changed(deployment: Mapping[str, Any], settings: Settings) -> None:
    """A vLLM Deployment's status moved (replicas became ready or not): refresh its pool."""
    meta = deployment["metadata"]
    pool_name = (meta.get("labels") or {}).get("inframind.io/pool")
    if not pool_name:
        return
    pool = await adapters.fetch_custom(MODELPOOLS, meta.get("namespace") or "default", pool_name)
    if pool is not None and not pool["metadata"].get("deletionTimestamp"):
        await reconcile_model_pool(pool, settings)

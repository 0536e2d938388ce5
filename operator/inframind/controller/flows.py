"""Reconcile flows: read what exists, compute what should (pure), write the difference.

Each flow is level-based: it recomputes the whole desired state from the
current spec, so running it again, or after a crash, converges to the same
objects. Handlers call these; these call `reconcile` (pure) and `adapters` (I/O).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api import AgentPipelineSpec, ModelPoolSpec
from ..api.common import now_rfc3339
from ..settings import Settings
from . import adapters
from .loads import (
    SeriesLoad,
    build_load_queries,
    build_load_status,
    build_pipeline_stats,
    build_series,
    build_stale_load,
)
from .metrics import METRICS
from .reconcile import (
    LOAD_CONDITION,
    SpecProblem,
    build_condition,
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
_USER_ERRORS = {"InvalidSpec", "PoolNotFound", "NoPoolSelected", "PolicyNotPublished"}
# Conditions whose changes are posted as Events: readiness, and a policy version rolling out.
_EVENTED = {"Ready", "PolicyAvailable"}

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
    for cond in status["conditions"]:
        if cond["type"] not in _EVENTED or not condition_changed(previous.get("conditions"), cond):
            continue
        warning = cond["status"] != "True" and cond["reason"] in _USER_ERRORS
        await adapters.post_event(
            body, "Warning" if warning else "Normal", cond["reason"], cond["message"] or "ready"
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
    policy_cm = None
    if spec.policy.config_map_ref is not None:
        policy_cm = await adapters.fetch_object(
            "ConfigMap", namespace, spec.policy.config_map_ref.name
        )
    config = None
    if selected and not missing:
        config = build_pipeline_config(name, namespace, spec, selected)
        await adapters.ensure_object(build_gateway_configmap(name, namespace, config, body))
        await adapters.ensure_object(
            build_gateway_deployment(name, namespace, spec, settings, body)
        )
        await adapters.ensure_object(build_gateway_service(name, namespace, settings, body))
    status = build_pipeline_status(
        name, namespace, spec, generation, settings, selected, missing, config,
        body.get("status"), policy_configmap=policy_cm,
    )  # fmt: skip
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


# --- metrics loop ----------------------------------------------------------------


@dataclass(frozen=True)
class ClusterLoad:
    """One pull of the cluster's load from Prometheus (or why it failed)."""

    series: list[SeriesLoad] | None
    error: str | None
    fetched_at: float  # monotonic
    observed_at: str  # RFC 3339, for status
    # (namespace, pipeline) -> what its gateways report (see loads.build_pipeline_stats)
    pipelines: dict[tuple[str, str], dict[str, float]] | None = None


class LoadCache:
    """One Prometheus pull per period shared by every pipeline's timer, so the queries
    issued stay constant in the number of pipelines as well as pools and pods."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._last: ClusterLoad | None = None

    async def get(self, settings: Settings) -> ClusterLoad:
        async with self._lock:
            last = self._last
            if last is not None and time.monotonic() - last.fetched_at < (
                settings.metrics_period_seconds / 2
            ):
                return last
            queries = build_load_queries()
            started = time.monotonic()
            try:
                results = await adapters.fetch_prometheus(
                    settings.prometheus_url or "", queries, settings.prometheus_timeout_seconds
                )
                fresh = ClusterLoad(
                    build_series(results),
                    None,
                    started,
                    now_rfc3339(),
                    build_pipeline_stats(results),
                )
                if last is not None and last.error:
                    log.info("Prometheus answers again")
            except adapters.PrometheusUnavailable as exc:
                if last is None or not last.error:
                    log.warning("%s; pool loads keep their last values, marked stale", exc)
                fresh = ClusterLoad(None, str(exc), started, now_rfc3339())
            METRICS.promql_queries.inc(len(queries))
            METRICS.loop_seconds.observe(time.monotonic() - started)
            self._last = fresh
            return fresh


LOADS = LoadCache()


def _load_condition(pool: Mapping[str, Any], load: ClusterLoad, found: bool) -> Obj:
    status = pool.get("status") or {}
    generation = pool["metadata"].get("generation")
    previous = status.get("conditions")
    if load.error:
        return build_condition(
            LOAD_CONDITION,
            False,
            "PrometheusUnreachable",
            f"{load.error}; last values kept and marked stale, gateways use their direct scrape",
            generation,
            previous,
        )
    if not found:
        return build_condition(
            LOAD_CONDITION,
            False,
            "NoSeries",
            "Prometheus has no vLLM series for this pool: check that it scrapes the pool's "
            "pods (label inframind.io/pool) or endpoints",
            generation,
            previous,
        )
    return build_condition(
        LOAD_CONDITION, True, "Observed", "load read from Prometheus", generation, previous
    )


async def observe_pool_load(pool: Mapping[str, Any], load: ClusterLoad) -> Obj:
    """Write one pool's load and LoadObserved condition to its status (when they changed)."""
    name, namespace, _ = _ids(pool)
    status = pool.get("status") or {}
    fresh = build_load_status(pool, load.series, load.observed_at) if load.series else None
    new_load = fresh if fresh is not None else build_stale_load(status.get("load"))
    condition = _load_condition(pool, load, fresh is not None)
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != LOAD_CONDITION]
    patch = {"load": new_load, "conditions": [*conditions, condition]}
    if status.get("load") != new_load or condition_changed(status.get("conditions"), condition):
        await adapters.patch_custom_status(MODELPOOLS, namespace, name, patch)
    if condition_changed(status.get("conditions"), condition):
        ok = condition["status"] == "True"
        await adapters.post_event(
            pool, "Normal" if ok else "Warning", condition["reason"], condition["message"]
        )
    labels = (namespace, name)
    for gauge, key, scale in (
        (METRICS.pool_waiting, "waiting", 1.0),
        (METRICS.pool_running, "running", 1.0),
        (METRICS.pool_kv_usage, "kvUsagePercent", 0.01),
        (METRICS.pool_gpu_util, "gpuUtilPercent", 1.0),
    ):
        if new_load.get(key) is not None:
            gauge.labels(*labels).set(new_load[key] * scale)
    METRICS.pool_stale.labels(*labels).set(1.0 if new_load.get("stale") else 0.0)
    METRICS.pool_ready.labels(*labels).set(1.0 if status.get("endpoints") else 0.0)
    return {**status, **patch}


async def observe_pipeline_load(body: Mapping[str, Any], settings: Settings) -> None:
    """The metrics loop of one AgentPipeline: its pools' load into their status, then the
    pipeline reconciled, so its gateways' ConfigMap carries the routing that load implies."""
    if not settings.prometheus_url:
        return
    _, namespace, _ = _ids(body)
    spec = validate_spec(AgentPipelineSpec, body.get("spec"))
    if isinstance(spec, SpecProblem):
        return
    selected, _ = select_pools(spec, await adapters.list_custom(MODELPOOLS, namespace))
    load = await LOADS.get(settings)
    for pool in selected:
        await observe_pool_load(pool, load)
    await observe_pipeline_stats(body, load)
    await reconcile_pipeline(body, settings)


async def observe_pipeline_stats(body: Mapping[str, Any], load: ClusterLoad) -> None:
    """The pipeline's SLO compliance and answers over the last hour, from its gateways'
    metrics in Prometheus, into its status (`kubectl get ap` shows them). Left as they
    were while Prometheus is unreachable; cleared when its gateways report nothing."""
    if load.pipelines is None:
        return
    name, namespace, _ = _ids(body)
    stats = load.pipelines.get((namespace, name), {})
    slo, served = stats.get("slo_percent"), stats.get("served")
    patch = {
        "sloCompliancePercent": None if slo is None else round(slo, 2),
        "requestsServed": None if served is None else round(served),
    }
    status = body.get("status") or {}
    if any(status.get(k) != v for k, v in patch.items()):
        await adapters.patch_custom_status(AGENTPIPELINES, namespace, name, patch)

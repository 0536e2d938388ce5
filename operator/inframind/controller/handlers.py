"""kopf wiring: which events reach which flow. No logic lives here."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from ..api import GROUP, VERSION
from ..settings import get_settings
from . import adapters, flows
from .metrics import METRICS

SETTINGS = get_settings()
POOLS = (GROUP, VERSION, "modelpools")
PIPELINES = (GROUP, VERSION, "agentpipelines")
VLLM_DEPLOYMENTS = {
    "app.kubernetes.io/managed-by": "inframind",
    "app.kubernetes.io/component": "model-pool",
}


def _plain(value: Any) -> Any:
    """kopf hands out read-only views; the reconcile layer works on plain dicts."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


async def _retrying(coro) -> None:
    try:
        await coro
    except adapters.TransientApiError as exc:
        raise kopf.TemporaryError(str(exc), delay=5) from exc


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    adapters.connect()
    settings.posting.level = 30  # kopf's own Events: warnings and errors only
    settings.watching.server_timeout = 300
    settings.persistence.finalizer = "inframind.io/finalizer"
    if SETTINGS.operator_metrics_port:
        try:
            METRICS.serve(SETTINGS.operator_metrics_port, SETTINGS.operator_metrics_host)
        except OSError as exc:  # a taken port costs the metrics, not the reconciling
            logging.getLogger(__name__).warning(
                "operator /metrics not served on %s:%s: %s",
                SETTINGS.operator_metrics_host,
                SETTINGS.operator_metrics_port,
                exc,
            )


@kopf.on.resume(*POOLS)
@kopf.on.create(*POOLS)
@kopf.on.update(*POOLS)
async def pool_changed(body: kopf.Body, **_: Any) -> None:
    await _retrying(flows.reconcile_model_pool(_plain(body), SETTINGS))


@kopf.timer(*POOLS, interval=SETTINGS.resync_seconds, initial_delay=SETTINGS.resync_seconds)
async def pool_resync(body: kopf.Body, **_: Any) -> None:
    await _retrying(flows.reconcile_model_pool(_plain(body), SETTINGS))


@kopf.on.delete(*POOLS, optional=True)
async def pool_deleted(body: kopf.Body, namespace: str, **_: Any) -> None:
    await _retrying(flows.reconcile_dependents(namespace, _plain(body), SETTINGS))


@kopf.on.event("apps", "v1", "deployments", labels=VLLM_DEPLOYMENTS)
async def vllm_deployment_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type in ("ADDED", "MODIFIED", None):
        await _retrying(flows.pool_deployment_changed(_plain(body), SETTINGS))


@kopf.on.resume(*PIPELINES)
@kopf.on.create(*PIPELINES)
@kopf.on.update(*PIPELINES)
async def pipeline_changed(body: kopf.Body, **_: Any) -> None:
    await _retrying(flows.reconcile_pipeline(_plain(body), SETTINGS))


@kopf.timer(*PIPELINES, interval=SETTINGS.resync_seconds, initial_delay=SETTINGS.resync_seconds)
async def pipeline_resync(body: kopf.Body, **_: Any) -> None:
    await _retrying(flows.reconcile_pipeline(_plain(body), SETTINGS))


@kopf.timer(
    *PIPELINES,
    interval=SETTINGS.metrics_period_seconds,
    initial_delay=min(5.0, SETTINGS.metrics_period_seconds),
)
async def pipeline_metrics(body: kopf.Body, **_: Any) -> None:
    await _retrying(flows.observe_pipeline_load(_plain(body), SETTINGS))

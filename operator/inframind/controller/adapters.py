"""Kubernetes I/O for the operator: the only module that calls the Kubernetes API.

Objects travel as plain dicts (what the reconcile layer builds), and calls go
through the official client with `_preload_content=False`, so nothing is
converted to and from the client's model classes. The sync client runs in a
worker thread to keep kopf's event loop free.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api import GROUP, VERSION
from ..api.common import now_rfc3339

log = logging.getLogger(__name__)

Obj = dict[str, Any]

HASH_ANNOTATION = "inframind.io/desired-hash"

_api: client.ApiClient | None = None

# kind -> (API class, method suffix) for the built-in kinds the operator owns.
_KINDS = {
    "ConfigMap": (client.CoreV1Api, "namespaced_config_map"),
    "Service": (client.CoreV1Api, "namespaced_service"),
    "Deployment": (client.AppsV1Api, "namespaced_deployment"),
}


class TransientApiError(RuntimeError):
    """The API server failed in a way that a retry may fix (5xx, conflict, timeout)."""


def connect(kubeconfig: str | None = None) -> None:
    """Load credentials: in-cluster service account, else kubeconfig (KUBECONFIG or ~/.kube)."""
    global _api
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    # Timers and watch events reconcile many objects at once from worker threads.
    configuration.connection_pool_maxsize = 32
    _api = client.ApiClient(configuration)


def _client() -> client.ApiClient:
    if _api is None:
        connect()
    assert _api is not None
    return _api


async def _call(fn, *args, **kwargs) -> Obj | None:
    """Run one API call in a thread; 404 -> None, retryable failures -> TransientApiError."""
    try:
        resp = await asyncio.to_thread(partial(fn, *args, _preload_content=False, **kwargs))
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status in (409, 429) or exc.status >= 500:
            raise TransientApiError(f"{fn.__name__}: HTTP {exc.status} {exc.reason}") from exc
        raise
    data = resp.data
    return json.loads(data) if data else {}


def _method(kind: str, verb: str):
    api_cls, suffix = _KINDS[kind]
    return getattr(api_cls(_client()), f"{verb}_{suffix}")


async def fetch_object(kind: str, namespace: str, name: str) -> Obj | None:
    return await _call(_method(kind, "read"), name, namespace)


async def ensure_object(desired: Mapping[str, Any]) -> Obj:
    """Create the object, or replace it when its desired-hash annotation changed.

    Comparing our own hash instead of the live object avoids fighting the API
    server's defaulting: an unchanged spec is never written again.
    """
    kind = desired["kind"]
    meta = desired["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    current = await fetch_object(kind, namespace, name)
    if current is None:
        try:
            created = await _call(_method(kind, "create"), namespace, dict(desired))
            log.info("created %s %s/%s", kind, namespace, name)
            return created or dict(desired)
        except TransientApiError:
            # Lost a race with another reconcile of the same object: replace below.
            current = await fetch_object(kind, namespace, name)
            if current is None:
                raise
    want_hash = (meta.get("annotations") or {}).get(HASH_ANNOTATION)
    have_hash = ((current.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
    if want_hash is not None and want_hash == have_hash:
        return current
    body = json.loads(json.dumps(desired))
    body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
    if kind == "Service":
        # clusterIP is immutable once assigned.
        ip = (current.get("spec") or {}).get("clusterIP")
        if ip:
            body["spec"]["clusterIP"] = ip
    replaced = await _call(_method(kind, "replace"), name, namespace, body)
    log.info("updated %s %s/%s", kind, namespace, name)
    return replaced or body


def _custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(_client())


async def list_custom(plural: str, namespace: str) -> list[Obj]:
    result = await _call(_custom().list_namespaced_custom_object, GROUP, VERSION, namespace, plural)
    return list((result or {}).get("items") or [])


async def fetch_custom(plural: str, namespace: str, name: str) -> Obj | None:
    return await _call(
        _custom().get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
    )


async def patch_custom_status(
    plural: str, namespace: str, name: str, status: Mapping[str, Any]
) -> None:
    """Merge-patch our status fields; kopf's own bookkeeping under status is left alone."""
    await _call(
        _custom().patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        namespace,
        plural,
        name,
        {"status": dict(status)},
    )


async def post_event(involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Record a core/v1 Event on an object; failure to post is logged, never raised."""
    meta = involved["metadata"]
    namespace = meta.get("namespace") or "default"
    stamp = now_rfc3339()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "inframind-operator"},
        "reportingComponent": "inframind-operator",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await _call(client.CoreV1Api(_client()).create_namespaced_event, namespace, body)
    except Exception as exc:  # an Event is best effort; losing one must not fail a reconcile
        log.warning("could not post Event %s on %s/%s: %s", reason, namespace, meta["name"], exc)


async def delete_object(kind: str, namespace: str, name: str) -> bool:
    """Delete an owned object if it exists; True when something was deleted."""
    result = await _call(_method(kind, "delete"), name, namespace)
    if result is not None:
        log.info("deleted %s %s/%s", kind, namespace, name)
    return result is not None


# --- Prometheus -------------------------------------------------------------------


class PrometheusUnavailable(RuntimeError):
    """Prometheus did not answer, or answered with an error, for a query of the loop."""


def _prometheus_queries(url: str, queries: Mapping[str, str], timeout_s: float) -> dict:
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    # No retries: the loop runs again next period, and urllib3's back-off would hold the
    # worker thread for seconds on every outage.
    prom = PrometheusConnect(url, retry=Retry(total=0), timeout=timeout_s)
    return {key: prom.custom_query(promql) for key, promql in queries.items()}


async def fetch_prometheus(
    url: str, queries: Mapping[str, str], timeout_s: float = 5.0
) -> dict[str, list[Obj]]:
    """Run a batch of instant PromQL queries; any failure fails the batch as a whole, so
    one loop's values never mix two moments."""
    try:
        return await asyncio.to_thread(_prometheus_queries, url, queries, timeout_s)
    except Exception as exc:  # connection, HTTP status, bad JSON: all mean "unusable now"
        log.debug("Prometheus %s failed: %s", url, exc)
        # The exception text repeats the whole query URL; status messages need the gist.
        reason = str(exc).split(" url:", 1)[0][:160]
        raise PrometheusUnavailable(f"Prometheus {url}: {type(exc).__name__}: {reason}") from exc

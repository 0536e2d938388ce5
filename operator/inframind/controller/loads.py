"""Pool load from Prometheus, and the routing it implies: PromQL, joins, decisions (pure).

The operator's metrics loop issues the three queries of `build_load_queries`
once per period, whatever the number of pools, pods or pipelines, then joins
the series to ModelPools here:

- managed pools by the pod label `inframind.io/pool`, which the chart's
  PodMonitor copies onto the series as `inframind_io_pool` (with `namespace`);
- external pools by `instance` (`host:port` of each endpoint URL);
- GPU series of the NVIDIA DCGM exporter by (`namespace`, `pod`), through the
  vLLM series of the same pod (DCGM labels GPUs with the pod using them).

Metric names match both `vllm:` (Prometheus 3) and `vllm_` (Prometheus 2.x)
spellings (RECIPES.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api.config import AdmissionClass, EndpointRoute, Routing
from ..telemetry.urls import instance_of
from ..telemetry.vllm_metrics import COUNT_GAUGES, GAUGES, SHARE_GAUGES

POOL_LABEL = "inframind_io_pool"
_BY = f"namespace, pod, instance, {POOL_LABEL}"
_VLLM = "vllm[:_]"

# Above this KV-cache usage with requests waiting, an endpoint is saturated: new calls
# would queue behind preemptions (vLLM recomputes evicted sequences).
KV_SATURATED = 0.95
# Under cluster-wide KV pressure above this, looser classes are shed earlier.
KV_PRESSURE = 0.90


def _tag(expr: str, signal: str) -> str:
    return f'label_replace({expr}, "signal", "{signal}", "", "")'


def build_load_queries(window: str = "1m") -> dict[str, str]:
    """The PromQL of one metrics loop, by what it yields. Four queries, constant in the
    number of pools and pods: every signal of a kind rides in one query, told apart by
    `__name__` or a `signal` label."""
    summed, averaged = "|".join(COUNT_GAUGES), "|".join(SHARE_GAUGES)

    def quantile(q: float, hist: str) -> str:
        buckets = f'{{__name__=~"{_VLLM}{hist}_bucket"}}'
        return f"histogram_quantile({q}, sum by (le, {_BY}) (rate({buckets}[{window}])))"

    latency = " or ".join(
        _tag(quantile(q, hist), signal)
        for signal, hist, q in (
            ("latency_p50", "e2e_request_latency_seconds", 0.5),
            ("latency_p95", "e2e_request_latency_seconds", 0.95),
            ("ttft_p50", "time_to_first_token_seconds", 0.5),
        )
    )
    gpu = " or ".join(
        (
            # DCGM_FI_DEV_GPU_UTIL is a percentage; the profiling metric is a ratio.
            _tag("avg by (namespace, pod) (DCGM_FI_DEV_GPU_UTIL)", "gpu_util"),
            _tag("100 * avg by (namespace, pod) (DCGM_FI_PROF_GR_ENGINE_ACTIVE)", "gpu_active"),
            _tag("sum by (namespace, pod) (DCGM_FI_DEV_FB_USED)", "fb_used_mib"),
        )
    )
    return {
        # `or` matches series on their labels without __name__: the averaged ones need a
        # label of their own, or the summed series of the same pod would hide them.
        "gauges": f'sum by (__name__, {_BY}) ({{__name__=~"{_VLLM}({summed})"}}) or '
        + _tag(f'avg by (__name__, {_BY}) ({{__name__=~"{_VLLM}({averaged})"}})', "mean"),
        "latency": latency,
        "gpu": gpu,
        "pipelines": build_pipeline_query(),
    }


# What a pipeline's status reports from its gateways' own metrics (all replicas).
PIPELINE_WINDOW = "1h"


def build_pipeline_query(window: str = PIPELINE_WINDOW) -> str:
    """Per (namespace, pipeline): the share of queries within budget and the answers given,
    over `window`, from the gateways' inframind_slo_total and inframind_requests_total."""
    slo = "inframind_slo_total"
    share = (
        f'100 * sum by (namespace, pipeline) (increase({slo}{{result="met"}}[{window}]))'
        f" / sum by (namespace, pipeline) (increase({slo}[{window}]))"
    )
    served = (
        f'sum by (namespace, pipeline) (increase(inframind_requests_total{{code="200"}}[{window}]))'
    )
    return f"{_tag(share, 'slo_percent')} or {_tag(served, 'served')}"


def build_pipeline_stats(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[tuple[str, str], dict[str, float]]:
    """(namespace, pipeline) -> {"slo_percent", "served"} from the pipelines query (pure).
    A series without a namespace label (a gateway Prometheus does not scrape through
    Kubernetes service discovery) cannot be told apart across namespaces: it is skipped."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for sample in results.get("pipelines", ()):
        metric, value = sample.get("metric", {}), _value(sample)
        key = (metric.get("namespace"), metric.get("pipeline"))
        if value is not None and all(key) and metric.get("signal"):
            out.setdefault(key, {})[metric["signal"]] = value
    return out


@dataclass
class SeriesLoad:
    """What Prometheus says about one scrape target (a vLLM pod or external endpoint)."""

    namespace: str | None
    pod: str | None
    instance: str | None
    pool: str | None
    values: dict[str, float] = field(default_factory=dict)


def _value(sample: Mapping[str, Any]) -> float | None:
    try:
        v = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def build_series(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[SeriesLoad]:
    """Query results -> one record per target, GPU signals attached through its pod."""
    targets: dict[tuple, SeriesLoad] = {}

    def target(metric: Mapping[str, str]) -> SeriesLoad:
        key = (metric.get("namespace"), metric.get("pod"), metric.get("instance"))
        if key not in targets:
            targets[key] = SeriesLoad(*key, pool=metric.get(POOL_LABEL))
        return targets[key]

    for sample in results.get("gauges", ()):
        metric = sample.get("metric", {})
        name = metric.get("__name__", "")
        signal = GAUGES.get(name[5:]) if name.startswith(("vllm:", "vllm_")) else None
        value = _value(sample)
        if signal and value is not None:
            t = target(metric)
            if name[5:] in SHARE_GAUGES:  # one share, whichever names the engine exports
                t.values[signal] = max(t.values.get(signal, 0.0), value)
            else:
                t.values[signal] = t.values.get(signal, 0.0) + value
    for sample in results.get("latency", ()):
        metric, value = sample.get("metric", {}), _value(sample)
        if value is not None and metric.get("signal"):
            target(metric).values[metric["signal"]] = value
    by_pod = {(t.namespace, t.pod): t for t in targets.values() if t.pod}
    for sample in results.get("gpu", ()):
        metric, value = sample.get("metric", {}), _value(sample)
        t = by_pod.get((metric.get("namespace"), metric.get("pod")))
        if t is not None and value is not None and metric.get("signal"):
            t.values[metric["signal"]] = value
    return list(targets.values())


def pool_series(
    pool: Mapping[str, Any], series: Sequence[SeriesLoad]
) -> list[tuple[str, SeriesLoad]]:
    """The targets that belong to a ModelPool, each with the endpoint it is reported as."""
    meta = pool["metadata"]
    name, namespace = meta["name"], meta.get("namespace") or "default"
    endpoints = ((pool.get("spec") or {}).get("endpoints")) or []
    by_instance = {instance_of(u): u for u in endpoints}
    found = []
    for s in series:
        if s.pool == name and s.namespace == namespace:
            found.append((s.pod or s.instance or name, s))
        elif s.instance in by_instance and s.pool is None:
            found.append((by_instance[s.instance], s))
    return found


def build_load_status(
    pool: Mapping[str, Any], series: Sequence[SeriesLoad], observed_at: str
) -> dict[str, Any] | None:
    """ModelPool `status.load` from fresh Prometheus data; None when no series matched."""
    mine = pool_series(pool, series)
    # Histogram rates outlive a failed scrape by their window, gauges do not: a pool with
    # latency series but no current gauges has no fresh load (its last values stay, stale).
    if not any("waiting" in s.values or "running" in s.values for _, s in mine):
        return None

    def total(key: str) -> float | None:
        vals = [s.values[key] for _, s in mine if key in s.values]
        return round(sum(vals), 3) if vals else None

    def worst(key: str, scale: float = 1.0, digits: int = 3) -> float | None:
        vals = [s.values[key] for _, s in mine if key in s.values]
        return round(max(vals) * scale, digits) if vals else None

    gpu = [s.values.get("gpu_util", s.values.get("gpu_active")) for _, s in mine]
    gpu = [g for g in gpu if g is not None]
    return {
        "waiting": total("waiting"),
        "running": total("running"),
        "kvUsagePercent": worst("kv_usage", 100.0, 1),
        "gpuUtilPercent": round(sum(gpu) / len(gpu), 1) if gpu else None,
        "gpuMemoryUsedMib": total("fb_used_mib"),
        "latencyP50Seconds": worst("latency_p50"),
        "latencyP95Seconds": worst("latency_p95"),
        "ttftP50Seconds": worst("ttft_p50"),
        "source": "prometheus",
        "stale": False,
        "observedAt": observed_at,
        "endpoints": [
            {
                "url": url,
                "waiting": s.values.get("waiting"),
                "running": s.values.get("running"),
                "kvUsagePercent": round(s.values["kv_usage"] * 100, 1)
                if "kv_usage" in s.values
                else None,
            }
            for url, s in sorted(mine, key=lambda m: m[0])
        ],
    }


def build_stale_load(previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """Prometheus unreachable or silent: the last values stay, flagged stale."""
    load = dict(previous or {})
    load["stale"] = True
    load.setdefault("source", "none")
    return load


def build_routes(pool_status: Mapping[str, Any] | None) -> dict[str, EndpointRoute]:
    """Per-endpoint routing advice from a pool's observed load.

    An endpoint whose KV cache is full with requests waiting is taken out while another
    endpoint of the pool is not; the others are weighted by free KV cache in steps of 0.1
    (coarse on purpose: the gateways' ConfigMap changes only when the advice does).
    """
    load = (pool_status or {}).get("load") or {}
    if load.get("stale") or not load.get("endpoints"):
        return {}
    routes: dict[str, EndpointRoute] = {}
    for ep in load["endpoints"]:
        kv = (ep.get("kvUsagePercent") or 0.0) / 100.0
        if kv >= KV_SATURATED and (ep.get("waiting") or 0) > 0:
            routes[ep["url"]] = EndpointRoute(
                weight=0.1, eligible=False, reason=f"KV cache {kv:.0%} full with a queue"
            )
        else:
            routes[ep["url"]] = EndpointRoute(weight=max(0.1, round(1.0 - kv, 1)))
    if routes and not any(r.eligible for r in routes.values()):
        # All saturated: none is better than the others; let the gateways spread the load.
        routes = {u: EndpointRoute(weight=0.1, reason=r.reason) for u, r in routes.items()}
    return {u: r for u, r in routes.items() if r.weight < 1.0 or not r.eligible}


# Classes by latency budget, tightest first. Thresholds are occupancies (requests per
# batch slot over all pools): calm values first, under KV pressure second.
ADMISSION_CLASSES = (
    ("interactive", 10.0, None, None),
    ("standard", 60.0, 4.0, 2.0),
    ("batch", None, 2.0, 1.0),
)


def build_routing(pool_statuses: Sequence[Mapping[str, Any] | None]) -> Routing:
    """The pipeline-wide routing: admission thresholds per priority class.

    Under KV pressure (any pool's cache above KV_PRESSURE) looser classes are shed at a
    lower occupancy, so capacity stays for tight-budget queries; the interactive class is
    never shed for occupancy (only when its budget cannot be met, by the gateway itself).
    """
    loads = [(s or {}).get("load") or {} for s in pool_statuses]
    observed = [ld for ld in loads if ld.get("source") == "prometheus"]
    if not observed:
        return Routing()
    stale = any(ld.get("stale") for ld in observed)
    pressure = not stale and any(
        (ld.get("kvUsagePercent") or 0.0) / 100.0 > KV_PRESSURE for ld in observed
    )
    classes = [
        AdmissionClass(
            name=name,
            max_budget_seconds=budget,
            max_occupancy=tight if pressure else calm,
        )
        for name, budget, calm, tight in ADMISSION_CLASSES
    ]
    return Routing(source="prometheus", stale=stale, admission=classes)

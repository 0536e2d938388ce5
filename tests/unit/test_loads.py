"""The operator's view of pool load from Prometheus, and the routing it pushes to gateways."""

from __future__ import annotations

import numpy as np
import pytest

from inframind.api.config import AdmissionClass, PipelineConfig
from inframind.controller.loads import (
    build_load_queries,
    build_load_status,
    build_pipeline_stats,
    build_routes,
    build_routing,
    build_series,
    build_stale_load,
)
from inframind.orchestrator.scheduler import admit
from inframind.policy.types import ClusterSnapshot, PoolLoad, PoolProfile, Query
from inframind.vocab import TaskFamily

pytestmark = pytest.mark.unit


def _profile(name: str) -> PoolProfile:
    return PoolProfile(name, "m", np.full((3, 3), 0.7), np.full((3, 3), 200.0), tpot_s=0.02)


def _sample(value: float, **labels: str) -> dict:
    return {"metric": labels, "value": [0, str(value)]}


def _pool(name: str, namespace: str = "ns", endpoints: list[str] | None = None) -> dict:
    spec = {"model": "m"}
    if endpoints is not None:
        spec["endpoints"] = endpoints
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_one_loop_issues_three_queries_whatever_the_cluster_size():
    queries = build_load_queries()
    assert set(queries) == {"gauges", "latency", "gpu", "pipelines"}
    # Both spellings of vLLM's names (Prometheus 2 escapes the colon) and both DCGM signals.
    assert "vllm[:_]" in queries["gauges"]
    assert (
        "DCGM_FI_DEV_GPU_UTIL" in queries["gpu"]
        and "DCGM_FI_PROF_GR_ENGINE_ACTIVE" in queries["gpu"]
    )


def _results() -> dict:
    managed = {
        "namespace": "ns",
        "pod": "vllm-a-0",
        "instance": "10.0.0.5:8000",
        "inframind_io_pool": "a",
    }
    external = {"instance": "gpu-box:8000"}
    return {
        "gauges": [
            _sample(3, __name__="vllm:num_requests_waiting", **managed),
            _sample(8, __name__="vllm:num_requests_running", **managed),
            _sample(0.97, __name__="vllm_kv_cache_usage_perc", **managed),
            # An engine exporting the gauge under its older name too: one share, not 1.94.
            _sample(0.97, __name__="vllm_gpu_cache_usage_perc", signal="mean", **managed),
            _sample(0, __name__="vllm_num_requests_waiting", **external),
            _sample(1, __name__="vllm_num_requests_running", **external),
            _sample(0.2, __name__="vllm_kv_cache_usage_perc", **external),
            # Another namespace's pool of the same name must not be mixed in.
            _sample(
                50,
                __name__="vllm:num_requests_waiting",
                **{**managed, "namespace": "other", "pod": "x"},
            ),
        ],
        "latency": [
            _sample(2.5, signal="latency_p95", **managed),
            _sample(float("nan"), signal="latency_p50", **managed),  # no request in the window
        ],
        "gpu": [_sample(87.0, signal="gpu_util", namespace="ns", pod="vllm-a-0")],
    }


def test_series_join_to_pools_by_pod_label_or_endpoint_instance():
    series = build_series(_results())
    managed = build_load_status(_pool("a"), series, "t")
    assert managed is not None
    assert managed["waiting"] == 3 and managed["running"] == 8
    assert managed["kvUsagePercent"] == 97.0 and managed["gpuUtilPercent"] == 87.0
    assert managed["latencyP95Seconds"] == 2.5 and managed["latencyP50Seconds"] is None
    assert managed["stale"] is False and managed["source"] == "prometheus"
    external = build_load_status(_pool("b", endpoints=["http://gpu-box:8000"]), series, "t")
    assert external is not None and external["running"] == 1
    assert external["endpoints"][0]["url"] == "http://gpu-box:8000"
    assert build_load_status(_pool("c"), series, "t") is None  # nothing scraped for it
    # A failed scrape drops the gauges at once while histogram rates linger: not fresh load.
    only_latency = build_series({"latency": _results()["latency"]})
    assert build_load_status(_pool("a"), only_latency, "t") is None


def test_stale_load_keeps_the_last_values():
    last = build_load_status(_pool("a"), build_series(_results()), "t")
    stale = build_stale_load(last)
    assert stale["stale"] is True and stale["waiting"] == 3


def _status(*endpoints: tuple[str, float, float], stale: bool = False) -> dict:
    eps = [{"url": u, "waiting": w, "kvUsagePercent": kv} for u, w, kv in endpoints]
    kv = max(e["kvUsagePercent"] for e in eps)
    return {
        "load": {"source": "prometheus", "stale": stale, "endpoints": eps, "kvUsagePercent": kv}
    }


def test_a_saturated_endpoint_leaves_routing_while_another_is_free():
    routes = build_routes(_status(("http://a", 4, 99.0), ("http://b", 0, 30.0)))
    assert not routes["http://a"].eligible and "KV" in routes["http://a"].reason
    assert routes["http://b"].eligible and routes["http://b"].weight == pytest.approx(0.7)
    # All saturated: nobody is taken out (there would be nowhere to go).
    routes = build_routes(_status(("http://a", 4, 99.0), ("http://b", 2, 98.0)))
    assert all(r.eligible for r in routes.values())
    # Stale data gives no advice at all.
    assert build_routes(_status(("http://a", 4, 99.0), ("http://b", 0, 0.0), stale=True)) == {}


def test_kv_pressure_sheds_loose_budgets_earlier_and_never_the_interactive_class():
    calm = build_routing([_status(("http://a", 0, 40.0))])
    pressed = build_routing([_status(("http://a", 5, 97.0))])
    by_name = {c.name: c for c in pressed.admission}
    assert by_name["interactive"].max_occupancy is None
    for cls in calm.admission:
        if cls.max_occupancy is not None:
            assert by_name[cls.name].max_occupancy < cls.max_occupancy
    assert not pressed.stale and pressed.source == "prometheus"
    assert build_routing([None]).stale  # no Prometheus data: gateways ignore the advice
    # The config the gateways read round-trips the routing.
    cfg = PipelineConfig(pipeline="p", routing=pressed)
    assert PipelineConfig.model_validate_json(cfg.model_dump_json(by_alias=True)) == cfg


def test_admission_classes_shed_only_sheddable_queries_of_a_class_over_its_limit():
    busy = ClusterSnapshot(0.0, (_profile("a"),), (PoolLoad(running=32, waiting=40),))
    classes = [
        AdmissionClass(name="interactive", max_budget_seconds=10),
        AdmissionClass(name="batch", max_occupancy=1.0),
    ]
    loose = Query(1, TaskFamily.MATH, budget_s=600.0, arrival_s=0.0)
    tight = Query(2, TaskFamily.MATH, budget_s=8.0, arrival_s=0.0)
    verdict = admit(busy, loose, True, 0, 100, classes)
    assert not verdict.admitted and verdict.cause == "class" and "'batch'" in verdict.reason
    assert admit(busy, loose, False, 0, 100, classes).admitted  # not sheddable
    # The tight query is judged by its budget only (here the pool cannot meet 8 s either).
    assert admit(busy, tight, True, 0, 100, classes).cause != "class"
    calm = ClusterSnapshot(0.0, (_profile("a"),), (PoolLoad(running=4),))
    assert admit(calm, loose, True, 0, 100, classes).admitted


def test_a_pool_that_is_down_adds_no_capacity_to_admission():
    """Two pools of 32 slots, one down: the other's 64 requests are two per slot, and a
    class allowing 1.5 sheds, as it would if the down pool had never existed."""
    profiles = (_profile("a"), _profile("b"))
    loads = (PoolLoad(running=32, waiting=32), PoolLoad(available=False))
    classes = [AdmissionClass(name="batch", max_occupancy=1.5)]
    loose = Query(1, TaskFamily.MATH, budget_s=600.0, arrival_s=0.0)
    verdict = admit(ClusterSnapshot(0.0, profiles, loads), loose, True, 0, 100, classes)
    assert not verdict.admitted and verdict.cause == "class"
    assert "2.0 requests per batch slot" in verdict.reason


def test_pipeline_stats_are_keyed_by_namespace_and_pipeline():
    results = {
        "pipelines": [
            _sample(99.5, signal="slo_percent", namespace="ml", pipeline="chat"),
            _sample(1234.4, signal="served", namespace="ml", pipeline="chat"),
            _sample(80.0, signal="slo_percent", namespace="other", pipeline="chat"),
            _sample(float("nan"), signal="slo_percent", namespace="ml", pipeline="idle"),
            _sample(7, signal="served", pipeline="no-namespace"),  # not told apart: skipped
        ]
    }
    assert build_pipeline_stats(results) == {
        ("ml", "chat"): {"slo_percent": 99.5, "served": 1234.4},
        ("other", "chat"): {"slo_percent": 80.0},
    }

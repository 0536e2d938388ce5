"""The operator's metrics loop against a real Prometheus scraping real vLLM CPU engines.

The operator (its own process, against the API emulator) reads its pools' load from
Prometheus, writes it to ModelPool status, and pushes the routing it implies into the
gateways' ConfigMap. Loading an engine shows up in both; stopping Prometheus leaves the
last values in place, flagged stale, with a condition and an Event.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import config

from inframind.localstack import run_emulator
from inframind.localstack.engines import free_port
from inframind.localstack.processes import start_gateway, start_operator, stop_process, wait_for
from inframind.telemetry.urls import instance_of
from support.controlplane import ControlPlane
from support.dataplane import engine_flooded
from support.prometheus import start_prometheus, stop_prometheus, wait_for_series

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PERIOD_S = 2


def _targets(engines, metrics_port: int, gateway_port: int) -> list[str]:
    return [instance_of(engines[n].url) for n in ("alpha", "small")] + [
        f"127.0.0.1:{metrics_port}",
        f"127.0.0.1:{gateway_port}",
    ]


def _labels(gateway_port: int) -> dict[str, dict[str, str]]:
    """The gateway's series carry its namespace, as the chart's PodMonitor gives them."""
    return {f"127.0.0.1:{gateway_port}": {"namespace": "default"}}


@pytest.fixture
def observed(engines, tmp_path: Path) -> Iterator[tuple[ControlPlane, object, int, int]]:
    # Prometheus scrapes the engines, the operator's /metrics and (once started) a gateway.
    # Every 2 s with a 2 s timeout: a flooded CPU engine can take over a second to answer.
    metrics_port, gateway_port = free_port(), free_port()
    prom = start_prometheus(
        _targets(engines, metrics_port, gateway_port),
        tmp_path / "prometheus",
        interval_s=2.0,
        labels=_labels(gateway_port),
    )
    kubeconfig, log = tmp_path / "kubeconfig", tmp_path / "operator.log"
    try:
        with run_emulator(port=0, crds=[ROOT / "crds"], kubeconfig_path=kubeconfig):
            operator = start_operator(
                kubeconfig,
                env={
                    "INFRAMIND_PROMETHEUS_URL": prom.url,
                    "INFRAMIND_METRICS_PERIOD_SECONDS": str(PERIOD_S),
                    "INFRAMIND_PROMETHEUS_TIMEOUT_SECONDS": "2",
                    "INFRAMIND_OPERATOR_METRICS_PORT": str(metrics_port),
                    "INFRAMIND_OPERATOR_METRICS_HOST": "127.0.0.1",
                },
                log=log,
            )
            api = config.new_client_from_config(config_file=str(kubeconfig))
            try:
                yield ControlPlane(kubeconfig, operator, log, api), prom, metrics_port, gateway_port
            finally:
                api.close()
                stop_process(operator)
    finally:
        stop_prometheus(prom)


def _apply(cp: ControlPlane, engines) -> None:
    docs = [
        {
            "apiVersion": "inframind.io/v1alpha1",
            "kind": "ModelPool",
            "metadata": {"name": f"pool-{n}", "namespace": "default"},
            "spec": {"model": "tiny", "servedModelName": n, "endpoints": [engines[n].url]},
        }
        for n in ("alpha", "small")
    ]
    docs.append(
        {
            "apiVersion": "inframind.io/v1alpha1",
            "kind": "AgentPipeline",
            "metadata": {"name": "demo", "namespace": "default"},
            "spec": {"pools": ["pool-alpha", "pool-small"], "topologies": ["single"]},
        }
    )
    cp.kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump_all(docs))


def _load(cp: ControlPlane, pool: str) -> dict:
    return ((cp.custom("modelpools", "default", pool) or {}).get("status") or {}).get("load") or {}


def _condition(cp: ControlPlane, pool: str) -> dict:
    status = (cp.custom("modelpools", "default", pool) or {}).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == "LoadObserved"), {})


def _routing(cp: ControlPlane) -> dict:
    cm = cp.read("ConfigMap", "default", "inframind-gw-demo") or {}
    data = (cm.get("data") or {}).get("pipeline.json")
    return json.loads(data) if data else {}


def _operator_metric(port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _serve_configmap(cp: ControlPlane, port: int, workdir: Path):
    """A gateway on the operator's ConfigMap, written to a file as the kubelet mounts it."""
    path = workdir / "pipeline.json"
    path.write_text(json.dumps(_routing(cp)))
    gateway = start_gateway(path, port, workdir / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200, 60, "gw")
    _ask(url)
    return gateway


def _ask(url: str) -> None:
    body = {"model": "demo", "messages": [{"role": "user", "content": "2+2?"}]}
    req = urllib.request.Request(
        f"{url}/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert resp.status == 200


def _pipeline_status(cp: ControlPlane) -> dict:
    return (cp.custom("agentpipelines", "default", "demo") or {}).get("status") or {}


async def test_pool_status_and_gateway_routing_follow_engine_load(engines, observed, tmp_path):
    cp, prom, metrics_port, gateway_port = observed
    small = engines["small"]
    wait_for_series(prom, '{__name__=~"vllm[:_]num_requests_running"}')
    _apply(cp, engines)
    cp.wait(lambda: _load(cp, "pool-small").get("source") == "prometheus", "load in pool status")
    assert _condition(cp, "pool-small")["status"] == "True"
    calm = cp.wait(lambda: _routing(cp).get("routing", {}).get("source") == "prometheus" and
                   _routing(cp), "routing in the gateway ConfigMap")  # fmt: skip
    assert calm["routing"]["stale"] is False
    calm_batch = next(c for c in calm["routing"]["admission"] if c["name"] == "batch")
    gateway = await asyncio.to_thread(_serve_configmap, cp, gateway_port, tmp_path)
    try:
        # The same Prometheus holds the gateway's and the operator's own series.
        wait_for_series(prom, "inframind_requests_total", timeout=30)
        wait_for_series(prom, 'inframind_pool_metrics_stale{pool="pool-small"}', timeout=30)
        # ...and the pipeline's status reads its gateways' answers and SLO from there
        # (`kubectl get ap` shows them): one more answer after the series began.
        await asyncio.to_thread(_ask, f"http://127.0.0.1:{gateway_port}")
        served = await asyncio.to_thread(
            cp.wait,
            lambda: (st := _pipeline_status(cp)).get("requestsServed", 0) >= 1 and st,
            "the gateway's answers in the pipeline's status",
            60,
        )
        assert served["sloCompliancePercent"] == 100
    finally:
        stop_process(gateway)

    # Long requests, two of which fill the KV cache, so the queue is in the engine (see
    # test_saturated_pool_gets_no_new_calls).
    async with engine_flooded(small, 8, 768):  # until the checks below are done
        busy = await asyncio.to_thread(
            cp.wait,
            lambda: (
                (ld := _load(cp, "pool-small")).get("waiting", 0) > 0
                and (ld.get("kvUsagePercent") or 0) > 90
                and ld
            ),
            "the loaded engine's queue and KV usage in pool status",
            60,
        )
        assert busy["stale"] is False and busy["running"] > 0
        assert _load(cp, "pool-alpha").get("waiting") in (0, None)  # idle or not yet seen
        # The gateways are told: loose budgets are shed earlier, and the saturated
        # endpoint's weight drops.
        pressed = await asyncio.to_thread(
            cp.wait,
            lambda: (
                (r := _routing(cp))
                and next(c for c in r["routing"]["admission"] if c["name"] == "batch")[
                    "maxOccupancy"
                ]
                < calm_batch["maxOccupancy"]
                and r
            ),
            "tighter admission in the gateway ConfigMap",
            30,
        )
        small_pool = next(p for p in pressed["pools"] if p["name"] == "pool-small")
        assert small_pool["routes"][small.url]["weight"] < 1
        # The operator's own gauges follow its pulls (the queue churns: wait for one > 0.5).
        await asyncio.to_thread(
            wait_for,
            lambda: (
                _operator_metric(metrics_port, "inframind_pool_kv_usage", pool="pool-small") > 0.5
            ),
            30,
            "the operator's KV gauge of the loaded pool",
        )

    # Queries per loop do not grow with pools: four per pull, pulls shared by pipelines.
    before = _operator_metric(metrics_port, "inframind_operator_promql_queries_total")
    assert before > 0 and before % 4 == 0

    # Prometheus goes away: last values stay, flagged stale, with a condition and an Event.
    stop_prometheus(prom)
    cond = cp.wait(
        lambda: (c := _condition(cp, "pool-small")).get("reason") == "PrometheusUnreachable" and c,
        "the LoadObserved condition to report the outage",
        30,
    )
    assert cond["status"] == "False"
    stale = _load(cp, "pool-small")
    assert stale["stale"] is True and stale.get("running") is not None
    cp.wait(lambda: _routing(cp)["routing"]["stale"] is True, "stale routing for the gateways")
    reasons = [e.get("reason") for e in cp.events("default", "pool-small")]
    assert "PrometheusUnreachable" in reasons
    assert _operator_metric(metrics_port, "inframind_pool_metrics_stale", pool="pool-small") == 1
    assert cp.operator.poll() is None  # no crash

    # It comes back where it was (same address, same data): the operator recovers by itself.
    back = start_prometheus(
        _targets(engines, metrics_port, gateway_port),
        tmp_path / "prometheus",
        interval_s=2.0,
        port=urllib.parse.urlsplit(prom.url).port,
        labels=_labels(gateway_port),
    )
    try:
        cond = cp.wait(
            lambda: (c := _condition(cp, "pool-small")).get("status") == "True" and c,
            "the LoadObserved condition to recover",
            60,
        )
        assert cond["reason"] == "Observed"
        assert _load(cp, "pool-small")["stale"] is False
        cp.wait(lambda: _routing(cp)["routing"]["stale"] is False, "fresh routing again")
        reasons = [e.get("reason") for e in cp.events("default", "pool-small")]
        assert reasons.count("Observed") >= 2  # once at the start, once on recovery
        stale_gauge = _operator_metric(
            metrics_port, "inframind_pool_metrics_stale", pool="pool-small"
        )
        assert stale_gauge == 0
    finally:
        stop_prometheus(back)

"""Operator scale: many ModelPools and AgentPipelines against the API emulator.

The real operator process reconciles 200 external ModelPools and 50
AgentPipelines (four pools each, by label) created at once, with its metrics
loop pointed at a real Prometheus (loopback, no targets: the queries still run
and are counted). Reported: time until every object has converged, reconcile
throughput, and PromQL queries per metrics pull, which must not grow with the
number of pools or pipelines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..localstack.engines import free_port
from ..localstack.processes import start_operator, stop_process, wait_for

REPO = Path(__file__).resolve().parents[3]
GROUP, VERSION = "inframind.io", "v1alpha1"


def _start_prometheus(workdir: Path) -> tuple[subprocess.Popen, str] | None:
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "5s"}, "scrape_configs": []}))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200, 30, "ready")
    return proc, url


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _pool(i: int, groups: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelPool",
        "metadata": {"name": f"pool-{i:03d}", "labels": {"bench/group": str(i % groups)}},
        "spec": {
            "model": "tiny",
            "servedModelName": f"m{i}",
            "endpoints": [f"http://10.0.{i // 250}.{i % 250}:8000"],
        },
    }


def _pipeline(k: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentPipeline",
        "metadata": {"name": f"pipe-{k:02d}"},
        "spec": {"poolSelector": {"matchLabels": {"bench/group": str(k)}}},
    }


def run_scale(pools: int = 200, pipelines: int = 50, period_s: float = 5.0) -> dict[str, Any]:
    """Create everything at once, wait for convergence, then watch a few metrics pulls."""
    from kubernetes import client, config

    from ..localstack import run_emulator

    with tempfile.TemporaryDirectory(prefix="inframind-scale-") as tmp:
        work = Path(tmp)
        kubeconfig = work / "kubeconfig"
        prom = _start_prometheus(work)
        metrics_port = free_port()
        try:
            with run_emulator(port=0, crds=[REPO / "crds"], kubeconfig_path=kubeconfig):
                env = {
                    "INFRAMIND_RESYNC_SECONDS": "600",  # measure the first convergence only
                    "INFRAMIND_METRICS_PERIOD_SECONDS": str(period_s),
                    "INFRAMIND_OPERATOR_METRICS_PORT": str(metrics_port),
                    "INFRAMIND_OPERATOR_METRICS_HOST": "127.0.0.1",
                }
                if prom is not None:
                    env["INFRAMIND_PROMETHEUS_URL"] = prom[1]
                operator = start_operator(kubeconfig, env=env, log=work / "operator.log")
                api = config.new_client_from_config(config_file=str(kubeconfig))
                custom = client.CustomObjectsApi(api)
                try:
                    wait_for(lambda: _metric(metrics_port, "inframind_pool") >= 0, 60, "operator")
                    started = time.monotonic()
                    with ThreadPoolExecutor(8) as ex:
                        list(ex.map(lambda b: custom.create_namespaced_custom_object(
                            GROUP, VERSION, "default", "modelpools", b),
                            [_pool(i, pipelines) for i in range(pools)]))  # fmt: skip
                        list(ex.map(lambda b: custom.create_namespaced_custom_object(
                            GROUP, VERSION, "default", "agentpipelines", b),
                            [_pipeline(k) for k in range(pipelines)]))  # fmt: skip
                    created = time.monotonic() - started

                    def converged() -> bool:
                        items = [
                            *custom.list_namespaced_custom_object(
                                GROUP, VERSION, "default", "modelpools"
                            )["items"],
                            *custom.list_namespaced_custom_object(
                                GROUP, VERSION, "default", "agentpipelines"
                            )["items"],
                        ]
                        ready = [
                            i for i in items if (i.get("status") or {}).get("phase") == "Ready"
                        ]
                        return len(ready) == pools + pipelines

                    wait_for(converged, 600, "every pool and pipeline Ready")
                    elapsed = time.monotonic() - started
                    configmaps = len(
                        client.CoreV1Api(api).list_namespaced_config_map("default").items
                    )
                    pulls = queries = 0.0
                    if prom is not None:
                        loops = "inframind_operator_metrics_loop_duration_seconds_count"
                        first = _metric(metrics_port, loops)
                        wait_for(
                            lambda: _metric(metrics_port, loops) >= first + 3,
                            10 * period_s + 60,
                            "three more metrics pulls",
                        )
                        pulls = _metric(metrics_port, loops)
                        queries = _metric(metrics_port, "inframind_operator_promql_queries_total")
                finally:
                    api.close()
                    stop_process(operator)
        finally:
            if prom is not None:
                prom[0].terminate()
                prom[0].wait(10)
    return {
        "pools": pools,
        "pipelines": pipelines,
        "create_s": round(created, 2),
        "converge_s": round(elapsed, 2),
        "objects_per_s": round((pools + pipelines) / elapsed, 1),
        "gateway_configmaps": configmaps,
        "metrics_pulls": int(pulls),
        "promql_per_pull": round(queries / pulls, 2) if pulls else None,
        "prometheus": prom is not None,
    }

"""Gateway overhead against calling vLLM directly and against vllm-router, in one run.

One real vLLM CPU engine; in front of it the InfraMind gateway (one pool,
single-agent plans at Flash depth, so one call per request), `vllm-router`
(PyPI, round robin over the same engine) and two proxies that decide nothing
(`bench.passthrough`: one on aiohttp's server as the gateway is, the floor of a
gateway built like ours; one on a bare asyncio protocol, the floor of a Python
hop). The body the gateway sends is sent directly and through the two
proxies, interleaved one at a time, so that all paths see the same engine
state. Reported: per-call latency p50/p99 of each path and the difference to
direct, plus the planner's mean decision time inside the gateway (policies
alone: `bench.decisions`).

A call to the tiny model takes ~120-400 ms with tens of ms of jitter, which
hides a millisecond of overhead; so the same paths are measured again in front
of `bench.instant`, an upstream shaped like vLLM that answers at once, where a
call takes under a millisecond and the proxies' own cost shows.

Calls go over one kept-alive connection per path, as the OpenAI SDK (httpx)
makes them. In front of the instant upstream they are measured a second time
with a new connection per call (as curl makes them), which adds each proxy's
accept and socket setup to its row.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..api.config import PipelineConfig, PoolConfig
from ..api.pipeline import PolicySource
from ..localstack.engines import (
    EngineSpec,
    ensure_tiny_model,
    free_port,
    start_engines,
    stop_engines,
)
from ..localstack.processes import spawn, start_gateway, stop_process, wait_for
from ..orchestrator.engine import build_request
from ..orchestrator.prompts import DEPTH_MAX_TOKENS, build_messages
from ..vocab import Depth, Role, Topology
from . import instant


class _Client:
    """Times one POST at a time, on a kept-alive connection per URL or a new one per call."""

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self._conns: dict[str, tuple[HTTPConnection, str]] = {}  # url -> (conn, its path)

    def post(self, url: str, body: dict[str, Any]) -> float:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if not self.keep_alive:
            req = urllib.request.Request(url, data=data, headers=headers)
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()
            return time.perf_counter() - t0
        for attempt in (1, 2):
            if url not in self._conns:
                parts = urlsplit(url)
                conn = HTTPConnection(parts.hostname, parts.port, timeout=60)
                self._conns[url] = conn, parts.path
            conn, path = self._conns[url]
            t0 = time.perf_counter()  # the URL was parsed before: only the call is timed
            try:
                conn.request("POST", path, body=data, headers=headers)
                resp = conn.getresponse()
                resp.read()
            except (HTTPException, ConnectionError):
                conn.close()  # the server closed an idle connection: one new one, timed anew
                del self._conns[url]
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - t0
            if resp.status >= 400:
                raise RuntimeError(f"{url}: HTTP {resp.status}")
            return elapsed
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn, _ in self._conns.values():
            conn.close()


def _router_binary() -> str | None:
    found = shutil.which("vllm-router")
    if found:
        return found
    here = Path(os.sys.executable).parent / "vllm-router"
    return str(here) if here.exists() else None


def run(requests: int = 100, workdir: Path | None = None) -> dict[str, Any]:
    """Both measurements: in front of a real vLLM engine, then of an instant upstream."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="inframind-overhead-"))
    model = ensure_tiny_model(workdir / "tiny-model")
    engine = start_engines([EngineSpec("bench", max_num_seqs=8)], model, workdir / "logs")[0]
    try:
        summary = _measure(engine.url, "bench", requests, workdir / "vllm")
    finally:
        stop_engines([engine])
    port = free_port()
    stub = spawn(
        [sys.executable, "-m", "inframind.bench.instant", "--port", str(port)],
        workdir / "instant.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _probe(f"{url}/v1/models"), 30, "instant upstream")
        summary["instant"] = _measure(url, instant.MODEL, INSTANT_REQUESTS, workdir / "instant")
        summary["instant_new_connections"] = _measure(
            url, instant.MODEL, INSTANT_REQUESTS, workdir / "instant-new", keep_alive=False
        )
    finally:
        stop_process(stub)
    return summary


# Proxies that decide nothing (passthrough.py): on aiohttp's server as the gateway is, and
# on a bare asyncio protocol, the floor of any hop written in Python.
PASSTHROUGHS = {"aiohttp": "pass-through (aiohttp)", "raw": "pass-through (asyncio)"}
# Against the instant upstream a call takes about a millisecond, so many more fit.
INSTANT_REQUESTS = 1000


def _measure(
    upstream: str, served_name: str, requests: int, workdir: Path, keep_alive: bool = True
) -> dict[str, Any]:
    """Direct, through vllm-router, the pass-throughs and the gateway to one upstream,
    interleaved."""
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    client = _Client(keep_alive)
    try:
        config = PipelineConfig(
            pipeline="bench",
            pools=[PoolConfig(name="bench", model="tiny", served_model_name=served_name,
                              endpoints=[upstream])],
            topologies=[Topology.SINGLE],
            depths=[Depth.FLASH],
            policy=PolicySource(heuristic="least-queue"),
        )  # fmt: skip
        cfg = workdir / "pipeline.json"
        cfg.write_text(config.model_dump_json(by_alias=True))
        gw_port = free_port()
        gw = start_gateway(cfg, gw_port, workdir / "gateway.log")
        procs.append(gw)
        gw_url = f"http://127.0.0.1:{gw_port}"
        wait_for(lambda: _get(f"{gw_url}/readyz").get("ready"), 30, "gateway ready")

        targets = {"direct": f"{upstream}/v1/chat/completions"}
        router = _router_binary()
        if router:
            r_port = free_port()
            cmd = [router, "--host", "127.0.0.1", "--port", str(r_port),
                   "--worker-urls", upstream, "--policy", "round_robin"]  # fmt: skip
            procs.append(spawn(cmd, workdir / "router.log"))
            wait_for(lambda: _probe(f"http://127.0.0.1:{r_port}/v1/models"), 60, "vllm-router")
            targets["vllm-router"] = f"http://127.0.0.1:{r_port}/v1/chat/completions"
        for server, name in PASSTHROUGHS.items():
            pt_url = f"http://127.0.0.1:{free_port()}"
            cmd = [sys.executable, "-m", "inframind.bench.passthrough", "--server", server,
                   "--port", pt_url.rsplit(":", 1)[1], "--upstream", upstream]  # fmt: skip
            procs.append(spawn(cmd, workdir / f"passthrough-{server}.log"))
            wait_for(lambda u=pt_url: _probe(f"{u}/healthz"), 30, name)
            targets[name] = f"{pt_url}/v1/chat/completions"
        targets["inframind"] = f"{gw_url}/v1/chat/completions"

        user = [{"role": "user", "content": "What is the capital of France?"}]
        # What the gateway sends for a one-step Flash plan; sent as is to the other paths.
        direct_body = build_request(
            served_name, build_messages(Role.SOLVER, Depth.FLASH, user),
            DEPTH_MAX_TOKENS[Depth.FLASH], priority=int(time.time() * 1000),
        )  # fmt: skip
        gw_body = {"model": "bench", "messages": user, "inframind": {"budget_s": 60}}
        for name, url in targets.items():  # warm-up: connections, engine caches
            for _ in range(5):
                client.post(url, gw_body if name == "inframind" else direct_body)
        lat: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(requests):
            for name, url in targets.items():
                lat[name].append(client.post(url, gw_body if name == "inframind" else direct_body))
        traces_us = _decision_us_from_metrics(gw_url)
    finally:
        client.close()
        for p in procs:
            stop_process(p)
    summary: dict[str, Any] = {
        "requests": requests,
        "upstream": upstream,
        "connections": "kept alive" if keep_alive else "new per call",
        "paths": {},
    }
    base = np.array(lat["direct"]) * 1e3
    for name, values in lat.items():
        ms = np.array(values) * 1e3
        summary["paths"][name] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "added_p50_ms": float(np.percentile(ms, 50) - np.percentile(base, 50)),
            "added_p99_ms": float(np.percentile(ms, 99) - np.percentile(base, 99)),
            "added_median_pairwise_ms": float(statistics.median(ms - base)),
        }
    summary["gateway_decision_mean_us"] = traces_us
    return summary


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _probe(url: str) -> bool:
    try:
        _get(url)
        return True
    except OSError:
        return False


def _decision_us_from_metrics(gw_url: str) -> float | None:
    text = urllib.request.urlopen(f"{gw_url}/metrics", timeout=5).read().decode()
    total = count = None
    for line in text.splitlines():
        if line.startswith("inframind_decision_seconds_sum"):
            total = float(line.split()[-1])
        if line.startswith("inframind_decision_seconds_count"):
            count = float(line.split()[-1])
    return None if not count else total / count * 1e6


def render(summary: dict[str, Any], console: Any) -> None:
    _render_paths(summary, "in front of a vLLM CPU engine", console)
    if "instant" in summary:
        _render_paths(summary["instant"], "in front of an upstream that answers at once", console)
    if "instant_new_connections" in summary:
        _render_paths(
            summary["instant_new_connections"],
            "in front of the same upstream",
            console,
        )


def _render_paths(summary: dict[str, Any], where: str, console: Any) -> None:
    from rich.table import Table

    conns = summary.get("connections", "new per call")
    t = Table(
        title=f"gateway overhead per call {where}, {summary['requests']} calls per path "
        f"(connections {conns})"
    )
    for col in (
        "path",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "added p99 ms",
        "added (paired median)",
    ):
        t.add_column(col, justify="right" if col != "path" else "left")
    for name, p in summary["paths"].items():
        t.add_row(name, f"{p['p50_ms']:.2f}", f"{p['p99_ms']:.2f}", f"{p['added_p50_ms']:+.2f}",
                  f"{p['added_p99_ms']:+.2f}", f"{p['added_median_pairwise_ms']:+.2f}")  # fmt: skip
    console.print(t)
    if summary.get("gateway_decision_mean_us") is not None:
        console.print(f"planner decision inside the gateway: mean "
                      f"{summary['gateway_decision_mean_us']:.1f} us")  # fmt: skip

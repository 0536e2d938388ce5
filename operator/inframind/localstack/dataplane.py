"""The data-plane half of `make demo`: real vLLM engines, the gateway, a bounded load, live view.

Three vLLM CPU engines serve the tiny offline model; one has a KV cache of
a single long sequence, so it saturates first. They are registered as
external ModelPools, an AgentPipeline selects them, the operator writes the
gateway's ConfigMap, and the demo plays kubelet by copying that ConfigMap
into the file the gateway watches. A bounded Poisson load goes through the
OpenAI SDK while a live table shows each pool; a summary closes the run.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .engines import (
    Engine,
    EngineSpec,
    ensure_tiny_model,
    free_port,
    start_engine,
    stop_engines,
    wait_healthy,
)
from .processes import start_gateway, stop_process, wait_for

# Different KV sizes and batch caps so the pools saturate at different loads.
ENGINES = (
    EngineSpec("tiny-roomy", max_num_seqs=16),
    EngineSpec("tiny-mid", max_num_seqs=6),
    # 16 blocks of 128 tokens (the CPU block size): 2,048 tokens of KV in all.
    EngineSpec("tiny-small-kv", kv_blocks=16, max_num_seqs=8, max_model_len=1536),
)
# Priors a user would publish in spec.profile: the small-KV pool claims the best
# answers, so a load-blind policy would pile onto it.
QUALITY = {"tiny-roomy": 0.70, "tiny-mid": 0.66, "tiny-small-kv": 0.80}
PIPELINE = "local"

PROMPTS = {
    "math": ["Solve 17 * 23 - 4.", "Compute the sum of the first 20 odd numbers.",
             "Solve x^2 - 5x + 6 = 0."],
    "code": ["Write a Python function that reverses a list.",
             "Implement binary search in Python."],
    "knowledge": ["Which river flows through Vienna?", "Who wrote The Magic Mountain?",
                  "What is the boiling point of water at sea level?"],
}  # fmt: skip


class EngineStarter(threading.Thread):
    """Start the engines in the background while the control-plane part of the demo runs."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(daemon=True, name="engine-starter")
        self.workdir = workdir
        self.engines: list[Engine] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            model = ensure_tiny_model(self.workdir / "tiny-model")
            for spec in ENGINES:
                # One at a time (two cores), each recorded at once so shutdown() can stop it.
                engine = start_engine(spec, model, self.workdir / "engine-logs")
                self.engines.append(engine)
                wait_healthy([engine], timeout=300)
        except BaseException as exc:  # reported by wait()
            self.error = exc

    def shutdown(self) -> None:
        """Stop every engine started so far, whatever state the demo is in."""
        self.join(timeout=330)
        stop_engines(self.engines)

    def wait(self, timeout: float) -> list[Engine]:
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"vLLM engines not up after {timeout:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"vLLM engines failed to start: {self.error}")
        return self.engines


def manifests(engines: list[Engine]) -> str:
    docs: list[dict[str, Any]] = []
    for e in engines:
        docs.append(
            {
                "apiVersion": "inframind.io/v1alpha1",
                "kind": "ModelPool",
                "metadata": {"name": e.spec.name, "labels": {"inframind.io/demo": "local"}},
                "spec": {
                    "model": "tiny-random-llama",
                    "servedModelName": e.spec.name,
                    "endpoints": [e.url],
                    "maxNumSeqs": e.spec.max_num_seqs,
                    "profile": {"quality": QUALITY[e.spec.name]},
                },
            }
        )
    docs.append(
        {
            "apiVersion": "inframind.io/v1alpha1",
            "kind": "AgentPipeline",
            "metadata": {"name": PIPELINE},
            "spec": {
                "poolSelector": {"matchLabels": {"inframind.io/demo": "local"}},
                "topologies": ["single", "chain", "verify", "ensemble", "debate"],
                "maxAgents": 4,
                "budget": {"defaultSeconds": 20, "maxSeconds": 120, "sloTarget": 0.95},
                "scheduler": "edf",
                "policy": {"heuristic": "budget-greedy"},
            },
        }
    )
    return yaml.safe_dump_all(docs, sort_keys=False)


class ConfigSync(threading.Thread):
    """Plays kubelet: copies the gateway ConfigMap into the file the gateway watches."""

    def __init__(self, fetch: Callable[[], str | None], path: Path) -> None:
        super().__init__(daemon=True, name="configmap-sync")
        self.fetch, self.path = fetch, path
        self.stop = threading.Event()

    def sync_once(self) -> bool:
        data = self.fetch()
        if data is None:
            return False
        if not self.path.exists() or self.path.read_text() != data:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(data)
            tmp.replace(self.path)
        return True

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.sync_once()
            except Exception:  # a transient kubectl failure; the next round retries
                pass


@dataclass
class LoadReport:
    latencies: list[float] = field(default_factory=list)
    met: int = 0
    shed: int = 0
    errors: list[str] = field(default_factory=list)
    plans: Counter = field(default_factory=Counter)
    decision_us: list[float] = field(default_factory=list)
    streamed: int = 0
    sent: int = 0
    rescues: Counter = field(default_factory=Counter)  # a step's `rescue` outcome
    late: list[tuple[float, float]] = field(default_factory=list)  # (budget, latency)

    def record(self, trace: dict) -> None:
        """Count one answered query from the `inframind` trace it came back with."""
        self.latencies.append(trace["latency_s"])
        self.met += bool(trace["met_budget"])
        if not trace["met_budget"]:
            self.late.append((trace["budget_s"], trace["latency_s"]))
        self.plans[trace["plan"]] += 1
        self.decision_us.append(trace["decision_us"])
        for step in trace["steps"]:
            if step.get("rescue"):
                self.rescues[step["rescue"]] += 1


async def drive_load(url: str, n: int, rate_per_s: float, seed: int, report: LoadReport) -> None:
    """A bounded Poisson load through the OpenAI SDK: n requests, mixed budgets and tasks."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0, timeout=180)
    rng = random.Random(seed)

    async def one(i: int) -> None:
        task = rng.choice(list(PROMPTS))
        prompt = rng.choice(PROMPTS[task])
        budget = rng.choice([6.0, 15.0, 40.0])
        stream = i % 5 == 4
        extra = {"inframind": {"budget_s": budget, "task": task}}
        report.sent += 1
        try:
            if stream:
                chunks = await client.chat.completions.create(
                    model=PIPELINE, messages=[{"role": "user", "content": prompt}],
                    stream=True, extra_body=extra,
                )  # fmt: skip
                trace = None
                async for c in chunks:
                    trace = (c.model_extra or {}).get("inframind") or trace
                report.streamed += 1
            else:
                resp = await client.chat.completions.create(
                    model=PIPELINE, messages=[{"role": "user", "content": prompt}],
                    extra_body=extra,
                )  # fmt: skip
                trace = resp.model_extra["inframind"]
        except openai.RateLimitError:
            report.shed += 1
            return
        except openai.APIError as exc:
            report.errors.append(str(exc)[:200])
            return
        if trace is None:
            report.errors.append("a stream ended without its trace")
            return
        report.record(trace)

    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(rng.expovariate(rate_per_s))
    await asyncio.gather(*tasks)
    await client.close()


def pool_table(view: dict, report: LoadReport, peaks: dict[str, dict[str, float]]) -> Any:
    from rich.table import Table

    table = Table(
        title=f"pipeline {view.get('pipeline')} · policy {view.get('policy_version')} · "
        f"sent {report.sent} · answered {len(report.latencies)} · shed {report.shed} · "
        f"errors {len(report.errors)}"
    )
    for col in ("pool", "waiting (peak)", "running", "KV % (peak)", "in flight (held)", "routed",
                "depth mix"):  # fmt: skip
        table.add_column(col, justify="right" if col != "pool" else "left", no_wrap=True)
    for p in view.get("pools", []):
        peak = peaks.setdefault(p["name"], {"waiting": 0.0, "kv": 0.0})
        peak["waiting"] = max(peak["waiting"], p["waiting"])
        peak["kv"] = max(peak["kv"], p["kv_usage"])
        mix = " ".join(f"{d}:{n}" for d, n in sorted(p["depths"].items())) or "-"
        table.add_row(
            p["name"],
            f"{p['waiting']:.0f} ({peak['waiting']:.0f})",
            f"{p['running']:.0f}",
            f"{100 * p['kv_usage']:.0f} ({100 * peak['kv']:.0f})",
            f"{p['inflight']} ({p.get('queued', 0)})",
            str(p["routed"]),
            mix,
        )
    return table


def get_json(url: str, timeout: float = 30.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def run_data_plane(kubectl: Any, namespace: str, starter: EngineStarter, workdir: Path,
                   requests: int, rate: float, say: Callable[[str], None]) -> None:  # fmt: skip
    from rich.console import Console
    from rich.live import Live

    say("Real vLLM CPU engines on loopback (tiny offline model), registered as external pools")
    engines = starter.wait(timeout=600)
    for e in engines:
        print(f"{e.spec.name:14s} {e.url}  max_num_seqs={e.spec.max_num_seqs} "
              f"kv_blocks={e.spec.kv_blocks or 'auto'}  pid {e.process.pid}")  # fmt: skip
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifests(engines))
    wait_for(
        lambda: (kubectl.json("get", "agentpipeline", PIPELINE, "-n", namespace).get("status")
                 or {}).get("phase") == "Ready",
        60, "the local pipeline Ready",
    )  # fmt: skip
    kubectl("get", "modelpools", "-n", namespace, "-l", "inframind.io/demo=local")

    config_path = workdir / "gateway" / "pipeline.json"
    config_path.parent.mkdir(parents=True, exist_ok=True)

    def fetch() -> str | None:
        cm = kubectl.json("get", "configmap", f"inframind-gw-{PIPELINE}", "-n", namespace)
        return (cm.get("data") or {}).get("pipeline.json")

    sync = ConfigSync(fetch, config_path)
    wait_for(sync.sync_once, 30, "the gateway ConfigMap")
    sync.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    say(f"The gateway (OpenAI-compatible) on {url}, reading the operator's ConfigMap")
    gw_log = workdir / "gateway.log"
    gateway = start_gateway(config_path, port, gw_log, trace_log=workdir / "traces.jsonl")
    print(f"gateway pid {gateway.pid} (log: {gw_log})")
    try:
        wait_for(lambda: get_json(f"{url}/readyz", 5).get("ready"), 30, "gateway ready")
        say(
            f"{requests} requests, Poisson at {rate:g}/s, budgets 6/15/40 s, through the OpenAI SDK"
        )
        report = LoadReport()
        peaks: dict[str, dict[str, float]] = {}
        console = Console(width=None if sys.stdout.isatty() else 120)
        with Live(console=console, refresh_per_second=2) as live:

            async def main() -> None:
                load = asyncio.create_task(drive_load(url, requests, rate, 7, report))
                while not load.done():
                    try:
                        view = await asyncio.to_thread(get_json, f"{url}/v1/inframind/pools")
                    except OSError:  # a slow answer (2 busy cores): keep the last table
                        pass
                    else:
                        live.update(pool_table(view, report, peaks))
                    await asyncio.sleep(1.0)
                await load

            asyncio.run(main())
            live.update(pool_table(get_json(f"{url}/v1/inframind/pools"), report, peaks))
        summarize(report, get_json(f"{url}/v1/inframind/pools"))
        if gateway.poll() is not None:
            raise RuntimeError(f"the gateway exited; see {gw_log}")
    finally:
        sync.stop.set()
        stop_process(gateway)
        print(f"gateway (pid {gateway.pid}) stopped")
        starter.shutdown()
        print("vLLM engines stopped: " + ", ".join(str(e.process.pid) for e in engines))


def summarize(report: LoadReport, view: dict) -> None:
    lat = np.array(report.latencies) if report.latencies else np.array([np.nan])
    answered = len(report.latencies)
    routed = {p["name"]: p["routed"] for p in view["pools"]}
    total = sum(routed.values()) or 1
    print()
    print(f"answered {answered}/{report.sent} ({report.streamed} streamed), "
          f"shed with 429 {report.shed}, errors {len(report.errors)}")  # fmt: skip
    print(f"latency p50 {np.nanpercentile(lat, 50):.2f} s · p95 {np.nanpercentile(lat, 95):.2f} s "
          f"· p99 {np.nanpercentile(lat, 99):.2f} s")  # fmt: skip
    if answered:
        print(f"SLO compliance (answered within budget): {100 * report.met / answered:.1f} %")
        d = report.decision_us
        print(f"planner decision time p50 {np.percentile(d, 50):.0f} us, p99 "
              f"{np.percentile(d, 99):.0f} us (2 cores shared with 3 vLLM engines)")  # fmt: skip
    print("routing shares: " + ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in routed.items()))
    print("plans: " + ", ".join(f"{k} {v}" for k, v in report.plans.most_common()))
    if report.late:
        worst = sorted(report.late, key=lambda bl: bl[0] - bl[1])[:5]
        over = (f"{lat - budget:.1f} s over a {budget:g} s budget" for budget, lat in worst)
        print(f"late: {len(report.late)}, worst " + ", ".join(over))
    if report.rescues:
        r = report.rescues
        print(f"deadline rescues: {sum(r.values())} steps; the rescue answered first in "
              f"{r['answered']}, the first call in {r['cancelled']}, the rescue failed in "
              f"{r['failed']}")  # fmt: skip
    for err in report.errors[:3]:
        print(f"error: {err}")

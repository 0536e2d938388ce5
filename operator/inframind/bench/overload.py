"""Overload: ten times what a local engine can serve, for a bounded time, through the gateway.

One real vLLM CPU engine behind one gateway. First its capacity is measured
closed-loop (as many clients as it has batch slots, one-step Concise plans).
Then Poisson arrivals at `factor` times that rate for `duration_s`, two classes
side by side: *interactive* (tight budget, not sheddable) and *batch* (loose
budget, sheddable). Reported per class: offered, answered within budget
(goodput), answered late, shed with 429 + Retry-After, other errors, latency
percentiles; the engine's busy batch slots while the arrivals last (sampled from
its /metrics: how much of its capacity a variant used); and the gateway's
resident memory before, at its peak and after.
Two variants get the same seeded arrivals: the gateway alone (admission by
predicted latency and its in-flight cap) and the gateway with the admission
classes the operator's metrics loop writes into its config.
What the design promises: tight deadlines keep their SLO because their calls go
first (EDF `priority`), loose ones are refused early rather than left to time
out, and nothing queues without bound in the gateway.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ..api.config import PipelineConfig, PoolConfig, Routing
from ..api.pipeline import Budget, PolicySource
from ..controller.loads import build_routing
from ..localstack.engines import (
    EngineSpec,
    ensure_tiny_model,
    free_port,
    start_engines,
    stop_engines,
)
from ..localstack.processes import start_gateway, stop_process, wait_for
from ..telemetry.vllm_metrics import parse_vllm_metrics
from ..vocab import Depth, Topology

SLOTS = 4  # the engine's batch slots (max_num_seqs)
# name: (share of arrivals, budget s, sheddable). The tight class alone is half the
# engine's capacity at 10x: no scheduler can keep the SLO of more tight work than fits.
# Budgets fall in the operator's `interactive` (<= 10 s) and `batch` (> 60 s) classes.
CLASSES = {
    "interactive": (0.05, 10.0, False),
    "batch": (0.95, 120.0, True),
}


@dataclass
class ClassResult:
    offered: int = 0
    good: int = 0
    late: int = 0
    shed: int = 0
    shed_with_retry_after: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def summary(self, wall_s: float) -> dict[str, Any]:
        """Goodput is per second of the whole run, arrivals plus the last answers."""
        lat = np.array(self.latencies_s) if self.latencies_s else np.array([math.nan])
        answered = self.good + self.late
        return {
            "offered": self.offered,
            "goodput_rps": round(self.good / wall_s, 3),
            "slo_compliance": round(self.good / answered, 3) if answered else None,
            "answered_within_budget": self.good,
            "answered_late": self.late,
            "shed_429": self.shed,
            "shed_rate": round(self.shed / self.offered, 3) if self.offered else None,
            "shed_with_retry_after": self.shed_with_retry_after,
            "errors": sum(self.errors.values()),
            "error_kinds": self.errors,
            "latency_p50_s": round(float(np.nanpercentile(lat, 50)), 2),
            "latency_p95_s": round(float(np.nanpercentile(lat, 95)), 2),
        }


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


async def _capacity(client: httpx.AsyncClient, seconds: float) -> float:
    """Answers per second with SLOTS clients calling back to back (the engine saturated)."""
    done = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            r = await client.post("/v1/chat/completions", json=_body(60.0, True))
            r.raise_for_status()
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(SLOTS)))
    return done / (time.monotonic() - t0)


def _body(budget_s: float, sheddable: bool) -> dict[str, Any]:
    return {
        "model": "overload",
        "messages": [{"role": "user", "content": "Name three prime numbers and explain why."}],
        "inframind": {"budget_s": budget_s, "sheddable": sheddable},
    }


async def _engine_running(client: httpx.AsyncClient, engine_url: str) -> float | None:
    try:
        r = await client.get(f"{engine_url}/metrics", timeout=2)
        return parse_vllm_metrics(r.text).running
    except httpx.HTTPError:
        return None


@dataclass
class Samples:
    """Taken every half second while a variant runs."""

    peak_rss_mib: float
    running: list[float] = field(default_factory=list)  # the engine's, arrivals only


async def _offer(
    client: httpx.AsyncClient,
    rate: float,
    duration_s: float,
    seed: int,
    gw_pid: int,
    engine_url: str,
) -> tuple[dict[str, ClassResult], Samples, float]:
    rng = np.random.default_rng(seed)
    results = {name: ClassResult() for name in CLASSES}
    names = list(CLASSES)
    shares = [CLASSES[n][0] for n in names]
    samples = Samples(peak_rss_mib=_rss_mib(gw_pid))
    arriving = True

    async def sample() -> None:  # memory over the whole run, the engine's slots while arriving
        while True:
            samples.peak_rss_mib = max(samples.peak_rss_mib, _rss_mib(gw_pid))
            if arriving and (running := await _engine_running(client, engine_url)) is not None:
                samples.running.append(running)
            await asyncio.sleep(0.5)

    async def one(name: str) -> None:
        _, budget, sheddable = CLASSES[name]
        res = results[name]
        t0 = time.monotonic()
        try:
            r = await client.post("/v1/chat/completions", json=_body(budget, sheddable))
        except httpx.HTTPError as exc:
            res.error(type(exc).__name__)
            return
        took = time.monotonic() - t0
        if r.status_code == 429:
            res.shed += 1
            res.shed_with_retry_after += "Retry-After" in r.headers
        elif r.status_code == 200:
            res.latencies_s.append(took)
            if r.json()["inframind"]["met_budget"]:
                res.good += 1
            else:
                res.late += 1
        else:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:200]
            res.error(f"{r.status_code}: {message[:120]}")

    tasks = []
    sampler = asyncio.create_task(sample())
    start = time.monotonic()
    # Arrival times drawn up front and kept to (a slow loop must not thin the load out);
    # bounded in count and time.
    gaps = rng.exponential(1.0 / rate, size=int(rate * duration_s * 2) + 10)
    arrivals = start + np.cumsum(gaps)
    arrivals = arrivals[arrivals < start + duration_s]
    kinds = rng.choice(len(names), size=len(arrivals), p=shares)
    for at, kind in zip(arrivals, kinds, strict=True):
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        name = names[kind]
        results[name].offered += 1
        tasks.append(asyncio.create_task(one(name)))
    arriving = False
    if tasks:
        await asyncio.wait(tasks)  # the stragglers, each bounded by its timeout
    sampler.cancel()
    return results, samples, time.monotonic() - start


def _config(engine_url: str, routing: Routing | None) -> PipelineConfig:
    return PipelineConfig(
        pipeline="overload",
        pools=[PoolConfig(name="local", model="tiny", served_model_name="overload",
                          endpoints=[engine_url], max_num_seqs=SLOTS)],
        topologies=[Topology.SINGLE],
        depths=[Depth.CONCISE],
        policy=PolicySource(heuristic="budget-greedy"),
        budget=Budget(default_seconds=30, max_seconds=120),
        routing=routing or Routing(),
    )  # fmt: skip


def _operator_routing() -> Routing:
    """The admission classes the operator's metrics loop writes for a pool whose KV cache
    Prometheus sees calm (the thresholds are the operator's own, not the bench's)."""
    return build_routing([{"load": {"source": "prometheus", "stale": False, "kvUsagePercent": 0}}])


VARIANTS = {
    "gateway alone": None,  # admission by predicted latency and the in-flight cap only
    "with the operator's classes": _operator_routing,
}


def run(
    factor: float = 10.0, duration_s: float = 30.0, seed: int = 0, workdir: Path | None = None
) -> dict[str, Any]:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="inframind-overload-"))
    model = ensure_tiny_model(workdir / "tiny-model")
    engine = start_engines([EngineSpec("overload", max_num_seqs=SLOTS)], model, workdir / "logs")[0]
    out: dict[str, Any] = {"engine_slots": SLOTS, "factor": factor, "duration_s": duration_s}
    try:
        capacity = None
        for i, (variant, routing) in enumerate(VARIANTS.items()):
            cfg = workdir / f"pipeline-{i}.json"
            cfg.write_text(
                _config(engine.url, routing() if routing else None).model_dump_json(by_alias=True)
            )
            port = free_port()
            gw = start_gateway(cfg, port, workdir / f"gateway-{port}.log")
            url = f"http://127.0.0.1:{port}"
            try:
                wait_for(
                    lambda u=url: httpx.get(f"{u}/readyz", timeout=1).json().get("ready"),
                    30,
                    "gateway",
                )
                summary, capacity = asyncio.run(
                    _measure(url, engine.url, gw.pid, capacity, factor, duration_s, seed)
                )
            finally:
                stop_process(gw)
            out["capacity_rps"] = round(capacity, 3)
            out["offered_rps"] = round(factor * capacity, 3)
            out.setdefault("variants", {})[variant] = summary
    finally:
        stop_engines([engine])
    return out


async def _measure(
    url: str,
    engine_url: str,
    gw_pid: int,
    capacity: float | None,
    factor: float,
    duration_s: float,
    seed: int,
) -> tuple[dict[str, Any], float]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=150, limits=limits) as client:
        for _ in range(3):  # warm-up
            r = await client.post("/v1/chat/completions", json=_body(60, True))
            r.raise_for_status()
        if capacity is None:  # measured once: every variant gets the same offered load
            capacity = await _capacity(client, 20.0)
        rss_before = _rss_mib(gw_pid)
        results, samples, wall_s = await _offer(
            client, factor * capacity, duration_s, seed, gw_pid, engine_url
        )
        await asyncio.sleep(2)
        answered = sum(r.good + r.late for r in results.values())
        busy = float(np.mean(samples.running)) / SLOTS if samples.running else None
        summary = {
            "wall_s": round(wall_s, 1),
            # Answers per second of the whole run (arrivals, then the backlog's drain).
            "answered_rps": round(answered / wall_s, 3),
            # Mean share of the engine's batch slots running a call while arrivals last.
            "engine_slots_busy": None if busy is None else round(busy, 3),
            "classes": {
                n: {"budget_s": CLASSES[n][1], "sheddable": CLASSES[n][2], **r.summary(wall_s)}
                for n, r in results.items()
            },
            "gateway_rss_mib": {
                "before": round(rss_before, 1),
                "peak": round(samples.peak_rss_mib, 1),
                "after": round(_rss_mib(gw_pid), 1),
            },
        }
    return summary, capacity


def render(summary: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    console.print(
        f"capacity {summary['capacity_rps']} answers/s on {summary['engine_slots']} slots; "
        f"offered {summary['offered_rps']}/s ({summary['factor']:g}x) for "
        f"{summary['duration_s']:g} s, the same seeded arrivals for each variant"
    )
    table = Table(
        "variant", "class", "budget", "offered", "goodput/s", "SLO", "late", "shed 429",
        "shed rate", "errors", "p50 s", "p95 s", "gateway RSS",
    )  # fmt: skip
    for variant, v in summary["variants"].items():
        rss = v["gateway_rss_mib"]
        for name, c in v["classes"].items():
            table.add_row(
                variant, name, f"{c['budget_s']:g} s", str(c["offered"]),
                f"{c['goodput_rps']:.2f}",
                "-" if c["slo_compliance"] is None else f"{c['slo_compliance']:.1%}",
                str(c["answered_late"]), str(c["shed_429"]),
                "-" if c["shed_rate"] is None else f"{c['shed_rate']:.0%}",
                str(c["errors"]), f"{c['latency_p50_s']:.1f}", f"{c['latency_p95_s']:.1f}",
                f"{rss['before']}->{rss['peak']} MiB",
            )  # fmt: skip
    console.print(table)
    for variant, v in summary["variants"].items():
        busy = v.get("engine_slots_busy")
        console.print(
            f"{variant}: {v['answered_rps']:.2f} answers/s over {v['wall_s']:g} s (arrivals, "
            f"then the backlog); engine slots busy while arriving: "
            + ("unknown" if busy is None else f"{busy:.0%}")
        )
    for variant, v in summary["variants"].items():
        for name, c in v["classes"].items():
            for what, n in c["error_kinds"].items():
                console.print(f"  {variant}, {name}: {n} x {what}")

"""Gateway decision/outcome traces (JSONL) -> what the next training run should look like.

Schema: one JSON object per line, written by the gateway (`--trace-log`) from
`orchestrator.runner.QueryTrace.to_dict()`:

    id           str    request id
    pipeline     str    AgentPipeline name
    task         str    task family: math | code | knowledge
    plan         str    catalogue plan label, e.g. "ensemble/4x2"
    topology     str    single | chain | verify | ensemble | debate
    policy       str    policy version that decided (artifact version or heuristic:<name>)
    priority     int?   vLLM priority sent, in ms: the deadline under EDF; under FCFS
                        arrival + the pipeline's default budget (older traces: null)
    budget_s     float  the query's latency budget
    decision_us  float  time the planner + executor spent deciding
    latency_s    float? whole-workflow latency, to the answer or to the failure
    met_budget   bool?  answered, and latency_s <= budget_s (a failed query missed it)
    steps        list   one per agent step:
        wave, slot       int    position in the plan
        role             str    solver | drafter | refiner | ... (vocab.Role)
        pool             str    ModelPool name (= model served)
        depth            str    flash | concise | deepthink
        endpoint         str?   the vLLM URL that served it
        latency_s        float? the call's end-to-end latency
        prompt_tokens, completion_tokens, attempts   int
        error            str?   last error if the step failed
        started_at       float? Unix time its (last) attempt was sent
        ttft_s           float? from sending to the engine's first token
        queued_s         float  held in the gateway for a free batch slot before
                                sending (0 when the pool's slot count is unknown)
        rescue           str?   null | answered | cancelled | failed: a deadline
                                rescue sent for this step, and whose answer won
                                (the fields above describe the answering call)
        replaced         object? with rescue "answered": the first call's pool,
                                depth, endpoint, started_at

Optional, read when present: `arrival_unix_s` (float) lets the arrival rate be
estimated; without it training keeps its load mix. Lines that do not parse or
lack required fields are skipped and counted, never fatal: a trace file is
appended to by live gateways and may end in a partial line.

What a fine-tuning run takes from traces: the task mix (weights the
simulated benchmarks), the budget range (5th-95th percentile, log-uniform),
the observed load (if arrivals are stamped), and per-pool speed (observed
seconds per output token against the simulator's idle prediction) which is
reported and stored in the artifact's metadata. The simulator's calibration
is not rewritten from traces: a pool that is far slower than its calibration
is flagged, so a human decides whether the calibration or the cluster is off.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED = ("task", "budget_s", "steps")
# Task family -> simulated benchmarks it stands for.
TASK_BENCHMARKS = {
    "math": ("math", "gsm-hard"),
    "code": ("code",),
    "knowledge": ("mmlu-pro",),
}
TRAIN_LOADS = (10.0, 30.0, 50.0, 100.0, 150.0)


@dataclass
class TraceSummary:
    queries: int = 0
    skipped: int = 0
    older: int = 0  # valid, but from before the window asked for (load's since_unix)
    tasks: Counter = field(default_factory=Counter)
    budgets: list[float] = field(default_factory=list)
    slo_compliance: float | None = None
    arrival_rpm: float | None = None
    # pool -> observed seconds per completion token (median over ok steps)
    s_per_token: dict[str, float] = field(default_factory=dict)
    steps_by_pool: Counter = field(default_factory=Counter)


def read_traces(lines: Iterable[str]) -> tuple[list[dict[str, Any]], int]:
    """(valid trace dicts, number of skipped lines)."""
    out, skipped = [], 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(rec, dict) or any(k not in rec for k in REQUIRED):
            skipped += 1
            continue
        out.append(rec)
    return out, skipped


def summarise(records: list[dict[str, Any]], skipped: int = 0) -> TraceSummary:
    s = TraceSummary(queries=len(records), skipped=skipped)
    met = []
    per_token: dict[str, list[float]] = defaultdict(list)
    arrivals = []
    for rec in records:
        s.tasks[str(rec["task"])] += 1
        if float(rec["budget_s"]) > 0:
            s.budgets.append(float(rec["budget_s"]))
        if rec.get("met_budget") is not None:
            met.append(bool(rec["met_budget"]))
        if rec.get("arrival_unix_s") is not None:
            arrivals.append(float(rec["arrival_unix_s"]))
        for step in rec["steps"]:
            pool = str(step.get("pool", "?"))
            s.steps_by_pool[pool] += 1
            lat, tokens = step.get("latency_s"), step.get("completion_tokens") or 0
            if step.get("error") is None and lat is not None and tokens > 0:
                per_token[pool].append(float(lat) / tokens)
    if met:
        s.slo_compliance = float(np.mean(met))
    if len(arrivals) >= 10:
        span = max(arrivals) - min(arrivals)
        if span > 0:
            s.arrival_rpm = 60.0 * (len(arrivals) - 1) / span
    s.s_per_token = {pool: float(np.median(v)) for pool, v in per_token.items()}
    return s


def trace_files(path: Path) -> list[Path]:
    """A trace file, or every `*.jsonl` below a directory (the gateways' volume holds one
    file per gateway pod under a folder per pipeline)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    files = sorted(path.rglob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no *.jsonl trace files under {path}")
    return files


def record_time(rec: dict[str, Any]) -> float | None:
    """When a query arrived (`arrival_unix_s`), else when its first call was sent."""
    if rec.get("arrival_unix_s") is not None:
        return float(rec["arrival_unix_s"])
    sent = [s["started_at"] for s in rec["steps"] if s.get("started_at") is not None]
    return float(min(sent)) if sent else None


def load(path: Path, since_unix: float | None = None) -> TraceSummary:
    """Every trace under `path`; with `since_unix`, only those from then on (a trace that
    carries no time is kept), so that a volume gateways append to for months describes
    recent load, not all of it."""
    records: list[dict[str, Any]] = []
    skipped = older = 0
    for file in trace_files(path):
        with file.open() as f:
            got, bad = read_traces(f)
        skipped += bad
        for rec in got:
            t = record_time(rec) if since_unix is not None else None
            if t is not None and t < since_unix:
                older += 1
            else:
                records.append(rec)
    summary = summarise(records, skipped)
    summary.older = older
    return summary


def training_overrides(summary: TraceSummary, slots: int = 12) -> dict[str, Any]:
    """Args fields a fine-tuning run should take from the traces (empty if too few)."""
    if summary.queries < 20:
        return {}
    out: dict[str, Any] = {}
    # Task mix: `slots` benchmark entries in proportion (the workload draws uniformly).
    weights = {t: n for t, n in summary.tasks.items() if t in TASK_BENCHMARKS}
    total = sum(weights.values())
    if total:
        benchmarks: list[str] = []
        for task, n in sorted(weights.items()):
            k = max(1, round(slots * n / total))
            names = TASK_BENCHMARKS[task]
            benchmarks += [names[i % len(names)] for i in range(k)]
        out["benchmarks"] = tuple(benchmarks)
    if len(summary.budgets) >= 20:
        lo, hi = np.percentile(summary.budgets, [5, 95])
        lo = max(1.0, float(lo))
        out["budget"] = f"loguniform:{lo:.3g}:{max(lo, float(hi)):.3g}"
    if summary.arrival_rpm:
        # Keep every training load, and weight the observed one double by repeating it.
        nearest = min(TRAIN_LOADS, key=lambda r: abs(np.log(r / summary.arrival_rpm)))
        out["loads_rpm"] = (*TRAIN_LOADS, nearest)
    return out


def speed_report(summary: TraceSummary, predicted_s_per_token: dict[str, float]) -> dict:
    """Observed / simulated seconds per output token per pool; > 2 or < 0.5 is flagged."""
    report = {}
    for pool, observed in summary.s_per_token.items():
        want = predicted_s_per_token.get(pool)
        ratio = observed / want if want else None
        report[pool] = {
            "observed_s_per_token": observed,
            "simulated_s_per_token": want,
            "ratio": ratio,
            "flag": ratio is not None and not 0.5 <= ratio <= 2.0,
            "steps": summary.steps_by_pool[pool],
        }
    return report


def simulated_s_per_token(placement: str = "b200x2") -> dict[str, float]:
    """The simulator's idle per-token time per pool (its calibrated TPOT)."""
    from inframind.sim.accuracy import AccuracyModel
    from inframind.sim.calibration import pool_names, pool_profiles

    names = pool_names(placement)
    profiles = pool_profiles(placement, AccuracyModel(names), names)
    return {p.name: float(p.tpot_s) for p in profiles}

"""Decision time of every policy: the planner's `decide`, the executor's `choose`, both.

All in one process on one fixed snapshot of five loaded pools (new copies per
iteration, as the gateway takes new snapshots per query), the bundled learned
policy beside the heuristics, so that the figures compare code, not machines.
Each iteration is timed separately (a tenth discarded as warm-up) and the
garbage collector stays on, as in the gateway. On this project's 2-core VMs a
run's p99 sits 1.3-2x above its p50 whatever the code does (timer interrupts,
a neighbour's steal), so p50 is the figure to compare
between versions and p99 the one the goals are stated in.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from ..policy.base import Policy
from ..policy.heuristics import HEURISTICS, make_heuristic
from ..policy.runtime import LearnedPolicy
from ..policy.types import ClusterSnapshot, PoolLoad, PoolProfile, Query, StepContext
from ..vocab import TaskFamily
from .scenarios import LEARNED_ARTIFACT

GOAL_P99_US = 50.0  # issues 5 and 6: decision time per query, p99


def _snapshot() -> tuple[ClusterSnapshot, Query]:
    rng = np.random.default_rng(0)
    profiles = tuple(
        PoolProfile(f"p{i}", f"m{i}", rng.uniform(0.4, 0.9, (3, 3)), rng.uniform(20, 900, (3, 3)))
        for i in range(5)
    )
    loads = tuple(PoolLoad(waiting=i, running=4 * i, kv_usage=0.1 * i) for i in range(5))
    return ClusterSnapshot(0.0, profiles, loads), Query(1, TaskFamily.MATH, 30.0, 0.0)


def _policies() -> dict[str, Policy]:
    policies: dict[str, Policy] = {name: make_heuristic(name) for name in HEURISTICS}
    if LEARNED_ARTIFACT.exists():
        policies["learned"] = LearnedPolicy(LEARNED_ARTIFACT)
    return policies


def _percentiles(seconds: list[float]) -> dict[str, float]:
    us = np.array(seconds[len(seconds) // 10 :]) * 1e6
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99))}


def decision_times(iterations: int = 3000) -> dict[str, dict[str, dict[str, float]]]:
    """Per policy: `decide` (once per query), `choose` (once per later agent step, on a
    newer snapshot) and `query` (a decide and its first step's choose on the same
    snapshot, StepContext included, as the gateway runs a one-step first wave), in
    microseconds."""
    base, query = _snapshot()
    out = {}
    for name, policy in _policies().items():
        decide, choose, both = [], [], []
        for _ in range(iterations):
            # New snapshots per query, as the gateway takes them: nothing cached for one
            # snapshot (the learned policy's fields for its first step) serves another.
            snap, later = dataclasses.replace(base), dataclasses.replace(base)
            t0 = time.perf_counter()
            plan = policy.decide(snap, query)
            t1 = time.perf_counter()
            step = StepContext(query, plan, 0, 0, plan.waves[0][0], 0.0)
            policy.choose(snap, step)
            t2 = time.perf_counter()
            policy.choose(later, step)
            t3 = time.perf_counter()
            decide.append(t1 - t0)
            choose.append(t3 - t2)
            both.append(t2 - t0)
        out[name] = {
            "decide": _percentiles(decide),
            "choose": _percentiles(choose),
            "query": _percentiles(both),
        }
    return out


def render(times: dict[str, dict[str, dict[str, float]]], console: Any) -> None:
    from rich.table import Table

    t = Table(title="decision time, 5 loaded pools (us; goal: p99 under 50 per query)")
    for col in ("policy", "decide p50", "decide p99", "choose p50", "choose p99",
                "per query p50", "per query p99"):  # fmt: skip
        t.add_column(col, justify="left" if col == "policy" else "right")
    for name, v in times.items():
        cells = [f"{v[part][q]:.1f}" for part in ("decide", "choose", "query")
                 for q in ("p50_us", "p99_us")]  # fmt: skip
        t.add_row(name, *cells)
    console.print(t)
    console.print(
        "per query = decide + the first step's choose on its snapshot; choose = a later "
        "step's, on a newer snapshot (a plan of n calls runs n - 1 of those)."
    )


def run() -> dict[str, Any]:
    return {"iterations": 3000, "goal_p99_us": GOAL_P99_US, "policies": decision_times()}

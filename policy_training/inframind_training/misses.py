"""Whose choices make a policy miss budgets: its own at tight budgets, or its load on others?

    python -m inframind_training.misses results/training-full/snapshot-0020.npz --cut 10

Serves the same held-out hours four ways: the teacher, the policy, the teacher on
the queries with budgets up to `--cut` seconds and the policy on the rest, and
the other way round. If the misses follow the policy onto the tight queries, they
are its own choices there (a penalty on them is aimed right); if they stay with
the tight queries whoever serves them, the load from the looser ones is to blame.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inframind.policy.base import Policy
from inframind.policy.heuristics import make_heuristic
from inframind.policy.runtime import LearnedPolicy
from inframind.sim.run import SimConfig, simulate

from .env import EpisodeStats


class SplitByBudget(Policy):
    """`tight` plans and places the queries with budget <= cut, `loose` the rest."""

    name = "split"

    def __init__(self, tight: Policy, loose: Policy, cut_s: float) -> None:
        super().__init__()
        self.tight, self.loose, self.cut_s = tight, loose, cut_s

    def _of(self, query) -> Policy:  # type: ignore[no-untyped-def]
        return self.tight if query.budget_s <= self.cut_s else self.loose

    def decide(self, snapshot, query):  # type: ignore[no-untyped-def]
        return self._of(query).decide(snapshot, query)

    def choose(self, snapshot, step):  # type: ignore[no-untyped-def]
        return self._of(step.query).choose(snapshot, step)


def count(  # type: ignore[no-untyped-def]
    make_policy, load: float, seeds: list[int], budget: str, cut_s: float, hours: float = 1.0
) -> tuple[EpisodeStats, int]:
    """Outcomes over the seeds, and how many of the misses had budgets <= cut_s."""
    stats, tight = EpisodeStats(), 0
    for seed in seeds:
        cfg = SimConfig(rate_rpm=load, duration_s=3600.0 * hours, budget=budget, seed=seed)
        for r in simulate(make_policy(), cfg).records:
            stats.add(r, 0.0)
            tight += (not r.met_budget) and r.budget_s <= cut_s
    return stats, tight


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policy", type=Path, help="an exported .npz")
    ap.add_argument("--teacher", default="budget-greedy:safety=0.3")
    ap.add_argument("--cut", type=float, default=10.0, help="tight: budget <= this (s)")
    ap.add_argument("--loads", default="30,100")
    ap.add_argument("--seeds", default="500001,500002,500003,500004,500005")
    ap.add_argument("--budget", default="loguniform:5:120")
    a = ap.parse_args(argv)

    def teacher() -> Policy:
        return make_heuristic(a.teacher)

    def learned() -> Policy:
        return LearnedPolicy(a.policy)

    variants = {
        "teacher": teacher,
        "policy": learned,
        f"teacher <= {a.cut:g} s, policy above": lambda: SplitByBudget(teacher(), learned(), a.cut),
        f"policy <= {a.cut:g} s, teacher above": lambda: SplitByBudget(learned(), teacher(), a.cut),
    }
    seeds = [int(s) for s in a.seeds.split(",")]
    for load in (float(x) for x in a.loads.split(",")):
        for name, make in variants.items():
            m, tight = count(make, load, seeds, a.budget, a.cut)
            print(
                f"{load:5g} req/min  {name:30s} missed {m.violations:3d} (tight {tight:3d})"
                f"  SLO {100 * (1 - m.violation_rate):.3f} %  accuracy {100 * m.accuracy:.2f} %"
            )


if __name__ == "__main__":
    main()

"""Heuristic policies: the baselines of the paper's experiment and the best non-learned policy.

Each is a `Policy` registered under the name an AgentPipeline uses in
`spec.policy.heuristic` (api.pipeline.HeuristicName; a test keeps both lists
equal). Load-blind baselines read only profiles; the others read load too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..vocab import Depth, Role, SchedulerKind, Topology
from .base import Limits, Policy
from .estimate import latency_table, plan_accuracy, profile_arrays
from .types import (
    DEPTH_INDEX,
    DEPTHS,
    TASK_INDEX,
    Choice,
    ClusterSnapshot,
    Plan,
    Query,
    StepContext,
)


def _ranked_pools(snapshot: ClusterSnapshot, query: Query, depth: Depth) -> list[int]:
    """Available pools by prior accuracy on this task at this depth, best first."""
    t, d = TASK_INDEX[query.task], DEPTH_INDEX[depth]
    pools = [i for i, load in enumerate(snapshot.loads) if load.available] or list(
        range(len(snapshot.profiles))
    )
    return sorted(pools, key=lambda i: (-snapshot.profiles[i].accuracy[t, d], i))


class SingleBest(Policy):
    """One agent on the model with the best prior for the task, always. Load-blind."""

    name = "single-best"

    def decide(self, snapshot: ClusterSnapshot, query: Query) -> Plan:
        return self._plan(Topology.SINGLE, 1)

    def choose(self, snapshot: ClusterSnapshot, step: StepContext) -> Choice:
        depth = self._depth(Depth.CONCISE)
        return Choice(_ranked_pools(snapshot, step.query, depth)[0], depth)


class FixedGraph(Policy):
    """A fixed multi-agent graph with a fixed model per slot: MoA- and GPTSwarm-like. Load-blind.

    Slot k of a wave goes to the k-th best model (wrapping), the final step
    (aggregator) to the best one, as in Mixture-of-Agents.
    """

    topology = Topology.ENSEMBLE
    width = 6

    def decide(self, snapshot: ClusterSnapshot, query: Query) -> Plan:
        return self._plan(self.topology, self.width)

    def choose(self, snapshot: ClusterSnapshot, step: StepContext) -> Choice:
        depth = self._depth(Depth.CONCISE)
        ranked = _ranked_pools(snapshot, step.query, depth)
        if step.role is Role.AGGREGATOR:
            return Choice(ranked[0], depth)
        return Choice(ranked[step.slot % len(ranked)], depth)


class MixtureOfAgents(FixedGraph):
    name = "moa"
    topology = Topology.ENSEMBLE
    width = 6


class GPTSwarmLike(FixedGraph):
    # GPTSwarm optimises edges of a graph offline and then runs it fixed; a fully
    # connected 3-agent debate is the graph its MMLU results start from.
    name = "gptswarm"
    topology = Topology.DEBATE
    width = 3


class MasRouterLike(Policy):
    """Routes by expected quality against token cost, per task; never looks at load.

    Like MasRouter it picks mode, roles and model together, and tends to send
    work to cheap models (ACCURACY.md Table 4: ~79 % of its calls went to the
    two Llama models); load imbalance is its documented failure at high rates.
    """

    name = "masrouter"
    cost_weight = 0.3  # accuracy points traded per 1,000 output tokens at full price

    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits)
        self._depth_mask = np.array([d in self._depths for d in DEPTHS])[None, :].repeat(1, 0)

    def _utility(self, snapshot: ClusterSnapshot, query: Query) -> np.ndarray:
        arr = profile_arrays(snapshot.profiles)
        t = TASK_INDEX[query.task]
        price = (
            arr.tokens[:, t, :] / 1000.0 * np.array([p.cost for p in snapshot.profiles])[:, None]
        )
        util = arr.acc[:, t, :] - self.cost_weight * price
        util[:, ~self._depth_mask[0]] = -np.inf
        available = np.array([ld.available for ld in snapshot.loads])
        return np.where(available[:, None], util, -np.inf)

    def decide(self, snapshot: ClusterSnapshot, query: Query) -> Plan:
        util = self._utility(snapshot, query)
        i, j = np.unravel_index(int(np.argmax(util)), util.shape)
        member = float(snapshot.profiles[i].accuracy[TASK_INDEX[query.task], j])
        best, best_score = self._plans[0], -np.inf
        for plan in self._plans:
            score = plan_accuracy(plan, member) - 0.01 * (plan.calls - 1)
            if score > best_score:
                best, best_score = plan, score
        return best

    def choose(self, snapshot: ClusterSnapshot, step: StepContext) -> Choice:
        util = self._utility(snapshot, step.query)
        order = np.argsort(-util, axis=None)
        # Parallel slots take the next-best (pool, depth) so an ensemble is diverse.
        k = step.slot % min(3, len(order))
        i, j = np.unravel_index(int(order[k]), util.shape)
        return Choice(int(i), DEPTHS[j])


class RoundRobin(Policy):
    """One agent per query; pools in turn. Load-blind routing, the serving default."""

    name = "round-robin"

    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits)
        self._cursor = 0

    def decide(self, snapshot: ClusterSnapshot, query: Query) -> Plan:
        return self._plan(Topology.SINGLE, 1)

    def choose(self, snapshot: ClusterSnapshot, step: StepContext) -> Choice:
        n = len(snapshot.profiles)
        for _ in range(n):
            i = self._cursor % n
            self._cursor += 1
            if snapshot.loads[i].available:
                return Choice(i, self._depth(Depth.CONCISE))
        return Choice(0, self._depth(Depth.CONCISE))


class LeastQueue(Policy):
    """One agent per query on the pool with the fewest requests per slot of capacity."""

    name = "least-queue"

    def decide(self, snapshot: ClusterSnapshot, query: Query) -> Plan:
        return self._plan(Topology.SINGLE, 1)

    def choose(self, snapshot: ClusterSnapshot, step: StepContext) -> Choice:
        def occupancy(i: int) -> float:
            prof, load = snapshot.profiles[i], snapshot.loads[i]
            if not load.available:
                return np.inf
            busy = load.occupancy
            return busy / (prof.max_running * prof.replicas) + (0.5 if load.stale else 0.0)

        best = min(range(len(snapshot.profiles)), key=lambda i: (occupancy(i), i))
        return Choice(best, self._depth(Depth.CONCISE))


Option = tuple[float, float, int, int]


class BudgetGreedy(Policy):
    """Infrastructure-aware greedy: the most accurate plan and steps predicted to fit the budget.

    The planner scores each allowed plan by its prior accuracy using the best
    (pool, depth) options whose predicted latency fits the per-wave share of the
    remaining budget; the executor picks, per step, the most accurate choice
    that fits, spreading parallel slots over pools, and the fastest when none
    fits. `safety` keeps slack for prediction error. Plain Python over the few
    (pool, depth) options: on this hot path numpy's per-call cost dominates.
    """

    name = "budget-greedy"
    safety = 0.7

    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits)
        self._depth_idx = [DEPTH_INDEX[d] for d in DEPTHS if d in self._depths]
        # (plan, waves, width of the first wave, calls), computed once.
        self._shapes = [(p, len(p.waves), len(p.waves[0]), p.calls) for p in self._plans]

    def _options(
        self, snapshot: ClusterSnapshot, query: Query
    ) -> list[tuple[float, float, int, int]]:
        """(accuracy, predicted latency, pool, depth index) of every allowed choice."""
        lat = latency_table(snapshot, query)
        t = TASK_INDEX[query.task]
        return [
            (float(prof.accuracy[t, j]), lat[i][j], i, j)
            for i, prof in enumerate(snapshot.profiles)
            for j in self._depth_idx
        ]

    def decide(self, snapshot: ClusterSnapshot, query: Query) -> Plan:
        options = self._options(snapshot, query)
        remaining = query.deadline_s - snapshot.now
        # Every extra call is load that other queries queue behind: the busier the
        # cluster, the more a plan's accuracy must pay for its calls.
        caps = profile_arrays(snapshot.profiles).rows
        occupancy = sum(
            min(ld.occupancy / row[4], 2.0) for ld, row in zip(snapshot.loads, caps, strict=True)
        ) / max(1, len(caps))
        per_call = 0.002 * (1.0 + 20.0 * occupancy)
        best, best_score = self._plans[0], -math.inf
        for plan, waves, width, calls in self._shapes:
            per_wave = self.safety * remaining / waves
            # Parallel steps of a wave land on different pools; a wide wave is as good
            # as the average of the `width` best options that fit.
            fits = sorted((a for a, lat, _, _ in options if lat <= per_wave), reverse=True)
            if not fits:
                continue
            top = fits[:width]
            score = plan_accuracy(plan, sum(top) / len(top)) - per_call * calls
            if score > best_score:
                best, best_score = plan, score
        return best

    def choose(self, snapshot: ClusterSnapshot, step: StepContext) -> Choice:
        options = self._options(snapshot, step.query)
        share = self.safety * step.remaining_s / max(1, step.waves_left)
        fits = [o for o in options if o[1] <= share]
        if step.slot > 0 and step.used_pools:
            # Spread a parallel wave: prefer pools this query is not already using.
            used = set(step.used_pools)
            fresh = [o for o in fits if o[2] not in used]
            fits = fresh or fits
        if fits:
            _, _, i, j = max(fits, key=lambda o: (o[0] - 1e-3 * o[1], -o[2], -o[3]))
        else:
            _, _, i, j = min(options, key=lambda o: (o[1], o[2], o[3]))
        return Choice(i, DEPTHS[j])


HEURISTICS: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        BudgetGreedy,
        SingleBest,
        MixtureOfAgents,
        GPTSwarmLike,
        MasRouterLike,
        RoundRobin,
        LeastQueue,
    )
}

PolicyFactory = Callable[[Limits], Policy]


def make_heuristic(spec: str, limits: Limits | None = None) -> Policy:
    """A heuristic by name; `name+fcfs` / `name+edf` overrides the scheduler (for ablations)."""
    name, _, sched = spec.partition("+")
    if name not in HEURISTICS:
        known = ", ".join(sorted(HEURISTICS))
        raise ValueError(f"unknown policy {name!r}; known heuristics: {known}")
    limits = limits or Limits()
    if sched:
        try:
            scheduler = SchedulerKind(sched)
        except ValueError:
            msg = f"unknown scheduler {sched!r} in {spec!r}; use +edf or +fcfs"
            raise ValueError(msg) from None
        limits = Limits(limits.topologies, limits.depths, limits.max_agents, scheduler)
    policy = HEURISTICS[name](limits)
    if sched:
        policy.name = spec
    return policy

"""Heuristic policies: the baselines of the paper's experiment and the best non-learned policy.

Each is a `Policy` registered under the name an AgentPipeline uses in
`spec.policy.heuristic` (api.pipeline.HeuristicName; a test keeps both lists
equal). Load-blind baselines read only profiles; the others read load too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from ..vocab import Depth, Role, SchedulerKind, Topology
from .base import Limits, Policy
from .estimate import latency_table, plan_accuracy, plan_gain, profile_arrays
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
    ranked = profile_arrays(snapshot.profiles).ranked(TASK_INDEX[query.task], (DEPTH_INDEX[depth],))
    loads = snapshot.loads  # ties in the ranking keep the lower pool index first
    return [i for _, i, _ in ranked if loads[i].available] or [i for _, i, _ in ranked]


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


class SafetyTuner:
    """Keeps a pipeline's SLO target by moving budget-greedy's safety from its outcomes.

    The tuner aims at a miss rate `aim` = `margin` x (1 - target), half the allowed one
    by default, so that its noise around the aim stays within the target. A query over
    its budget lowers the safety by `step` x (1 - aim), one within it raises the safety
    by `step` x aim: the safety settles where misses run at the aimed rate, the dual
    ascent training applies to its Lagrange multiplier, applied to the knob. It starts
    at, and never rises above, `high` (budget-greedy's default 0.7): a pipeline that
    meets its target plans as before; one that misses it turns cautious.
    """

    def __init__(
        self,
        target: float,
        high: float = 0.7,
        low: float = 0.2,
        step: float = 0.1,
        margin: float = 0.5,
    ) -> None:
        if not 0.0 < target <= 1.0:
            raise ValueError(f"SLO target must be in (0, 1], got {target:g}")
        self.target = target
        self.aim = margin * (1.0 - target)
        self.high, self.low, self.step = high, low, step
        self.safety = high
        self.missed = 0  # misses seen (only the tests read it)

    def observe(self, met_budget: bool) -> float:
        """Account one finished query; returns the safety to plan the next ones with."""
        if met_budget:
            self.safety = min(self.high, self.safety + self.step * self.aim)
        else:
            self.missed += 1
            self.safety = max(self.low, self.safety - self.step * (1.0 - self.aim))
        return self.safety


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
    safety = 0.7  # share of the budget a plan may be predicted to use

    def __init__(
        self,
        limits: Limits | None = None,
        safety: float | None = None,
        tuner: SafetyTuner | None = None,
    ) -> None:
        super().__init__(limits)
        if safety is not None:
            if not 0.0 < safety <= 1.0:
                raise ValueError(f"budget-greedy safety must be in (0, 1], got {safety:g}")
            self.safety = safety
        # A tuner (kept by the gateway across config reloads) moves the safety from
        # outcomes towards the pipeline's SLO target; without one it stays put.
        self.tuner = tuner
        if tuner is not None:
            self.safety = tuner.safety
        self._depth_idx = tuple(DEPTH_INDEX[d] for d in DEPTHS if d in self._depths)
        # (plan, its topology gain, waves, width of the first wave, calls), computed once,
        # and per wave count the widest first wave: how many fitting options to look for.
        self._shapes = [
            (p, plan_gain(p), len(p.waves), len(p.waves[0]), p.calls) for p in self._plans
        ]
        widest: dict[int, int] = {}
        for _, _, waves, width, _ in self._shapes:
            widest[waves] = max(width, widest.get(waves, 0))
        self._widest = sorted(widest.items())

    def observe(self, met_budget: bool) -> None:
        if self.tuner is not None:
            self.safety = self.tuner.observe(met_budget)

    def decide(self, snapshot: ClusterSnapshot, query: Query) -> Plan:
        arrays = profile_arrays(snapshot.profiles)
        lat = latency_table(snapshot, query)
        ranked = arrays.ranked(TASK_INDEX[query.task], self._depth_idx)
        remaining = query.deadline_s - snapshot.now
        # Per wave count, the accuracies of the options whose predicted latency fits a
        # wave's share of the budget, best first, as many as the widest wave needs.
        fitting: dict[int, list[float]] = {}
        for waves, widest in self._widest:
            per_wave = self.safety * remaining / waves
            fits = fitting[waves] = []
            for accuracy, i, j in ranked:
                if lat[i][j] <= per_wave:
                    fits.append(accuracy)
                    if len(fits) == widest:
                        break
        # Every extra call is load that other queries queue behind: the busier the
        # cluster, the more a plan's accuracy must pay for its calls.
        busy = 0.0
        for ld, capacity in zip(snapshot.loads, arrays.capacity, strict=True):
            occupancy = ld.running + ld.waiting  # PoolLoad.occupancy, inlined
            if ld.inflight > occupancy:
                occupancy = ld.inflight
            share = occupancy / capacity
            busy += share if share < 2.0 else 2.0
        per_call = 0.002 * (1.0 + 20.0 * (busy / max(1, len(arrays.capacity))))
        best, best_score = self._plans[0], -math.inf
        for plan, (gain, rounds), waves, width, calls in self._shapes:
            fits = fitting[waves]
            if not fits:
                continue
            # Parallel steps of a wave land on different pools; a wide wave is as good
            # as the average `m` of the `width` best options that fit. The score is
            # estimate.accuracy_with_gain(m), inlined (a unit test keeps them equal).
            top = fits[:width]
            m = sum(top) / len(top)
            accuracy = m + gain * (4.0 * m * (1.0 - m)) * rounds
            score = (accuracy if accuracy < 0.999 else 0.999) - per_call * calls
            if score > best_score:
                best, best_score = plan, score
        return best

    def choose(self, snapshot: ClusterSnapshot, step: StepContext) -> Choice:
        """The most accurate (pool, depth) predicted to fit this wave's share of the budget
        (less a thousandth of a point per predicted second, so the faster of equals), on a
        pool this query is not using yet if one fits; the fastest when none fits."""
        query = step.query
        lat = latency_table(snapshot, query)
        ranked = profile_arrays(snapshot.profiles).ranked(TASK_INDEX[query.task], self._depth_idx)
        share = self.safety * step.remaining_s / max(1, step.waves_left)
        used = step.used_pools if step.slot > 0 else ()
        # The best on a pool not yet used, and on one already used. A score is at most its
        # accuracy and `ranked` is most accurate first, so the scan ends once accuracy falls
        # below the best fresh score. Equal scores go to the lower (pool, depth).
        fresh: tuple[int, int] | None = None
        spread: tuple[int, int] | None = None
        fresh_score = spread_score = -math.inf
        for accuracy, i, j in ranked:
            if accuracy < fresh_score:
                break
            seconds = lat[i][j]
            if seconds > share:
                continue
            score = accuracy - 1e-3 * seconds
            if i in used:
                if score > spread_score or (score == spread_score and spread and (i, j) < spread):
                    spread, spread_score = (i, j), score
            elif score > fresh_score or (score == fresh_score and fresh and (i, j) < fresh):
                fresh, fresh_score = (i, j), score
        pick = fresh or spread
        if pick is None:  # nothing fits: the fastest choice
            pick = min((row[j], i, j) for i, row in enumerate(lat) for j in self._depth_idx)[1:]
        return Choice(pick[0], DEPTHS[pick[1]])


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


def make_heuristic(
    spec: str, limits: Limits | None = None, tuner: SafetyTuner | None = None
) -> Policy:
    """A heuristic by name. `name+fcfs` / `name+edf` overrides the scheduler (for ablations);
    `budget-greedy:safety=0.5` sets the share of the budget its plans may be predicted to
    use (the default is 0.7; lower trades accuracy for SLO compliance), and
    `budget-greedy:slo=0.999` tunes it from outcomes towards that SLO target, as a
    `tuner` does (which only budget-greedy takes; the others ignore it)."""
    base, _, sched = spec.partition("+")
    name, _, option = base.partition(":")
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
        limits = dataclasses.replace(limits, scheduler=scheduler)
    if option:
        policy = _with_option(name, option, spec, limits)
    elif name == BudgetGreedy.name:
        policy = BudgetGreedy(limits, tuner=tuner)
    else:
        policy = HEURISTICS[name](limits)
    if sched or option:
        policy.name = spec
    return policy


def _with_option(name: str, option: str, spec: str, limits: Limits) -> Policy:
    key, _, value = option.partition("=")
    if name != BudgetGreedy.name or key not in ("safety", "slo"):
        raise ValueError(
            f"{spec!r}: only budget-greedy takes an option, safety or slo "
            "(e.g. budget-greedy:safety=0.5, budget-greedy:slo=0.999)"
        )
    what = "in (0, 1]"
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{spec!r}: {key} must be a number {what}, got {value!r}") from None
    if key == "slo":
        return BudgetGreedy(limits, tuner=SafetyTuner(number))
    return BudgetGreedy(limits, safety=number)

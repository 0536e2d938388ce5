"""Predicted latency and accuracy of steps and plans, from profiles and live load.

This is the model inside the heuristics (and part of the learned policy's
features): predicted call latency = queueing + time to first token + output
tokens x time per output token at the current batch size, the form the
INFRAMIND authors' latency predictor uses (ACCURACY.md Table 4). It is a
prior-driven estimate, not a simulator: it only has to rank choices well.
"""

from __future__ import annotations

import math

import numpy as np

from ..vocab import Topology
from .types import DEPTHS, TASK_INDEX, ClusterSnapshot, Plan, PoolProfile, Query

# A pool whose signals are stale is assumed this busy (share of its capacity):
# pessimistic on purpose, so that missing data never looks like an idle pool.
STALE_OCCUPANCY = 0.75
# Above this KV usage, new sequences risk preemption; their latency is inflated.
KV_PRESSURE = 0.9
# At or above this KV usage with requests waiting, the cache (not the batch cap) is what
# holds new requests back. Below KV_PRESSURE: vLLM's gauge flaps under preemption.
KV_BOUND = 0.75


class _ProfileArrays:
    """The profiles' numbers, built once per profile tuple: arrays for the vectorised
    baselines, plain per-pool rows for the estimate (for a handful of pools a Python loop
    is several times faster than numpy's per-call overhead; this runs per decision)."""

    __slots__ = ("_ranked", "acc", "acc_rows", "by_task", "capacity", "tokens")

    def __init__(self, profiles: tuple[PoolProfile, ...]) -> None:
        self.tokens = np.stack([p.output_tokens for p in profiles])  # [pool, task, depth]
        self.acc = np.stack([p.accuracy for p in profiles])
        self.acc_rows = [a.tolist() for a in self.acc]  # [pool][task][depth]
        # Sequences each pool runs at once, over its replicas.
        self.capacity = [float(p.max_running) * max(1, p.replicas) for p in profiles]
        # Per task, per pool: (ttft, tpot, tpot slope, replicas, capacity, output tokens at
        # each depth, their mean): one flat tuple, unpacked in one go by latency_table.
        tokens = self.tokens.tolist()
        self.by_task = [
            [
                (
                    float(p.ttft_s),
                    float(p.tpot_s),
                    float(p.tpot_slope_s),
                    float(max(1, p.replicas)),
                    cap,
                    *per_task[t],
                    sum(per_task[t]) / len(per_task[t]),
                )
                for p, per_task, cap in zip(profiles, tokens, self.capacity, strict=True)
            ]
            for t in range(len(TASK_INDEX))
        ]
        self._ranked: dict[tuple[int, tuple[int, ...]], list[tuple[float, int, int]]] = {}

    def ranked(self, task: int, depths: tuple[int, ...]) -> list[tuple[float, int, int]]:
        """(accuracy, pool, depth) of every pool at these depths, most accurate first.

        Priors only, so computed once per task and depth set, not per decision."""
        key = (task, depths)
        hit = self._ranked.get(key)
        if hit is None:
            options = [(row[task][j], i, j) for i, row in enumerate(self.acc_rows) for j in depths]
            hit = self._ranked[key] = sorted(options, key=lambda o: o[0], reverse=True)
        return hit


_CACHE: dict[int, tuple[tuple[PoolProfile, ...], _ProfileArrays]] = {}


def profile_arrays(profiles: tuple[PoolProfile, ...]) -> _ProfileArrays:
    hit = _CACHE.get(id(profiles))
    if hit is not None and hit[0] is profiles:
        return hit[1]
    if len(_CACHE) > 64:
        _CACHE.clear()
    arrays = _ProfileArrays(profiles)
    _CACHE[id(profiles)] = (profiles, arrays)
    return arrays


def latency_table(snapshot: ClusterSnapshot, query: Query) -> list[tuple[float, ...]]:
    """Predicted seconds of one call of this query on each pool at each depth: [pool][depth].

    Plain Python on purpose, and written for speed: it runs once per decision and per
    step on the gateway's hot path, for a handful of pools (`make bench` times it).
    """
    if not snapshot.profiles:
        return []
    pools = profile_arrays(snapshot.profiles).by_task[TASK_INDEX[query.task]]
    prompt_factor = 1.0 + query.prompt_tokens / 2048.0
    out: list[tuple[float, ...]] = []
    # k0..k2: output tokens at each depth (DEPTHS has three; unrolled for speed).
    for (ttft0, tpot0, slope, replicas, cap, k0, k1, k2, k_mean), ld in zip(
        pools, snapshot.loads, strict=True
    ):
        if not ld.available:
            out.append(_UNAVAILABLE)
            continue
        # The gateway's own in-flight count is fresher than a scrape; take the larger
        # (PoolLoad.occupancy, inlined). A pool whose signals are stale is assumed busy,
        # so missing data never looks idle.
        running, waiting, kv = ld.running, ld.waiting, ld.kv_usage
        occupancy = running + waiting
        if ld.inflight > occupancy:
            occupancy = float(ld.inflight)
        if ld.stale and occupancy < STALE_OCCUPANCY * cap:
            occupancy = STALE_OCCUPANCY * cap
        tpot = tpot0 + slope * (occupancy if occupancy < cap else cap) / replicas
        ttft = ttft0 * prompt_factor
        # An engine whose KV cache is full and requests wait admits no more than it runs
        # now, however far below its batch cap that is (a small cache fills first): its
        # running count, not the profile's cap, is its capacity until the cache drains.
        if waiting > 0 and kv >= KV_BOUND and 0 < running < cap:
            cap = running
        # Requests beyond capacity wait for the batch to drain at its mean service time.
        excess = occupancy + 1 - cap
        queueing = excess / cap * (ttft0 + k_mean * tpot) if excess > 0.0 else 0.0
        if ld.latency_s is None and kv <= KV_PRESSURE:  # the common case: nothing to scale
            out.append((ttft + k0 * tpot + queueing, ttft + k1 * tpot + queueing,
                        ttft + k2 * tpot + queueing))  # fmt: skip
            continue
        # The pool's recent per-call latency carries what the profile cannot know (engines
        # sharing a GPU, a slower replica): when calls run slower than predicted, scale.
        slowdown = 1.0
        if ld.latency_s is not None:
            typical = ttft + k_mean * tpot + queueing
            slowdown = min(max(ld.latency_s / typical, 1.0), 4.0)
        # Above KV_PRESSURE new sequences risk preemption: up to 5x at a full cache.
        pressure = 1.0
        if kv > KV_PRESSURE:
            pressure += 4.0 * (kv - KV_PRESSURE) / (1 - KV_PRESSURE)
        out.append(
            (
                ((ttft + k0 * tpot) * slowdown + queueing) * pressure,
                ((ttft + k1 * tpot) * slowdown + queueing) * pressure,
                ((ttft + k2 * tpot) * slowdown + queueing) * pressure,
            )
        )
    return out


_UNAVAILABLE = (math.inf,) * len(DEPTHS)
assert len(DEPTHS) == 3, "latency_table unrolls the depths"


# Expected accuracy gain of a topology over its members, in probability points, at
# members of 50 % (scaled down towards 0 % and 100 %). Priors from ACCURACY.md
# Table 3 / section D: ensembles +1..+4 pp, debate +3..+8 pp, verification +0..+3 pp.
TOPOLOGY_GAIN = {
    Topology.SINGLE: 0.0,
    Topology.CHAIN: 0.015,
    Topology.VERIFY: 0.02,
    Topology.ENSEMBLE: 0.035,
    Topology.DEBATE: 0.07,
}


def plan_gain(plan: Plan) -> tuple[float, float]:
    """(topology gain at 50 % members, debate-rounds factor) of a plan: its part of
    `plan_accuracy`, for callers that score many member accuracies per plan."""
    rounds = 1.0
    if plan.topology is Topology.DEBATE:
        rounds = min(1.0, 0.5 + (len(plan.waves) - 1) / 4)
    return TOPOLOGY_GAIN[plan.topology], rounds


def accuracy_with_gain(gain: tuple[float, float], member_accuracy: float) -> float:
    spread = 4.0 * member_accuracy * (1.0 - member_accuracy)
    return min(0.999, member_accuracy + gain[0] * spread * gain[1])


def plan_accuracy(plan: Plan, member_accuracy: float) -> float:
    """Prior accuracy of a plan whose agents have (on average) this accuracy."""
    return accuracy_with_gain(plan_gain(plan), member_accuracy)

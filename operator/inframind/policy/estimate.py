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

    __slots__ = ("acc", "acc_rows", "rows", "tokens")

    def __init__(self, profiles: tuple[PoolProfile, ...]) -> None:
        self.tokens = np.stack([p.output_tokens for p in profiles])  # [pool, task, depth]
        self.acc = np.stack([p.accuracy for p in profiles])
        self.acc_rows = [a.tolist() for a in self.acc]  # [pool][task][depth]
        self.rows = []
        for p, tokens in zip(profiles, self.tokens, strict=True):
            replicas = float(max(1, p.replicas))
            self.rows.append(
                (
                    float(p.ttft_s),
                    float(p.tpot_s),
                    float(p.tpot_slope_s),
                    replicas,
                    float(p.max_running) * replicas,  # capacity in sequences
                    tokens.tolist(),
                    tokens.mean(axis=1).tolist(),
                )
            )


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


def latency_table(snapshot: ClusterSnapshot, query: Query) -> list[list[float]]:
    """Predicted seconds of one call of this query on each pool at each depth: [pool][depth]."""
    rows = profile_arrays(snapshot.profiles).rows if snapshot.profiles else []
    t = TASK_INDEX[query.task]
    prompt_factor = 1.0 + query.prompt_tokens / 2048.0
    out: list[list[float]] = []
    for (ttft0, tpot0, slope, replicas, cap, tokens, tokens_mean), ld in zip(
        rows, snapshot.loads, strict=True
    ):
        if not ld.available:
            out.append([math.inf] * len(DEPTHS))
            continue
        # The gateway's own in-flight count is fresher than a scrape; take the larger. A
        # pool whose signals are stale is assumed busy, so missing data never looks idle.
        occupancy = ld.occupancy
        if ld.stale:
            occupancy = max(occupancy, STALE_OCCUPANCY * cap)
        tpot = tpot0 + slope * min(occupancy, cap) / replicas
        ttft = ttft0 * prompt_factor
        # An engine whose KV cache is full and requests wait admits no more than it runs
        # now, however far below its batch cap that is (a small cache fills first): its
        # running count, not the profile's cap, is its capacity until the cache drains.
        if ld.waiting > 0 and ld.kv_usage >= KV_BOUND and 0 < ld.running < cap:
            cap = ld.running
        # Requests beyond capacity wait for the batch to drain at its mean service time.
        queueing = max(0.0, occupancy + 1 - cap) / cap * (ttft0 + tokens_mean[t] * tpot)
        # The pool's recent per-call latency carries what the profile cannot know (engines
        # sharing a GPU, a slower replica): when calls run slower than predicted, scale.
        slowdown = 1.0
        if ld.latency_s is not None:
            typical = ttft + tokens_mean[t] * tpot + queueing
            slowdown = min(max(ld.latency_s / typical, 1.0), 4.0)
        pressure = 1.0 + 4.0 * max(ld.kv_usage - KV_PRESSURE, 0.0) / (1 - KV_PRESSURE)
        out.append([((ttft + k * tpot) * slowdown + queueing) * pressure for k in tokens[t]])
    return out


def latency_matrix(snapshot: ClusterSnapshot, query: Query) -> np.ndarray:
    """`latency_table` as a [pools, depths] array (for the feature encoder and admission)."""
    if not snapshot.profiles:
        return np.empty((0, len(DEPTHS)))
    return np.array(latency_table(snapshot, query))


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


def plan_accuracy(plan: Plan, member_accuracy: float) -> float:
    """Prior accuracy of a plan whose agents have (on average) this accuracy."""
    spread = 4.0 * member_accuracy * (1.0 - member_accuracy)
    gain = TOPOLOGY_GAIN[plan.topology] * spread
    if plan.topology is Topology.DEBATE:
        gain *= min(1.0, 0.5 + (len(plan.waves) - 1) / 4)
    return min(0.999, member_accuracy + gain)

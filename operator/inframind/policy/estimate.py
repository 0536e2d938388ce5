"""Predicted latency and accuracy of steps and plans, from profiles and live load.

This is the model inside the heuristics (and part of the learned policy's
features): predicted call latency = queueing + time to first token + output
tokens x time per output token at the current batch size, the form the
INFRAMIND authors' latency predictor uses (ACCURACY.md Table 4). It is a
prior-driven estimate, not a simulator: it only has to rank choices well.
"""

from __future__ import annotations

import numpy as np

from ..vocab import Topology
from .types import DEPTHS, TASK_INDEX, ClusterSnapshot, Plan, PoolLoad, PoolProfile, Query

# A pool whose signals are stale is assumed this busy (share of its capacity):
# pessimistic on purpose, so that missing data never looks like an idle pool.
STALE_OCCUPANCY = 0.75
# Above this KV usage, new sequences risk preemption; their latency is inflated.
KV_PRESSURE = 0.9


def latency_matrix(snapshot: ClusterSnapshot, query: Query) -> np.ndarray:
    """Predicted seconds of one call of this query on each pool at each depth: [pools, depths]."""
    t = TASK_INDEX[query.task]
    out = np.empty((len(snapshot.profiles), len(DEPTHS)))
    for i, (prof, load) in enumerate(zip(snapshot.profiles, snapshot.loads, strict=True)):
        out[i] = _call_latency(prof, load, prof.output_tokens[t], query.prompt_tokens)
    return out


def _call_latency(
    prof: PoolProfile, load: PoolLoad, tokens: np.ndarray, prompt_tokens: int
) -> np.ndarray:
    if not load.available:
        return np.full(tokens.shape, np.inf)
    capacity = float(prof.max_running * max(1, prof.replicas))
    # The gateway's own in-flight count is fresher than a scrape; take the larger.
    occupancy = max(load.running + load.waiting, float(load.inflight))
    if load.stale:
        occupancy = max(occupancy, STALE_OCCUPANCY * capacity)
    per_replica = min(occupancy, capacity) / max(1, prof.replicas)
    tpot = prof.tpot_s + prof.tpot_slope_s * per_replica
    service = prof.ttft_s * (1.0 + prompt_tokens / 2048.0) + tokens * tpot
    # Requests ahead of us leave the batch at the rate the batch drains.
    mean_service = prof.ttft_s + float(np.mean(tokens)) * tpot
    overflow = max(0.0, occupancy + 1 - capacity)
    queueing = overflow / capacity * mean_service
    latency = queueing + service
    if load.kv_usage >= KV_PRESSURE:
        latency = latency * (1.0 + 4.0 * (load.kv_usage - KV_PRESSURE) / (1 - KV_PRESSURE))
    return latency


# Expected accuracy gain of a topology over its best member, in probability points.
# Priors from ACCURACY.md Table 3 / section D: ensembles and debate add +1..+8 pp with
# 70-85 % members, less when members are strong; verification +0..+3 pp.
TOPOLOGY_GAIN = {
    Topology.SINGLE: 0.0,
    Topology.CHAIN: 0.01,
    Topology.VERIFY: 0.015,
    Topology.ENSEMBLE: 0.025,
    Topology.DEBATE: 0.04,
}


def plan_accuracy(plan: Plan, member_accuracy: float) -> float:
    """Prior accuracy of a plan whose final answer comes from members of this accuracy."""
    gain = TOPOLOGY_GAIN[plan.topology] * (1.0 - member_accuracy) * 4.0
    if plan.topology is Topology.DEBATE:
        gain *= min(1.0, (len(plan.waves) - 1) / 2 + 0.5)
    return min(0.999, member_accuracy + gain)

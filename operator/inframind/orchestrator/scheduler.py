"""Admission control: shed a sheddable query early when it cannot meet its budget.

A request that would miss its deadline anyway only adds queueing for the
others; refusing it at once with 429 and a Retry-After (instead of letting it
time out) is what keeps the tight-budget requests inside their SLO under
overload. Priority itself (EDF) is `policy.types.priority_for`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..policy.estimate import latency_matrix
from ..policy.types import ClusterSnapshot, Query


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    reason: str = ""
    retry_after_s: int = 0
    predicted_s: float = 0.0


def admit(
    snapshot: ClusterSnapshot,
    query: Query,
    sheddable: bool,
    inflight: int,
    max_inflight: int,
) -> Admission:
    """Admit unless sheddable and either the gateway is full or no pool can answer in time."""
    lat = latency_matrix(snapshot, query)
    fastest = float(np.min(lat)) if lat.size else math.inf
    if not sheddable:
        return Admission(True, predicted_s=fastest)
    if inflight >= max_inflight:
        return Admission(
            False,
            f"the gateway has {inflight} queries in flight (limit {max_inflight})",
            retry_after_s=2,
            predicted_s=fastest,
        )
    if not math.isfinite(fastest):
        return Admission(False, "no model pool is reachable", retry_after_s=5)
    remaining = query.deadline_s - snapshot.now
    if fastest > remaining:
        wait = min(60, max(1, math.ceil(fastest - remaining)))
        return Admission(
            False,
            f"the fastest pool is predicted to answer in {fastest:.1f} s, beyond the "
            f"{remaining:.1f} s budget; retry later or send a larger budget",
            retry_after_s=wait,
            predicted_s=fastest,
        )
    return Admission(True, predicted_s=fastest)

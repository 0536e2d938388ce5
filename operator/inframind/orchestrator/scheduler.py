"""Admission control: shed a sheddable query early when it cannot meet its budget.

A request that would miss its deadline anyway only adds queueing for the
others; refusing it at once with 429 and a Retry-After (instead of letting it
time out) is what keeps the tight-budget requests inside their SLO under
overload. Priority itself (EDF) is `policy.types.priority_for`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..api.config import AdmissionClass
from ..policy.estimate import latency_table
from ..policy.types import ClusterSnapshot, Query


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    reason: str = ""
    retry_after_s: int = 0
    predicted_s: float = 0.0
    # Why a query was shed, for metrics: "full", "budget", "unreachable" or "class".
    cause: str = ""


def admission_class(classes: Sequence[AdmissionClass], budget_s: float) -> AdmissionClass | None:
    """The tightest class whose budget limit this query's budget fits under."""
    for cls in classes:
        if cls.max_budget_seconds is None or budget_s <= cls.max_budget_seconds:
            return cls
    return None


def cluster_occupancy(snapshot: ClusterSnapshot, pending: int = 0) -> float:
    """Requests (running, waiting, in flight from here, or `pending`: admitted steps about
    to start) per batch slot, over the pools that can take calls: a pool that is down
    adds no capacity, or losing one of two would let twice the load through."""
    slots = busy = 0.0
    for profile, load in zip(snapshot.profiles, snapshot.loads, strict=True):
        if load.available:
            slots += profile.max_running * profile.replicas
            busy += load.occupancy
    busy += pending
    return busy / slots if slots else (math.inf if busy else 0.0)


def admit(
    snapshot: ClusterSnapshot,
    query: Query,
    sheddable: bool,
    inflight: int,
    max_inflight: int,
    classes: Sequence[AdmissionClass] = (),
    pending: int = 0,
) -> Admission:
    """Admit unless sheddable and the gateway is full, no pool can answer in time, or the
    cluster is busier than the query's priority class allows (thresholds the operator
    sets from Prometheus: under KV pressure, loose budgets are shed first)."""
    # Plain Python: a numpy array of a few rows cost more than the estimate itself.
    fastest = min((min(row) for row in latency_table(snapshot, query)), default=math.inf)
    if not sheddable:
        return Admission(True, predicted_s=fastest)
    if inflight >= max_inflight:
        return Admission(
            False,
            f"the gateway has {inflight} queries in flight (limit {max_inflight})",
            retry_after_s=2,
            predicted_s=fastest,
            cause="full",
        )
    if not math.isfinite(fastest):
        return Admission(False, "no model pool is reachable", retry_after_s=5, cause="unreachable")
    cls = admission_class(classes, query.budget_s)
    if cls is not None and cls.max_occupancy is not None:
        occupancy = cluster_occupancy(snapshot, pending)
        if occupancy > cls.max_occupancy:
            return Admission(
                False,
                f"the model pools hold {occupancy:.1f} requests per batch slot, above the "
                f"{cls.max_occupancy:g} allowed for the {cls.name!r} class (budget "
                f"{query.budget_s:g} s); retry later",
                retry_after_s=5,
                predicted_s=fastest,
                cause="class",
            )
    remaining = query.deadline_s - snapshot.now
    if fastest > remaining:
        wait = min(60, max(1, math.ceil(fastest - remaining)))
        return Admission(
            False,
            f"the fastest pool is predicted to answer in {fastest:.1f} s, beyond the "
            f"{remaining:.1f} s budget; retry later or send a larger budget",
            retry_after_s=wait,
            predicted_s=fastest,
            cause="budget",
        )
    return Admission(True, predicted_s=fastest)

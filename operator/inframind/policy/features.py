"""The one feature encoder: simulator, training and gateway all turn state into vectors here.

The layout is versioned (`FEATURE_SCHEMA`); an exported policy records the
schema it was trained on and the runtime refuses a mismatch instead of
silently feeding it shifted columns. Pools are padded to `MAX_POOLS` slots,
so action indices are (pool slot, depth) and stay stable as pools come and go.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .estimate import latency_matrix
from .plans import CATALOGUE
from .types import (
    DEPTHS,
    ROLE_INDEX,
    ROLES,
    TASK_INDEX,
    TASKS,
    ClusterSnapshot,
    Query,
    StepContext,
)

MAX_POOLS = 8
_POOL_FIELDS = (
    "present",
    "stale",
    "busy_per_slot",
    "waiting_per_slot",
    "kv_usage",
    *(f"latency_over_budget_{d.value}" for d in DEPTHS),
    *(f"prior_{d.value}" for d in DEPTHS),
)
_QUERY_FIELDS = (
    "log_budget_s",
    *(f"task_{t.value}" for t in TASKS),
    "log_prompt_tokens",
    "remaining_fraction",
)
_STEP_FIELDS = (
    *(f"role_{r.value}" for r in ROLES),
    "wave_fraction",
    "waves_left",
    "slot",
    "pools_used",
)

PLANNER_FEATURES: tuple[str, ...] = _QUERY_FIELDS + tuple(
    f"pool{i}_{f}" for i in range(MAX_POOLS) for f in _POOL_FIELDS
)
EXECUTOR_FEATURES: tuple[str, ...] = PLANNER_FEATURES + _STEP_FIELDS
PLANNER_ACTIONS = len(CATALOGUE)
EXECUTOR_ACTIONS = MAX_POOLS * len(DEPTHS)


def _schema_id() -> str:
    text = "|".join((*EXECUTOR_FEATURES, *(p.label for p in CATALOGUE), *(d.value for d in DEPTHS)))
    return "v1-" + hashlib.sha256(text.encode()).hexdigest()[:12]


FEATURE_SCHEMA = _schema_id()


def _base(snapshot: ClusterSnapshot, query: Query, now: float) -> np.ndarray:
    if len(snapshot.profiles) > MAX_POOLS:
        raise ValueError(
            f"{len(snapshot.profiles)} pools exceed the feature encoder's {MAX_POOLS} slots; "
            "split the pipeline or raise MAX_POOLS and retrain"
        )
    remaining = max(query.deadline_s - now, 1e-3)
    q = np.zeros(len(_QUERY_FIELDS))
    q[0] = np.log(max(query.budget_s, 1e-3))
    q[1 + TASK_INDEX[query.task]] = 1.0
    q[4] = np.log1p(query.prompt_tokens)
    q[5] = min(1.0, remaining / max(query.budget_s, 1e-3))

    pools = np.zeros((MAX_POOLS, len(_POOL_FIELDS)))
    n = len(snapshot.profiles)
    if n:
        lat = latency_matrix(snapshot, query)
        t = TASK_INDEX[query.task]
        for i, (prof, load) in enumerate(zip(snapshot.profiles, snapshot.loads, strict=True)):
            cap = float(prof.max_running * max(1, prof.replicas))
            busy = load.occupancy
            row = pools[i]
            row[0] = 1.0 if load.available else 0.0
            row[1] = 1.0 if load.stale else 0.0
            row[2] = min(busy / cap, 4.0)
            row[3] = min(load.waiting / cap, 4.0)
            row[4] = load.kv_usage
            row[5:8] = np.log1p(np.minimum(lat[i] / remaining, 1e3))
            row[8:11] = prof.accuracy[t]
    return np.concatenate([q, pools.ravel()])


def encode_query(snapshot: ClusterSnapshot, query: Query) -> np.ndarray:
    """Planner observation for one query (float32, len(PLANNER_FEATURES))."""
    return _base(snapshot, query, snapshot.now).astype(np.float32)


def encode_step(snapshot: ClusterSnapshot, step: StepContext) -> np.ndarray:
    """Executor observation for one agent step (float32, len(EXECUTOR_FEATURES))."""
    s = np.zeros(len(_STEP_FIELDS))
    s[ROLE_INDEX[step.role]] = 1.0
    waves = len(step.plan.waves)
    s[len(ROLES)] = step.wave / waves
    s[len(ROLES) + 1] = step.waves_left
    s[len(ROLES) + 2] = step.slot
    s[len(ROLES) + 3] = len(set(step.used_pools))
    return np.concatenate([_base(snapshot, step.query, step.now), s]).astype(np.float32)


def executor_mask(snapshot: ClusterSnapshot, allowed_depths: tuple = DEPTHS) -> np.ndarray:
    """Which (pool slot, depth) actions exist: present, available pools and allowed depths."""
    mask = np.zeros((MAX_POOLS, len(DEPTHS)), dtype=bool)
    for i, load in enumerate(snapshot.loads):
        if load.available:
            mask[i] = [d in allowed_depths for d in DEPTHS]
    if not mask.any():
        mask[: len(snapshot.loads)] = True
    return mask.ravel()


def action_to_choice(action: int) -> tuple[int, int]:
    """Executor action index -> (pool slot, depth index)."""
    return divmod(int(action), len(DEPTHS))

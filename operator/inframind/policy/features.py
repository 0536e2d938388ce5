"""The one feature encoder: simulator, training and gateway all turn state into vectors here.

The layout is versioned (`FEATURE_SCHEMA`); an exported policy records the
schema it was trained on and the runtime refuses a mismatch instead of
silently feeding it shifted columns. Pools are padded to `MAX_POOLS` slots,
so action indices are (pool slot, depth) and stay stable as pools come and go.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from .estimate import latency_table, profile_arrays
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
# Layout: query fields, then MAX_POOLS slots of POOL_WIDTH fields (zeros past the last
# pool), then, for the executor, the step fields.
QUERY_WIDTH = len(_QUERY_FIELDS)
POOL_WIDTH = len(_POOL_FIELDS)
PLANNER_ACTIONS = len(CATALOGUE)
EXECUTOR_ACTIONS = MAX_POOLS * len(DEPTHS)


def _schema_id() -> str:
    text = "|".join((*EXECUTOR_FEATURES, *(p.label for p in CATALOGUE), *(d.value for d in DEPTHS)))
    return "v1-" + hashlib.sha256(text.encode()).hexdigest()[:12]


FEATURE_SCHEMA = _schema_id()


_POOL_PAD = [0.0] * len(_POOL_FIELDS)


def query_fields(snapshot: ClusterSnapshot, query: Query, now: float) -> list[float]:
    """Query and pool fields as plain floats, for the snapshot's pools only (no padding).

    Float64 until the caller's one conversion. The learned runtime multiplies this by the
    rows of its first layer that these pools use; `encode_*` pad it to MAX_POOLS slots.

    Plain Python rather than numpy, on purpose: for a few pools numpy's per-call cost
    is most of the time, and this runs on the gateway's hot path per decision and step.
    """
    n = len(snapshot.profiles)
    if n > MAX_POOLS:
        raise ValueError(
            f"{n} pools exceed the feature encoder's {MAX_POOLS} slots; "
            "split the pipeline or raise MAX_POOLS and retrain"
        )
    budget = max(query.budget_s, 1e-3)
    remaining = max(query.deadline_s - now, 1e-3)
    t = TASK_INDEX[query.task]
    out = [math.log(budget), 0.0, 0.0, 0.0, math.log1p(query.prompt_tokens)]
    out[1 + t] = 1.0
    out.append(min(1.0, remaining / budget))
    if n:
        arrays = profile_arrays(snapshot.profiles)
        lat = latency_table(snapshot, query)
        log1p = math.log1p
        # Builtin min() and zip(strict=True) cost more than the arithmetic here; capped
        # values are spelled as conditionals. latency_table checked the lengths.
        for ld, capacity, prior, (l0, l1, l2) in zip(
            snapshot.loads, arrays.capacity, arrays.acc_rows, lat, strict=False
        ):
            occupancy = ld.running + ld.waiting  # PoolLoad.occupancy, inlined
            if ld.inflight > occupancy:
                occupancy = float(ld.inflight)
            busy, waiting = occupancy / capacity, ld.waiting / capacity
            r0, r1, r2 = l0 / remaining, l1 / remaining, l2 / remaining  # latency / time left
            out += (
                1.0 if ld.available else 0.0,
                1.0 if ld.stale else 0.0,
                busy if busy < 4.0 else 4.0,
                waiting if waiting < 4.0 else 4.0,
                ld.kv_usage,
                log1p(r0 if r0 < 1e3 else 1e3),
                log1p(r1 if r1 < 1e3 else 1e3),
                log1p(r2 if r2 < 1e3 else 1e3),
            )
            out += prior[t]
    return out


def step_fields(step: StepContext) -> list[float]:
    """The executor's own fields after the query and pool fields: role, wave, slot."""
    role = [0.0] * len(ROLES)
    role[ROLE_INDEX[step.role]] = 1.0
    waves = len(step.plan.waves)
    role += (step.wave / waves, waves - step.wave, step.slot, len(set(step.used_pools)))
    return role


def encode_query(snapshot: ClusterSnapshot, query: Query) -> np.ndarray:
    """Planner observation for one query (float32, len(PLANNER_FEATURES))."""
    x = query_fields(snapshot, query, snapshot.now)
    x += _POOL_PAD * (MAX_POOLS - len(snapshot.profiles))
    return np.array(x, dtype=np.float32)


def encode_step(snapshot: ClusterSnapshot, step: StepContext) -> np.ndarray:
    """Executor observation for one agent step (float32, len(EXECUTOR_FEATURES))."""
    x = query_fields(snapshot, step.query, step.now)
    x += _POOL_PAD * (MAX_POOLS - len(snapshot.profiles))
    x += step_fields(step)
    return np.array(x, dtype=np.float32)


def executor_mask(snapshot: ClusterSnapshot, allowed_depths: tuple = DEPTHS) -> np.ndarray:
    """Which (pool slot, depth) actions exist: present, available pools and allowed depths."""
    key = (tuple(ld.available for ld in snapshot.loads), tuple(allowed_depths))
    mask = _MASKS.get(key)
    if mask is None:
        if len(_MASKS) > 256:
            _MASKS.clear()
        mask = _MASKS[key] = _build_mask(*key)
    return mask


_MASKS: dict[tuple[tuple[bool, ...], tuple], np.ndarray] = {}


def _build_mask(available: tuple[bool, ...], allowed_depths: tuple) -> np.ndarray:
    mask = np.zeros((MAX_POOLS, len(DEPTHS)), dtype=bool)
    for i, up in enumerate(available):
        if up:
            mask[i] = [d in allowed_depths for d in DEPTHS]
    if not mask.any():
        mask[: len(available)] = True
    mask = mask.ravel()
    mask.flags.writeable = False  # shared between calls: a caller must copy to change it
    return mask


def action_to_choice(action: int) -> tuple[int, int]:
    """Executor action index -> (pool slot, depth index)."""
    return divmod(int(action), len(DEPTHS))

"""The hot paths of the policy package equal the plain statement of their rules.

`latency_table`, `BudgetGreedy` and the feature encoder run per decision and per
step on the gateway, so they are written for speed: inlined properties, unrolled
depths, an early-exit scan over options ranked once per profile set. The
references below are the straightforward versions they replaced (numpy and
sorting, no shortcuts); on random clusters both must give the same numbers and
the same decisions, ties included.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from inframind.policy.base import Limits
from inframind.policy.estimate import (
    KV_BOUND,
    KV_PRESSURE,
    STALE_OCCUPANCY,
    TOPOLOGY_GAIN,
    latency_table,
    plan_accuracy,
)
from inframind.policy.features import MAX_POOLS, encode_query, encode_step, executor_mask
from inframind.policy.heuristics import BudgetGreedy, _ranked_pools
from inframind.policy.types import (
    DEPTH_INDEX,
    DEPTHS,
    ROLE_INDEX,
    ROLES,
    TASK_INDEX,
    TASKS,
    TOPOLOGIES,
    ClusterSnapshot,
    Plan,
    PoolLoad,
    PoolProfile,
    Query,
    StepContext,
)
from inframind.vocab import Topology

pytestmark = pytest.mark.unit

CASES = 600


# -- references --------------------------------------------------------------------


def reference_latency(snapshot: ClusterSnapshot, query: Query) -> np.ndarray:
    t = TASK_INDEX[query.task]
    out = np.full((len(snapshot.profiles), len(DEPTHS)), math.inf)
    for i, (p, ld) in enumerate(zip(snapshot.profiles, snapshot.loads, strict=True)):
        if not ld.available:
            continue
        replicas = float(max(1, p.replicas))
        cap = float(p.max_running) * replicas
        occupancy = ld.occupancy
        if ld.stale:
            occupancy = max(occupancy, STALE_OCCUPANCY * cap)
        tpot = p.tpot_s + p.tpot_slope_s * min(occupancy, cap) / replicas
        ttft = p.ttft_s * (1.0 + query.prompt_tokens / 2048.0)
        if ld.waiting > 0 and ld.kv_usage >= KV_BOUND and 0 < ld.running < cap:
            cap = ld.running
        mean_tokens = float(p.output_tokens[t].mean())
        queueing = max(0.0, occupancy + 1 - cap) / cap * (p.ttft_s + mean_tokens * tpot)
        slowdown = 1.0
        if ld.latency_s is not None:
            typical = ttft + mean_tokens * tpot + queueing
            slowdown = min(max(ld.latency_s / typical, 1.0), 4.0)
        pressure = 1.0 + 4.0 * max(ld.kv_usage - KV_PRESSURE, 0.0) / (1 - KV_PRESSURE)
        for j in range(len(DEPTHS)):
            k = float(p.output_tokens[t, j])
            out[i, j] = ((ttft + k * tpot) * slowdown + queueing) * pressure
    return out


def _options(policy: BudgetGreedy, snapshot: ClusterSnapshot, query: Query) -> list:
    lat = reference_latency(snapshot, query)
    t = TASK_INDEX[query.task]
    allowed = [DEPTH_INDEX[d] for d in DEPTHS if d in policy.limits.depths]
    return [
        (float(p.accuracy[t, j]), float(lat[i, j]), i, j)
        for i, p in enumerate(snapshot.profiles)
        for j in allowed
    ]


def reference_decide(policy: BudgetGreedy, snapshot: ClusterSnapshot, query: Query) -> Plan:
    options = _options(policy, snapshot, query)
    remaining = query.deadline_s - snapshot.now
    caps = [float(p.max_running) * max(1, p.replicas) for p in snapshot.profiles]
    occupancy = sum(
        min(ld.occupancy / c, 2.0) for ld, c in zip(snapshot.loads, caps, strict=True)
    ) / max(1, len(caps))
    per_call = 0.002 * (1.0 + 20.0 * occupancy)
    best, best_score = policy._plans[0], -math.inf
    for plan in policy._plans:
        per_wave = policy.safety * remaining / len(plan.waves)
        fits = sorted((a for a, lat, _, _ in options if lat <= per_wave), reverse=True)
        if not fits:
            continue
        top = fits[: len(plan.waves[0])]
        score = plan_accuracy(plan, sum(top) / len(top)) - per_call * plan.calls
        if score > best_score:
            best, best_score = plan, score
    return best


def reference_choose(policy: BudgetGreedy, snapshot: ClusterSnapshot, step: StepContext):
    options = _options(policy, snapshot, step.query)
    share = policy.safety * step.remaining_s / max(1, step.waves_left)
    fits = [o for o in options if o[1] <= share]
    if step.slot > 0 and step.used_pools:
        fresh = [o for o in fits if o[2] not in set(step.used_pools)]
        fits = fresh or fits
    if fits:
        _, _, i, j = max(fits, key=lambda o: (o[0] - 1e-3 * o[1], -o[2], -o[3]))
    else:
        _, _, i, j = min(options, key=lambda o: (o[1], o[2], o[3]))
    return i, DEPTHS[j]


def reference_features(snapshot: ClusterSnapshot, query: Query, now: float) -> np.ndarray:
    remaining = max(query.deadline_s - now, 1e-3)
    q = np.zeros(6)
    q[0] = np.log(max(query.budget_s, 1e-3))
    q[1 + TASK_INDEX[query.task]] = 1.0
    q[4] = np.log1p(query.prompt_tokens)
    q[5] = min(1.0, remaining / max(query.budget_s, 1e-3))
    pools = np.zeros((MAX_POOLS, 11))
    lat = reference_latency(snapshot, query)
    t = TASK_INDEX[query.task]
    for i, (p, ld) in enumerate(zip(snapshot.profiles, snapshot.loads, strict=True)):
        cap = float(p.max_running * max(1, p.replicas))
        pools[i, :5] = [
            float(ld.available),
            float(ld.stale),
            min(ld.occupancy / cap, 4.0),
            min(ld.waiting / cap, 4.0),
            ld.kv_usage,
        ]
        pools[i, 5:8] = np.log1p(np.minimum(lat[i] / remaining, 1e3))
        pools[i, 8:11] = p.accuracy[t]
    return np.concatenate([q, pools.ravel()])


# -- random clusters ---------------------------------------------------------------


def _cluster(rng: np.random.Generator) -> tuple[ClusterSnapshot, Query]:
    n = int(rng.integers(1, MAX_POOLS + 1))
    # Few distinct accuracies and some identical pools, so that ties are common.
    grid = np.round(rng.uniform(0.3, 0.95, 4), 2)
    level = float(rng.choice([0.0, 0.05, 0.3, 1.0, 2.5]))  # load, in shares of capacity
    profiles: list[PoolProfile] = []
    loads: list[PoolLoad] = []
    for i in range(n):
        if i and rng.random() < 0.3:
            profiles.append(profiles[-1])
            loads.append(loads[-1])
            continue
        profile = PoolProfile(
            name=f"p{i}",
            model=f"m{i}",
            accuracy=rng.choice(grid, (len(TASKS), len(DEPTHS))),
            output_tokens=np.sort(rng.uniform(10, 2500, (len(TASKS), len(DEPTHS))), axis=1),
            ttft_s=float(rng.uniform(0.01, 1.0)),
            tpot_s=float(rng.uniform(0.002, 0.05)),
            tpot_slope_s=float(rng.uniform(0.0, 0.002)),
            max_running=int(rng.integers(1, 64)),
            replicas=int(rng.integers(0, 4)),
        )
        busy = level * profile.max_running * max(1, profile.replicas)
        profiles.append(profile)
        loads.append(
            PoolLoad(
                waiting=float(rng.integers(0, 1 + int(busy / 2))) * float(rng.random() < 0.6),
                running=float(rng.integers(0, 1 + int(busy))),
                kv_usage=float(rng.choice([0.0, rng.random(), 0.8, 0.95, 1.0])),
                inflight=int(rng.integers(0, 1 + int(busy))),
                latency_s=float(rng.uniform(0.1, 60)) if rng.random() < 0.3 else None,
                stale=bool(rng.random() < 0.2),
                available=bool(rng.random() < 0.85),
            )
        )
    now = float(rng.uniform(0, 100))
    query = Query(
        id=0,
        task=TASKS[int(rng.integers(len(TASKS)))],
        budget_s=float(np.exp(rng.uniform(np.log(0.5), np.log(300)))),
        arrival_s=now - float(rng.uniform(0, 5)),
        prompt_tokens=int(rng.integers(1, 8000)),
    )
    return ClusterSnapshot(now, tuple(profiles), tuple(loads)), query


def _limits(rng: np.random.Generator) -> Limits:
    topologies = tuple(t for t in TOPOLOGIES if rng.random() < 0.7) or (Topology.SINGLE,)
    depths = tuple(d for d in DEPTHS if rng.random() < 0.7) or DEPTHS[:1]
    return Limits(topologies, depths, int(rng.integers(1, 8)))


def _step(rng: np.random.Generator, snapshot: ClusterSnapshot, query: Query, plan: Plan):
    wave = int(rng.integers(len(plan.waves)))
    slot = int(rng.integers(len(plan.waves[wave])))
    used = tuple(int(u) for u in rng.integers(0, len(snapshot.profiles), slot))
    now = snapshot.now + float(rng.uniform(0, 3))
    return StepContext(query, plan, wave, slot, plan.waves[wave][slot], now, used)


# -- the checks --------------------------------------------------------------------


def test_latency_table_equals_the_reference_to_the_bit():
    rng = np.random.default_rng(1)
    for _ in range(CASES):
        snapshot, query = _cluster(rng)
        assert np.array(latency_table(snapshot, query)).tolist() == (
            reference_latency(snapshot, query).tolist()
        )


def test_budget_greedy_decides_and_chooses_as_the_reference():
    rng = np.random.default_rng(2)
    for case in range(CASES):
        snapshot, query = _cluster(rng)
        policy = BudgetGreedy(_limits(rng))
        plan = policy.decide(snapshot, query)
        assert plan == reference_decide(policy, snapshot, query), f"case {case}"
        for _ in range(3):
            step = _step(rng, snapshot, query, plan)
            got = policy.choose(snapshot, step)
            assert (got.pool, got.depth) == reference_choose(policy, snapshot, step), f"case {case}"


def test_the_inlined_plan_score_is_plan_accuracy():
    # BudgetGreedy.decide inlines estimate.accuracy_with_gain; the decisions above only
    # catch a drift where it changes a pick, this catches it everywhere.
    for plan in BudgetGreedy()._plans:
        for m in np.linspace(0.0, 1.0, 41):
            gain = TOPOLOGY_GAIN[plan.topology]
            rounds = min(1.0, 0.5 + (len(plan.waves) - 1) / 4)
            rounds = rounds if plan.topology is Topology.DEBATE else 1.0
            inlined = m + gain * (4.0 * m * (1.0 - m)) * rounds
            assert min(inlined, 0.999) == plan_accuracy(plan, float(m))


def test_features_and_masks_equal_the_reference():
    rng = np.random.default_rng(3)
    for _ in range(CASES):
        snapshot, query = _cluster(rng)
        want = reference_features(snapshot, query, snapshot.now).astype(np.float32)
        np.testing.assert_allclose(encode_query(snapshot, query), want, rtol=1e-6)
        plan = BudgetGreedy().decide(snapshot, query)
        step = _step(rng, snapshot, query, plan)
        got = encode_step(snapshot, step)
        base = reference_features(snapshot, query, step.now)
        tail = np.zeros(len(ROLES) + 4)
        tail[ROLE_INDEX[step.role]] = 1.0
        waves = len(plan.waves)
        tail[len(ROLES) :] = [
            step.wave / waves,
            waves - step.wave,
            step.slot,
            len(set(step.used_pools)),
        ]
        np.testing.assert_allclose(got, np.concatenate([base, tail]).astype(np.float32), rtol=1e-6)
        depths = tuple(d for d in DEPTHS if rng.random() < 0.7) or DEPTHS
        mask = np.zeros((MAX_POOLS, len(DEPTHS)), dtype=bool)
        for i, ld in enumerate(snapshot.loads):
            if ld.available:
                mask[i] = [d in depths for d in DEPTHS]
        if not mask.any():
            mask[: len(snapshot.loads)] = True
        assert executor_mask(snapshot, depths).tolist() == mask.ravel().tolist()


def test_load_blind_ranking_equals_a_sort_by_prior_accuracy():
    rng = np.random.default_rng(4)
    for case in range(CASES):
        snapshot, query = _cluster(rng)
        t = TASK_INDEX[query.task]
        for depth in DEPTHS:
            d = DEPTH_INDEX[depth]
            pools = [i for i, load in enumerate(snapshot.loads) if load.available]
            pools = pools or list(range(len(snapshot.profiles)))
            expected = sorted(pools, key=lambda i: (-snapshot.profiles[i].accuracy[t, d], i))
            assert _ranked_pools(snapshot, query, depth) == expected, f"case {case}"

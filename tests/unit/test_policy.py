"""The policy interface: plans, heuristics, feature schema and the numpy runtime."""

from __future__ import annotations

import itertools
import typing

import numpy as np
import pytest

from inframind.api.pipeline import HeuristicName, PolicySource
from inframind.policy.base import Limits
from inframind.policy.estimate import latency_table
from inframind.policy.features import (
    EXECUTOR_ACTIONS,
    EXECUTOR_FEATURES,
    FEATURE_SCHEMA,
    MAX_POOLS,
    PLANNER_ACTIONS,
    PLANNER_FEATURES,
    action_to_choice,
    encode_query,
    encode_step,
    executor_mask,
    query_fields,
    step_fields,
)
from inframind.policy.heuristics import HEURISTICS, BudgetGreedy, SafetyTuner, make_heuristic
from inframind.policy.plans import CATALOGUE, build_plan
from inframind.policy.runtime import (
    LearnedPolicy,
    PolicyFileError,
    load_policy,
    write_policy_file,
)
from inframind.policy.types import (
    DEPTHS,
    ClusterSnapshot,
    PoolLoad,
    PoolProfile,
    Query,
    StepContext,
    priority_for,
)
from inframind.vocab import Depth, Role, SchedulerKind, TaskFamily, Topology

pytestmark = pytest.mark.unit


def _profiles(accs: list[float]) -> tuple[PoolProfile, ...]:
    return tuple(
        PoolProfile(
            name=f"pool-{i}",
            model=f"m{i}",
            accuracy=np.tile([a - 0.1, a, a + 0.02], (3, 1)),
            output_tokens=np.tile([20.0, 150.0, 500.0], (3, 1)),
            tpot_s=0.02,
        )
        for i, a in enumerate(accs)
    )


def _snapshot(accs: list[float], loads: list[PoolLoad] | None = None) -> ClusterSnapshot:
    profs = _profiles(accs)
    return ClusterSnapshot(0.0, profs, tuple(loads or [PoolLoad() for _ in profs]))


def _query(budget: float = 30.0, task: TaskFamily = TaskFamily.MATH) -> Query:
    return Query(id=1, task=task, budget_s=budget, arrival_s=0.0)


def test_every_heuristic_an_agentpipeline_can_name_exists():
    assert set(typing.get_args(HeuristicName)) == set(HEURISTICS)


def test_plans_have_the_waves_of_their_topology():
    assert build_plan(Topology.SINGLE).waves == ((Role.SOLVER,),)
    debate = build_plan(Topology.DEBATE, agents=3, rounds=2)
    assert len(debate.waves) == 3 and debate.agents == 3 and debate.calls == 9
    moa = build_plan(Topology.ENSEMBLE, agents=4)
    assert moa.waves[-1] == (Role.AGGREGATOR,) and moa.calls == 4
    assert build_plan(Topology.VERIFY).waves == ((Role.SOLVER,), (Role.VERIFIER,))


def test_limits_restrict_the_plans_a_policy_may_pick():
    limits = Limits(topologies=(Topology.SINGLE, Topology.ENSEMBLE), max_agents=4)
    for name in HEURISTICS:
        policy = make_heuristic(name, limits)
        plan = policy.decide(_snapshot([0.8, 0.6, 0.5]), _query(300))
        assert plan.topology in limits.topologies
        assert plan.topology is Topology.SINGLE or plan.agents <= 4


def test_roles_restrict_the_plans_to_those_whose_agents_take_only_them():
    """spec.roles = [solver, verifier]: of every topology, only plans with no other role."""
    limits = Limits(roles=(Role.SOLVER, Role.VERIFIER))
    assert {CATALOGUE[i].label for i in limits.plan_ids} == {"single/1x1", "verify/2x2"}
    for name in HEURISTICS:  # a rich budget would otherwise buy ensembles and debates
        plan = make_heuristic(name, limits).decide(_snapshot([0.8, 0.6, 0.5]), _query(300))
        assert {r for wave in plan.waves for r in wave} <= {Role.SOLVER, Role.VERIFIER}


def test_edf_priority_orders_by_deadline_and_fcfs_leaves_it_to_the_caller():
    early, late = Query(1, TaskFamily.MATH, 5, 100.0), Query(2, TaskFamily.MATH, 60, 90.0)
    assert priority_for(SchedulerKind.EDF, early) < priority_for(SchedulerKind.EDF, late)
    assert priority_for(SchedulerKind.FCFS, early) is None
    assert make_heuristic("budget-greedy+fcfs").scheduler is SchedulerKind.FCFS


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(ValueError, match="known heuristics: budget-greedy"):
        make_heuristic("oracle")


def test_budget_greedy_avoids_a_saturated_pool():
    busy = PoolLoad(waiting=200, running=32, kv_usage=0.99)
    snap = _snapshot([0.9, 0.7], [busy, PoolLoad()])
    policy = make_heuristic("budget-greedy")
    plan = policy.decide(snap, _query(20))
    choice = policy.choose(snap, StepContext(_query(20), plan, 0, 0, plan.waves[0][0], 0.0))
    assert choice.pool == 1


def test_a_full_kv_cache_with_a_queue_is_predicted_to_make_new_calls_wait():
    # Both engines could batch 32 sequences; one runs 3 and queues 10 because its KV cache
    # is full, the other runs 13 and queues nothing.
    kv_bound = PoolLoad(waiting=10, running=3, kv_usage=0.85)
    roomy = PoolLoad(waiting=0, running=13, kv_usage=0.4)
    lat = latency_table(_snapshot([0.8, 0.8], [kv_bound, roomy]), _query())
    # A new call waits behind the 10 at the pace of 3 running: several service times.
    assert all(a > b + 10 for a, b in zip(lat[0], lat[1], strict=True)), lat
    # The same queue with room in the cache is a transient (calls between two engine
    # steps): no such wait.
    passing = PoolLoad(waiting=10, running=3, kv_usage=0.3)
    calm = latency_table(_snapshot([0.8, 0.8], [passing, roomy]), _query())
    assert all(a < b + 1 for a, b in zip(calm[0], calm[1], strict=True)), calm


def test_budget_greedy_spends_a_large_budget_on_a_richer_plan():
    snap = _snapshot([0.8, 0.75, 0.7])
    policy = make_heuristic("budget-greedy")
    assert policy.decide(snap, _query(1.0)).topology is Topology.SINGLE
    assert policy.decide(snap, _query(300.0)).calls > 1


def test_load_blind_baselines_ignore_load():
    busy = PoolLoad(waiting=500, running=32, kv_usage=1.0)
    idle = _snapshot([0.9, 0.7])
    loaded = _snapshot([0.9, 0.7], [busy, PoolLoad()])
    for name in ("single-best", "moa", "masrouter"):
        policy = make_heuristic(name)
        plan = policy.decide(idle, _query())
        step = StepContext(_query(), plan, 0, 0, plan.waves[0][0], 0.0)
        assert policy.choose(idle, step) == policy.choose(loaded, step), name


def test_stale_load_is_not_read_as_idle():
    stale = PoolLoad(stale=True)
    snap = _snapshot([0.8, 0.8], [stale, PoolLoad()])
    choice = make_heuristic("least-queue").choose(
        snap, StepContext(_query(), CATALOGUE[0], 0, 0, Role.SOLVER, 0.0)
    )
    assert choice.pool == 1


def test_features_have_the_schema_length_and_see_load():
    q = _query()
    idle = encode_query(_snapshot([0.8]), q)
    busy = encode_query(_snapshot([0.8], [PoolLoad(waiting=40, running=32, kv_usage=0.9)]), q)
    assert idle.shape == (len(PLANNER_FEATURES),) and idle.dtype == np.float32
    assert not np.allclose(idle, busy)
    step = encode_step(_snapshot([0.8]), StepContext(q, CATALOGUE[3], 0, 1, Role.PROPOSER, 0.0))
    assert step.shape == (len(EXECUTOR_FEATURES),)


def _random_layers(n_in: int, n_out: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(n_in, 16)), np.zeros(16)),
        (rng.normal(size=(16, n_out)), np.zeros(n_out)),
    ]


def _write_random_policy(path, version: str, planner=None, **meta) -> None:
    """An artifact of random weights (seeded) in the runtime's shapes."""
    write_policy_file(
        path,
        planner or _random_layers(len(PLANNER_FEATURES), PLANNER_ACTIONS, 1),
        _random_layers(len(EXECUTOR_FEATURES), EXECUTOR_ACTIONS, 2),
        version=version,
        **meta,
    )


def test_learned_policy_runs_an_exported_file_within_its_limits(tmp_path):
    path = tmp_path / "policy.npz"
    _write_random_policy(path, "test-1")
    limits = Limits(topologies=(Topology.SINGLE,), depths=(Depth.CONCISE,))
    policy = LearnedPolicy(path, limits)
    snap = _snapshot([0.8, 0.6])
    plan = policy.decide(snap, _query())
    assert plan.topology is Topology.SINGLE and policy.version == "test-1"
    choice = policy.choose(snap, StepContext(_query(), plan, 0, 0, Role.SOLVER, 0.0))
    assert choice.pool in (0, 1) and choice.depth is Depth.CONCISE


def _plain_forward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """The textbook forward pass of a padded observation, as training computes it."""
    for W, b in layers[:-1]:
        x = np.tanh(x @ W + b)
    W, b = layers[-1]
    return x @ W + b


@pytest.mark.parametrize("hidden", [(16,), (32, 32), ()])
def test_the_runtime_computes_the_plain_forward_pass_of_padded_observations(tmp_path, hidden):
    """The runtime drops padded pool slots and folds biases and the planner's mask into its
    matrices for speed; its outputs and decisions must stay those of the plain network."""
    rng = np.random.default_rng(7)

    def layers(n_in: int, n_out: int) -> list[tuple[np.ndarray, np.ndarray]]:
        sizes = (n_in, *hidden, n_out)
        return [(rng.normal(size=(a, b)), rng.normal(size=b)) for a, b in itertools.pairwise(sizes)]

    path = tmp_path / "policy.npz"
    planner = layers(len(PLANNER_FEATURES), PLANNER_ACTIONS)
    executor = layers(len(EXECUTOR_FEATURES), EXECUTOR_ACTIONS)
    write_policy_file(path, planner, executor, version="plain")
    limits = Limits(topologies=(Topology.SINGLE, Topology.DEBATE, Topology.VERIFY))
    policy = LearnedPolicy(path, limits)
    allowed = np.array([p.topology in limits.topologies for p in CATALOGUE])
    decisions = set()
    for n in range(1, MAX_POOLS + 1):
        for _ in range(5):
            loads = [
                PoolLoad(
                    waiting=float(rng.integers(0, 20)),
                    running=float(rng.integers(0, 40)),
                    kv_usage=float(rng.uniform()),
                    available=bool(rng.uniform() > 0.2),
                )
                for _ in range(n)
            ]
            snap = _snapshot(list(rng.uniform(0.3, 0.9, n)), loads)
            query = _query(float(rng.uniform(5, 60)), TaskFamily.CODE)
            plan_logits = _plain_forward(policy.planner, encode_query(snap, query))
            want_plan = CATALOGUE[int(np.where(allowed, plan_logits, -np.inf).argmax())]
            assert policy.decide(snap, query) is want_plan
            step = StepContext(query, want_plan, 0, 0, want_plan.waves[0][0], 0.0, (0,))
            x = encode_step(snap, step)
            step_logits = _plain_forward(policy.executor, x)
            got = policy._step_net(query_fields(snap, query, 0.0) + step_fields(step), n)
            np.testing.assert_allclose(got, step_logits, rtol=1e-4, atol=1e-4)
            mask = executor_mask(snap)
            want = int(np.where(mask, step_logits, -np.inf).argmax())
            choice = policy.choose(snap, step)
            assert (choice.pool, DEPTHS.index(choice.depth)) == action_to_choice(want)
            decisions.add((want_plan.label, want))
    assert len(decisions) >= 5  # the random networks do not all answer the same


def test_a_step_on_a_newer_snapshot_is_chosen_from_that_snapshot(tmp_path):
    """The learned policy reuses its decision's query fields for a first step taken on the
    same snapshot; a step on another snapshot (the load moved) must see the new load."""
    rng = np.random.default_rng(3)
    path = tmp_path / "policy.npz"
    executor = [
        (rng.normal(size=(len(EXECUTOR_FEATURES), 32)), rng.normal(size=32)),
        (rng.normal(size=(32, EXECUTOR_ACTIONS)), rng.normal(size=EXECUTOR_ACTIONS)),
    ]
    planner = _random_layers(len(PLANNER_FEATURES), PLANNER_ACTIONS, 1)
    write_policy_file(path, planner, executor, version="memo")
    policy = LearnedPolicy(path)
    query = _query()
    idle = _snapshot([0.8, 0.6])
    differ = 0
    for _ in range(20):
        loads = [PoolLoad(waiting=float(rng.integers(0, 40)), running=32.0) for _ in range(2)]
        busy = _snapshot([0.8, 0.6], loads)
        plan = policy.decide(idle, query)
        step = StepContext(query, plan, 0, 0, plan.waves[0][0], 0.0)
        fresh = LearnedPolicy(path)
        assert policy.choose(busy, step) == fresh.choose(busy, step)
        assert policy.choose(idle, step) == fresh.choose(idle, step)
        differ += fresh.choose(busy, step) != fresh.choose(idle, step)
    assert differ  # the load changes some choices, so a stale reuse would show


def test_a_policy_from_another_feature_schema_is_refused_and_the_fallback_serves(tmp_path):
    path = tmp_path / "old.npz"
    _write_random_policy(path, "old", feature_schema="v0-000000000000")
    with pytest.raises(PolicyFileError, match=FEATURE_SCHEMA):
        LearnedPolicy(path)
    policy, version, warning = load_policy(
        PolicySource(path=str(path), fallback="least-queue"), Limits()
    )
    assert policy.name == "least-queue" and version == "heuristic:least-queue"
    assert "feature schema" in warning


def _corrupt(path, how: str) -> None:
    planner = _random_layers(len(PLANNER_FEATURES), PLANNER_ACTIONS, 1)
    if how == "layers that do not chain":
        planner[1] = (np.zeros((17, PLANNER_ACTIONS)), np.zeros(PLANNER_ACTIONS))
    _write_random_policy(path, "bad", planner=planner)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    if how == "truncated":
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        return
    if how == "meta not JSON":
        arrays["meta"] = np.array("{not json")
    elif how == "a bias missing":
        del arrays["executor/b1"]
    elif how == "weights not numbers":
        arrays["planner/W0"] = np.full(arrays["planner/W0"].shape, "x")
    with path.open("wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize(
    "how",
    ["truncated", "meta not JSON", "a bias missing", "layers that do not chain",
     "weights not numbers"],
)  # fmt: skip
def test_a_damaged_policy_file_falls_back_with_a_reason(tmp_path, how):
    """A half-copied or hand-edited artifact must not take the gateway down (its loader
    runs in the config watch and at start-up): the fallback serves and the warning says
    what is wrong with the file."""
    path = tmp_path / "policy.npz"
    _corrupt(path, how)
    policy, version, warning = load_policy(
        PolicySource(path=str(path), fallback="least-queue"), Limits()
    )
    assert policy.name == "least-queue" and version == "heuristic:least-queue"
    assert str(path) in warning or "policy file" in warning
    assert warning.endswith("using least-queue meanwhile")


def test_a_learned_policy_for_more_pools_than_its_encoder_sees_falls_back(tmp_path):
    from inframind.policy.features import MAX_POOLS

    path = tmp_path / "policy.npz"
    _write_random_policy(path, "v1")
    source = PolicySource(path=str(path), fallback="least-queue")
    assert load_policy(source, Limits(), pools=MAX_POOLS)[1] == "v1"
    _, version, warning = load_policy(source, Limits(), pools=MAX_POOLS + 1)
    assert version == "heuristic:least-queue" and "split the pipeline" in warning


def test_a_missing_policy_file_falls_back_with_a_reason(tmp_path):
    policy, _, warning = load_policy(PolicySource(path=str(tmp_path / "nope.npz")), Limits())
    assert policy.name == "budget-greedy" and "does not exist" in warning


def test_the_safety_tuner_settles_where_misses_run_at_half_the_allowed_rate():
    tuner = SafetyTuner(0.99)  # aims at 0.5 % misses
    assert tuner.safety == tuner.high == 0.7
    assert tuner.observe(True) == 0.7  # never past the default
    rng = np.random.default_rng(0)
    # A stand-in for the cluster: the bolder the safety, the more budgets are missed
    # (2 % at the default). After a settling period misses run near the aimed 0.5 %.
    misses = []
    for i in range(60_000):
        met = bool(rng.uniform() > 0.02 * (tuner.safety / 0.7) ** 4)
        tuner.observe(met)
        if i >= 20_000:
            misses.append(not met)
    assert 0.004 < np.mean(misses) < 0.006
    assert tuner.low < tuner.safety < tuner.high
    for _ in range(100):
        tuner.observe(False)
    assert tuner.safety == tuner.low  # bounded below too
    with pytest.raises(ValueError, match=r"SLO target must be in \(0, 1\]"):
        SafetyTuner(0.0)


def test_budget_greedy_keeps_an_slo_target_on_the_simulator():
    """The closed loop on the simulator: with the pipeline's target, budget-greedy misses
    fewer budgets than at its fixed default, on the same loaded workload."""
    from inframind.bench.scenarios import Cell, resolve_policy
    from inframind.sim.run import simulate

    cell = Cell("test", 100.0, "mixed", seed=2, duration_s=900.0)
    fixed = simulate(resolve_policy("budget-greedy"), cell.sim_config()).summary()
    tuned_policy = resolve_policy("budget-greedy:slo=0.999")
    tuned = simulate(tuned_policy, cell.sim_config()).summary()
    assert tuned["slo_compliance"] > fixed["slo_compliance"]
    assert tuned_policy.safety < BudgetGreedy.safety and tuned_policy.tuner.missed > 0

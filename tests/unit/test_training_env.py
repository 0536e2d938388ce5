"""The RLlib environment: the gateway's features, masks, determinism, terminations and rewards."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray.rllib", reason="training extras not installed (pip install .[train])")

from inframind.policy.features import (
    EXECUTOR_ACTIONS,
    EXECUTOR_FEATURES,
    MAX_POOLS,
    PLANNER_ACTIONS,
    PLANNER_FEATURES,
)
from inframind.policy.heuristics import make_heuristic
from inframind.policy.plans import CATALOGUE
from inframind.policy.types import DEPTH_INDEX, DEPTHS
from inframind.sim.calibration import pool_names
from inframind.sim.run import PlanRequest, simulate
from inframind_training.env import (
    InfraMindEnv,
    budget_cost,
    expected_cost,
    nearest_valid_executor_action,
    policy_mapping_fn,
    quality,
    shaped_reward,
)

pytestmark = pytest.mark.unit

SMALL = {"window_s": 90.0, "loads_rpm": [30.0]}


def random_actor(seed: int):
    rng = np.random.default_rng(seed)

    def act(env: InfraMindEnv, aid: str, obs: dict) -> int:
        return int(rng.choice(np.flatnonzero(obs["action_mask"])))

    return act


def heuristic_actor(name: str):
    """Plays a heuristic through the env's action indices (plan -> catalogue, choice -> slot)."""
    policy = make_heuristic(name)

    def act(env: InfraMindEnv, aid: str, obs: dict) -> int:
        req = env._request
        if isinstance(req, PlanRequest):
            return CATALOGUE.index(policy.decide(req.snapshot, req.query))
        choice = policy.choose(req.snapshot, req.step)
        return choice.pool * len(DEPTHS) + DEPTH_INDEX[choice.depth]

    return act


def rollout(env: InfraMindEnv, act, seed: int) -> list[tuple]:
    """Every transition of one episode: (acting agent, action, rewards, terminateds, infos)."""
    obs, _ = env.reset(seed=seed)
    out = []
    while True:
        assert len(obs) == 1, "exactly one agent decides at a time"
        ((aid, o),) = obs.items()
        a = act(env, aid, o)
        obs, rew, term, _trunc, info = env.step({aid: a})
        out.append((aid, o, a, rew, term, info))
        if term["__all__"]:
            assert obs == {}
            return out


def test_observations_follow_the_feature_schema_and_spaces():
    env = InfraMindEnv(SMALL)
    steps = rollout(env, random_actor(0), seed=1)
    roles = {policy_mapping_fn(aid) for aid, *_ in steps}
    assert roles == {"planner", "executor"}
    for aid, obs, *_ in steps:
        space = env.get_observation_space(aid)
        assert space.contains(obs)
        want = PLANNER_FEATURES if aid.startswith("planner") else EXECUTOR_FEATURES
        actions = PLANNER_ACTIONS if aid.startswith("planner") else EXECUTOR_ACTIONS
        assert obs["obs"].shape == (len(want),)
        assert obs["action_mask"].shape == (actions,)
        assert env.get_action_space(aid).n == actions


def test_executor_mask_forbids_absent_pool_slots():
    env = InfraMindEnv(SMALL)
    steps = rollout(env, random_actor(0), seed=2)
    pools = len(pool_names(env.settings.placement))
    assert pools < MAX_POOLS
    for aid, obs, *_ in steps:
        if aid.startswith("executor"):
            mask = obs["action_mask"].reshape(MAX_POOLS, len(DEPTHS))
            assert mask[:pools].all() and not mask[pools:].any()


def test_an_action_outside_the_mask_goes_to_the_same_depth_on_the_nearest_pool():
    mask = np.zeros(EXECUTOR_ACTIONS, dtype=bool)
    mask[: 5 * len(DEPTHS)] = True
    assert nearest_valid_executor_action(7 * len(DEPTHS) + 2, mask) == 4 * len(DEPTHS) + 2
    assert nearest_valid_executor_action(4, mask) == 4


def test_same_seed_same_trajectory_and_another_seed_differs():
    def trace(seed: int) -> list:
        steps = rollout(InfraMindEnv(SMALL), random_actor(7), seed=seed)
        return [(aid, a, sorted(rew.items())) for aid, _, a, rew, *_ in steps]

    assert trace(4) == trace(4)
    assert trace(4) != trace(5)


def test_every_agent_that_acted_terminates_once_with_its_queries_reward():
    env = InfraMindEnv({**SMALL, "lam": 0.5})
    steps = rollout(env, random_actor(3), seed=6)
    acted = {aid for aid, *_ in steps}
    ended: dict[str, float] = {}
    for *_, rew, term, info in steps:
        for aid, done in term.items():
            if aid == "__all__":
                continue
            assert done and aid not in ended
            ended[aid] = rew[aid]
            i = info[aid]
            want = shaped_reward(i["correct"], i["latency_s"], i["budget_s"], 0.5)
            assert rew[aid] == pytest.approx(want)
    assert acted == set(ended)
    qids = {aid.split("_", 1)[1] for aid in acted}
    assert all(ended[f"planner_{q}"] == ended[f"executor_{q}"] for q in qids)
    assert env.stats.queries == len(qids)


def test_quality_first_shaping_matches_the_authors_formula():
    assert quality(True, 10, 20) == 1.0
    assert quality(True, 40, 20) == pytest.approx(0.7)
    assert quality(True, 200, 20) == 0.5  # overrun discounts at most to 0.5
    assert quality(False, 0, 20) == -1.0
    assert quality(False, 10, 20) == pytest.approx(-0.85)
    assert quality(False, 100, 20) == pytest.approx(-0.7)  # capped at the budget
    assert quality(False, 10, 20, wrong_credit=0.0) == -1.0
    assert min(quality(True, x, 20) for x in (0, 20, 40, 1e6)) > max(
        quality(False, x, 20) for x in (0, 20, 40, 1e6)
    )
    assert shaped_reward(True, 30, 20, lam=2.0) == pytest.approx(quality(True, 30, 20) - 2.0)
    assert shaped_reward(True, 20, 20, lam=2.0) == 1.0  # on the budget is within it


def test_the_cost_ramps_up_to_a_miss_only_when_asked():
    # Default: the indicator of a missed budget, nothing else.
    assert [budget_cost(x, 10) for x in (0, 8, 9.9, 10, 10.1, 100)] == [0, 0, 0, 0, 1, 1]
    # Ramp from 80 % of the budget: near misses cost in proportion, a miss costs 1.
    ramp = [budget_cost(x, 10, ramp_from=0.8) for x in (7, 8, 9, 10, 10.1)]
    assert ramp == pytest.approx([0, 0, 0.5, 1.0, 1.0])
    near = shaped_reward(True, 9, 10, lam=2.0, ramp_from=0.8)
    assert near == pytest.approx(quality(True, 9, 10) - 1.0)


def test_the_expected_cost_is_the_share_of_replays_over_budget():
    replays = np.array([5.0, 9.0, 10.0, 11.0, 30.0])
    assert expected_cost(replays, 10.0) == pytest.approx(2 / 5)
    # With a ramp from 80 %: 9 s costs 0.5, 10 s 1.0 on the ramp, over budget 1.
    assert expected_cost(replays, 10.0, ramp_from=0.8) == pytest.approx((0.5 + 1 + 1 + 1) / 5)
    reward = shaped_reward(True, 9.0, 10.0, lam=2.0, cost=0.25)
    assert reward == pytest.approx(quality(True, 9.0, 10.0) - 0.5)


def test_expected_cost_charges_risky_choices_on_queries_that_did_not_miss():
    """cost=expected: the same actions and outcomes as sampled; the cost is charged on many
    queries in small amounts rather than on the rare miss in full, and sums to about the
    misses."""
    config = {**SMALL, "window_s": 900.0, "loads_rpm": [100.0], "lam": 1.0}
    sampled_env = InfraMindEnv(config)
    expected_env = InfraMindEnv({**config, "cost": "expected", "reward_samples": 16})
    # budget-greedy at 0.9 misses a few budgets here; one actor per env (it keeps state).
    sampled = rollout(sampled_env, heuristic_actor("budget-greedy:safety=0.9"), seed=2)
    expected = rollout(expected_env, heuristic_actor("budget-greedy:safety=0.9"), seed=2)
    assert [(s[0], s[2]) for s in sampled] == [(s[0], s[2]) for s in expected]

    def costs(steps: list[tuple]) -> np.ndarray:
        out = []
        for *_, rew, term, info in steps:
            for aid in term:
                if aid.startswith("planner_"):
                    i = info[aid]
                    quality_only = shaped_reward(i["correct"], i["latency_s"], i["budget_s"], 0.0)
                    out.append(quality_only - rew[aid])  # lambda (1) x cost
        return np.array(out)

    c_sampled, c_expected = costs(sampled), costs(expected)
    misses = round(float(c_sampled.sum()))
    assert misses >= 3
    assert ((c_expected > 0) & (c_expected < 1)).sum() > 3 * misses
    assert abs(c_expected.sum() - misses) < 3 * np.sqrt(misses) + 2
    with pytest.raises(ValueError, match="cost must be 'sampled' or 'expected'"):
        InfraMindEnv({"cost": "guess"})


def test_playing_a_heuristic_through_the_env_reproduces_simulate():
    env = InfraMindEnv(SMALL)
    rollout(env, heuristic_actor("budget-greedy"), seed=8)
    summary = simulate(make_heuristic("budget-greedy"), env.sim_config).summary()
    assert env.stats.queries == summary["queries"]
    assert env.stats.accuracy == pytest.approx(summary["accuracy"])
    assert 1 - env.stats.violation_rate == pytest.approx(summary["slo_compliance"])
    assert env.stats.remapped == 0


def test_rllib_episode_bookkeeping_accepts_a_whole_window():
    """RLlib ends an episode when every agent it knows is done; the env must never let it early."""
    from ray.rllib.env.multi_agent_episode import MultiAgentEpisode

    env = InfraMindEnv({**SMALL, "loads_rpm": [50.0]})
    act = random_actor(0)
    spaces = {a: env.get_observation_space(a) for a in env.possible_agents}
    actions = {a: env.get_action_space(a) for a in env.possible_agents}
    for seed in (0, 1):
        episode = MultiAgentEpisode(
            observation_space=spaces,
            action_space=actions,
            agent_to_module_mapping_fn=policy_mapping_fn,
        )
        obs, infos = env.reset(seed=seed)
        episode.add_env_reset(observations=obs, infos=infos)
        while not episode.is_done:
            assert episode.get_agents_to_act() == set(obs)
            acts = {aid: act(env, aid, o) for aid, o in obs.items()}
            obs, rew, term, trunc, info = env.step(acts)
            episode.add_env_step(
                observations=obs,
                actions=acts,
                rewards=rew,
                infos=info,
                terminateds=term,
                truncateds=trunc,
            )
        assert term["__all__"] and env._request is None


def test_warm_up_queries_are_served_by_the_heuristic_and_never_become_agents():
    config = {"window_s": 60.0, "warmup_s": 60.0, "loads_rpm": [100.0]}
    env = InfraMindEnv(config)
    steps = rollout(env, random_actor(1), seed=2)
    acted = {int(aid.split("_", 1)[1]) for aid, *_ in steps}
    from inframind.sim.workload import generate

    arrivals = {int(q.query.id): q.query.arrival_s for q in generate(env.sim_config.workload())}
    assert acted == {qid for qid, t in arrivals.items() if t >= 60.0}
    assert env.stats.queries == len(acted)
    again = rollout(InfraMindEnv(config), random_actor(1), seed=2)
    assert [(a, x) for a, _, x, *_ in again] == [(a, x) for a, _, x, *_ in steps]


def test_a_window_without_arrivals_moves_on_to_the_next_seed():
    env = InfraMindEnv({"window_s": 1.0, "warmup_s": 5.0, "loads_rpm": [1.0]})
    obs, _ = env.reset(seed=0)
    assert len(obs) == 1 and env._episode >= 2


def test_capped_agent_queries_end_the_episode_once_theirs_complete():
    env = InfraMindEnv(
        {"window_s": 120.0, "warmup_s": 60.0, "loads_rpm": [150.0], "agent_queries": 15}
    )
    steps = rollout(env, random_actor(4), seed=1)
    qids = {int(aid.split("_", 1)[1]) for aid, *_ in steps}
    assert len(qids) == 15 == env.stats.queries
    ended = {aid for *_, term, _ in steps for aid, done in term.items() if done}
    assert ended - {"__all__"} == {aid for aid, *_ in steps}


def test_expected_reward_takes_the_same_actions_with_far_less_spread():
    """reward=expected scores a query by its chance of a right answer, less the query's
    difficulty baseline: same choices and outcomes as sampled, per query the expectation
    over the answer's coin flip, and the spread between queries cut several-fold."""
    config = {**SMALL, "window_s": 600.0, "lam": 0.5}
    sampled_env = InfraMindEnv(config)
    expected_env = InfraMindEnv({**config, "reward": "expected", "reward_samples": 16})
    sampled = rollout(sampled_env, heuristic_actor("budget-greedy"), seed=3)
    expected = rollout(expected_env, heuristic_actor("budget-greedy"), seed=3)
    assert [(s[0], s[2]) for s in sampled] == [(s[0], s[2]) for s in expected]  # same actions

    def finals(steps: list[tuple]) -> dict[str, float]:
        return {
            aid: rew[aid]
            for *_, rew, term, _ in steps
            for aid in term
            if aid.startswith("planner_")
        }

    a, b = finals(sampled), finals(expected)
    assert a.keys() == b.keys() and len(a) > 100
    r_sampled, r_expected = np.array(list(a.values())), np.array(list(b.values()))
    assert r_expected.var() * 5 < r_sampled.var()
    assert expected_env.stats.accuracy == sampled_env.stats.accuracy
    with pytest.raises(ValueError, match="reward must be 'sampled' or 'expected'"):
        InfraMindEnv({"reward": "coin"})


def test_splitting_by_budget_hands_each_query_to_one_policy():
    from inframind.sim.run import SimConfig
    from inframind_training.misses import SplitByBudget, count

    split = SplitByBudget(make_heuristic("single-best"), make_heuristic("moa"), cut_s=20.0)
    cfg = SimConfig(rate_rpm=20.0, duration_s=300.0, budget="loguniform:5:60", seed=3)
    records = simulate(split, cfg).records
    tight = {r.plan for r in records if r.budget_s <= 20.0}
    loose = {r.plan for r in records if r.budget_s > 20.0}
    assert tight and loose and tight.isdisjoint(loose)
    assert all(r.calls == 1 for r in records if r.budget_s <= 20.0)
    assert all(r.calls > 1 for r in records if r.budget_s > 20.0)
    # The counts add up per query, with the tight misses a part of all misses.
    m, tight = count(lambda: split, 20.0, [3], "loguniform:5:60", 20.0, hours=300 / 3600)
    assert m.queries == len(records) and tight <= m.violations
    assert m.violations == sum(not r.met_budget for r in records)

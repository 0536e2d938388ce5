"""Running policies on the simulator: every query answered, determinism, load-awareness pays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inframind.policy.heuristics import HEURISTICS, make_heuristic
from inframind.sim.run import SimConfig, simulate
from inframind.sim.workload import generate

pytestmark = pytest.mark.unit


def test_every_query_of_the_workload_ends_with_a_record():
    config = SimConfig(rate_rpm=40, duration_s=300, seed=3)
    result = simulate(make_heuristic("budget-greedy"), config)
    queries = generate(config.workload())
    assert [r.id for r in result.records] == [int(q.query.id) for q in queries]
    assert all(r.latency_s > 0 and r.calls >= 1 and r.tokens >= 1 for r in result.records)
    assert sum(result.calls_by_pool.values()) == sum(r.calls for r in result.records)
    assert sum(result.topology_mix.values()) == len(queries)
    assert all(r.met_budget == (r.latency_s <= r.budget_s) for r in result.records)


@pytest.mark.parametrize("name", sorted(HEURISTICS))
def test_every_heuristic_runs(name):
    result = simulate(make_heuristic(name), SimConfig(rate_rpm=20, duration_s=120, seed=1))
    summary = result.summary()
    assert summary["queries"] == len(result.records) > 0
    assert 0 <= summary["accuracy"] <= 1 and 0 <= summary["slo_compliance"] <= 1


def test_same_seed_same_result_and_another_seed_differs():
    def run(seed: int) -> dict[str, float]:
        return simulate(make_heuristic("gptswarm"), SimConfig(20, 300, seed=seed)).summary()

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_fcfs_variant_sends_no_priority_and_still_answers_everything():
    result = simulate(make_heuristic("moa+fcfs"), SimConfig(rate_rpm=30, duration_s=120))
    assert result.policy == "moa+fcfs"
    assert len(result.records) == result.summary()["queries"] > 0


def test_load_blind_moa_misses_more_slos_than_budget_greedy_at_high_load():
    config = SimConfig(rate_rpm=100, duration_s=600, seed=0)
    moa = simulate(make_heuristic("moa"), config)
    greedy = simulate(make_heuristic("budget-greedy"), config)
    assert moa.summary()["slo_compliance"] < greedy.summary()["slo_compliance"]
    hour = moa.wall_s * 3600 / config.duration_s
    print(
        f"\nmoa at 100 req/min: {moa.speed['queries_per_s']:,.0f} requests/s, "
        f"{moa.speed['events_per_s']:,.0f} events/s; one simulated hour ~ {hour:.1f} s wall"
    )


def test_expected_correctness_is_the_chance_the_sampled_answer_had():
    """With `expected_samples`, each record carries P(right | difficulty, choices): over an
    hour of queries it averages to the accuracy the coin flips gave, replaying the answers
    changes no outcome, and one fresh step gets its exact probability."""
    config = SimConfig(rate_rpm=30, duration_s=3600, seed=5)
    for name in ("budget-greedy", "moa"):  # single steps; votes and an aggregator
        plain = simulate(make_heuristic(name), config)
        expected = simulate(make_heuristic(name), dataclasses.replace(config, expected_samples=32))
        assert [r.correct for r in expected.records] == [r.correct for r in plain.records]
        assert [r.latency_s for r in expected.records] == [r.latency_s for r in plain.records]
        assert all(r.p_correct is None for r in plain.records)
        p = np.array([r.p_correct for r in expected.records])
        hits = np.array([r.correct for r in expected.records], dtype=float)
        assert ((p >= 0) & (p <= 1)).all()
        # Same mean as the coin flips, within three standard errors of their average.
        se = np.sqrt(np.mean(p * (1 - p)) / len(p))
        assert abs(hits.mean() - p.mean()) < 3 * se, name
        # Right answers were the likelier ones.
        assert p[hits == 1].mean() > p[hits == 0].mean() + 0.2, name


def test_replayed_latencies_predict_how_many_budgets_are_missed():
    """With `latency_samples`, each record carries its latency over replays of its calls'
    output lengths. Replaying changes no outcome; the share of a query's replays over its
    budget, P(miss | choices), adds up to about the misses that happened, and is far
    higher on the queries that missed."""
    config = SimConfig(rate_rpm=100, duration_s=3600, seed=5, budget="loguniform:5:120")
    plain = simulate(make_heuristic("budget-greedy"), config)
    replayed = simulate(
        make_heuristic("budget-greedy"), dataclasses.replace(config, latency_samples=32)
    )
    assert [r.latency_s for r in replayed.records] == [r.latency_s for r in plain.records]
    assert [r.correct for r in replayed.records] == [r.correct for r in plain.records]
    assert all(r.latency_replays is None for r in plain.records)
    assert all(r.latency_replays.shape == (32,) for r in replayed.records)
    p = np.array([np.mean(r.latency_replays > r.budget_s) for r in replayed.records])
    missed = np.array([not r.met_budget for r in replayed.records])
    assert missed.sum() >= 20  # budget-greedy's default misses ~1 % here
    assert abs(missed.sum() - p.sum()) < 3 * np.sqrt(np.sum(p * (1 - p))) + 2
    assert p[missed].mean() > p[~missed].mean() + 0.1


def test_a_call_replayed_at_its_own_length_takes_the_time_it_took():
    from inframind.sim.cluster import Cluster, SimCall
    from inframind.sim.run import call_time

    cluster = Cluster(pools=["llama-8b"], kv_blocks=400)  # some calls queue, some preempt
    calls = [SimCall(i, 0, 200 + 40 * i, 50 + 30 * i, priority=i) for i in range(24)]
    for call in calls:
        cluster.submit(call)
    cluster.drain()
    for call in calls:
        assert call_time(call, call.output_tokens) == pytest.approx(call.latency_s)
    # Longer at its own pace: twice the tokens, more than its time, less than twice it.
    slow = calls[-1]
    assert slow.latency_s < call_time(slow, 2 * slow.output_tokens) < 2 * slow.latency_s + 1e-9


def test_one_fresh_step_gets_its_exact_probability_and_votes_a_sampled_one():
    from inframind.policy.plans import CATALOGUE
    from inframind.sim.accuracy import AccuracyModel, Benchmark
    from inframind.vocab import Depth, Topology

    model = AccuracyModel()
    rng = np.random.default_rng(0)
    single = next(p for p in CATALOGUE if p.topology is Topology.SINGLE)
    trail = [[("mistral-24b", Depth.CONCISE)]]
    exact = model.p_correct("mistral-24b", Benchmark.MATH, Depth.CONCISE, 0.3)
    assert model.expected_correct(single, trail, Benchmark.MATH, 0.3, 8, rng) == exact
    debate = next(p for p in CATALOGUE if p.topology is Topology.DEBATE)
    trail = [[("mistral-24b", Depth.CONCISE)] * len(w) for w in debate.waves]
    many = model.expected_correct(debate, trail, Benchmark.MATH, 0.3, 4000, rng)
    # A debate of one model on a query of middling difficulty beats a single call of it.
    assert exact < many < 1.0
    # The reference is one Concise call of the most accurate pool: harder is less likely.
    assert model.reference_correct(Benchmark.MATH, -1.0) > model.reference_correct(
        Benchmark.MATH, 1.0
    )

"""Workloads: arrival processes keep their mean rate, seeds reproduce, budgets parse or explain."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from inframind.sim.workload import (
    Benchmark,
    SimQuery,
    WorkloadSpec,
    generate,
    parse_budget,
)
from inframind.vocab import TaskFamily

pytestmark = pytest.mark.unit

HOUR = 3600.0


def arrivals(spec: WorkloadSpec) -> np.ndarray:
    return np.array([q.query.arrival_s for q in generate(spec)])


def per_minute_counts(times: np.ndarray, duration_s: float) -> np.ndarray:
    return np.bincount((times // 60).astype(int), minlength=int(duration_s // 60))


def test_benchmarks_map_to_task_families():
    assert [b.family for b in Benchmark] == [
        TaskFamily.MATH,
        TaskFamily.MATH,
        TaskFamily.CODE,
        TaskFamily.KNOWLEDGE,
    ]


def test_queries_are_sorted_by_arrival_with_ids_in_order():
    qs = generate(WorkloadSpec(rate_rpm=60, duration_s=600, seed=3))
    assert all(isinstance(q, SimQuery) for q in qs)
    assert [q.query.id for q in qs] == list(range(len(qs)))
    times = [q.query.arrival_s for q in qs]
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 600
    assert all(q.query.task is q.benchmark.family for q in qs)


def test_poisson_count_and_gaps_match_the_rate():
    rate_rpm, duration = 100.0, 4 * HOUR
    times = arrivals(WorkloadSpec(rate_rpm=rate_rpm, duration_s=duration, seed=1))
    expected = rate_rpm * duration / 60
    assert abs(len(times) - expected) < 4 * math.sqrt(expected)
    assert np.mean(np.diff(times)) == pytest.approx(60 / rate_rpm, rel=0.03)
    counts = per_minute_counts(times, duration)
    # A Poisson count has variance equal to its mean.
    assert np.var(counts) / np.mean(counts) == pytest.approx(1.0, abs=0.2)


def test_bursty_has_the_same_mean_but_more_variable_counts_than_poisson():
    rate_rpm, duration = 60.0, 8 * HOUR
    poisson = per_minute_counts(
        arrivals(WorkloadSpec(rate_rpm=rate_rpm, duration_s=duration, seed=2)), duration
    )
    bursty = per_minute_counts(
        arrivals(WorkloadSpec(rate_rpm=rate_rpm, duration_s=duration, arrival="bursty", seed=2)),
        duration,
    )
    assert np.mean(bursty) == pytest.approx(rate_rpm, rel=0.1)
    assert np.var(bursty) > 3 * np.var(poisson)


def test_diurnal_keeps_the_mean_rate_and_peaks_mid_run():
    rate_rpm, duration = 60.0, 8 * HOUR
    times = arrivals(WorkloadSpec(rate_rpm=rate_rpm, duration_s=duration, arrival="diurnal"))
    assert len(times) / (duration / 60) == pytest.approx(rate_rpm, rel=0.03)
    quarter = duration / 4
    edges = np.sum((times < quarter) | (times >= 3 * quarter))
    middle = len(times) - edges
    assert middle > 1.5 * edges


def test_same_seed_same_workload_other_seed_other_workload():
    spec = WorkloadSpec(rate_rpm=30, duration_s=900, arrival="bursty", seed=7)
    assert generate(spec) == generate(dataclasses.replace(spec))
    assert generate(spec) != generate(dataclasses.replace(spec, seed=8))


def test_changing_the_budget_spec_moves_no_arrival_or_difficulty():
    spec = WorkloadSpec(rate_rpm=30, duration_s=900, seed=5)
    a = generate(spec)
    b = generate(dataclasses.replace(spec, budget="fixed:30"))
    assert [(q.query.arrival_s, q.difficulty, q.benchmark) for q in a] == [
        (q.query.arrival_s, q.difficulty, q.benchmark) for q in b
    ]
    assert {q.query.budget_s for q in b} == {30.0}


def test_benchmarks_are_drawn_uniformly_from_the_spec():
    qs = generate(WorkloadSpec(rate_rpm=120, duration_s=HOUR, benchmarks=("math", "code")))
    counts = {b: sum(q.benchmark is b for q in qs) for b in Benchmark}
    assert counts[Benchmark.GSM_HARD] == counts[Benchmark.MMLU_PRO] == 0
    assert counts[Benchmark.MATH] / len(qs) == pytest.approx(0.5, abs=0.05)


def test_difficulty_is_standard_normal_and_prompts_sized_per_benchmark():
    qs = generate(WorkloadSpec(rate_rpm=200, duration_s=HOUR, seed=4))
    z = np.array([q.difficulty for q in qs])
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.0, abs=0.05)
    median = {
        b: np.median([q.query.prompt_tokens for q in qs if q.benchmark is b]) for b in Benchmark
    }
    assert median[Benchmark.GSM_HARD] < median[Benchmark.MATH] < median[Benchmark.CODE]
    assert median[Benchmark.CODE] < median[Benchmark.MMLU_PRO]


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [("fixed:30", 30, 30), ("uniform:5:50", 5, 50), ("loguniform:5:120", 5, 120)],
)
def test_budgets_stay_within_their_distribution(text, low, high):
    budgets = parse_budget(text)(np.random.default_rng(0), 20_000)
    assert budgets.min() >= low and budgets.max() <= high
    if text.startswith("loguniform"):
        # Log-uniform: the log of the budget is uniform, so its mean is the log midpoint.
        assert np.mean(np.log(budgets)) == pytest.approx(math.log(math.sqrt(low * high)), abs=0.03)
    if text.startswith("uniform"):
        assert np.mean(budgets) == pytest.approx((low + high) / 2, rel=0.02)


def test_workload_budgets_come_from_the_spec():
    qs = generate(WorkloadSpec(rate_rpm=60, duration_s=HOUR, budget="loguniform:5:120"))
    budgets = [q.query.budget_s for q in qs]
    assert min(budgets) >= 5 and max(budgets) <= 120


@pytest.mark.parametrize(
    "text",
    ["", "30", "fixed", "fixed:abc", "uniform:5", "loguniform:0:10", "uniform:50:5", "gamma:1:2"],
)
def test_a_bad_budget_spec_names_the_accepted_forms(text):
    with pytest.raises(ValueError, match=r"fixed:S.*uniform:LOW:HIGH.*loguniform:LOW:HIGH"):
        parse_budget(text)


def test_a_bad_workload_spec_is_refused_early():
    with pytest.raises(ValueError, match="loguniform"):
        WorkloadSpec(rate_rpm=10, duration_s=60, budget="lognormal:3")
    with pytest.raises(ValueError, match="poisson, bursty, diurnal"):
        WorkloadSpec(rate_rpm=10, duration_s=60, arrival="weekly")
    with pytest.raises(ValueError, match="mmlu-pro"):
        WorkloadSpec(rate_rpm=10, duration_s=60, benchmarks=("mmlu",))
    with pytest.raises(ValueError, match="rate_rpm"):
        WorkloadSpec(rate_rpm=0, duration_s=60)

"""Accuracy model: calibrated marginals, depth effects, shared difficulty, realistic topology gains.

Every check samples many queries with z ~ N(0, 1), as a workload does, and
compares with ACCURACY.md ("How to use these in a simulator", A-D).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from inframind.policy.plans import build_plan
from inframind.policy.types import DEPTHS, TASKS, Plan
from inframind.sim.accuracy import (
    CONCISE,
    MAX_OUTPUT_TOKENS,
    MODELS,
    AccuracyModel,
    concise_accuracy,
)
from inframind.sim.workload import Benchmark
from inframind.vocab import Depth, Role, TaskFamily, Topology

pytestmark = pytest.mark.unit

C, F, D = Depth.CONCISE, Depth.FLASH, Depth.DEEPTHINK
N = 6000


@pytest.fixture(scope="module")
def model() -> AccuracyModel:
    return AccuracyModel()


def difficulties(n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


def accuracy(
    model: AccuracyModel,
    plan: Plan,
    agents: Sequence[tuple[str, Depth]],
    bench: Benchmark,
    n: int = N,
    seed: int = 0,
) -> float:
    """Share of n queries a plan answers right; call k of the plan uses agents[k % len]."""
    rng = np.random.default_rng(seed + 1)
    right = 0
    for z in difficulties(n, seed):
        upstream: list[int] = []
        k = 0
        for wave in plan.waves:
            answers = []
            for slot, role in enumerate(wave):
                m, depth = agents[k % len(agents)]
                k += 1
                answers.append(
                    model.step_answer(m, bench, depth, z, role, upstream, rng, slot=slot)
                )
            upstream = answers
        right += model.final_answer(plan, upstream) == 0
    return right / n


SINGLE = build_plan(Topology.SINGLE)


# -- calibration -------------------------------------------------------------------------


@pytest.mark.parametrize("bench", list(Benchmark))
@pytest.mark.parametrize("name", MODELS)
def test_single_calls_reproduce_the_concise_table(model, name, bench):
    got = accuracy(model, SINGLE, [(name, C)], bench, n=8000, seed=3)
    assert got == pytest.approx(concise_accuracy(name, bench), abs=0.015)


def test_code_is_the_mean_of_humaneval_and_mbpp_and_r1_uses_the_capped_row():
    assert concise_accuracy("qwen-coder-14b", Benchmark.CODE) == pytest.approx((0.88 + 0.80) / 2)
    assert CONCISE["r1-32b"][0] == 0.62  # MATH under the 2,048-token cap, not 0.88
    assert concise_accuracy("mistral-24b", Benchmark.MMLU_PRO) == 0.63


def test_p_correct_averages_to_the_marginal_over_difficulty(model):
    z = difficulties(20_000, seed=5)
    for name in MODELS:
        for depth in DEPTHS:
            mean = np.mean([model.p_correct(name, Benchmark.MATH, depth, x) for x in z])
            assert mean == pytest.approx(
                model.marginal_accuracy(name, Benchmark.MATH, depth), abs=0.01
            )


def test_profile_tables_follow_tasks_by_depths_with_per_family_benchmarks(model):
    acc, tokens = model.profile_tables("mistral-24b")
    assert acc.shape == tokens.shape == (len(TASKS), len(DEPTHS))
    concise = DEPTHS.index(C)
    assert acc[TASKS.index(TaskFamily.MATH), concise] == pytest.approx(0.66)
    assert acc[TASKS.index(TaskFamily.KNOWLEDGE), concise] == pytest.approx(0.63)
    assert acc[TASKS.index(TaskFamily.CODE), concise] == pytest.approx((0.84 + 0.72) / 2)
    assert np.all(np.diff(tokens, axis=1) > 0)  # flash < concise < deepthink


# -- depth (section B) ---------------------------------------------------------------------


def test_flash_collapses_math_but_only_dents_code_for_an_obedient_model(model):
    m = "llama-8b"
    obey = 0.9
    math_flash = accuracy(model, SINGLE, [(m, F)], Benchmark.MATH, seed=7)
    assert math_flash == pytest.approx(obey * 0.45 * 0.48 + (1 - obey) * 0.48, abs=0.015)
    gsm_flash = model.marginal_accuracy(m, Benchmark.GSM_HARD, F)
    assert gsm_flash == pytest.approx(obey * 0.55 * 0.55 + (1 - obey) * 0.55)
    mmlu_drop = 0.44 - model.marginal_accuracy(m, Benchmark.MMLU_PRO, F)
    code_drop = 0.69 - model.marginal_accuracy(m, Benchmark.CODE, F)
    assert 0.09 <= mmlu_drop <= 0.15  # -10..-15 pp, diluted by the 10 % that ignore Flash
    assert 0.015 <= code_drop <= 0.05  # -2..-5 pp


def test_deepthink_adds_a_few_points_capped_on_math(model):
    for name in ("mistral-24b", "qwen-coder-14b", "llama-8b", "llama-3b"):
        c = concise_accuracy(name, Benchmark.MATH)
        gain = model.marginal_accuracy(name, Benchmark.MATH, D) - c
        assert 0.02 <= gain <= 0.04 and gain <= (1 - c) * 0.15 + 1e-9
        for bench, low, high in [
            (Benchmark.GSM_HARD, 0.01, 0.03),
            (Benchmark.MMLU_PRO, 0.01, 0.02),
            (Benchmark.CODE, 0.0, 0.02),
        ]:
            gain = model.marginal_accuracy(name, bench, D) - concise_accuracy(name, bench)
            assert low <= gain <= high


def test_r1_ignores_the_depth_prompt(model):
    for bench in Benchmark:
        c = concise_accuracy("r1-32b", bench)
        assert model.marginal_accuracy("r1-32b", bench, D) == pytest.approx(c)
        assert model.marginal_accuracy("r1-32b", bench, F) == pytest.approx(c, abs=0.01)
    _, tokens = model.profile_tables("r1-32b")
    assert tokens[:, DEPTHS.index(F)] == pytest.approx(tokens[:, DEPTHS.index(C)], rel=0.06)


# -- output tokens (section C) -------------------------------------------------------------


def test_r1_math_tokens_average_near_calibration_and_never_pass_the_cap(model):
    rng = np.random.default_rng(11)
    draws = np.array(
        [model.sample_tokens("r1-32b", Benchmark.MATH, C, z, rng) for z in difficulties()]
    )
    assert draws.max() <= MAX_OUTPUT_TOKENS
    # Uncapped mean 2,849 [F2] cut at 2,048: most answers hit the cap.
    assert draws.mean() == pytest.approx(model.mean_tokens("r1-32b", Benchmark.MATH, C), rel=0.03)
    assert 1700 <= draws.mean() <= 2000
    assert np.mean(draws == MAX_OUTPUT_TOKENS) > 0.4


def test_token_draws_match_the_profile_and_grow_with_difficulty(model):
    rng = np.random.default_rng(12)
    z = difficulties()
    for name, bench, depth in [
        ("llama-8b", Benchmark.MATH, C),
        ("mistral-24b", Benchmark.MMLU_PRO, D),
        ("llama-3b", Benchmark.CODE, F),
    ]:
        draws = np.array([model.sample_tokens(name, bench, depth, x, rng) for x in z])
        assert draws.mean() == pytest.approx(model.mean_tokens(name, bench, depth), rel=0.05)
        assert np.corrcoef(z, np.log(draws))[0, 1] > 0.4
    typical = [model.sample_tokens("llama-8b", Benchmark.MATH, C, 0.0, rng) for _ in range(2000)]
    assert np.median(typical) == pytest.approx(180, rel=0.1)  # median of a typical query [E]


# -- shared difficulty ---------------------------------------------------------------------


def test_errors_of_two_agents_on_the_same_query_are_positively_correlated(model):
    rng = np.random.default_rng(13)
    z = difficulties()
    a = [model.step_answer("mistral-24b", Benchmark.MATH, C, x, Role.SOLVER, (), rng) for x in z]
    b = [model.step_answer("llama-8b", Benchmark.MATH, C, x, Role.SOLVER, (), rng) for x in z]
    wrong_a, wrong_b = np.array(a) != 0, np.array(b) != 0
    assert np.corrcoef(wrong_a, wrong_b)[0, 1] > 0.3
    # Wrong answers can agree: the attractor makes majority votes fallible.
    both = wrong_a & wrong_b
    assert np.mean(np.array(a)[both] == np.array(b)[both]) > 0.1


# -- topology gains (section D) --------------------------------------------------------------

STRONG_CODERS = [
    ("qwen-coder-14b", C),  # 0.84
    ("mistral-24b", C),  # 0.78
    ("r1-32b", C),  # 0.735
    ("qwen-coder-14b", D),  # 0.85
    ("mistral-24b", D),  # 0.79
]


@pytest.mark.parametrize("members", [3, 5])
def test_an_ensemble_of_good_models_gains_one_to_four_points_over_its_best_member(model, members):
    agents = STRONG_CODERS[:members]
    plan = build_plan(Topology.ENSEMBLE, agents=members + 1)
    best = max(model.marginal_accuracy(m, Benchmark.CODE, d) for m, d in agents)
    # The aggregator (last call) is the best member again, as in MoA.
    got = accuracy(model, plan, [*agents, ("qwen-coder-14b", C)], Benchmark.CODE, seed=17)
    assert 0.01 <= got - best <= 0.04


def test_the_aggregator_adds_at_most_a_point_over_the_vote_it_judges(model):
    rng = np.random.default_rng(19)
    agents, aggregator = STRONG_CODERS[:3], ("qwen-coder-14b", Benchmark.CODE, C)
    vote = aggregated = 0.0
    for z in difficulties():
        props = [
            model.step_answer(m, Benchmark.CODE, d, z, Role.PROPOSER, (), rng) for m, d in agents
        ]
        leaders = [a for a in set(props) if props.count(a) == max(map(props.count, props))]
        if leaders == [0]:
            vote += 1
        elif 0 in leaders:  # a tie the aggregator breaks with its own skill
            judge = model.p_correct(*aggregator, z)
            vote += judge + (1 - judge) / len(leaders)
        aggregated += model.step_answer(*aggregator, z, Role.AGGREGATOR, props, rng) == 0
    assert -0.005 <= (aggregated - vote) / N <= 0.01


@pytest.mark.parametrize(("name", "bench"), [("mistral-24b", Benchmark.CODE), ("r1-32b", "code")])
def test_debate_of_three_for_two_rounds_gains_three_to_eight_points(model, name, bench):
    bench = Benchmark(bench)
    base = concise_accuracy(name, bench)
    assert 0.7 <= base <= 0.8
    got = accuracy(model, build_plan(Topology.DEBATE, agents=3, rounds=2), [(name, C)], bench)
    assert 0.03 <= got - base <= 0.08


def test_more_debate_rounds_help_a_little(model):
    bench, agents = Benchmark.CODE, [("mistral-24b", C)]
    one = accuracy(model, build_plan(Topology.DEBATE, agents=3, rounds=1), agents, bench)
    two = accuracy(model, build_plan(Topology.DEBATE, agents=3, rounds=2), agents, bench)
    assert 0.0 <= two - one <= 0.03


@pytest.mark.parametrize(
    "agents", [[("mistral-24b", C)], [("mistral-24b", C), ("qwen-coder-14b", C)]]
)
def test_verification_nets_zero_to_three_points(model, agents):
    got = accuracy(model, build_plan(Topology.VERIFY), agents, Benchmark.CODE)
    assert 0.0 <= got - 0.78 <= 0.03


def test_a_chain_moves_toward_a_stronger_drafter(model):
    bench = Benchmark.CODE
    own = concise_accuracy("llama-8b", bench)
    up = concise_accuracy("qwen-coder-14b", bench)
    got = accuracy(
        model, build_plan(Topology.CHAIN, agents=2), [("qwen-coder-14b", C), ("llama-8b", C)], bench
    )
    # Section D: own + 0.3 (upstream - own), here ~+4.5 pp; shared z shrinks it somewhat.
    assert 0.0 < got - own <= 0.3 * (up - own) + 0.015


@pytest.mark.parametrize("bench", list(Benchmark))
def test_no_topology_of_one_model_gains_more_than_eight_points(model, bench):
    plans = [
        build_plan(Topology.DEBATE, agents=3, rounds=2),
        build_plan(Topology.ENSEMBLE, agents=6),
        build_plan(Topology.VERIFY),
        build_plan(Topology.CHAIN, agents=3),
    ]
    for name in ("mistral-24b", "llama-3b"):
        base = concise_accuracy(name, bench)
        for plan in plans:
            got = accuracy(model, plan, [(name, C)], bench, n=3000, seed=23)
            assert got - base <= 0.08, (name, plan.label, got - base)


# -- answers and contract ------------------------------------------------------------------


def test_final_answer_is_a_majority_for_debate_and_the_last_node_otherwise(model):
    debate = build_plan(Topology.DEBATE, agents=3, rounds=1)
    assert model.final_answer(debate, [5, 0, 0]) == 0
    assert model.final_answer(debate, [1, 0, 1]) == 1
    assert model.final_answer(debate, [7, 0, 9]) == 7  # no majority: lowest slot
    assert model.final_answer(build_plan(Topology.VERIFY), [3]) == 3


def test_a_correct_debater_keeps_its_answer_and_a_lone_wrong_one_may_switch(model):
    rng = np.random.default_rng(29)
    args = ("mistral-24b", Benchmark.MATH, C, 0.0, Role.DEBATER)
    assert all(model.step_answer(*args, [0, 1, 1], rng, slot=0) == 0 for _ in range(200))
    switched = np.mean([model.step_answer(*args, [4, 0, 0], rng, slot=0) == 0 for _ in range(4000)])
    assert switched == pytest.approx(0.5, abs=0.03)
    to_wrong = np.mean([model.step_answer(*args, [0, 1, 1], rng, slot=0) == 1 for _ in range(50)])
    assert to_wrong == 0


def test_unknown_models_are_refused_with_the_known_names():
    with pytest.raises(ValueError, match="llama-3b"):
        AccuracyModel(["gpt-9"])

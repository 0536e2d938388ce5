"""The simulator's accuracy model: who answers correctly, with how many tokens, in which topology.

Numbers and rules come from /work/shared/calibration/ACCURACY.md ("How to use
these in a simulator", sections A-D); every marginal below carries its tag
there ([F] sourced, [E] estimate). The core is a shared latent difficulty z per
query: P(correct) = sigmoid(a - b z), with `a` solved so that the average over
z ~ N(0, 1) equals the table value. Because all agents of a query see the same
z, their errors correlate, and ensembles and debate then gain only the few
points the literature reports, without hand-set gain factors.

Answers are integers: 0 is the correct answer, 1 a shared "attractor" wrong
answer (the popular mistake, so that wrong agents can agree), anything larger
a wrong answer nobody else gives.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..policy.types import DEPTHS, TASKS, Plan
from ..vocab import Depth, Role, TaskFamily, Topology
from .workload import Benchmark

MODELS = ("r1-32b", "mistral-24b", "qwen-coder-14b", "llama-8b", "llama-3b")
REASONING = frozenset({"r1-32b"})  # thinks at every depth, ignores the depth prompt

CORRECT = 0
ATTRACTOR = 1

# Section A: single-call pass@1 at Concise depth. R1 uses the 2,048-token-cap row
# (the authors' MaxOutputTokens). Columns: MATH, GSM-Hard, HumanEval, MBPP, MMLU-Pro.
# All cells are [E] anchored on the Table 1 facts named beside them.
CONCISE: dict[str, tuple[float, float, float, float, float]] = {
    # [E] capped row; uncapped MATH 0.88 [F2], MATH-500 94.3 [F1]
    "r1-32b": (0.62, 0.60, 0.75, 0.72, 0.60),
    # [E]; MATH [F4: 70.6], HumanEval [F4: 84.8], MMLU-Pro [F4: 66.3]
    "mistral-24b": (0.66, 0.63, 0.84, 0.72, 0.63),
    # [E]; HumanEval [F6: 89.6], MBPP [F6: 86.2 EvalPlus]
    "qwen-coder-14b": (0.62, 0.60, 0.88, 0.80, 0.48),
    # [E]; MATH [F7: 51.9], GSM-Hard [F8: 56.6], HumanEval [F7: 72.6], MBPP [F7: 72.8],
    # MMLU-Pro [F7: 48.3]
    "llama-8b": (0.48, 0.55, 0.70, 0.68, 0.44),
    # [E]; MATH [F9: 47.3]; the other columns have no published number
    "llama-3b": (0.43, 0.42, 0.55, 0.55, 0.32),
}
# Code queries are HumanEval or MBPP without saying which; the model uses their mean.
_COLUMN = {Benchmark.MATH: (0,), Benchmark.GSM_HARD: (1,), Benchmark.CODE: (2, 3)}
_COLUMN[Benchmark.MMLU_PRO] = (4,)

# Section B: chance that a model obeys a Flash prompt [E]; otherwise it answers as at Concise.
FLASH_COMPLIANCE = {
    "r1-32b": 0.05,
    "mistral-24b": 0.9,
    "qwen-coder-14b": 0.8,
    "llama-8b": 0.9,
    "llama-3b": 0.9,
}
# R1 with thinking actually suppressed [F11, GSM8K on the 7B sibling: 93.2 -> 82.9 at
# ~8.5x fewer tokens]; applied to every benchmark [E].
R1_NO_THINK_DROP = 0.10
R1_NO_THINK_TOKEN_RATIO = 1 / 8

# Section C: output tokens (median, p90) per depth [E]. GSM-Hard uses the GSM8K column
# (same problems, larger numbers) and MMLU-Pro the MMLU column.
_TOKENS_NON_REASONING = {
    Depth.FLASH: {"math": (15, 60), "gsm": (10, 40), "mmlu": (5, 30), "code": (150, 300)},
    Depth.CONCISE: {"math": (180, 400), "gsm": (120, 250), "mmlu": (80, 180), "code": (220, 450)},
    Depth.DEEPTHINK: {
        "math": (550, 1200),
        "gsm": (300, 600),
        "mmlu": (250, 500),
        "code": (400, 800),
    },
}
# R1 at every depth; MATH mean 2,849 uncapped [F2], GSM8K 2,463 on the 7B sibling [F11].
_TOKENS_R1 = {"math": (2500, 5000), "gsm": (1500, 3000), "mmlu": (900, 2000), "code": (2500, 5000)}
_TOKEN_COLUMN = {
    Benchmark.MATH: "math",
    Benchmark.GSM_HARD: "gsm",
    Benchmark.MMLU_PRO: "mmlu",
    Benchmark.CODE: "code",
}
# Same depth, other model [E, weak]: Llama-3B ~1.1x Llama-8B, Mistral ~0.9x.
TOKEN_SCALE = {"mistral-24b": 0.9, "llama-3b": 1.1}
# MaxOutputTokens of every model and depth in the authors' repo [F22].
MAX_OUTPUT_TOKENS = 2048
# Correlation of log length with difficulty [E]: R1 writes ~2.4x more tokens on
# intermediate algebra than on prealgebra [F2], about two standard deviations of z apart.
TOKEN_DIFFICULTY_CORR = 0.7

# Section D. P(correct) = sigmoid(a - b z - c u): z is the query's difficulty shared by
# every agent, u ~ N(0, 1) its difficulty *for one model*, shared by all calls of that
# model on that query (a knowledge gap does not close by asking again), and `a` is solved
# so that the mean over z and u is the table value.
# ACCURACY.md suggests b = 1.5-2.0 and no u [E]. With that, a vote of three 74-84 % models
# beats the best of them by ~7 pp and three samples of one 78 % model beat it by ~11 pp:
# far above the +1..+4 pp SLM-MATRIX measured for MoA [F8] and the +4 pp of a vote of
# three in Du et al. [F-r]. Only steep, mostly shared difficulty brings the votes down to
# those sizes, so b and c below are fitted to section D's checks, not to the b range [E]:
# ensembles of 3-5 such models +2..+4 pp, debate 3x2 of one ~78 % model ~+5 pp, verify
# ~+1.5 pp, no single-model topology above ~+7 pp even for the weakest members.
DIFFICULTY_SLOPE = {
    Benchmark.MATH: 6.0,
    Benchmark.GSM_HARD: 6.0,
    Benchmark.CODE: 6.0,
    Benchmark.MMLU_PRO: 6.0,
}
MODEL_SLOPE = 2.5
# Share of wrong answers that land on the popular wrong answer [E]: 0.3-0.5 for math,
# 0.5 for multiple choice; code has no single answer string, so the low end.
ATTRACTOR_SHARE = {
    Benchmark.MATH: 0.4,
    Benchmark.GSM_HARD: 0.4,
    Benchmark.CODE: 0.3,
    Benchmark.MMLU_PRO: 0.5,
}
# Debate [E, Du et al. F-r]: a wrong debater adopts the answer most of the others hold
# with this chance if that answer is right, and the other if it is wrong.
DEBATE_SWITCH_TO_RIGHT = 0.5
DEBATE_SWITCH_TO_WRONG = 0.2
# Verify [E]: fix a wrong answer with 0.25 x critic accuracy, break a right one with
# 0.05 x (1 - critic accuracy).
VERIFY_FIX = 0.25
VERIFY_BREAK = 0.05
# Chain [E]: final = own + 0.3 (upstream - own): a refiner that would be wrong keeps a
# right draft with ADOPT; one that would be right is talked into a wrong draft with
# MISLED, lower because it was asked to check the draft.
CHAIN_ADOPT = 0.3
CHAIN_MISLED = 0.1
# Ensemble [E]: the aggregator takes the proposers' plurality; on a tie it picks the right
# answer if it could solve the query itself (its own P(correct)), else one at random. Then
# it rescues a right minority answer with this chance times its own accuracy: about +0.5
# pp over the vote, within MoA's "at most +1 pp" (section D).
AGGREGATOR_RESCUE = 0.1

_FRESH_ROLES = frozenset({Role.SOLVER, Role.DRAFTER, Role.PROPOSER})
_FAMILY_BENCHMARK = {
    TaskFamily.MATH: Benchmark.MATH,
    TaskFamily.CODE: Benchmark.CODE,
    TaskFamily.KNOWLEDGE: Benchmark.MMLU_PRO,
}
_BENCHMARKS = tuple(Benchmark)
_Z90 = 1.2815515655446004  # standard normal 90th percentile

# Gauss-Hermite (probabilists') nodes for expectations over z ~ N(0, 1).
_GH_Z, _GH_W = np.polynomial.hermite_e.hermegauss(64)
_GH_W = _GH_W / math.sqrt(2 * math.pi)


def concise_accuracy(model: str, benchmark: Benchmark) -> float:
    """Section A value, the mean of HumanEval and MBPP for code."""
    cols = _COLUMN[benchmark]
    return sum(CONCISE[model][c] for c in cols) / len(cols)


def depth_accuracy(model: str, benchmark: Benchmark, depth: Depth) -> float:
    """Marginal accuracy of a call that actually reasons at `depth` (section B).

    For Flash this is a model that obeys the prompt; compliance is mixed in by
    `AccuracyModel`. Middle of each range in section B.
    """
    c = concise_accuracy(model, benchmark)
    if depth is Depth.CONCISE:
        return c
    if model in REASONING:
        return c - R1_NO_THINK_DROP if depth is Depth.FLASH else c
    if depth is Depth.FLASH:
        match benchmark:
            case Benchmark.MATH:
                return 0.45 * c
            case Benchmark.GSM_HARD:
                return 0.55 * c
            case Benchmark.MMLU_PRO:
                return c - 0.125
            case _:
                return c - 0.035
    match benchmark:  # DeepThink
        case Benchmark.MATH:
            return min(c + 0.03, c + (1 - c) * 0.15)
        case Benchmark.GSM_HARD:
            return min(c + 0.02, c + (1 - c) * 0.15)
        case Benchmark.MMLU_PRO:
            return c + 0.015
        case _:
            return c + 0.01


def _token_params(model: str, benchmark: Benchmark, depth: Depth) -> tuple[float, float]:
    """(mu, sigma) of log output tokens of a call that actually reasons at `depth`."""
    col = _TOKEN_COLUMN[benchmark]
    if model in REASONING:
        median, p90 = _TOKENS_R1[col]
        if depth is Depth.FLASH:
            median, p90 = median * R1_NO_THINK_TOKEN_RATIO, p90 * R1_NO_THINK_TOKEN_RATIO
    else:
        median, p90 = _TOKENS_NON_REASONING[depth][col]
        scale = TOKEN_SCALE.get(model, 1.0)
        median, p90 = median * scale, p90 * scale
    return math.log(median), math.log(p90 / median) / _Z90


def _capped_lognormal_mean(mu: float, sigma: float, cap: float) -> float:
    """E[min(X, cap)] for log X ~ N(mu, sigma^2)."""
    phi = _normal_cdf
    log_cap = math.log(cap)
    below = math.exp(mu + sigma**2 / 2) * phi((log_cap - mu - sigma**2) / sigma)
    return below + cap * (1.0 - phi((log_cap - mu) / sigma))


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _solve_intercepts(targets: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """a with E_z[sigmoid(a - b z)] = target for z ~ N(0, 1), by bisection (monotone in a)."""
    targets = np.clip(targets, 1e-4, 1 - 1e-4)
    lo, hi = np.full(targets.shape, -40.0), np.full(targets.shape, 40.0)
    for _ in range(80):
        mid = (lo + hi) / 2
        mean = (_GH_W / (1 + np.exp(-(mid[..., None] - slopes[..., None] * _GH_Z)))).sum(-1)
        too_high = mean > targets
        hi = np.where(too_high, mid, hi)
        lo = np.where(too_high, lo, mid)
    return (lo + hi) / 2


class AccuracyModel:
    """Correctness and output length of agent steps, per model, benchmark, depth and role."""

    def __init__(self, models: Sequence[str] = MODELS) -> None:
        unknown = [m for m in models if m not in CONCISE]
        if unknown:
            raise ValueError(
                f"no accuracy calibration for {', '.join(unknown)}; known models: "
                + ", ".join(MODELS)
            )
        self.models = tuple(models)
        targets = np.array(
            [[[depth_accuracy(m, b, d) for d in DEPTHS] for b in _BENCHMARKS] for m in self.models]
        )
        # b z + c u is N(0, b^2 + c^2): one quadrature over its standardised value.
        total = [math.hypot(DIFFICULTY_SLOPE[b], MODEL_SLOPE) for b in _BENCHMARKS]
        slopes = np.broadcast_to(np.array(total)[None, :, None], targets.shape)
        a = _solve_intercepts(targets, slopes)
        # Plain floats in dicts: the hot path reads scalars, where numpy indexing is slow.
        self._a: dict[tuple[str, Benchmark, Depth], float] = {}
        self._tok: dict[tuple[str, Benchmark, Depth], tuple[float, float]] = {}
        self._target: dict[tuple[str, Benchmark, Depth], float] = {}
        for i, m in enumerate(self.models):
            for j, b in enumerate(_BENCHMARKS):
                for k, d in enumerate(DEPTHS):
                    self._a[m, b, d] = float(a[i, j, k])
                    self._target[m, b, d] = float(targets[i, j, k])
                    self._tok[m, b, d] = _token_params(m, b, d)
        self._wrong_ids = itertools.count(ATTRACTOR + 1)
        # Per benchmark, the model most accurate in one Concise call (reference_correct).
        self._reference = {
            b: max(self.models, key=lambda m, b=b: self._target[m, b, Depth.CONCISE])
            for b in _BENCHMARKS
        }
        # Keyed by the position in MODELS, so a model's u does not depend on the pool list.
        self._model_key = {m: MODELS.index(m) + 1 for m in self.models}
        # u per (difficulty, model): a query's calls come close together in time.
        self._u: dict[tuple[float, str], float] = {}

    # -- what a policy may know ------------------------------------------------------------

    def marginal_accuracy(self, model: str, benchmark: Benchmark, depth: Depth) -> float:
        """Mean accuracy of one call over queries, Flash compliance included."""
        c = self.compliance(model, depth)
        concise = self._target[model, benchmark, Depth.CONCISE]
        return c * self._target[model, benchmark, depth] + (1 - c) * concise

    def mean_tokens(self, model: str, benchmark: Benchmark, depth: Depth) -> float:
        """Mean output tokens of one call, Flash compliance and the output cap included."""
        c = self.compliance(model, depth)
        obeyed = _capped_lognormal_mean(*self._tok[model, benchmark, depth], MAX_OUTPUT_TOKENS)
        concise = _capped_lognormal_mean(
            *self._tok[model, benchmark, Depth.CONCISE], MAX_OUTPUT_TOKENS
        )
        return c * obeyed + (1 - c) * concise

    def profile_tables(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """accuracy[task, depth] and output_tokens[task, depth] in TASKS x DEPTHS order.

        Per task family: math = MATH, knowledge = MMLU-Pro, code = mean of HumanEval/MBPP.
        """
        acc = np.empty((len(TASKS), len(DEPTHS)))
        tokens = np.empty((len(TASKS), len(DEPTHS)))
        for i, task in enumerate(TASKS):
            bench = _FAMILY_BENCHMARK[task]
            for j, depth in enumerate(DEPTHS):
                acc[i, j] = self.marginal_accuracy(model, bench, depth)
                tokens[i, j] = self.mean_tokens(model, bench, depth)
        return acc, tokens

    @staticmethod
    def compliance(model: str, depth: Depth) -> float:
        """Chance that a call reasons at the requested depth (only Flash is ever ignored)."""
        return FLASH_COMPLIANCE[model] if depth is Depth.FLASH else 1.0

    # -- one call ----------------------------------------------------------------------------

    def p_correct(self, model: str, benchmark: Benchmark, depth: Depth, difficulty: float) -> float:
        """P(correct) of one call on a query of this difficulty, Flash compliance mixed in."""
        b = DIFFICULTY_SLOPE[benchmark] * difficulty
        u = self._u.get((difficulty, model))
        if u is None:
            if len(self._u) > _U_CACHE:
                self._u.clear()
            u = self._u[difficulty, model] = _model_difficulty(difficulty, self._model_key[model])
        b += MODEL_SLOPE * u
        p = _sigmoid(self._a[model, benchmark, depth] - b)
        if depth is Depth.FLASH:
            c = FLASH_COMPLIANCE[model]
            p = c * p + (1 - c) * _sigmoid(self._a[model, benchmark, Depth.CONCISE] - b)
        return p

    def sample_tokens(
        self,
        model: str,
        benchmark: Benchmark,
        depth: Depth,
        difficulty: float,
        rng: np.random.Generator,
    ) -> int:
        """Output tokens of one call: lognormal, longer on harder queries, cut at the cap."""
        if depth is Depth.FLASH and rng.random() >= FLASH_COMPLIANCE[model]:
            depth = Depth.CONCISE
        mu, sigma = self._tok[model, benchmark, depth]
        rho = TOKEN_DIFFICULTY_CORR
        x = rho * difficulty + math.sqrt(1 - rho * rho) * rng.standard_normal()
        return max(1, min(MAX_OUTPUT_TOKENS, round(math.exp(mu + sigma * x))))

    def token_samples(
        self,
        model: str,
        benchmark: Benchmark,
        depth: Depth,
        difficulty: float,
        rng: np.random.Generator,
        n: int,
    ) -> np.ndarray:
        """`n` draws of `sample_tokens` for one query at once (float array), for replays."""
        mu, sigma = self._tok[model, benchmark, depth]
        if depth is Depth.FLASH:
            # A model that ignores the Flash instruction answers as at Concise.
            obeys = rng.random(n) < FLASH_COMPLIANCE[model]
            mu_c, sigma_c = self._tok[model, benchmark, Depth.CONCISE]
            mu, sigma = np.where(obeys, mu, mu_c), np.where(obeys, sigma, sigma_c)
        rho = TOKEN_DIFFICULTY_CORR
        x = rho * difficulty + math.sqrt(1 - rho * rho) * rng.standard_normal(n)
        return np.clip(np.rint(np.exp(mu + sigma * x)), 1, MAX_OUTPUT_TOKENS)

    def step_answer(
        self,
        model: str,
        benchmark: Benchmark,
        depth: Depth,
        difficulty: float,
        role: Role,
        upstream: Sequence[int],
        rng: np.random.Generator,
        *,
        slot: int = 0,
    ) -> int:
        """The answer of one agent step: 0 = correct, otherwise the id of a wrong answer.

        `upstream` is the previous wave's answers in slot order; a debater's own
        previous answer is `upstream[slot]`.
        """
        if role in _FRESH_ROLES or not upstream:
            return self._fresh(model, benchmark, depth, difficulty, rng)
        match role:
            case Role.DEBATER:
                return self._debate(upstream, slot, rng)
            case Role.REFINER:
                return self._refine(model, benchmark, depth, difficulty, upstream[-1], rng)
            case Role.VERIFIER:
                return self._verify(model, benchmark, depth, difficulty, upstream[-1], rng)
            case Role.AGGREGATOR:
                return self._aggregate(model, benchmark, depth, difficulty, upstream, rng)
            case _:  # pragma: no cover - every role is handled above
                return self._fresh(model, benchmark, depth, difficulty, rng)

    def final_answer(self, plan: Plan, last_wave: Sequence[int]) -> int:
        """The pipeline's answer from its last wave: a majority vote for debate, else the
        last node's answer. Vote ties go to the lowest slot."""
        if plan.topology is Topology.DEBATE or len(last_wave) > 1:
            return _plurality(last_wave)
        return last_wave[0]

    def expected_correct(
        self,
        plan: Plan,
        trail: Sequence[Sequence[tuple[str, Depth]]],
        benchmark: Benchmark,
        difficulty: float,
        samples: int,
        rng: np.random.Generator,
    ) -> float:
        """P(the pipeline's answer is right) for a query of this difficulty, given the
        (model, depth) of every step of every wave: exact for one fresh step, else the
        share of `samples` replays of the answers (a vote or a judge has no closed form)."""
        if len(trail) == 1 and len(trail[0]) == 1:
            (model, depth) = trail[0][0]
            return self.p_correct(model, benchmark, depth, difficulty)
        right = 0
        for _ in range(samples):
            answers: list[int] = []
            for roles, choices in zip(plan.waves, trail, strict=True):
                answers = [
                    self.step_answer(
                        model, benchmark, depth, difficulty, role, answers, rng, slot=slot
                    )
                    for slot, (role, (model, depth)) in enumerate(zip(roles, choices, strict=True))
                ]
            right += self.final_answer(plan, answers) == CORRECT
        return right / samples

    def reference_correct(self, benchmark: Benchmark, difficulty: float) -> float:
        """P(correct) of one Concise call to the pool most accurate on this benchmark.

        A yardstick of how hard this query is, in the same units as `expected_correct`,
        that depends on the query and never on what a policy chose: a training reward can
        subtract it (a baseline) without biasing the policy gradient."""
        return self.p_correct(self._reference[benchmark], benchmark, Depth.CONCISE, difficulty)

    # -- rules -----------------------------------------------------------------------------

    def _wrong(self, benchmark: Benchmark, rng: np.random.Generator) -> int:
        if rng.random() < ATTRACTOR_SHARE[benchmark]:
            return ATTRACTOR
        return next(self._wrong_ids)

    def _fresh(
        self,
        model: str,
        benchmark: Benchmark,
        depth: Depth,
        difficulty: float,
        rng: np.random.Generator,
    ) -> int:
        if rng.random() < self.p_correct(model, benchmark, depth, difficulty):
            return CORRECT
        return self._wrong(benchmark, rng)

    def _debate(self, upstream: Sequence[int], slot: int, rng: np.random.Generator) -> int:
        own = upstream[slot]
        if own == CORRECT:
            return own
        # The answer most of the *other* debaters hold; ties broken at random.
        counts = Counter(a for i, a in enumerate(upstream) if i != slot)
        if not counts:
            return own
        top = max(counts.values())
        leaders = [a for a, c in counts.items() if c == top]
        lead = leaders[0] if len(leaders) == 1 else leaders[int(rng.integers(len(leaders)))]
        if lead == own:
            return own
        switch = DEBATE_SWITCH_TO_RIGHT if lead == CORRECT else DEBATE_SWITCH_TO_WRONG
        return lead if rng.random() < switch else own

    def _refine(
        self,
        model: str,
        benchmark: Benchmark,
        depth: Depth,
        difficulty: float,
        draft: int,
        rng: np.random.Generator,
    ) -> int:
        own = self._fresh(model, benchmark, depth, difficulty, rng)
        if own == draft:
            return own
        keep = CHAIN_ADOPT if draft == CORRECT else CHAIN_MISLED if own == CORRECT else 0.0
        return draft if keep and rng.random() < keep else own

    def _verify(
        self,
        model: str,
        benchmark: Benchmark,
        depth: Depth,
        difficulty: float,
        answer: int,
        rng: np.random.Generator,
    ) -> int:
        critic = self.p_correct(model, benchmark, depth, difficulty)
        if answer == CORRECT:
            broken = rng.random() < VERIFY_BREAK * (1 - critic)
            return self._wrong(benchmark, rng) if broken else CORRECT
        return CORRECT if rng.random() < VERIFY_FIX * critic else answer

    def _aggregate(
        self,
        model: str,
        benchmark: Benchmark,
        depth: Depth,
        difficulty: float,
        proposals: Sequence[int],
        rng: np.random.Generator,
    ) -> int:
        counts = Counter(proposals)
        top = max(counts.values())
        leaders = [a for a, c in counts.items() if c == top]
        judge = self.p_correct(model, benchmark, depth, difficulty)
        if len(leaders) == 1:
            vote = leaders[0]
        elif CORRECT in leaders and rng.random() < judge:
            vote = CORRECT  # a tie: a judge who can solve the query recognises the right one
        else:
            vote = leaders[int(rng.integers(len(leaders)))]
        if vote != CORRECT and CORRECT in counts and rng.random() < AGGREGATOR_RESCUE * judge:
            return CORRECT
        return vote


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


_MASK = (1 << 64) - 1
_U_CACHE = 1 << 16


def _model_difficulty(difficulty: float, key: int) -> float:
    """u ~ N(0, 1) of one (query, model) pair, a pure function of both.

    The query is known here only by its difficulty, a continuous draw that no two
    queries share; hashing it with the model gives every call of that model on
    that query the same u without per-query state (tuple hash of a float and an
    int is stable across processes; two multiply-xorshift rounds, then Box-Muller).
    """
    x = (hash((difficulty, key)) * 0x9E3779B97F4A7C15) & _MASK
    x ^= x >> 32
    x = (x * 0xD6E8FEB86659FD93) & _MASK
    x ^= x >> 32
    u1 = ((x >> 32) + 0.5) * _2_POW_M32
    u2 = (x & 0xFFFFFFFF) * _2_POW_M32
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


_2_POW_M32 = 2.0**-32


def _plurality(answers: Sequence[int]) -> int:
    counts = Counter(answers)
    top = max(counts.values())
    return next(a for a in answers if counts[a] == top)

"""Synthetic workloads: when queries arrive, from which benchmark, how hard, with what budget.

Arrivals are Poisson (the INFRAMIND authors' setting, ACCURACY.md Table 4),
bursty (a two-state Markov-modulated Poisson process) or diurnal (a sinusoidal
rate); all three have the same mean rate, so they differ only in how the load
is spread in time. Every random quantity comes from its own child stream of
one seed, so changing the budget spec never moves an arrival, and vice versa.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from ..policy.types import Query
from ..vocab import TaskFamily


class Benchmark(StrEnum):
    MATH = "math"
    GSM_HARD = "gsm-hard"
    CODE = "code"  # HumanEval / MBPP
    MMLU_PRO = "mmlu-pro"

    @property
    def family(self) -> TaskFamily:
        return _FAMILY[self]


_FAMILY = {
    Benchmark.MATH: TaskFamily.MATH,
    Benchmark.GSM_HARD: TaskFamily.MATH,
    Benchmark.CODE: TaskFamily.CODE,
    Benchmark.MMLU_PRO: TaskFamily.KNOWLEDGE,
}

# Median prompt tokens per benchmark [E: typical problem statement plus the role
# and depth instructions]; lognormal spread with PROMPT_SIGMA around it.
PROMPT_MEDIAN = {
    Benchmark.MATH: 150,
    Benchmark.GSM_HARD: 120,
    Benchmark.CODE: 250,  # signature + docstring + tests of HumanEval/MBPP
    Benchmark.MMLU_PRO: 350,  # question + 10 options
}
PROMPT_SIGMA = 0.35
PROMPT_MIN = 16

# Bursty arrivals [E]: two states, the high one at 4x the low one, equal mean
# sojourn, so each state holds half the time and the mean rate is preserved:
# low = 0.4 x rate, high = 1.6 x rate.
BURST_RATIO = 4.0
BURST_SOJOURN_S = 120.0
# Diurnal arrivals [E]: rate(t) = mean x (1 - A cos(2 pi t / duration)), i.e. one
# compressed "day" over the run, trough at the ends, peak in the middle.
DIURNAL_AMPLITUDE = 0.5

ARRIVALS = ("poisson", "bursty", "diurnal")
BUDGET_FORMS = "'fixed:S', 'uniform:LOW:HIGH' or 'loguniform:LOW:HIGH' (seconds, 0 < LOW <= HIGH)"


@dataclass(frozen=True, slots=True)
class SimQuery:
    """A query as the simulator knows it: the policy-visible part plus hidden truth."""

    query: Query
    benchmark: Benchmark
    difficulty: float  # latent z ~ N(0, 1), shared by every agent answering this query


@dataclass(frozen=True, slots=True)
class BudgetDist:
    """A per-query latency budget distribution, parsed from a spec like 'loguniform:10:60'."""

    kind: str
    low: float
    high: float

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        match self.kind:
            case "fixed":
                return np.full(n, self.low)
            case "uniform":
                return rng.uniform(self.low, self.high, n)
            case _:  # loguniform
                return np.exp(rng.uniform(math.log(self.low), math.log(self.high), n))

    def __call__(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.sample(rng, n)


def parse_budget(text: str) -> BudgetDist:
    """Parse a budget spec; a bad one raises ValueError naming the accepted forms."""
    parts = str(text).strip().lower().split(":")
    kind, args = parts[0], parts[1:]
    want = {"fixed": 1, "uniform": 2, "loguniform": 2}
    if kind not in want or len(args) != want[kind]:
        raise ValueError(f"bad budget spec {text!r}: use {BUDGET_FORMS}")
    try:
        values = [float(a) for a in args]
    except ValueError:
        msg = f"bad budget spec {text!r}: numbers expected; use {BUDGET_FORMS}"
        raise ValueError(msg) from None
    low, high = values[0], values[-1]
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 or high < low:
        raise ValueError(f"bad budget spec {text!r}: need 0 < LOW <= HIGH; use {BUDGET_FORMS}")
    return BudgetDist(kind, low, high)


@dataclass(frozen=True)
class WorkloadSpec:
    rate_rpm: float
    duration_s: float
    arrival: str = "poisson"  # poisson | bursty | diurnal
    benchmarks: tuple[Benchmark, ...] = tuple(Benchmark)
    budget: str = "loguniform:10:60"
    seed: int = 0
    _budget: BudgetDist = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.rate_rpm > 0 and self.duration_s > 0):
            raise ValueError("a workload needs rate_rpm > 0 and duration_s > 0")
        if self.arrival not in ARRIVALS:
            raise ValueError(f"unknown arrival {self.arrival!r}: use one of {', '.join(ARRIVALS)}")
        try:
            benchmarks = tuple(Benchmark(b) for b in self.benchmarks)
        except ValueError:
            names = ", ".join(b.value for b in Benchmark)
            raise ValueError(f"unknown benchmark in {self.benchmarks!r}: use {names}") from None
        if not benchmarks:
            raise ValueError("a workload needs at least one benchmark")
        object.__setattr__(self, "benchmarks", benchmarks)
        object.__setattr__(self, "_budget", parse_budget(self.budget))


def generate(spec: WorkloadSpec) -> list[SimQuery]:
    """All queries of a workload, sorted by arrival, with ids 0..n-1."""
    arrivals_ss, content_ss, budget_ss = np.random.SeedSequence(spec.seed).spawn(3)
    times = _ARRIVAL_PROCESSES[spec.arrival](
        np.random.default_rng(arrivals_ss), spec.rate_rpm / 60.0, spec.duration_s
    )
    n = len(times)
    rng = np.random.default_rng(content_ss)
    which = rng.integers(0, len(spec.benchmarks), n)
    spread = rng.standard_normal(n)
    difficulty = rng.standard_normal(n)
    budgets = spec._budget.sample(np.random.default_rng(budget_ss), n)
    out = []
    for i in range(n):
        bench = spec.benchmarks[which[i]]
        prompt = max(PROMPT_MIN, round(PROMPT_MEDIAN[bench] * math.exp(PROMPT_SIGMA * spread[i])))
        query = Query(
            id=i,
            task=bench.family,
            budget_s=float(budgets[i]),
            arrival_s=float(times[i]),
            prompt_tokens=int(prompt),
        )
        out.append(SimQuery(query=query, benchmark=bench, difficulty=float(difficulty[i])))
    return out


def _poisson(rng: np.random.Generator, rate_s: float, duration_s: float) -> np.ndarray:
    # Given the count, Poisson arrival times are iid uniform: one vectorised draw.
    n = rng.poisson(rate_s * duration_s)
    return np.sort(rng.uniform(0.0, duration_s, n))


def _bursty(rng: np.random.Generator, rate_s: float, duration_s: float) -> np.ndarray:
    low = 2.0 * rate_s / (1.0 + BURST_RATIO)
    rates = (low, BURST_RATIO * low)
    state = int(rng.random() < 0.5)
    t, chunks = 0.0, []
    while t < duration_s:
        end = min(duration_s, t + rng.exponential(BURST_SOJOURN_S))
        chunks.append(rng.uniform(t, end, rng.poisson(rates[state] * (end - t))))
        t, state = end, 1 - state
    return np.sort(np.concatenate(chunks)) if chunks else np.empty(0)


def _diurnal(rng: np.random.Generator, rate_s: float, duration_s: float) -> np.ndarray:
    # Thinning: candidates at the peak rate, each kept with probability rate(t) / peak.
    peak = rate_s * (1.0 + DIURNAL_AMPLITUDE)
    cand = _poisson(rng, peak, duration_s)
    rate = rate_s * (1.0 - DIURNAL_AMPLITUDE * np.cos(2.0 * np.pi * cand / duration_s))
    return cand[rng.random(len(cand)) < rate / peak]


_ARRIVAL_PROCESSES: dict[str, Callable[[np.random.Generator, float, float], np.ndarray]] = {
    "poisson": _poisson,
    "bursty": _bursty,
    "diurnal": _diurnal,
}

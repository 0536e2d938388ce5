"""The vLLM cluster model: queueing theory, conservation, priorities, calibration."""

from __future__ import annotations

import math
import random

import pytest

from inframind.sim.calibration import (
    MODEL_ORDER,
    MODELS,
    engine_calibrations,
    pool_profiles,
)
from inframind.sim.cluster import Cluster, ExpService, SimCall

pytestmark = pytest.mark.unit


def _poisson_run(cluster: Cluster, rate: float, n: int, seed: int) -> list[SimCall]:
    rng = random.Random(seed)
    t, calls = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        cluster.advance(t)
        call = SimCall(i, 0, 10, 10, None)
        cluster.submit(call)
        calls.append(call)
    cluster.drain()
    return calls


def _station(mu: float, servers: int, seed: int) -> Cluster:
    return Cluster(pools=["llama-8b"], service=ExpService(1 / mu, servers, seed))


def _mean_wait(calls: list[SimCall]) -> float:
    return sum(c.started_s - c.submitted_s for c in calls) / len(calls)


def _erlang_c_wait(lam: float, mu: float, c: int) -> float:
    a = lam / mu
    rho = a / c
    top = a**c / math.factorial(c) / (1 - rho)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return p_wait / (c * mu - lam)


def test_unbatched_exponential_server_matches_mm1_wait():
    lam, mu = 0.6, 1.0
    waits = [_mean_wait(_poisson_run(_station(mu, 1, s), lam, 20_000, s)) for s in range(3)]
    expected = lam / (mu * (mu - lam))  # Wq = rho / (mu - lambda)
    assert sum(waits) / len(waits) == pytest.approx(expected, rel=0.05)


def test_c_exponential_servers_match_erlang_c_wait():
    lam, mu, c = 2.1, 1.0, 3
    waits = [_mean_wait(_poisson_run(_station(mu, c, s), lam, 20_000, s)) for s in range(3)]
    assert sum(waits) / len(waits) == pytest.approx(_erlang_c_wait(lam, mu, c), rel=0.06)


def test_every_call_finishes_even_when_kv_runs_out():
    cluster = Cluster(pools=["llama-8b"], kv_blocks=120)  # 1,920 tokens of KV
    calls = [SimCall(i, 0, 150 + 10 * i, 300, priority=i) for i in range(40)]
    for call in calls:
        cluster.submit(call)
    finished = cluster.drain()
    assert sorted(c.id for c in finished) == list(range(40))
    assert all(c.finished_s is not None and c.first_token_s <= c.finished_s for c in calls)
    assert cluster.preemptions > 0
    assert sum(c.preemptions for c in calls) == cluster.preemptions
    assert cluster.idle() and cluster.loads()[0].kv_usage == 0


def test_preemption_hits_the_lowest_priority_running_call():
    cluster = Cluster(pools=["llama-8b"], kv_blocks=80, scheduler_priority=True)
    urgent = [SimCall(i, 0, 200, 400, priority=10) for i in range(2)]
    relaxed = [SimCall(10 + i, 0, 200, 400, priority=1000) for i in range(2)]
    for call in relaxed + urgent:
        cluster.submit(call)
    cluster.drain()
    assert sum(c.preemptions for c in urgent) == 0
    assert sum(c.preemptions for c in relaxed) > 0


def _contended(priority_scheduling: bool) -> tuple[SimCall, SimCall]:
    cluster = Cluster(pools=["llama-8b"], scheduler_priority=priority_scheduling, max_num_seqs=1)
    cluster.submit(SimCall(0, 0, 100, 200, priority=500))  # occupies the only slot
    late = SimCall(1, 0, 100, 200, priority=900)
    urgent = SimCall(2, 0, 100, 200, priority=100)
    cluster.advance(0.01)
    cluster.submit(late)
    cluster.advance(0.02)
    cluster.submit(urgent)
    cluster.drain()
    return late, urgent


def test_lower_priority_value_is_served_first_under_contention():
    late, urgent = _contended(priority_scheduling=True)
    assert urgent.finished_s < late.finished_s


def test_fcfs_ignores_priority():
    late, urgent = _contended(priority_scheduling=False)
    assert late.finished_s < urgent.finished_s


def test_lone_call_takes_prefill_plus_decode_from_the_calibration():
    for cal in engine_calibrations("b200x2"):
        cluster = Cluster(pools=[cal.model])
        call = SimCall(0, 0, 700, 333, None)
        cluster.submit(call)
        cluster.drain()
        n = 333
        by_hand = (
            700 * cal.p_s + n * (cal.a_s + cal.b_s + cal.c_s * 700) + cal.c_s * n * (n - 1) / 2
        )
        assert call.finished_s == pytest.approx(by_hand, rel=1e-9)
        assert call.first_token_s == pytest.approx(700 * cal.p_s + cal.decode_step_s(1, 700))
        assert call.finished_s == pytest.approx(cal.lone_call_s(700, 333))


# Authors' rough per-call ranges (SERVING.md §3, ACCURACY.md Table 4).
BANDS = {
    "r1-32b": (3, 8),
    "mistral-24b": (2, 5),
    "qwen-coder-14b": (1, 4),
    "llama-8b": (0.5, 3),
    "llama-3b": (0.5, 2),
}
# ~400 output tokens (Concise p90 / DeepThink median on math, ACCURACY.md §C),
# scaled by the per-model length factors there.
LENGTH = {"mistral-24b": 0.9, "llama-3b": 1.1}


@pytest.mark.parametrize("model", MODEL_ORDER)
def test_lone_call_latency_falls_in_the_authors_band(model):
    cluster = Cluster(pools=[model])
    call = SimCall(0, 0, 200, round(400 * LENGTH.get(model, 1.0)), None)
    cluster.submit(call)
    cluster.drain()
    low, high = BANDS[model]
    assert low <= call.latency_s <= high


def test_colocated_engines_slow_each_other():
    a = Cluster(pools=["llama-8b"])
    a.submit(SimCall(0, 0, 200, 400, None))
    lone = a.drain()[0].latency_s
    s = Cluster(pools=["llama-8b", "llama-3b"])  # both on GPU1 of b200x2
    first = SimCall(0, 0, 200, 400, None)
    s.submit(first)
    s.submit(SimCall(1, 1, 200, 400, None))
    s.drain()
    assert first.latency_s > 1.3 * lone


def test_loads_report_queue_running_and_kv():
    cluster = Cluster(pools=["r1-32b"])
    for i in range(40):
        cluster.submit(SimCall(i, 0, 300, 500, None))
    cluster.advance(1.0)
    load = cluster.loads()[0]
    assert load.running == 32 and load.waiting == 8
    assert 0 < load.kv_usage <= 1
    assert load.latency_s is None
    cluster.drain()
    assert cluster.loads()[0].latency_s > 0


def test_profiles_share_the_simulator_calibration():
    profiles = pool_profiles("b200x2")
    assert [p.name for p in profiles] == list(MODEL_ORDER)
    cals = {c.model: c for c in engine_calibrations("b200x2")}
    for prof in profiles:
        assert prof.tpot_s == pytest.approx(cals[prof.name].decode_step_s(1, 1000))
        assert prof.max_running == 32
    assert max(p.cost for p in profiles) == 1.0
    assert profiles[0].flash_compliance == MODELS["r1-32b"].flash_compliance
    h100 = pool_profiles("h100x8")
    assert {p.name: p.replicas for p in h100}["r1-32b"] == 2


def test_replicas_share_the_load():
    cluster = Cluster("h100x8", pools=["r1-32b"])
    for i in range(40):
        cluster.submit(SimCall(i, 0, 300, 200, None))
    cluster.advance(0.5)
    assert cluster.loads()[0].running == 40

"""The engine model's aggregate bookkeeping reproduces the plain per-sequence version exactly.

`inframind.sim.cluster._Engine` derives each decoder's context from one step
counter and counts block needs by residue class instead of stepping through
its batch; `tests/support/sim_reference.py` is the version that visits every
sequence. Fed the same calls — small KV caches that force preemption, small
token budgets that force chunked prefill, prompts on block boundaries,
co-located engines that truncate each other's segments — both must produce
the same times to the last bit, in the same order.
"""

from __future__ import annotations

import random

import pytest

import inframind.sim.cluster as cluster_mod
from inframind.sim.cluster import Cluster, SimCall
from support.sim_reference import ReferenceEngine

pytestmark = pytest.mark.unit


def _clusters(monkeypatch: pytest.MonkeyPatch, **overrides) -> tuple[Cluster, Cluster]:
    fast = Cluster("b200x2", **overrides)
    with monkeypatch.context() as m:
        m.setattr(cluster_mod, "_Engine", ReferenceEngine)
        plain = Cluster("b200x2", **overrides)
    assert (
        type(plain._engines[0]) is ReferenceEngine and type(fast._engines[0]) is not ReferenceEngine
    )
    return fast, plain


def _calls(rng: random.Random, n: int, pools: int, max_tokens: int) -> list[tuple[float, SimCall]]:
    t, out = 0.0, []
    rate = rng.choice([0.5, 2.0, 8.0, 30.0])
    for i in range(n):
        t += rng.expovariate(rate)
        prompt = rng.choice([16 * rng.randint(1, 40), rng.randint(1, 700)])
        output = rng.choice([1, 2, 15, 16, 17, rng.randint(1, 900)])
        prompt = max(1, min(prompt, max_tokens - output - 2))
        prio = rng.choice([None, rng.randint(0, 5)])
        out.append((t, SimCall(i, rng.randrange(pools), prompt, output, prio)))
    return out


def _timeline(c: SimCall) -> tuple:
    return (c.submitted_s, c.started_s, c.first_token_s, c.finished_s, c.preemptions)


@pytest.mark.parametrize("seed", range(12))
def test_fast_engine_equals_the_per_sequence_reference(monkeypatch, seed):
    rng = random.Random(seed)
    kv = rng.choice([None, 60, 120, 400])
    overrides = {
        "kv_blocks": kv,
        "max_num_seqs": rng.choice([None, 3, 8, 24]),
        "max_num_batched_tokens": rng.choice([None, 64, 300, 2048]),
        "colocation": rng.random() < 0.8,
    }
    fast, plain = _clusters(monkeypatch, **overrides)
    max_tokens = (kv or 4000) * 16 if kv is None or kv * 16 < 4000 else 4000
    workload = _calls(rng, 600, len(fast.pool_names), max_tokens)
    twins = [
        (c, SimCall(c.id, c.pool, c.prompt_tokens, c.output_tokens, c.priority))
        for _, c in workload
    ]

    for (t, _), (a, b) in zip(workload, twins, strict=True):
        done_fast = [c.id for c in fast.advance(t)]
        done_plain = [c.id for c in plain.advance(t)]
        assert done_fast == done_plain
        assert fast.loads() == plain.loads()
        fast.submit(a)
        plain.submit(b)
        assert fast.next_event_time() == plain.next_event_time()
    assert [c.id for c in fast.drain()] == [c.id for c in plain.drain()]

    assert [_timeline(a) for a, _ in twins] == [_timeline(b) for _, b in twins]
    assert fast.events == plain.events and fast.now == plain.now
    assert fast.preemptions == plain.preemptions
    assert fast.idle() and fast.loads() == plain.loads()
    if kv == 60:
        assert fast.preemptions > 0  # the small caches did exercise preemption

"""The gateway's per-endpoint slot queue: at most max_num_seqs calls sent to an engine,
the rest held and let through lowest key (earliest deadline) first."""

from __future__ import annotations

import asyncio

import pytest

from inframind.orchestrator.engine import TooSlow
from inframind.orchestrator.slots import NoSlotInTime, SlotQueue

pytestmark = pytest.mark.unit

URL = "http://127.0.0.1:9"


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_endpoint_with_no_known_slot_count_is_not_gated():
    q = SlotQueue()
    waited = [await q.acquire(URL, key=1, timeout_s=0.01) for _ in range(100)]
    assert waited == [0.0] * 100 and q.busy(URL) == 100 and q.queued(URL) == 0


async def test_calls_beyond_the_slots_wait_and_go_earliest_deadline_first():
    q = SlotQueue()
    q.configure({URL: 2})
    assert await q.acquire(URL, key=50, timeout_s=1) == 0.0
    assert await q.acquire(URL, key=60, timeout_s=1) == 0.0
    order: list[int] = []

    async def call(key: int) -> None:
        await q.acquire(URL, key=key, timeout_s=10)
        order.append(key)

    # Arriving loose-first: the queue, not arrival, decides who goes next.
    tasks = [asyncio.create_task(call(k)) for k in (30, 20, 10)]
    await _settle()
    assert order == [] and q.queued(URL) == 3 and q.busy(URL) == 2
    q.release(URL)
    await _settle()
    assert order == [10]
    q.release(URL)
    q.release(URL)
    await asyncio.gather(*tasks)
    assert order == [10, 20, 30] and q.busy(URL) == 2 and q.queued(URL) == 0


async def test_a_call_that_waits_too_long_gives_up_with_a_reason_and_leaves_the_queue():
    q = SlotQueue()
    q.configure({URL: 1})
    await q.acquire(URL, key=1, timeout_s=1)
    with pytest.raises(NoSlotInTime, match="all 1 batch slots stayed busy") as err:
        await q.acquire(URL, key=2, timeout_s=0.05)
    # Slow for this budget, not broken: the runner retries elsewhere without opening
    # the endpoint's breaker.
    assert isinstance(err.value, TooSlow) and err.value.endpoint == URL
    assert q.queued(URL) == 0
    q.release(URL)  # nobody to hand the slot to: it is free again
    assert q.busy(URL) == 0
    assert await q.acquire(URL, key=3, timeout_s=0.05) == 0.0


async def test_a_cancelled_waiter_never_keeps_a_slot():
    q = SlotQueue()
    q.configure({URL: 1})
    await q.acquire(URL, key=1, timeout_s=1)
    waiter = asyncio.create_task(q.acquire(URL, key=2, timeout_s=10))
    await _settle()
    q.release(URL)  # the slot is handed to the waiter...
    waiter.cancel()  # ...which is cancelled (its client went away) before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert q.busy(URL) == 0 and q.queued(URL) == 0
    assert await q.acquire(URL, key=3, timeout_s=0.05) == 0.0


async def test_raising_the_limit_lets_waiters_through_and_removing_it_ungates():
    q = SlotQueue()
    q.configure({URL: 1})
    await q.acquire(URL, key=1, timeout_s=1)
    waiters = [asyncio.create_task(q.acquire(URL, key=k, timeout_s=10)) for k in (2, 3, 4)]
    await _settle()
    q.configure({URL: 3})  # a config reload: the pool got more slots
    await _settle()
    assert sum(w.done() for w in waiters) == 2 and q.queued(URL) == 1
    q.configure({})  # no known slot count any more: nothing is held back
    await asyncio.gather(*waiters)
    assert q.busy(URL) == 4 and q.queued(URL) == 0


async def test_many_loose_calls_timing_out_in_a_long_overload_do_not_pile_up():
    q = SlotQueue()
    q.configure({URL: 1})
    await q.acquire(URL, key=0, timeout_s=1)
    tight = asyncio.create_task(q.acquire(URL, key=-1, timeout_s=10))
    await _settle()
    for i in range(300):  # each gives up deep in the queue, behind the tight one
        with pytest.raises(NoSlotInTime):
            await q.acquire(URL, key=1000 + i, timeout_s=0.001)
    assert q.queued(URL) == 1
    assert len(q._waiting[URL]) <= 2 * 1 + 64 + 1  # rebuilt along the way, not 301
    q.release(URL)
    await tight
    assert q.queued(URL) == 0 and q.busy(URL) == 1

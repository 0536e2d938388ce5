"""Batch slots per endpoint, handed out earliest deadline first.

vLLM orders its waiting queue by `priority`, but it never preempts a running
call for a tighter one, and under overload its API server spends the cores on
hundreds of open requests that will mostly time out. So when the gateway knows
how many sequences an endpoint runs at once (the pool's `max_num_seqs`), it
sends at most that many calls there and holds the rest here, in priority order
(the deadline under EDF, arrival under FCFS): a tight call then waits for the
next slot to free, not behind every loose call already sent, and a call that
gives up while queued never cost the engine anything.

Endpoints with no known slot count are not gated: their calls go straight out,
and vLLM's own queue orders them, as before.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Mapping

from .engine import TooSlow


class NoSlotInTime(TooSlow):
    """Every batch slot of the endpoint stayed busy for as long as the step could wait."""


class SlotQueue:
    """Per-endpoint counting semaphore whose waiters are served lowest key first."""

    def __init__(self) -> None:
        self._limit: dict[str, int] = {}
        self._busy: dict[str, int] = {}
        # url -> heap of (key, arrival, future); a future that is done has left.
        self._waiting: dict[str, list[tuple[float, int, asyncio.Future[None]]]] = {}
        self._queued: dict[str, int] = {}  # live waiters per url
        self._arrivals = itertools.count()
        # Steps of admitted queries created as tasks that have not run yet, so hold and
        # wait for no slot: load that admission must count before any endpoint sees it
        # (Runner.run). Kept here, not per runner, as it outlives config reloads too.
        self.pending = 0

    def configure(self, limits: Mapping[str, int]) -> None:
        """Slots per endpoint URL; an endpoint left out is no longer gated. Calls already
        sent keep their slots; waiters go through at once if the new limits allow."""
        self._limit = dict(limits)
        for url in list(self._waiting):
            self._hand_over(url)

    def limit(self, url: str) -> int | None:
        return self._limit.get(url)

    def busy(self, url: str) -> int:
        return self._busy.get(url, 0)

    def queued(self, url: str) -> int:
        return self._queued.get(url, 0)

    async def acquire(self, url: str, key: float, timeout_s: float) -> float:
        """Take one of `url`'s slots, waiting at most `timeout_s` behind lower keys.

        Returns the seconds waited. Raises NoSlotInTime when no slot came free in time;
        the caller must `release(url)` once for every acquire that returned."""
        limit = self._limit.get(url)
        busy = self._busy.get(url, 0)
        if limit is None or (busy < limit and not self.queued(url)):
            self._busy[url] = busy + 1
            return 0.0
        start = time.monotonic()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting.setdefault(url, []), (key, next(self._arrivals), fut))
        self._queued[url] = self.queued(url) + 1
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self.release(url)  # handed a slot at the instant it gave up: pass it on
            else:
                fut.cancel()
                self._left(url)
            if isinstance(exc, TimeoutError):
                raise NoSlotInTime(
                    url,
                    f"all {limit} batch slots stayed busy for {timeout_s:.1f} s "
                    f"({self.queued(url)} calls still queued for them here)",
                ) from None
            raise
        return time.monotonic() - start

    def release(self, url: str) -> None:
        self._busy[url] = max(0, self._busy.get(url, 0) - 1)
        self._hand_over(url)

    def _hand_over(self, url: str) -> None:
        heap = self._waiting.get(url)
        limit = self._limit.get(url)
        while heap and (limit is None or self._busy.get(url, 0) < limit):
            _, _, fut = heapq.heappop(heap)
            if fut.done():
                continue  # gave up (timed out or cancelled) while queued
            self._busy[url] = self._busy.get(url, 0) + 1
            fut.set_result(None)
            self._queued[url] -= 1
        if not heap:
            self._waiting.pop(url, None)

    def _left(self, url: str) -> None:
        """A waiter gave up. Its entry stays in the heap until it surfaces; the heap is
        rebuilt when such entries outnumber the live ones (loose calls that time out deep
        in the heap would otherwise pile up under a long overload)."""
        self._queued[url] -= 1
        heap = self._waiting.get(url, [])
        if len(heap) > 2 * self._queued[url] + 64:
            heap[:] = [w for w in heap if not w[2].done()]
            heapq.heapify(heap)

"""Scrape each vLLM engine's /metrics directly, every interval, into per-endpoint load.

This is the gateway's own, fresher view (and the whole view when no
Prometheus exists). A failed or slow scrape never raises into routing: the
endpoint keeps its last values, flagged stale, with the error kept for
diagnosis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from .vllm_metrics import EngineMetrics, parse_vllm_metrics, window

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EndpointLoad:
    """What one engine reported, and how fresh that is. None means 'not reported'."""

    url: str
    waiting: float | None = None
    running: float | None = None
    kv_usage: float | None = None
    ttft_p50_s: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    preemptions: float | None = None
    observed_at: float | None = None
    stale: bool = True
    error: str | None = None


NO_KV_GAUGE = "no vllm:kv_cache_usage_perc gauge: KV-cache pressure unknown"

# vLLM's gauges flap while it preempts under KV pressure: a saturated engine can report
# 0 running and 0 % KV for one scrape while dozens of requests wait. An endpoint's load is
# the busiest of its scrapes in this window, so one calm-looking scrape does not pull
# traffic back to it; the price is noticing a drained engine this much later.
GAUGE_WINDOW_S = 2.5


class _History:
    """Recent scrapes of one endpoint, for windowed latency quantiles."""

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self.samples: deque[tuple[float, EngineMetrics]] = deque()
        self.last_ok: float | None = None
        self.error: str | None = None
        # The engine's context window, read once from /v1/models (vLLM reports it there).
        self.max_model_len: int | None = None
        self.warned_kv = False

    def add(self, t: float, metrics: EngineMetrics) -> None:
        self.samples.append((t, metrics))
        self.last_ok = t
        self.error = None
        # Keep one sample older than the horizon as the window's baseline.
        while len(self.samples) > 2 and self.samples[1][0] < t - self.horizon_s:
            self.samples.popleft()

    def load(self, url: str, now: float, stale_after_s: float) -> EndpointLoad:
        if not self.samples:
            return EndpointLoad(url, stale=True, error=self.error or "not scraped yet")
        t, latest = self.samples[-1]
        baseline = self.samples[0][1] if len(self.samples) > 1 else None
        hist = window(latest, baseline)
        e2e, ttft = hist.get("e2e"), hist.get("ttft")
        recent = [m for ts, m in self.samples if ts >= t - GAUGE_WINDOW_S]

        def peak(attr: str) -> float | None:
            values = [v for m in recent if (v := getattr(m, attr)) is not None]
            return max(values) if values else None

        kv_usage = peak("kv_usage")
        return EndpointLoad(
            url=url,
            waiting=peak("waiting"),
            running=peak("running"),
            kv_usage=kv_usage,
            ttft_p50_s=ttft.quantile(0.5) if ttft else None,
            latency_p50_s=e2e.quantile(0.5) if e2e else None,
            latency_p95_s=e2e.quantile(0.95) if e2e else None,
            preemptions=latest.counters.get("preemptions"),
            observed_at=t,
            # Without its KV gauge an engine's pressure is unknown, not zero.
            stale=(now - t) > stale_after_s or kv_usage is None,
            error=self.error,
        )


class EngineScraper:
    """Poll /metrics of a set of endpoints concurrently, every `interval_s`. The defaults are
    the gateway's (INFRAMIND_SCRAPE_INTERVAL_SECONDS, INFRAMIND_SCRAPE_TIMEOUT_SECONDS)."""

    def __init__(
        self,
        endpoints: Iterable[str],
        interval_s: float = 1.0,
        timeout_s: float = 2.5,
        horizon_s: float = 15.0,
    ) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.horizon_s = horizon_s
        self._history: dict[str, _History] = {}
        self._round = 0
        self._cache: tuple[tuple[int, int], float, dict[str, EndpointLoad]] | None = None
        self.set_endpoints(endpoints)

    def set_endpoints(self, endpoints: Iterable[str]) -> None:
        """Follow a new endpoint list (config reload) without losing known history."""
        wanted = list(dict.fromkeys(endpoints))
        self._history = {u: self._history.get(u) or _History(self.horizon_s) for u in wanted}
        self._cache = None

    @property
    def endpoints(self) -> list[str]:
        return list(self._history)

    async def scrape_once(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(self._scrape(session, u, h) for u, h in self._history.items()))
        self._round += 1

    async def _scrape(self, session: aiohttp.ClientSession, url: str, hist: _History) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with session.get(f"{url}/metrics", timeout=timeout) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            hist.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return
        metrics = parse_vllm_metrics(text)
        if metrics.skipped_lines:
            log.warning("%s/metrics: skipped %d malformed line(s)", url, metrics.skipped_lines)
        if metrics.waiting is None and metrics.running is None:
            hist.error = "no vLLM metrics in the response"
            return
        hist.add(time.monotonic(), metrics)
        if metrics.kv_usage is None:
            hist.error = NO_KV_GAUGE
            if not hist.warned_kv:
                log.warning("%s/metrics: %s; its load counts as stale", url, NO_KV_GAUGE)
                hist.warned_kv = True
        if hist.max_model_len is None:
            hist.max_model_len = await self._context_window(session, url)

    async def _context_window(self, session: aiohttp.ClientSession, url: str) -> int | None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with session.get(f"{url}/v1/models", timeout=timeout) as resp:
                data = await resp.json()
            lens = [m.get("max_model_len") for m in data.get("data", [])]
            return min((n for n in lens if isinstance(n, int)), default=None)
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            return None

    def last_ok(self, url: str) -> float | None:
        """Monotonic time of the endpoint's last answered scrape (its last sign of life)."""
        hist = self._history.get(url)
        return hist.last_ok if hist else None

    def max_model_len(self, url: str) -> int | None:
        hist = self._history.get(url)
        return hist.max_model_len if hist else None

    @property
    def stale_after_s(self) -> float:
        """How long an endpoint may go unheard before its values count as stale."""
        return max(3 * self.interval_s, self.timeout_s + self.interval_s)

    def heard_from(self) -> set[str]:
        """Endpoints whose /metrics answered within the staleness horizon."""
        now = time.monotonic()
        return {
            u
            for u, h in self._history.items()
            if h.last_ok is not None and now - h.last_ok <= self.stale_after_s
        }

    def loads(self) -> dict[str, EndpointLoad]:
        """Per-endpoint load. Quantiles are computed once per scrape round, not per call:
        every query and step asks for this, and the histograms only change on a scrape."""
        now = time.monotonic()
        key = (self._round, len(self._history))
        if self._cache is not None and self._cache[0] == key and now - self._cache[1] < 0.25:
            return self._cache[2]
        stale_after = self.stale_after_s
        loads = {u: h.load(u, now, stale_after) for u, h in self._history.items()}
        self._cache = (key, now, loads)
        return loads

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Scrape until `stop` is set; each round starts `interval_s` after the last one."""
        while not stop.is_set():
            await self.scrape_once(session)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)

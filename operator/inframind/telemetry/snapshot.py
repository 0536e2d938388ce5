"""The gateway's live view of its pools: in-flight counts, scraped engine load, health.

It merges three signals per endpoint — what this gateway itself has in flight
(exact, instant), what the engine's /metrics said at the last scrape (fresh
to about a second) and whether calls to it have been failing (a circuit
breaker) — into the policy's `ClusterSnapshot`. Missing or stale numbers stay
marked stale; the policy's estimate treats them pessimistically.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..api.config import PipelineConfig, PoolConfig
from ..api.modelpool import ModelProfile
from ..policy.types import DEPTHS, TASKS, ClusterSnapshot, PoolLoad, PoolProfile
from .prometheus import PrometheusSource
from .scrape import EndpointLoad, EngineScraper

log = logging.getLogger(__name__)

# Neutral priors for a pool whose ModelPool gives no profile: depth costs and
# gains in the direction of ACCURACY.md section B, magnitudes deliberately mild.
_DEFAULT_QUALITY = 0.6
_DEPTH_SHIFT = {"flash": -0.08, "concise": 0.0, "deepthink": 0.03}
_DEFAULT_TOKENS = {"flash": 24.0, "concise": 160.0, "deepthink": 480.0}


# Batch slots assumed per endpoint when the config does not say (the authors' setting).
DEFAULT_MAX_RUNNING = 32


def profile_from_config(pool: PoolConfig) -> PoolProfile:
    """A policy profile from the pool's published priors, filling gaps with neutral values."""
    prof: ModelProfile = pool.profile
    quality = prof.quality if prof.quality is not None else _DEFAULT_QUALITY
    acc = np.empty((len(TASKS), len(DEPTHS)))
    tok = np.empty((len(TASKS), len(DEPTHS)))
    for i, task in enumerate(TASKS):
        a_row = getattr(prof.accuracy, task.value, None) if prof.accuracy else None
        t_row = getattr(prof.output_tokens, task.value, None) if prof.output_tokens else None
        for j, depth in enumerate(DEPTHS):
            a = getattr(a_row, depth.value, None) if a_row else None
            t = getattr(t_row, depth.value, None) if t_row else None
            acc[i, j] = a if a is not None else min(1.0, max(0.0, quality + _DEPTH_SHIFT[depth]))
            tok[i, j] = t if t is not None else _DEFAULT_TOKENS[depth.value]
    return PoolProfile(
        name=pool.name,
        model=pool.model,
        accuracy=acc,
        output_tokens=tok,
        max_running=pool.max_num_seqs or DEFAULT_MAX_RUNNING,
        replicas=max(1, len(pool.endpoints)),
    )


@dataclass(slots=True)
class _Speed:
    """Observed per-call speed of a pool: EWMA of time to first token and per output token."""

    ttft_s: float = 0.05
    tpot_s: float = 0.02
    samples: int = 0

    def observe(self, latency_s: float, completion_tokens: int, ttft_s: float | None) -> None:
        alpha = 0.2 if self.samples >= 5 else 1.0 / (self.samples + 1)
        self.samples += 1
        if ttft_s is not None:
            self.ttft_s += alpha * (ttft_s - self.ttft_s)
        if completion_tokens > 0:
            # This call's own wait for its first token, when known: the average would
            # charge one call's queueing to the next one's decoding speed.
            first = self.ttft_s if ttft_s is None else ttft_s
            per_token = max(latency_s - first, 0.0) / completion_tokens
            self.tpot_s += alpha * (per_token - self.tpot_s)


# Observed speeds reach the policies' profiles at most this often (see LiveView.observe).
PROFILE_REFRESH_S = 1.0

# A breaker that keeps failing stays open longer each time, up to this.
MAX_OPEN_S = 60.0


class Endpoints:
    """Per-endpoint in-flight counts and a circuit breaker; shared by runner and snapshot.

    The breaker opens after `failures_to_open` failed calls in a row (or one, when
    nothing else is in flight there) and stays open for `open_for_s`, doubled for each
    further failure up to MAX_OPEN_S. It then probes: calls may try the endpoint again
    once `heard_from` (the scraper) has had an answer from it since the breaker opened,
    so a hung engine is not handed a real call every few seconds just to time out again.
    """

    def __init__(
        self,
        open_for_s: float = 5.0,
        failures_to_open: int = 2,
        heard_from: Callable[[str], float | None] | None = None,
    ) -> None:
        self.inflight: dict[str, int] = {}
        self.routed: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._opened_at: dict[str, float] = {}
        self._open_until: dict[str, float] = {}
        self.open_for_s = open_for_s
        self.failures_to_open = failures_to_open
        # Monotonic time of the endpoint's last sign of life seen elsewhere, or None.
        self.heard_from = heard_from

    def acquire(self, url: str) -> None:
        self.inflight[url] = self.inflight.get(url, 0) + 1
        self.routed[url] = self.routed.get(url, 0) + 1

    def release(self, url: str) -> None:
        self.inflight[url] = max(0, self.inflight.get(url, 0) - 1)

    def succeeded(self, url: str) -> None:
        self._failures[url] = 0
        self._opened_at.pop(url, None)
        self._open_until.pop(url, None)

    def failed(self, url: str) -> None:
        n = self._failures.get(url, 0) + 1
        self._failures[url] = n
        if n >= self.failures_to_open or self.inflight.get(url, 0) == 0:
            extra = max(0, n - self.failures_to_open)
            now = time.monotonic()
            period = min(self.open_for_s * 2**extra, MAX_OPEN_S)
            if self.state(url) != "open":
                log.warning("%s out of routing for %.0f s after %d failed call(s)", url, period, n)
            self._opened_at[url] = now
            self._open_until[url] = now + period

    def state(self, url: str) -> str:
        """ "closed" (in routing), "open" (out of it) or "probing" (let back in on trial)."""
        until = self._open_until.get(url)
        if until is None:
            return "closed"
        if time.monotonic() < until:
            return "open"
        if self.heard_from is None:
            return "probing"
        heard = self.heard_from(url)
        return "probing" if heard is not None and heard > self._opened_at[url] else "open"

    def usable(self, url: str) -> bool:
        return self.state(url) != "open"

    def all_closed(self) -> bool:
        """No breaker has opened since its endpoint last answered a call: the common case."""
        return not self._open_until

    def alive_since_opened(self, url: str) -> bool:
        """Whether an endpoint with an open breaker has answered a scrape since it opened."""
        opened = self._opened_at.get(url)
        heard = self.heard_from(url) if self.heard_from is not None else None
        return opened is not None and heard is not None and heard > opened


class LiveView:
    """Builds ClusterSnapshots for one pipeline config from the scraper and endpoint state."""

    def __init__(
        self,
        scraper: EngineScraper,
        endpoints: Endpoints,
        prometheus: PrometheusSource | None = None,
    ) -> None:
        self.scraper = scraper
        self.endpoints = endpoints
        if endpoints.heard_from is None:
            # The breaker probes a failed engine back in once it answers a scrape again.
            endpoints.heard_from = scraper.last_ok
        self.prometheus = prometheus
        self.pools: list[PoolConfig] = []
        self.routing_fresh = False
        self.profiles: tuple[PoolProfile, ...] = ()
        self._live_profiles: tuple[PoolProfile, ...] = ()
        self._profiles_built_at = -math.inf
        self._speed: dict[str, _Speed] = {}
        self._last_resort = False
        self._urls: frozenset[str] = frozenset()

    def configure(self, config: PipelineConfig) -> None:
        self.pools = list(config.pools)
        # The operator's per-endpoint advice counts only while its Prometheus view is fresh.
        self.routing_fresh = not config.routing.stale
        self._speed = {p.name: self._speed.get(p.name, _Speed()) for p in self.pools}
        self.profiles = tuple(profile_from_config(p) for p in self.pools)
        # Speeds learned before a reload still hold (the operator rewrites the config as
        # routing advice changes); back to the priors only for pools never measured.
        self._live_profiles = self._measured_profiles()
        self._urls = frozenset(u for p in self.pools for u in p.endpoints)
        self.scraper.set_endpoints(u for p in self.pools for u in p.endpoints)
        if self.prometheus is not None:
            self.prometheus.set_endpoints(self.scraper.endpoints)

    def observe(self, pool: int, latency_s: float, tokens: int, ttft_s: float | None) -> None:
        speed = self._speed[self.pools[pool].name]
        speed.observe(latency_s, tokens, ttft_s)
        # Speeds measured on this cluster beat any prior. A new profile tuple costs the
        # policies a rebuild of their per-profile tables (~0.4 ms, more than the rest of
        # a decision), so it is made at most every PROFILE_REFRESH_S, or at once while a
        # pool has its first few samples. Per call it was most of the gateway's own time.
        now = time.monotonic()
        if speed.samples <= 5 or now - self._profiles_built_at >= PROFILE_REFRESH_S:
            self._profiles_built_at = now
            self._live_profiles = self._measured_profiles()

    def _measured_profiles(self) -> tuple[PoolProfile, ...]:
        return tuple(
            _with_speed(prof, self._speed[p.name]) if self._speed[p.name].samples else prof
            for p, prof in zip(self.pools, self.profiles, strict=True)
        )

    def reachable(self) -> frozenset[str]:
        """Endpoints in routing that gave a sign of life lately: a direct scrape within
        the staleness horizon, or fresh values from Prometheus (readiness asks this)."""
        heard = self.scraper.heard_from()
        if self.prometheus is not None:
            heard |= {u for u, x in self.prometheus.loads().items() if not x.stale}
        return self.routable() & heard

    def routable(self) -> frozenset[str]:
        """The pipeline's endpoints in routing now: those whose breaker is closed or probing.
        When none is, an endpoint that has answered a scrape since its breaker opened is
        used all the same, as a last resort (Envoy's panic routing, in spirit): one 5xx from
        the only engine must not refuse every call for the breaker's open time while the
        engine is plainly up. One unheard from since (down, hung) stays out: calls fail
        fast. One pass over the endpoints; callers take it once per snapshot or pick."""
        if self.endpoints.all_closed():  # on the call path: a set built once per config
            self._last_resort = False
            return self._urls
        closed = frozenset(u for u in self._urls if self.endpoints.usable(u))
        last_resort = not closed
        if last_resort and not self._last_resort:
            log.warning(
                "every endpoint's breaker is open: any that answered a scrape since it failed"
                " stays in routing as a last resort"
            )
        self._last_resort = last_resort
        if closed:
            return closed
        return frozenset(u for u in self._urls if self.endpoints.alive_since_opened(u))

    # -- Prometheus fallback: a separate, optional signal ---------------------

    def loads(self) -> dict[str, EndpointLoad]:
        """The direct scrape's loads, with Prometheus's values where the scrape is stale or
        missing. The direct scrape wins whenever it is fresh: it is read every second
        straight from the engine, while Prometheus lags by its own scrape interval plus our
        refresh interval. Prometheus only helps when this gateway cannot reach an engine's
        /metrics (or it fails) but the cluster's Prometheus still can."""
        direct = self.scraper.loads()
        if self.prometheus is None or all(not x.stale for x in direct.values()):
            return direct
        backup = self.prometheus.loads()
        merged = dict(direct)
        for url, alt in backup.items():
            load = direct.get(url)
            if (load is None or load.stale) and not alt.stale:
                merged[url] = alt
        return merged

    def pick_endpoint(self, pool: int, exclude: Sequence[str] = ()) -> str | None:
        """The pool's endpoint with the least work (our in-flight + its queue) per unit of
        the operator's weight, breaker closed; endpoints the operator took out of routing
        only when no other is left."""
        loads = self.loads()
        config = self.pools[pool]
        routes = config.routes if self.routing_fresh else {}
        routable = self.routable()
        best, best_key = None, None
        for url in config.endpoints:
            if url in exclude or url not in routable:
                continue
            scraped = loads.get(url)
            queued = (scraped.waiting or 0.0) if scraped else 0.0  # last known, even if stale
            route = routes.get(url)
            work = (self.endpoints.inflight.get(url, 0) + queued + 1) / (
                route.weight if route else 1.0
            )
            key = (route is not None and not route.eligible, work, url)
            if best_key is None or key < best_key:
                best, best_key = url, key
        return best

    def snapshot(self, now: float | None = None) -> ClusterSnapshot:
        loads = self.loads()
        routable = self.routable()
        return ClusterSnapshot(
            now=time.time() if now is None else now,
            profiles=self._live_profiles,
            loads=tuple(self._pool_load(pool, loads, routable) for pool in self.pools),
        )

    def _pool_load(
        self, pool: PoolConfig, loads: dict[str, EndpointLoad], routable: frozenset[str]
    ) -> PoolLoad:
        usable = [u for u in pool.endpoints if u in routable]
        # A stale endpoint keeps its last observed values (flagged): an engine too busy to
        # answer /metrics in time is far likelier still busy than idle, and the estimate
        # treats a stale pool as at least STALE_OCCUPANCY busy on top. Dropping its last
        # values made a saturated engine look three-quarters busy (the e2e test caught it).
        seen = [loads[u] for u in usable if u in loads and loads[u].observed_at is not None]
        fresh = sum(1 for x in seen if not x.stale)
        inflight = sum(self.endpoints.inflight.get(u, 0) for u in pool.endpoints)
        if not usable:
            return PoolLoad(inflight=inflight, stale=True, available=False)
        # No `latency_s`: the engines' end-to-end p50 mixes 30-token and 1,000-token calls
        # and queueing, so a pool that just served long calls would look slow for 15 s and
        # lose traffic to a saturated one (the e2e test caught exactly that). This view
        # learns each pool's speed per token from its own calls instead (see observe()).
        return PoolLoad(
            waiting=sum(x.waiting or 0.0 for x in seen),
            running=sum(x.running or 0.0 for x in seen),
            kv_usage=max((x.kv_usage or 0.0 for x in seen), default=0.0),
            inflight=inflight,
            stale=fresh < len(usable),
            available=True,
        )


def _with_speed(prof: PoolProfile, speed: _Speed) -> PoolProfile:
    return PoolProfile(
        name=prof.name,
        model=prof.model,
        accuracy=prof.accuracy,
        output_tokens=prof.output_tokens,
        ttft_s=speed.ttft_s,
        tpot_s=speed.tpot_s,
        tpot_slope_s=prof.tpot_slope_s,
        max_running=prof.max_running,
        replicas=prof.replicas,
        cost=prof.cost,
        flash_compliance=prof.flash_compliance,
    )

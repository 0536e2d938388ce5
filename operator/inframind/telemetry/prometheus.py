"""Per-endpoint vLLM load read from a Prometheus server, a few PromQL queries per refresh.

The gateway's direct /metrics scrape is fresher; this source covers endpoints
the scrape cannot reach (or is failing on) from what Prometheus already holds.
Every refresh issues the same small set of queries whatever the number of
endpoints, and joins the results by the `instance` label (`host:port` of the
endpoint URL, Prometheus's default for a static or discovered target).

Metric names match both `vllm:<name>` (Prometheus 3, UTF-8 names) and
`vllm_<name>` (Prometheus 2.x, which gets the escaped name from vLLM's
exporter; see RECIPES.md). An unreachable Prometheus or a missing series never
raises into routing: the endpoint keeps its last values, flagged stale, with
the error kept, and one warning is logged per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from .scrape import EndpointLoad
from .urls import instance_of
from .vllm_metrics import COUNT_GAUGES, SHARE_GAUGES

log = logging.getLogger(__name__)

_NAME = "vllm[:_]"
# Gauges (and the preemption counter, as scrape.py reports it) in one query; grouping by
# __name__ keeps the series apart. Field names match EndpointLoad. Counts add up over an
# engine's series (one per engine core); a usage share is their mean, as scrape.py has it.
_SUMMED = {**COUNT_GAUGES, "num_preemptions_total": "preemptions"}
_AVERAGED = SHARE_GAUGES
_INSTANT = {**_SUMMED, **_AVERAGED}


def build_queries(window: str = "1m") -> dict[str, str]:
    """The PromQL issued on every refresh, by the signal each one yields (pure)."""
    summed, averaged = "|".join(_SUMMED), "|".join(_AVERAGED)
    queries = {
        # `or` matches series on their labels without __name__: the averaged ones need a
        # label of their own, or the summed series of the same instance would hide them.
        "instant": f'sum by (instance, __name__) ({{__name__=~"{_NAME}({summed})"}}) or '
        f'label_replace(avg by (instance, __name__) ({{__name__=~"{_NAME}({averaged})"}}), '
        '"mean", "1", "", "")',
    }
    for key, hist, q in (
        ("latency_p50_s", "e2e_request_latency_seconds", 0.5),
        ("latency_p95_s", "e2e_request_latency_seconds", 0.95),
        ("ttft_p50_s", "time_to_first_token_seconds", 0.5),
    ):
        buckets = f'{{__name__=~"{_NAME}{hist}_bucket"}}'
        queries[key] = f"histogram_quantile({q}, sum by (instance, le) (rate({buckets}[{window}])))"
    return queries


def _number(sample: dict[str, Any]) -> float | None:
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    # histogram_quantile yields NaN when no request finished in the window: not reported.
    return None if value != value else value


def build_fields(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Query results -> {instance: {EndpointLoad field: value}} (pure)."""
    out: dict[str, dict[str, float | None]] = {}
    for sample in results.get("instant", []):
        metric = sample.get("metric", {})
        name = metric.get("__name__", "")
        field = _INSTANT.get(name[len("vllm:") :]) if name.startswith(("vllm:", "vllm_")) else None
        instance = metric.get("instance")
        if field and instance:
            out.setdefault(instance, {})[field] = _number(sample)
    for key, samples in results.items():
        if key == "instant":
            continue
        for sample in samples:
            instance = sample.get("metric", {}).get("instance")
            if instance:
                out.setdefault(instance, {})[key] = _number(sample)
    return out


class PrometheusSource:
    """Poll Prometheus every `interval_s` for the load of a set of vLLM endpoints.

    `observed_at` is the (monotonic) time of the refresh that returned the series: an
    instant query stamps results with the evaluation time, so the values themselves may
    be up to one Prometheus scrape interval older. A refresh where any query fails counts
    as failed as a whole, so one endpoint's numbers never mix two refreshes.
    """

    def __init__(
        self,
        url: str,
        endpoints: Iterable[str] = (),
        interval_s: float = 5.0,
        timeout_s: float = 2.0,
        window: str = "1m",
        stale_after_s: float | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stale_after_s = stale_after_s or max(3 * interval_s, interval_s + timeout_s)
        self.queries = build_queries(window)
        # No retries: a refresh that fails is simply retried at the next interval, and
        # urllib3's default back-off would hold a worker thread for seconds per outage.
        self._prom = PrometheusConnect(self.url, retry=Retry(total=0), timeout=timeout_s)
        self.queries_issued = 0
        self.refreshes = 0
        self.error: str | None = None
        self._loads: dict[str, EndpointLoad] = {}
        self._missing: set[str] = set()
        self.set_endpoints(endpoints)

    def set_endpoints(self, endpoints: Iterable[str]) -> None:
        """Follow a new endpoint list without losing what is known about kept ones."""
        self._loads = {
            u: self._loads.get(u) or EndpointLoad(u, error="not queried yet")
            for u in dict.fromkeys(endpoints)
        }

    @property
    def endpoints(self) -> list[str]:
        return list(self._loads)

    def _query_all(self) -> dict[str, list[dict[str, Any]]]:
        results = {}
        for key, promql in self.queries.items():
            self.queries_issued += 1
            results[key] = self._prom.custom_query(promql)
        return results

    async def refresh_once(self) -> None:
        """Query Prometheus once and update every endpoint; never raises (but cancellation)."""
        try:
            results = await asyncio.to_thread(self._query_all)
        except Exception as exc:  # requests, HTTP status, JSON: all mean "Prometheus unusable"
            self._failed(f"Prometheus {self.url}: {type(exc).__name__}: {exc}")
            return
        finally:
            self.refreshes += 1
        if self.error is not None:
            log.info("Prometheus %s answers again", self.url)
            self.error = None
        now = time.monotonic()
        by_instance = build_fields(results)
        for url, last in self._loads.items():
            fields = by_instance.get(instance_of(url))
            if not fields or (fields.get("waiting") is None and fields.get("running") is None):
                if url not in self._missing:
                    self._missing.add(url)
                    log.warning("Prometheus %s has no vLLM series for %s", self.url, url)
                self._loads[url] = replace(
                    last, stale=True, error=f"no vLLM series for instance {instance_of(url)}"
                )
                continue
            self._missing.discard(url)
            self._loads[url] = EndpointLoad(url, observed_at=now, stale=False, **fields)

    def _failed(self, error: str) -> None:
        if self.error is None:
            log.warning("%s; keeping last values, marked stale", error)
        self.error = error
        self._loads = {u: replace(x, stale=True, error=error) for u, x in self._loads.items()}

    def loads(self) -> dict[str, EndpointLoad]:
        """Per-endpoint load; values older than `stale_after_s` are flagged stale."""
        now = time.monotonic()
        return {
            u: x
            if x.stale or x.observed_at is None or now - x.observed_at <= self.stale_after_s
            else replace(x, stale=True, error=x.error or "no refresh for a while")
            for u, x in self._loads.items()
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh until `stop` is set; each refresh starts `interval_s` after the last one."""
        while not stop.is_set():
            await self.refresh_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)

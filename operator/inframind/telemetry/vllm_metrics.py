"""Parse the few vLLM metrics InfraMind routes on, tolerating malformed lines.

vLLM exposes `vllm:<name>`; a Prometheus 2.x that predates UTF-8 names stores
the same series as `vllm_<name>` (RECIPES.md), so both spellings are read.
A line that does not parse is skipped and counted, never fatal: one broken
exporter must not take routing down.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# The gauges routed on, by vLLM's name (without `vllm:`): request counts, which add up
# over an engine's cores, and the KV-cache usage share, which is their mean.
COUNT_GAUGES = {"num_requests_waiting": "waiting", "num_requests_running": "running"}
SHARE_GAUGES = {
    "kv_cache_usage_perc": "kv_usage",
    "gpu_cache_usage_perc": "kv_usage",  # the same gauge, as older vLLM releases name it
}
GAUGES = {**COUNT_GAUGES, **SHARE_GAUGES}
HISTOGRAMS = {
    "time_to_first_token_seconds": "ttft",
    "e2e_request_latency_seconds": "e2e",
    "request_queue_time_seconds": "queue",
    "inter_token_latency_seconds": "itl",
}
COUNTERS = {"num_preemptions_total": "preemptions", "request_success_total": "success"}

_LINE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LE = re.compile(r'(?:^|,)\s*le="(?P<le>[^"]*)"')


@dataclass
class Histogram:
    """Cumulative bucket counts by upper bound, plus sum and count."""

    buckets: dict[float, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0

    def minus(self, earlier: Histogram | None) -> Histogram:
        """Observations since `earlier` (a counter reset yields the current totals)."""
        if earlier is None or self.count < earlier.count:
            return self
        return Histogram(
            {le: c - earlier.buckets.get(le, 0.0) for le, c in self.buckets.items()},
            self.sum - earlier.sum,
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket, as PromQL's histogram_quantile does."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for le in sorted(self.buckets):
            count = self.buckets[le]
            if count >= rank:
                if math.isinf(le):
                    return lower_bound
                span = count - lower_count
                frac = (rank - lower_count) / span if span > 0 else 1.0
                return lower_bound + (le - lower_bound) * frac
            lower_bound, lower_count = le, count
        return lower_bound

    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


@dataclass
class EngineMetrics:
    """One scrape of one engine, summed over its engine cores and models."""

    waiting: float | None = None
    running: float | None = None
    kv_usage: float | None = None
    histograms: dict[str, Histogram] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    skipped_lines: int = 0


def _short_name(name: str) -> str | None:
    for prefix in ("vllm:", "vllm_"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None


def parse_vllm_metrics(text: str) -> EngineMetrics:
    """Read gauges, histograms and counters that routing needs from a /metrics body."""
    out = EngineMetrics()
    gauges: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            out.skipped_lines += 1
            continue
        short = _short_name(m["name"])
        if short is None:
            continue
        try:
            value = float(m["value"])
        except ValueError:
            out.skipped_lines += 1
            continue
        if math.isnan(value):
            out.skipped_lines += 1
            continue
        if short in GAUGES:
            key = GAUGES[short]
            # Several engine cores report separately; their load adds up
            # (KV usage is averaged below).
            gauges[key] = gauges.get(key, 0.0) + value
            gauges[key + "#n"] = gauges.get(key + "#n", 0.0) + 1
        elif short in COUNTERS:
            out.counters[COUNTERS[short]] = out.counters.get(COUNTERS[short], 0.0) + value
        else:
            base, _, part = short.rpartition("_")
            if base not in HISTOGRAMS:
                continue
            hist = out.histograms.setdefault(HISTOGRAMS[base], Histogram())
            if part == "bucket":
                le = _LE.search(m["labels"] or "")
                if le is None:
                    out.skipped_lines += 1
                    continue
                try:
                    bound = float(le["le"])
                except ValueError:
                    out.skipped_lines += 1
                    continue
                hist.buckets[bound] = hist.buckets.get(bound, 0.0) + value
            elif part == "sum":
                hist.sum += value
            elif part == "count":
                hist.count += value
    if "waiting" in gauges:
        out.waiting = gauges["waiting"]
    if "running" in gauges:
        out.running = gauges["running"]
    if "kv_usage" in gauges:
        out.kv_usage = gauges["kv_usage"] / gauges["kv_usage#n"]
    return out


def window(current: EngineMetrics, earlier: EngineMetrics | None) -> Mapping[str, Histogram]:
    """Histograms of the observations made between two scrapes."""
    before = earlier.histograms if earlier else {}
    return {k: h.minus(before.get(k)) for k, h in current.histograms.items()}

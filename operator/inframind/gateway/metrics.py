"""The gateway's Prometheus metrics, in a registry of its own (no module-level singletons)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        # Children of the per-call metrics by label values: prometheus_client validates
        # the values and takes a lock on every labels() call, six times per call.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "inframind_requests", "Chat requests by outcome", ["pipeline", "code"], registry=r
        )
        self.decisions = Counter(
            "inframind_decisions", "Plans chosen", ["pipeline", "topology", "plan"], registry=r
        )
        self.steps = Counter(
            "inframind_steps",
            "Agent steps by pool and depth",
            ["pool", "depth", "outcome"],
            registry=r,
        )
        self.rescues = Counter(
            "inframind_rescues",
            "Deadline rescues sent, by outcome: answered (the rescue's answer was used), "
            "cancelled (the first call answered first), failed",
            ["outcome"],
            registry=r,
        )
        self.inflight = Gauge(
            "inframind_inflight", "Calls in flight per endpoint", ["endpoint"], registry=r
        )
        self.queued = Gauge(
            "inframind_queued",
            "Calls held in the gateway for a free batch slot, per endpoint",
            ["endpoint"],
            registry=r,
        )
        self.latency = Histogram(
            "inframind_request_latency_seconds",
            "Whole-workflow latency",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.step_latency = Histogram(
            "inframind_step_latency_seconds",
            "Per-call latency",
            ["pool", "depth"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.slo = Counter(
            "inframind_slo",
            "Queries within / beyond their budget",
            ["pipeline", "result"],
            registry=r,
        )
        self.shed = Counter(
            "inframind_shed",
            "Queries refused by admission control",
            ["pipeline", "reason"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "inframind_decision_seconds",
            "Planner decision time",
            buckets=(1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2),
            registry=r,
        )
        self.config_errors = Counter(
            "inframind_config_errors", "Pipeline configs refused on reload", registry=r
        )
        self.policy = Gauge(
            "inframind_policy_info", "Active policy", ["pipeline", "policy", "version"], registry=r
        )
        self.safety = Gauge(
            "inframind_budget_safety",
            "Share of the budget budget-greedy plans may use, tuned to the pipeline's sloTarget",
            ["pipeline"],
            registry=r,
        )

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    # The per-call events (the metrics above that are never cleared) ------------------

    def decided(self, pipeline: str, topology: str, plan: str) -> None:
        self._child(self.decisions, pipeline, topology, plan).inc()

    def answered(self, pipeline: str, latency_s: float | None, met_budget: bool) -> None:
        self._child(self.requests, pipeline, "200").inc()
        if latency_s is not None:
            self._child(self.latency, pipeline).observe(latency_s)
        self._child(self.slo, pipeline, "met" if met_budget else "missed").inc()

    def failed(self, pipeline: str, status: int) -> None:
        """An admitted query that got no answer: a 5xx (ours) is a missed budget to the SLO,
        as to its client; a 4xx (the client's to fix, e.g. a prompt the engine refused)
        is not counted for or against it."""
        self._child(self.requests, pipeline, str(status)).inc()
        if status >= 500:
            self._child(self.slo, pipeline, "missed").inc()

    def stepped(self, pool: str, depth: str, ok: bool, latency_s: float | None) -> None:
        self._child(self.steps, pool, depth, "ok" if ok else "error").inc()
        if latency_s is not None:
            self._child(self.step_latency, pool, depth).observe(latency_s)

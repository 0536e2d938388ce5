"""The gateway's Prometheus metrics, in a registry of its own (no module-level singletons)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self) -> None:
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

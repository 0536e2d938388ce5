"""The operator's own Prometheus metrics: per-pool load as it sees it, and its loop's cost."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r, pool = self.registry, ["namespace", "pool"]
        self.pool_waiting = Gauge("inframind_pool_waiting", "Requests waiting", pool, registry=r)
        self.pool_running = Gauge("inframind_pool_running", "Requests running", pool, registry=r)
        self.pool_kv_usage = Gauge(
            "inframind_pool_kv_usage", "Highest KV-cache usage (0-1)", pool, registry=r
        )
        self.pool_gpu_util = Gauge(
            "inframind_pool_gpu_util", "Mean GPU utilisation (percent)", pool, registry=r
        )
        self.pool_stale = Gauge(
            "inframind_pool_metrics_stale", "1 when the pool's load is not fresh", pool, registry=r
        )
        self.pool_ready = Gauge(
            "inframind_pool_ready", "1 when the pool has a ready endpoint", pool, registry=r
        )
        self.promql_queries = Counter(
            "inframind_operator_promql_queries", "PromQL queries issued", registry=r
        )
        self.loop_seconds = Histogram(
            "inframind_operator_metrics_loop_duration_seconds",
            "One Prometheus pull of the metrics loop",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.reconciles = Counter(
            "inframind_operator_reconcile",
            "Reconciles by kind and result",
            ["kind", "result"],
            registry=r,
        )

    def serve(self, port: int, host: str) -> None:
        start_http_server(port, addr=host, registry=self.registry)


METRICS = OperatorMetrics()

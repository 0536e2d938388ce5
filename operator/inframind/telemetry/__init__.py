"""Load signals: direct scrapes of vLLM /metrics and batched Prometheus queries."""

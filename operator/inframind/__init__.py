"""InfraMind: infrastructure-aware orchestration of multi-agent LLM pipelines."""

__version__ = "0.1.0"

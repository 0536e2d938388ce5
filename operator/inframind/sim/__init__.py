"""Discrete-event simulator of a vLLM cluster running multi-agent pipelines."""

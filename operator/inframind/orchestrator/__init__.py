"""Running multi-agent pipelines against vLLM: engine calls, prompts, topologies, aggregation."""

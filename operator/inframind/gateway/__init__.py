"""The OpenAI-compatible gateway that runs InfraMind pipelines against vLLM pools."""

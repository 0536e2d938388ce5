"""How Prometheus names a scrape target: shared by the gateway's and the operator's queries."""

from __future__ import annotations

from urllib.parse import urlsplit


def instance_of(url: str) -> str:
    """The `instance` label Prometheus gives a target at this URL: host:port."""
    parts = urlsplit(url if "//" in url else f"http://{url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

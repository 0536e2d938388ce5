"""One settings object for every InfraMind process, read from INFRAMIND_* environment variables."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFRAMIND_", extra="ignore")

    # --- operator -------------------------------------------------------
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch (JSON list or comma-separated); empty = all namespaces",
    )
    resync_seconds: float = Field(
        default=30.0, gt=0, description="Level-based resync period of every resource"
    )
    metrics_period_seconds: float = Field(
        default=15.0, gt=0, description="Operator metrics loop period (Prometheus pull)"
    )
    prometheus_url: str | None = Field(default=None, description="Prometheus base URL, if any")
    prometheus_timeout_seconds: float = Field(default=5.0, gt=0)
    operator_metrics_port: int | None = Field(
        default=8082, ge=0, description="Port of the operator's own /metrics; 0 or empty: off"
    )
    operator_metrics_host: str = Field(default="0.0.0.0", description="Bind address of /metrics")
    vllm_image: str = "vllm/vllm-openai:v0.11.0"
    vllm_port: int = 8000
    gateway_image: str = "ghcr.io/inframind/inframind:0.1.0"
    gateway_port: int = 8080
    cluster_domain: str = "cluster.local"
    operator_liveness: str | None = Field(
        default=None, description="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz"
    )

    # --- gateway --------------------------------------------------------
    scrape_interval_seconds: float = Field(default=1.0, gt=0)
    scrape_timeout_seconds: float = Field(
        default=2.5,
        gt=0,
        description="Wait this long for an engine's /metrics; a busy API server can take"
        " over a second, and an engine unheard from for longer than this plus one interval"
        " (at least three intervals) counts as stale",
    )
    gateway_max_inflight: int = Field(
        default=256, ge=1, description="Queries in flight before sheddable ones get 429"
    )
    gateway_max_prompt_chars: int = Field(
        default=32_000, ge=1, description="Longest prompt accepted (characters), else 413"
    )
    gateway_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    gateway_rescue: bool = Field(
        default=True,
        description="Race a step that is about to miss its deadline against the fastest"
        " option on another endpoint (a hedged request); false = wait for the first call",
    )
    gateway_token: SecretStr | None = Field(
        default=None,
        description="Bearer token clients must send on /v1/* (from a Secret); none = open",
    )
    config_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the gateway re-reads its pipeline config file"
    )

    @field_validator("operator_metrics_port", mode="before")
    @classmethod
    def _empty_port_is_off(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process; tests build `Settings(...)` directly instead."""
    return Settings()


# The settings an AgentPipeline may give its gateways (spec.gateway.env). The operator sets
# the others itself (config path, port, token from a Secret) or they are the operator's own.
GATEWAY_TUNABLE = (
    "gateway_max_inflight",
    "gateway_max_prompt_chars",
    "gateway_max_body_bytes",
    "gateway_rescue",
    "scrape_interval_seconds",
    "scrape_timeout_seconds",
    "config_poll_seconds",
    "prometheus_url",
    "prometheus_timeout_seconds",
)
ENV_PREFIX = Settings.model_config["env_prefix"]


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def check_gateway_setting(name: str, value: str) -> None:
    """Raise ValueError, saying what to fix, unless `name=value` is a valid gateway setting."""
    field = name.removeprefix(ENV_PREFIX).lower()
    if not name.startswith(ENV_PREFIX) or field not in GATEWAY_TUNABLE:
        known = ", ".join(env_name(f) for f in GATEWAY_TUNABLE)
        raise ValueError(f"{name} is not a gateway setting; use one of {known}")
    try:
        Settings.model_validate({field: value})
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise ValueError(f"{name}={value!r}: {reason}") from None

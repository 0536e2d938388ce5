"""The resolved pipeline configuration: what the operator writes and every gateway reads.

This is the contract between control plane and data plane, so both sides use
this one model: the operator builds it (reconcile.build_pipeline_config) and
the gateway parses it (also from a local file in the embedded default).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..vocab import Depth, Role, SchedulerKind, Topology
from .common import API_VERSION, CamelModel
from .modelpool import ModelProfile
from .pipeline import Budget, PolicySource


class PoolConfig(CamelModel):
    name: str
    model: str
    served_model_name: str
    endpoints: list[str] = Field(default_factory=list)
    priority_scheduling_enabled: bool = True
    profile: ModelProfile = Field(default_factory=ModelProfile)


class PipelineConfig(CamelModel):
    api_version: str = API_VERSION
    kind: Literal["PipelineConfig"] = "PipelineConfig"
    pipeline: str = Field(min_length=1)
    namespace: str = "default"
    # Empty while no selected pool is valid; the gateway then reports not ready.
    pools: list[PoolConfig] = Field(default_factory=list)
    topologies: list[Topology] = Field(default_factory=lambda: list(Topology), min_length=1)
    roles: list[Role] | None = None
    max_agents: int = Field(default=4, ge=1, le=16)
    depths: list[Depth] = Field(default_factory=lambda: list(Depth), min_length=1)
    budget: Budget = Field(default_factory=Budget)
    scheduler: SchedulerKind = SchedulerKind.EDF
    policy: PolicySource = Field(default_factory=PolicySource)
    auth: bool = False

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


class EndpointRoute(CamelModel):
    """The operator's routing advice for one endpoint, from the cluster's Prometheus."""

    # Relative share of new calls among the pool's eligible endpoints.
    weight: float = Field(default=1.0, gt=0, le=1)
    # False takes the endpoint out of routing while another endpoint of the pool is eligible.
    eligible: bool = True
    reason: str | None = None


class PoolConfig(CamelModel):
    name: str
    model: str
    served_model_name: str
    endpoints: list[str] = Field(default_factory=list)
    priority_scheduling_enabled: bool = True
    profile: ModelProfile = Field(default_factory=ModelProfile)
    # Batch slots per endpoint (vLLM --max-num-seqs): known for managed pools; None when
    # the operator cannot know (external pools), and the gateway then assumes 32.
    max_num_seqs: int | None = Field(default=None, ge=1)
    # Per endpoint URL; endpoints not listed get weight 1 and stay eligible.
    routes: dict[str, EndpointRoute] = Field(default_factory=dict)


class AdmissionClass(CamelModel):
    """Queries whose budget is at most `max_budget_seconds` (and above the previous class's)
    form a priority class; sheddable ones are refused with 429 once the cluster's occupancy
    (requests per batch slot, over all pools) exceeds `max_occupancy`."""

    name: str
    max_budget_seconds: float | None = Field(default=None, gt=0, description="None: no limit")
    max_occupancy: float | None = Field(default=None, gt=0, description="None: never shed")


class Routing(CamelModel):
    """What the operator's metrics loop last decided for this pipeline's gateways."""

    source: Literal["prometheus", "none"] = "none"
    # True when Prometheus was unreachable: gateways then trust only their direct scrape.
    stale: bool = True
    admission: list[AdmissionClass] = Field(default_factory=list)


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
    routing: Routing = Field(default_factory=Routing)

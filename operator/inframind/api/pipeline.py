"""The AgentPipeline custom resource: a served multi-agent pipeline over ModelPools."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from ..policy.plans import CATALOGUE, permitted_plans
from ..settings import check_gateway_setting
from ..vocab import Depth, Role, SchedulerKind, Topology
from .common import (
    CONFIGMAP_KEY_PATTERN,
    GATEWAY_CONFIG_KEY,
    NAME_PATTERN,
    CamelModel,
    Condition,
    CrdInfo,
    PrinterColumn,
    SecretKeyRef,
)

# Policies that need no training artifact. The names are the policy registry's
# (inframind.policy); a test keeps the two lists equal.
HeuristicName = Literal[
    "budget-greedy",
    "single-best",
    "moa",
    "gptswarm",
    "masrouter",
    "round-robin",
    "least-queue",
]


class LabelSelector(CamelModel):
    match_labels: dict[str, str] = Field(default_factory=dict)


class Budget(CamelModel):
    default_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="Latency budget when a request names none"
    )
    max_seconds: float = Field(
        default=300.0, gt=0, le=86400, description="Largest budget a request may ask"
    )
    slo_target: float = Field(
        default=0.99, gt=0, le=1, description="Share of queries that must finish within budget"
    )

    @model_validator(mode="after")
    def _default_within_max(self) -> Budget:
        if self.default_seconds > self.max_seconds:
            raise ValueError(
                f"budget.defaultSeconds ({self.default_seconds}) exceeds budget.maxSeconds "
                f"({self.max_seconds}); raise maxSeconds or lower the default"
            )
        return self


class ConfigMapKeyRef(CamelModel):
    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    key: str = Field(
        default="policy.npz", min_length=1, max_length=253, pattern=CONFIGMAP_KEY_PATTERN
    )

    @model_validator(mode="after")
    def _not_the_gateway_config(self) -> ConfigMapKeyRef:
        # The gateway mounts this key beside its own configuration file.
        if self.key in (GATEWAY_CONFIG_KEY, ".", ".."):
            raise ValueError(
                f"spec.policy.configMapRef.key may not be {self.key!r}: the gateway mounts "
                f"the policy beside its {GATEWAY_CONFIG_KEY}; name the key e.g. policy.npz"
            )
        return self


class PolicySource(CamelModel):
    """Either a named heuristic or a trained artifact (exported weights)."""

    heuristic: HeuristicName | None = None
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="Trained policy artifact stored in a ConfigMap (binaryData)"
    )
    path: str | None = Field(
        default=None, max_length=1024, description="Trained policy artifact on a mounted volume"
    )
    # What to use while a trained artifact is missing or refused.
    fallback: HeuristicName = "budget-greedy"

    @model_validator(mode="after")
    def _one_source(self) -> PolicySource:
        given = [n for n in ("heuristic", "config_map_ref", "path") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(
                f"spec.policy sets {', '.join(given)}; choose one source: a heuristic name, "
                "a configMapRef or a path"
            )
        if not given:
            self.heuristic = "budget-greedy"
        return self

    @property
    def reference(self) -> str:
        if self.heuristic is not None:
            return f"heuristic:{self.heuristic}"
        if self.config_map_ref is not None:
            return f"configmap:{self.config_map_ref.name}/{self.config_map_ref.key}"
        return f"file:{self.path}"


class GatewaySetting(CamelModel):
    """One gateway setting, passed to its pods as an environment variable."""

    name: str = Field(
        pattern=r"^INFRAMIND_[A-Z0-9_]+$",
        description="e.g. INFRAMIND_GATEWAY_MAX_INFLIGHT (README: Settings)",
    )
    value: str = Field(max_length=2048)

    @model_validator(mode="after")
    def _known_and_valid(self) -> GatewaySetting:
        check_gateway_setting(self.name, self.value)
        return self


class GatewaySpec(CamelModel):
    replicas: int = Field(default=1, ge=0, le=64)
    image: str | None = Field(
        default=None, max_length=512, description="Default from operator settings"
    )
    cpu: str = Field(default="500m", pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str = Field(default="512Mi", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")
    auth_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Bearer token clients must present (optional)"
    )
    env: list[GatewaySetting] = Field(
        default_factory=list,
        max_length=16,
        description="Gateway settings (INFRAMIND_*); the operator's Prometheus URL is "
        "passed on unless INFRAMIND_PROMETHEUS_URL is set here",
    )

    @model_validator(mode="after")
    def _each_setting_once(self) -> GatewaySpec:
        names = [e.name for e in self.env]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"spec.gateway.env sets {', '.join(twice)} more than once")
        return self


class Retraining(CamelModel):
    enabled: bool = Field(
        default=False,
        description="Gateways append their decision traces to tracesClaimName for retraining",
    )
    traces_claim_name: str = Field(
        default="inframind-traces",
        max_length=253,
        pattern=NAME_PATTERN,
        description="PersistentVolumeClaim (ReadWriteMany) the gateways write traces to, one "
        "file per pod under <pipeline>/; the retraining job reads it",
    )
    schedule: str = Field(
        default="0 3 * * *",
        pattern=r"^(@(hourly|daily|weekly|monthly)|(\S+\s+){4}\S+)$",
        description="Cron schedule of the retraining job that reads the traces (a CronJob or "
        "RayJob from manifests/training; the operator does not run training itself)",
    )


class AgentPipelineSpec(CamelModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.pools) != has(self.poolSelector)",
                    "message": "set exactly one of spec.pools or spec.poolSelector",
                }
            ]
        }
    )

    pools: list[str] | None = Field(
        default=None, max_length=64, description="ModelPool names in this namespace"
    )
    pool_selector: LabelSelector | None = Field(
        default=None, description="Select ModelPools by label instead of by name"
    )
    topologies: list[Topology] = Field(
        default_factory=lambda: list(Topology), min_length=1, max_length=len(Topology)
    )
    roles: list[Role] | None = Field(default=None, description="Restrict the roles agents may take")
    max_agents: int = Field(default=4, ge=1, le=16)
    depths: list[Depth] = Field(default_factory=lambda: list(Depth), min_length=1)
    budget: Budget = Field(default_factory=Budget)
    scheduler: SchedulerKind = SchedulerKind.EDF
    policy: PolicySource = Field(default_factory=PolicySource)
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    retraining: Retraining = Field(default_factory=Retraining)

    @model_validator(mode="after")
    def _coherent(self) -> AgentPipelineSpec:
        if self.pools is None and self.pool_selector is None:
            raise ValueError("spec needs 'pools' (ModelPool names) or 'poolSelector' (labels)")
        if self.pools is not None and self.pool_selector is not None:
            raise ValueError("spec sets both 'pools' and 'poolSelector'; use one of them")
        if self.pools is not None:
            if not self.pools:
                raise ValueError("spec.pools is empty; name at least one ModelPool")
            dupes = sorted({p for p in self.pools if self.pools.count(p) > 1})
            if dupes:
                raise ValueError(f"spec.pools names {', '.join(dupes)} more than once")
        if len(set(self.topologies)) != len(self.topologies):
            raise ValueError("spec.topologies lists a topology twice")
        multi = {Topology.DEBATE, Topology.ENSEMBLE, Topology.VERIFY, Topology.CHAIN}
        if self.max_agents < 2 and multi & set(self.topologies):
            raise ValueError(
                "spec.maxAgents is 1 but spec.topologies allows multi-agent topologies "
                "(chain, debate, ensemble, verify); raise maxAgents or allow only 'single'"
            )
        for topology in self.topologies:  # a topology no plan can take would be ignored
            self._check_reachable(topology)
        return self

    def _check_reachable(self, topology: Topology) -> None:
        wide_enough = permitted_plans([topology], self.max_agents)
        if not wide_enough:
            fewest = min(p.agents for p in CATALOGUE if p.topology is topology)
            raise ValueError(
                f"spec.topologies allows {topology.value}, whose smallest plan has {fewest} "
                f"agents, but spec.maxAgents is {self.max_agents}: raise maxAgents to "
                f"{fewest} or remove {topology.value}"
            )
        if self.roles is not None and not permitted_plans([topology], self.max_agents, self.roles):
            first = CATALOGUE[wide_enough[0]]
            needed = sorted({r.value for w in first.waves for r in w} - set(self.roles))
            raise ValueError(
                f"spec.roles leaves {topology.value} no plan: it needs "
                f"{', '.join(needed)}; add them to spec.roles or remove {topology.value}"
            )


class PipelineStatus(CamelModel):
    phase: Literal["Pending", "Ready", "Degraded", "Invalid"] | None = None
    gateway_url: str | None = None
    pools: list[str] | None = None
    ready_pools: int | None = None
    policy: str | None = None
    policy_version: str | None = None
    config_hash: str | None = None
    slo_compliance_percent: float | None = Field(
        default=None,
        description="Share of the last hour's queries answered within budget, from the "
        "gateways' metrics in Prometheus (a query they failed counts as missed)",
    )
    requests_served: int | None = Field(
        default=None, description="Queries the gateways answered in the last hour (Prometheus)"
    )
    observed_generation: int | None = None
    conditions: list[Condition] | None = None


class AgentPipeline(CamelModel):
    spec: AgentPipelineSpec
    status: PipelineStatus | None = None


AGENTPIPELINE_CRD = CrdInfo(
    kind="AgentPipeline",
    plural="agentpipelines",
    singular="agentpipeline",
    short_names=("ap", "pipeline"),
    description="A multi-agent LLM pipeline served by an InfraMind gateway over ModelPools.",
    columns=(
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Pools", ".status.readyPools", "integer", "ModelPools with endpoints"),
        PrinterColumn("Scheduler", ".spec.scheduler"),
        PrinterColumn("Policy", ".status.policy"),
        PrinterColumn("Version", ".status.policyVersion", priority=1),
        PrinterColumn("SLO%", ".status.sloCompliancePercent", "number"),
        PrinterColumn("Served", ".status.requestsServed", "integer"),
        PrinterColumn("Gateway", ".status.gatewayUrl", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)

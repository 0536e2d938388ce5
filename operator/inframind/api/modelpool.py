"""The ModelPool custom resource: a set of vLLM servers for one model, managed or external."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from .common import CamelModel, Condition, CrdInfo, PrinterColumn, SecretKeyRef


def _check_endpoint(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(
            f"endpoint {url!r} is not an http(s) URL with a host; "
            "write it like 'http://vllm-llama.models.svc:8000'"
        )
    if parsed.path not in ("", "/", "/v1", "/v1/"):
        raise ValueError(
            f"endpoint {url!r} has path {parsed.path!r}; give the server root "
            "(optionally ending in /v1), InfraMind adds /v1/chat/completions itself"
        )
    try:
        parsed.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValueError(f"endpoint {url!r} has a malformed port: {exc}") from None
    return url.rstrip("/").removesuffix("/v1")


EndpointUrl = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_check_endpoint)]


class DepthValues(CamelModel):
    """One number per reasoning depth."""

    flash: float | None = Field(default=None, ge=0)
    concise: float | None = Field(default=None, ge=0)
    deepthink: float | None = Field(default=None, ge=0)


class TaskTable(CamelModel):
    """One DepthValues per task family."""

    math: DepthValues | None = None
    code: DepthValues | None = None
    knowledge: DepthValues | None = None


class ModelProfile(CamelModel):
    """What the planner knows about the model before it sees any load.

    Accuracies are priors in [0, 1] per task family and depth; output tokens
    are typical completion lengths. Missing entries fall back to the built-in
    calibration for the model (see shared calibration notes) or to neutral
    values when the model is unknown.
    """

    accuracy: TaskTable | None = None
    output_tokens: TaskTable | None = None
    # Relative capability used when no per-task prior is given (0..1).
    quality: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _accuracies_are_probabilities(self) -> ModelProfile:
        if self.accuracy is None:
            return self
        for family in ("math", "code", "knowledge"):
            values = getattr(self.accuracy, family)
            if values is None:
                continue
            for depth in ("flash", "concise", "deepthink"):
                v = getattr(values, depth)
                if v is not None and v > 1:
                    raise ValueError(
                        f"profile.accuracy.{family}.{depth} is {v}; accuracies are "
                        "fractions between 0 and 1 (write 0.72, not 72)"
                    )
        return self


class EngineArgs(CamelModel):
    """vLLM engine arguments the operator sets; anything else goes in extraArgs."""

    max_model_len: int = Field(default=16384, ge=256, le=1_048_576)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_num_seqs: int = Field(default=32, ge=1, le=4096)
    tensor_parallel_size: int | None = Field(default=None, ge=1, le=64)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    # Passed through verbatim after the operator's own flags.
    extra_args: list[Annotated[str, Field(max_length=512)]] = Field(
        default_factory=list, max_length=64
    )

    @model_validator(mode="after")
    def _no_conflicting_flags(self) -> EngineArgs:
        owned = (
            "--scheduling-policy",
            "--model",
            "--served-model-name",
            "--host",
            "--port",
        )
        for arg in self.extra_args:
            flag = arg.split("=", 1)[0]
            if flag in owned:
                raise ValueError(
                    f"engine.extraArgs sets {flag}, which the operator owns; "
                    "remove it (set spec.model / spec.servedModelName instead)"
                )
        return self


class Toleration(CamelModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class ManagedServing(CamelModel):
    """The operator runs vLLM itself: a Deployment and a Service."""

    replicas: int = Field(default=1, ge=0, le=128)
    image: str | None = Field(
        default=None, max_length=512, description="vLLM OpenAI server image; default from settings"
    )
    gpus: int = Field(default=1, ge=0, le=16, description="nvidia.com/gpu per replica")
    cpu: str = Field(default="4", pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str = Field(default="32Gi", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")
    engine: EngineArgs = Field(default_factory=EngineArgs)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    hf_token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a Hugging Face token (env HF_TOKEN)"
    )


class ModelPoolSpec(CamelModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.managed) != has(self.endpoints)",
                    "message": "set exactly one of spec.managed (operator runs vLLM) "
                    "or spec.endpoints (existing servers)",
                },
                {
                    "rule": "!has(self.managed) || !has(self.maxNumSeqs)",
                    "message": "spec.maxNumSeqs describes external servers; for a managed "
                    "pool set spec.managed.engine.maxNumSeqs",
                },
            ]
        }
    )

    model: str = Field(
        min_length=1,
        max_length=512,
        description="Model id or path, e.g. meta-llama/Llama-3.1-8B-Instruct",
    )
    served_model_name: str | None = Field(
        default=None,
        max_length=253,
        description="Name clients and InfraMind use; default the pool name",
    )
    managed: ManagedServing | None = None
    endpoints: list[EndpointUrl] | None = Field(
        default=None,
        max_length=256,
        description="External mode: existing OpenAI-compatible vLLM servers",
    )
    profile: ModelProfile = Field(default_factory=ModelProfile)
    # Engines must run --scheduling-policy priority for EDF to take effect;
    # external pools declare whether theirs do.
    priority_scheduling_enabled: bool = True
    max_num_seqs: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="External mode: the servers' --max-num-seqs (sequences each runs at "
        "once). When set, gateways send each server at most this many calls and hold the "
        "rest, earliest deadline first; unset, calls go straight out and estimates assume "
        "32. Managed pools take it from managed.engine.maxNumSeqs",
    )

    @model_validator(mode="after")
    def _exactly_one_mode(self) -> ModelPoolSpec:
        if self.managed is not None and self.endpoints is not None:
            raise ValueError(
                "spec has both 'managed' and 'endpoints'; a pool is either run by the "
                "operator (managed) or points at existing servers (endpoints), not both"
            )
        if self.managed is None and self.endpoints is None:
            raise ValueError(
                "spec needs either 'managed' (the operator runs vLLM) or "
                "'endpoints' (URLs of existing vLLM servers)"
            )
        if self.endpoints is not None and not self.endpoints:
            raise ValueError(
                "spec.endpoints is empty; list at least one vLLM server URL "
                "or use 'managed' to let the operator run one"
            )
        if self.endpoints is not None and len(set(self.endpoints)) != len(self.endpoints):
            raise ValueError("spec.endpoints lists the same URL twice; remove the duplicate")
        if self.managed is not None and self.max_num_seqs is not None:
            raise ValueError(
                "spec.maxNumSeqs describes external servers; for a managed pool set "
                "spec.managed.engine.maxNumSeqs, which the operator passes to vLLM"
            )
        return self

    @property
    def mode(self) -> Literal["managed", "external"]:
        return "managed" if self.managed is not None else "external"


class EndpointLoadStatus(CamelModel):
    """One endpoint's share of the pool's load (external pools list several)."""

    url: str
    waiting: float | None = None
    running: float | None = None
    kv_usage_percent: float | None = None


class PoolLoadStatus(CamelModel):
    """Latest load of the pool, as last observed (Prometheus or direct scrape)."""

    waiting: float | None = None
    running: float | None = None
    kv_usage_percent: float | None = None
    gpu_util_percent: float | None = None
    latency_p50_seconds: float | None = None
    latency_p95_seconds: float | None = None
    ttft_p50_seconds: float | None = None
    gpu_memory_used_mib: float | None = None
    source: Literal["prometheus", "scrape", "none"] | None = None
    stale: bool | None = None
    observed_at: str | None = None
    endpoints: list[EndpointLoadStatus] | None = None


class ModelPoolStatus(CamelModel):
    phase: Literal["Pending", "Ready", "Degraded", "Invalid"] | None = None
    mode: Literal["managed", "external"] | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    endpoints: list[str] | None = None
    load: PoolLoadStatus | None = None
    observed_generation: int | None = None
    conditions: list[Condition] | None = None


class ModelPool(CamelModel):
    """Typed view of a whole ModelPool object (spec only is validated by the operator)."""

    spec: ModelPoolSpec
    status: ModelPoolStatus | None = None


MODELPOOL_CRD = CrdInfo(
    kind="ModelPool",
    plural="modelpools",
    singular="modelpool",
    short_names=("mp", "pool"),
    description="A set of vLLM servers for one model: run by the operator or existing ones.",
    columns=(
        PrinterColumn("Model", ".spec.model"),
        PrinterColumn("Mode", ".status.mode"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Ready", ".status.readyReplicas", "integer"),
        PrinterColumn("Queue", ".status.load.waiting", "number", "Requests waiting in vLLM"),
        PrinterColumn("KV%", ".status.load.kvUsagePercent", "number", "KV-cache usage"),
        PrinterColumn("GPU%", ".status.load.gpuUtilPercent", "number", priority=1),
        PrinterColumn("P95", ".status.load.latencyP95Seconds", "number", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)

"""Serving calibration: model sizes, GPUs and placements -> engine speeds, KV capacity, profiles.

Every figure carries the tag of /work/shared/calibration/SERVING.md: [R] a
recalled public fact (model config.json, GPU datasheet, vLLM docs), [D] derived
here from a formula, [E] an estimate to be replaced by measurements. The
simulator's engines and the policies' `PoolProfile`s are both built from this
module, so a policy's priors and the simulated cluster never disagree on speed.

Step-time model (one engine replica, alone on its GPU):
  decode step  = a + b * running + c * (context tokens held by the batch)
  prefill      = p * prompt tokens admitted in the step (added to that step)
with a = weights / (bandwidth * eff) + step overhead, b = p = 2 * params FLOPs /
(peak * MFU), c = KV bytes per token / (bandwidth * eff) [D from the roofline].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..policy.types import DEPTHS, TASKS, PoolProfile

BLOCK_TOKENS = 16  # vLLM paged-KV block size [R]
MAX_NUM_SEQS = 32  # the authors' setting (vLLM default) [R, ACCURACY.md Table 4]
MAX_NUM_BATCHED_TOKENS = 8192  # chunked-prefill token budget per step [R vLLM V1 default order]
MAX_MODEL_LEN = 16384  # the authors' max_model_len [R, ACCURACY.md Table 4]
DECODE_EFFICIENCY = 0.65  # achieved share of HBM bandwidth in decode [E, SERVING.md §3: 0.6-0.7]
PREFILL_MFU = 0.50  # achieved share of dense bf16 FLOPs in prefill [E, SERVING.md §3: 40-60 %]
STEP_OVERHEAD_S = 0.001  # scheduler, sampling and launch floor per engine step [E]
# A "typical" context per running sequence, used only to turn the step model into
# the single tpot figures a PoolProfile carries [E].
TYPICAL_CONTEXT = 1000
TYPICAL_PROMPT = 200


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Architecture of one served model [R from config.json; SERVING.md §1]."""

    key: str
    hf_name: str
    layers: int
    kv_heads: int
    head_dim: int
    params_b: float
    # Share of calls in which the model obeys a Flash prompt [E, ACCURACY.md §B].
    flash_compliance: float

    @property
    def weights_bytes(self) -> float:
        return self.params_b * 1e9 * 2  # bf16 [D]

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * 2  # K and V, bf16 [D]


MODELS: dict[str, ModelSpec] = {
    m.key: m
    for m in (
        ModelSpec("r1-32b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 64, 8, 128, 32.8, 0.05),
        ModelSpec(
            "mistral-24b", "mistralai/Mistral-Small-24B-Instruct-2501", 40, 8, 128, 23.6, 0.9
        ),
        ModelSpec("qwen-coder-14b", "Qwen/Qwen2.5-Coder-14B-Instruct", 48, 8, 128, 14.7, 0.8),
        ModelSpec("llama-8b", "meta-llama/Llama-3.1-8B-Instruct", 32, 8, 128, 8.0, 0.9),
        ModelSpec("llama-3b", "meta-llama/Llama-3.2-3B-Instruct", 28, 8, 128, 3.2, 0.9),
    )
}
# The paper's pool order; pools are indexed in this order unless a caller picks others.
MODEL_ORDER: tuple[str, ...] = tuple(MODELS)


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One GPU [R datasheets, SERVING.md §3]; `memory_bytes` is what vLLM can use."""

    name: str
    bandwidth_bps: float
    bf16_flops: float
    memory_bytes: float


GPUS: dict[str, GpuSpec] = {
    "B200": GpuSpec("B200", 8.0e12, 2.25e15, 180e9),  # ~180 GB usable [R]
    "H100": GpuSpec("H100", 3.35e12, 0.99e15, 80e9),  # SXM 80 GB [R]
}


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One vLLM server: a model on one GPU with a share of its memory."""

    model: str
    gpu: int
    memory_fraction: float


@dataclass(frozen=True, slots=True)
class Placement:
    name: str
    gpu: GpuSpec
    gpus: int
    engines: tuple[EngineSpec, ...]
    source: str

    def engines_of(self, model: str) -> tuple[EngineSpec, ...]:
        return tuple(e for e in self.engines if e.model == model)


PLACEMENTS: dict[str, Placement] = {
    # The authors' layout [R, ACCURACY.md Table 4]: five engines co-located on two B200s.
    "b200x2": Placement(
        "b200x2",
        GPUS["B200"],
        2,
        (
            EngineSpec("r1-32b", 0, 0.40),
            EngineSpec("qwen-coder-14b", 0, 0.18),
            EngineSpec("mistral-24b", 1, 0.30),
            EngineSpec("llama-8b", 1, 0.15),
            EngineSpec("llama-3b", 1, 0.12),
        ),
        "the paper's placement [R]",
    ),
    # A plausible 8x H100 layout [E, not from the paper]: one engine per GPU at 0.92
    # memory, no co-location; replicas where the model is slow or KV-poor.
    "h100x8": Placement(
        "h100x8",
        GPUS["H100"],
        8,
        (
            EngineSpec("r1-32b", 0, 0.92),
            EngineSpec("r1-32b", 1, 0.92),
            EngineSpec("mistral-24b", 2, 0.92),
            EngineSpec("mistral-24b", 3, 0.92),
            EngineSpec("qwen-coder-14b", 4, 0.92),
            EngineSpec("qwen-coder-14b", 5, 0.92),
            EngineSpec("llama-8b", 6, 0.92),
            EngineSpec("llama-3b", 7, 0.92),
        ),
        "an estimate [E]: one engine per GPU, replicas for the large models",
    ),
}


def get_placement(name: str) -> Placement:
    try:
        return PLACEMENTS[name]
    except KeyError:
        known = ", ".join(PLACEMENTS)
        raise ValueError(f"unknown placement {name!r}; known: {known}") from None


@dataclass(frozen=True, slots=True)
class EngineCalibration:
    """Derived speed and capacity of one engine replica (alone on its GPU)."""

    model: str
    gpu: int
    kv_blocks: int
    a_s: float  # fixed part of a decode step
    b_s: float  # per running sequence per step
    c_s: float  # per context token held by the batch, per step
    p_s: float  # per prompt token prefilled
    max_num_seqs: int = MAX_NUM_SEQS
    max_num_batched_tokens: int = MAX_NUM_BATCHED_TOKENS

    @property
    def kv_tokens(self) -> int:
        return self.kv_blocks * BLOCK_TOKENS

    def decode_step_s(self, batch: int, context_tokens: int) -> float:
        return self.a_s + self.b_s * batch + self.c_s * context_tokens

    def lone_call_s(self, prompt_tokens: int, output_tokens: int) -> float:
        """End-to-end seconds of one call on an idle engine (the simulator's exact sum).

        Each step decodes one token; the first step also prefills the prompt; the
        context grows by one token per step.
        """
        n = output_tokens
        per_step = self.a_s + self.b_s + self.c_s * prompt_tokens
        return self.p_s * prompt_tokens + n * per_step + self.c_s * n * (n - 1) / 2


def calibrate(spec: EngineSpec, gpu: GpuSpec) -> EngineCalibration:
    model = MODELS[spec.model]
    share = spec.memory_fraction * gpu.memory_bytes
    # KV left after weights; activations and CUDA graphs ignored (SERVING.md §2) [D].
    kv_bytes = share - model.weights_bytes
    if kv_bytes <= 0:
        raise ValueError(
            f"{spec.model} does not fit in {spec.memory_fraction:.2f} of a {gpu.name}: "
            "raise its memory fraction"
        )
    blocks = int(kv_bytes // (model.kv_bytes_per_token * BLOCK_TOKENS))
    bandwidth = gpu.bandwidth_bps * DECODE_EFFICIENCY
    per_token_flops_s = 2 * model.params_b * 1e9 / (gpu.bf16_flops * PREFILL_MFU)
    return EngineCalibration(
        model=spec.model,
        gpu=spec.gpu,
        kv_blocks=blocks,
        a_s=model.weights_bytes / bandwidth + STEP_OVERHEAD_S,
        b_s=per_token_flops_s,
        c_s=model.kv_bytes_per_token / bandwidth,
        p_s=per_token_flops_s,
    )


def engine_calibrations(placement: str | Placement) -> tuple[EngineCalibration, ...]:
    plc = placement if isinstance(placement, Placement) else get_placement(placement)
    return tuple(calibrate(e, plc.gpu) for e in plc.engines)


class _HasTables(Protocol):
    def profile_tables(self, model: str) -> tuple[np.ndarray, np.ndarray]: ...


Tables = Mapping[str, tuple[np.ndarray, np.ndarray]] | _HasTables | Callable[[str], tuple]


def _tables_for(tables: Tables | None, model: str) -> tuple[np.ndarray, np.ndarray]:
    if tables is None:
        # Neutral priors: enough for speed-only uses (tests, load studies).
        shape = (len(TASKS), len(DEPTHS))
        return np.full(shape, 0.5), np.full(shape, 300.0)
    if isinstance(tables, Mapping):
        return tables[model]
    if hasattr(tables, "profile_tables"):
        return tables.profile_tables(model)
    return tables(model)


def pool_profiles(
    placement: str | Placement = "b200x2",
    tables: Tables | None = None,
    pools: Sequence[str] | None = None,
) -> tuple[PoolProfile, ...]:
    """The policies' view of each pool, from the same calibration the simulator runs.

    `tables` gives each model's (accuracy[task, depth], output_tokens[task, depth])
    priors: an AccuracyModel, a mapping or a callable. Speeds are for one replica
    alone on its GPU at small batch (co-location slows them under load; the live
    latency signal carries that).
    """
    plc = placement if isinstance(placement, Placement) else get_placement(placement)
    names = tuple(pools) if pools is not None else pool_names(plc)
    biggest = max(MODELS[m].params_b for m in names)
    out = []
    for name in names:
        specs = plc.engines_of(name)
        if not specs:
            raise ValueError(f"placement {plc.name!r} serves no {name!r}")
        cal = calibrate(specs[0], plc.gpu)
        acc, tok = _tables_for(tables, name)
        out.append(
            PoolProfile(
                name=name,
                model=MODELS[name].hf_name,
                accuracy=np.asarray(acc, dtype=float),
                output_tokens=np.asarray(tok, dtype=float),
                ttft_s=cal.p_s * TYPICAL_PROMPT + cal.decode_step_s(1, TYPICAL_PROMPT),
                tpot_s=cal.decode_step_s(1, TYPICAL_CONTEXT),
                tpot_slope_s=cal.b_s + cal.c_s * TYPICAL_CONTEXT,
                max_running=cal.max_num_seqs,
                replicas=len(specs),
                cost=MODELS[name].params_b / biggest,
                flash_compliance=MODELS[name].flash_compliance,
            )
        )
    return tuple(out)


def pool_names(placement: str | Placement) -> tuple[str, ...]:
    """Models a placement serves, in the paper's pool order."""
    plc = placement if isinstance(placement, Placement) else get_placement(placement)
    served = {e.model for e in plc.engines}
    return tuple(m for m in MODEL_ORDER if m in served)


def describe(placement: str = "b200x2") -> list[dict[str, float | str]]:
    """One row per engine: the derived figures, for the CLI and for review."""
    rows = []
    for cal in engine_calibrations(placement):
        rows.append(
            {
                "model": cal.model,
                "gpu": cal.gpu,
                "kv_tokens": cal.kv_tokens,
                "decode_ms_b1": 1e3 * cal.decode_step_s(1, TYPICAL_CONTEXT),
                "decode_ms_b32": 1e3 * cal.decode_step_s(32, 32 * TYPICAL_CONTEXT),
                "prefill_tok_s": 1.0 / cal.p_s,
                "lone_200_500_s": cal.lone_call_s(200, 500),
            }
        )
    return rows


def blocks_for(tokens: int) -> int:
    return math.ceil(tokens / BLOCK_TOKENS)

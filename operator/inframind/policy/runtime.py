"""Load the policy a pipeline asks for: a named heuristic, or exported weights run with numpy.

An exported policy is one `.npz` file: a JSON `meta` entry (format, version,
the feature schema it was trained on, activation) and the weight matrices of
two small MLPs, `planner/W0, planner/b0, ...` and `executor/W0, ...`. The
runtime is numpy only (no torch or ray on the gateway's hot path). A file
trained on a different feature schema is refused with a message, and the
pipeline falls back to its named fallback heuristic rather than go down.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..api.pipeline import PolicySource
from ..vocab import Depth
from .base import Limits, Policy
from .features import (
    EXECUTOR_ACTIONS,
    EXECUTOR_FEATURES,
    FEATURE_SCHEMA,
    MAX_POOLS,
    PLANNER_ACTIONS,
    PLANNER_FEATURES,
    POOL_WIDTH,
    QUERY_WIDTH,
    action_to_choice,
    executor_mask,
    query_fields,
    step_fields,
)
from .heuristics import SafetyTuner, make_heuristic
from .plans import CATALOGUE
from .types import DEPTHS, Choice, ClusterSnapshot, Plan, Query, StepContext

FORMAT = "inframind-policy/1"


class PolicyFileError(ValueError):
    """The artifact cannot be used; the message says why and what to do."""


def _mlp(params: dict[str, np.ndarray], prefix: str) -> list[tuple[np.ndarray, np.ndarray]]:
    layers = []
    i = 0
    while f"{prefix}/W{i}" in params:
        W, b = params[f"{prefix}/W{i}"], params.get(f"{prefix}/b{i}")
        if b is None:
            raise PolicyFileError(f"the policy file has {prefix}/W{i} but no {prefix}/b{i}")
        if W.ndim != 2 or b.shape != (W.shape[1],):
            raise PolicyFileError(
                f"the policy file's {prefix} layer {i} has weights {W.shape} and bias "
                f"{b.shape}; a layer needs (inputs, outputs) and (outputs,)"
            )
        if layers and layers[-1][0].shape[1] != W.shape[0]:
            raise PolicyFileError(
                f"the policy file's {prefix} layer {i} takes {W.shape[0]} inputs but layer "
                f"{i - 1} gives {layers[-1][0].shape[1]}"
            )
        layers.append((W.astype(np.float32), b.astype(np.float32)))
        i += 1
    if not layers:
        raise PolicyFileError(f"the policy file has no {prefix} weights ({prefix}/W0 missing)")
    return layers


# Pre-activation of the runtime's constant unit: tanh(20.0) is exactly 1.0 in float32.
_ONE_AFTER_TANH = np.float32(20.0)


class _Net:
    """One exported MLP, arranged for single observations on the hot path.

    Rewrites of `x @ W + b`, equal in arithmetic (float32 sums may round in another
    order), that cut numpy calls and conversions, which are most of the time at this
    size: a padded pool slot's fields are zeros, so the first layer keeps, per pool
    count, only the rows the present pools use (the input is built without padding).
    Every bias rides as one more input fixed at 1: the input gets a 1 appended, and each
    hidden layer one more unit whose pre-activation is constant (tanh of it is exactly
    1.0). A constant penalty on the outputs (masked actions) is folded into the last bias.
    """

    def __init__(
        self,
        layers: list[tuple[np.ndarray, np.ndarray]],
        tail: int,
        penalty: np.ndarray | None = None,
    ) -> None:
        biased = []  # each layer's matrix with its bias as the last row
        for i, (W, b) in enumerate(layers):
            b = b + penalty if penalty is not None and i == len(layers) - 1 else b
            Wb = np.vstack([W, b[None, :]])
            if i < len(layers) - 1:  # a hidden layer: one more unit, constant after tanh
                one = np.zeros((Wb.shape[0], 1), dtype=np.float32)
                one[-1] = _ONE_AFTER_TANH
                Wb = np.hstack([Wb, one])
            biased.append(np.ascontiguousarray(Wb, dtype=np.float32))
        after_pools = QUERY_WIDTH + POOL_WIDTH * MAX_POOLS
        bias_row = biased[0].shape[0] - 1
        self.first = [  # by pool count
            biased[0][
                np.r_[
                    0 : QUERY_WIDTH + POOL_WIDTH * n,
                    after_pools : after_pools + tail,
                    bias_row,
                ]
            ]
            for n in range(MAX_POOLS + 1)
        ]
        self.hidden = biased[1:-1]  # after the first layer, before the output layer
        self.out = biased[-1] if len(biased) > 1 else None

    def __call__(self, x: list[float], pools: int) -> np.ndarray:
        """Outputs for the unpadded input `x` of `pools` pools (appends the bias input)."""
        x.append(1.0)
        h = np.dot(np.fromiter(x, np.float32, len(x)), self.first[pools])
        if self.out is None:  # a single linear layer
            return h
        np.tanh(h, out=h)
        for W in self.hidden:
            h = np.dot(h, W)
            np.tanh(h, out=h)
        return np.dot(h, self.out)


class LearnedPolicy(Policy):
    """Greedy (argmax) decisions of an exported planner and executor, masked to the limits."""

    name = "learned"

    def __init__(self, path: Path, limits: Limits | None = None) -> None:
        super().__init__(limits)
        meta, params = read_policy_file(path)
        self.version = str(meta.get("version", "unknown"))
        self.meta = meta
        self.planner = _mlp(params, "planner")
        self.executor = _mlp(params, "executor")
        self._check_shapes()
        allowed = set(self.limits.plan_ids)
        # Masks as additive penalties (0 or -inf): the planner's is constant, so it is
        # part of the last bias; the executor's follows the pools' availability.
        plan_penalty = _penalty(np.array([i in allowed for i in range(PLANNER_ACTIONS)]))
        self._plan_net = _Net(self.planner, 0, plan_penalty)
        self._step_net = _Net(self.executor, len(EXECUTOR_FEATURES) - len(PLANNER_FEATURES))
        self._step_penalty: dict[tuple[float, ...], np.ndarray] = {}
        self._depths_allowed = tuple(d for d in DEPTHS if d in self.limits.depths)
        # The last decision's query fields, for its first step: the gateway plans and takes
        # a one-step first wave on one snapshot (Runner.run), and the fields (a quarter of a
        # query's decision time) would be computed twice. Matched by identity: a snapshot
        # is immutable, and this reference keeps it from being reused by another.
        self._decided: tuple[ClusterSnapshot, Query, list[float]] | None = None

    def _check_shapes(self) -> None:
        want = [
            ("planner", self.planner, len(PLANNER_FEATURES), PLANNER_ACTIONS),
            ("executor", self.executor, len(EXECUTOR_FEATURES), EXECUTOR_ACTIONS),
        ]
        for name, layers, n_in, n_out in want:
            if layers[0][0].shape[0] != n_in or layers[-1][0].shape[1] != n_out:
                raise PolicyFileError(
                    f"{name} weights map {layers[0][0].shape[0]} -> {layers[-1][0].shape[1]}, "
                    f"this runtime needs {n_in} -> {n_out}; re-export the policy"
                )

    def decide(self, snapshot: ClusterSnapshot, query: Query) -> Plan:
        x = query_fields(snapshot, query, snapshot.now)
        self._decided = (snapshot, query, x[:])  # the net appends to x
        return CATALOGUE[int(self._plan_net(x, len(snapshot.profiles)).argmax())]

    def choose(self, snapshot: ClusterSnapshot, step: StepContext) -> Choice:
        decided = self._decided
        # The decision's fields were taken at its snapshot's time; a step's at its own.
        if (
            decided is not None
            and decided[0] is snapshot
            and decided[1] is step.query
            and step.now == snapshot.now
        ):
            x = decided[2][:]
        else:
            x = query_fields(snapshot, step.query, step.now)
        # Each pool's "present" field is 1.0 when it is available: the mask's key.
        available = tuple(
            x[QUERY_WIDTH : QUERY_WIDTH + POOL_WIDTH * len(snapshot.loads) : POOL_WIDTH]
        )
        x += step_fields(step)
        logits = self._step_net(x, len(snapshot.profiles))
        penalty = self._step_penalty.get(available)
        if penalty is None:
            if len(self._step_penalty) > 256:
                self._step_penalty.clear()
            mask = executor_mask(snapshot, self._depths_allowed)
            penalty = self._step_penalty[available] = _penalty(mask)
        logits += penalty
        return _CHOICES[int(logits.argmax())]


_CHOICES = tuple(  # by executor action
    Choice(pool, DEPTHS[depth]) for pool, depth in map(action_to_choice, range(EXECUTOR_ACTIONS))
)


def _penalty(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, 0.0, -np.inf).astype(np.float32)


def read_policy_file(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            params = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise PolicyFileError(f"policy file {path} does not exist") from None
    # A truncated or half-copied file fails in the zip layer, its members in zlib.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise PolicyFileError(f"policy file {path} is not a readable .npz: {exc}") from None
    if "meta" not in params:
        raise PolicyFileError(f"policy file {path} has no 'meta' entry; export it with inframind")
    try:
        meta = json.loads(str(params.pop("meta")))
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise PolicyFileError(f"policy file {path} has a 'meta' entry that is not a JSON object")
    if meta.get("format") != FORMAT:
        raise PolicyFileError(
            f"policy file {path} has format {meta.get('format')!r}; this runtime reads {FORMAT}"
        )
    if meta.get("feature_schema") != FEATURE_SCHEMA:
        raise PolicyFileError(
            f"policy file {path} was trained on feature schema {meta.get('feature_schema')!r} "
            f"but this gateway encodes {FEATURE_SCHEMA!r}; retrain or export with this version"
        )
    return meta, params


def write_policy_file(
    path: Path,
    planner: list[tuple[np.ndarray, np.ndarray]],
    executor: list[tuple[np.ndarray, np.ndarray]],
    version: str,
    **meta: Any,
) -> None:
    """Write an artifact the runtime reads (used by policy_training's exporter and tests)."""
    arrays: dict[str, np.ndarray] = {}
    for prefix, layers in (("planner", planner), ("executor", executor)):
        for i, (W, b) in enumerate(layers):
            arrays[f"{prefix}/W{i}"] = np.asarray(W, dtype=np.float32)
            arrays[f"{prefix}/b{i}"] = np.asarray(b, dtype=np.float32)
    info = {"format": FORMAT, "version": version, "feature_schema": FEATURE_SCHEMA, **meta}
    arrays["meta"] = np.array(json.dumps(info))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, **arrays)


def policy_file(source: PolicySource, base_dir: Path | None = None) -> Path | None:
    """Where a trained policy's artifact is read from; None for a heuristic."""
    if source.path is not None:
        return Path(source.path)
    if source.config_map_ref is not None:
        # The ConfigMap is mounted beside the pipeline config, one file per key.
        return (base_dir or Path(".")) / source.config_map_ref.key
    return None


def load_policy(
    source: PolicySource,
    limits: Limits,
    base_dir: Path | None = None,
    tuner: SafetyTuner | None = None,
    pools: int = 0,
) -> tuple[Policy, str, str | None]:
    """(policy, version, warning). Never raises for a bad artifact: falls back and says why.

    `tuner` keeps the pipeline's SLO target if the heuristic (or fallback) is budget-greedy.
    `pools`: how many the pipeline routes to; more than the encoder's slots also fall back.
    """
    path = policy_file(source, base_dir)
    if path is None:
        assert source.heuristic is not None
        policy = make_heuristic(source.heuristic, limits, tuner)
        return policy, f"heuristic:{source.heuristic}", None
    try:
        if pools > MAX_POOLS:
            raise PolicyFileError(
                f"the pipeline has {pools} pools and a learned policy sees at most "
                f"{MAX_POOLS}: split the pipeline, or raise MAX_POOLS and retrain"
            )
        policy = LearnedPolicy(path, limits)
    except ValueError as exc:  # PolicyFileError, or weights numpy cannot read as numbers
        reason = exc if isinstance(exc, PolicyFileError) else f"policy file {path}: {exc}"
        fallback = make_heuristic(source.fallback, limits, tuner)
        warning = f"{reason}; using {source.fallback} meanwhile"
        return fallback, f"heuristic:{source.fallback}", warning
    return policy, policy.version, None


__all__ = [
    "Depth",
    "LearnedPolicy",
    "PolicyFileError",
    "load_policy",
    "policy_file",
    "write_policy_file",
]

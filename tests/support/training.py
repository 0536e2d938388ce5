"""Helpers for tests of the trained policy: real decision points to compare runtimes on,
and the committed artifact published under other versions, as retraining would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from inframind.bench.scenarios import LEARNED_ARTIFACT


def write_committed_policy_as(path: Path, version: str) -> dict[str, Any]:
    """Write the committed policy to `path` under another version (its weights unchanged),
    as a retraining run would publish one; returns the artifact's meta."""
    with np.load(LEARNED_ARTIFACT) as data:
        arrays = {k: data[k] for k in data.files}
    meta = {**json.loads(str(arrays["meta"])), "version": version}
    arrays["meta"] = np.array(json.dumps(meta))
    with path.open("wb") as f:
        np.savez(f, **arrays)
    return meta


def decision_points(n: int, seed: int = 3, load_rpm: float = 100.0) -> list[tuple[Any, dict]]:
    """(request, observation) of planner and executor decisions on a loaded simulated
    cluster, reached by random masked actions; the request holds the snapshot the
    observation was encoded from. Needs the training extras (the RLlib environment)."""
    from inframind_training.env import InfraMindEnv

    env = InfraMindEnv({"window_s": 120.0, "loads_rpm": [load_rpm]})
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out: list[tuple[Any, dict]] = []
    while obs and len(out) < n:
        ((aid, o),) = obs.items()
        out.append((env._request, o))
        obs, *_ = env.step({aid: int(rng.choice(np.flatnonzero(o["action_mask"])))})
    return out

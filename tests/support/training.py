"""Helpers for tests of the trained policy: real decision points to compare runtimes on."""

from __future__ import annotations

from typing import Any

import numpy as np


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

"""Trained RLModules -> the `.npz` the gateway runs with numpy (`inframind.policy.runtime`).

The policy path of each module is Linear/tanh/.../Linear (actor encoder, then
the pi head); torch keeps a Linear's weight as [out, in] and the runtime
computes `x @ W + b`, so each weight is transposed. Value heads are training
machinery and are not exported.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inframind.policy.runtime import write_policy_file

Layers = list[tuple[np.ndarray, np.ndarray]]


def module_layers(module: Any) -> Layers:
    """(W [in, out], b [out]) per Linear of the module's policy path, in order."""
    linears = module.policy_layers()
    return [
        (lin.weight.detach().cpu().numpy().T.copy(), lin.bias.detach().cpu().numpy().copy())
        for lin in linears
    ]


def check_tanh_mlp(module: Any) -> None:
    """The runtime assumes tanh between layers; refuse anything else rather than export junk."""
    actor = getattr(module.encoder, "actor_encoder", module.encoder)
    acts = {type(m).__name__ for m in actor.modules() if not list(m.children())}
    acts -= {"Linear"}
    if acts - {"Tanh"}:
        raise ValueError(f"the runtime runs tanh MLPs; this encoder also has {sorted(acts)}")


def version_string(iteration: int, tag: str = "") -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-it{iteration}" + (f"-{tag}" if tag else "")


def export_policy(
    planner: Any, executor: Any, path: Path, version: str, **meta: Any
) -> tuple[Layers, Layers]:
    """Write both modules' policy networks to `path`; returns the layers written."""
    for module in (planner, executor):
        check_tanh_mlp(module)
    p, e = module_layers(planner), module_layers(executor)
    write_policy_file(Path(path), p, e, version, activation="tanh", **meta)
    return p, e


@torch.no_grad()
def torch_greedy(module: Any, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The trained module's greedy actions on a batch: argmax of its masked logits."""
    from ray.rllib.core.columns import Columns

    batch = {
        Columns.OBS: {
            "obs": torch.as_tensor(obs, dtype=torch.float32),
            "action_mask": torch.as_tensor(mask, dtype=torch.float32),
        }
    }
    logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    return logits.argmax(-1).numpy()

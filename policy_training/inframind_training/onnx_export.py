"""An exported policy (`.npz`) -> two ONNX models, for serving it outside this gateway.

The `.npz` stays the artifact the gateway runs (numpy only). ONNX is the second,
optional format: `planner.onnx` and `executor.onnx`, one per role, each taking
the encoder's padded observations and the action mask and giving the masked
logits and the greedy action, so an ONNX runtime elsewhere (Triton, a router in
another language) takes the same decisions. The version and feature schema
travel in each model's metadata; the input names and shapes say the rest.

    python -m inframind_training.onnx_export POLICY.npz [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inframind.policy.features import (
    EXECUTOR_ACTIONS,
    EXECUTOR_FEATURES,
    PLANNER_ACTIONS,
    PLANNER_FEATURES,
)
from inframind.policy.runtime import LearnedPolicy, PolicyFileError

# ai.onnx opset: MatMul, Add, Tanh, Where, ArgMax as used here are stable since 13.
OPSET = 17
ROLES = {
    "planner": (PLANNER_FEATURES, PLANNER_ACTIONS),
    "executor": (EXECUTOR_FEATURES, EXECUTOR_ACTIONS),
}


def role_model(
    layers: list[tuple[np.ndarray, np.ndarray]], role: str, meta: dict[str, str]
) -> onnx.ModelProto:
    """One role's MLP as an ONNX graph: obs [N, F] float32, action_mask [N, A] bool ->
    logits [N, A] (masked actions at -inf) and action [N] int64 (their argmax)."""
    features, actions = ROLES[role]
    nodes, inits = [], []
    x = "obs"
    for i, (W, b) in enumerate(layers):
        inits += [
            numpy_helper.from_array(np.asarray(W, np.float32), f"W{i}"),
            numpy_helper.from_array(np.asarray(b, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [x, f"W{i}"], [f"xw{i}"]),
            helper.make_node("Add", [f"xw{i}", f"b{i}"], [f"h{i}"]),
        ]
        x = f"h{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Tanh", [x], [f"a{i}"]))
            x = f"a{i}"
    inits.append(numpy_helper.from_array(np.array(-np.inf, np.float32), "masked"))
    nodes += [
        helper.make_node("Where", ["action_mask", x, "masked"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["action"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        f"inframind-{role}",
        inputs=[
            helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", len(features)]),
            helper.make_tensor_value_info("action_mask", TensorProto.BOOL, ["batch", actions]),
        ],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", actions]),
            helper.make_tensor_value_info("action", TensorProto.INT64, ["batch"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        producer_name="inframind",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string=f"InfraMind {role}: greedy action of the masked logits",
    )
    helper.set_model_props(model, {**meta, "role": role})
    onnx.checker.check_model(model)
    return model


def export_onnx(artifact: Path, out_dir: Path | None = None) -> list[Path]:
    """Write `<stem>.planner.onnx` and `<stem>.executor.onnx` for a policy `.npz`.

    The artifact is read as the gateway reads it, so a file from another feature
    schema or format is refused with the same message, before anything is written.
    """
    # Loaded by the gateway's own runtime: its format, schema and shape checks apply.
    policy = LearnedPolicy(artifact)
    out_dir = out_dir or artifact.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = policy.meta
    props = {k: str(meta[k]) for k in ("format", "version", "feature_schema") if k in meta}
    written = []
    for role, layers in (("planner", policy.planner), ("executor", policy.executor)):
        path = out_dir / f"{artifact.stem}.{role}.onnx"
        onnx.save(role_model(layers, role, props), path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="an exported policy .npz")
    parser.add_argument("--out", type=Path, default=None, help="directory (default: beside it)")
    args = parser.parse_args(argv)
    try:
        paths = export_onnx(args.artifact, args.out)
    except PolicyFileError as exc:
        print(f"onnx_export: error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

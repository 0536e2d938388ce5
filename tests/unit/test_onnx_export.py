"""ONNX, the optional second format: an ONNX runtime takes the gateway's decisions."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="training extras not installed (pip install .[train])")
pytest.importorskip("ray.rllib", reason="training extras not installed (pip install .[train])")

import onnx
import onnxruntime as ort

from inframind.bench.scenarios import LEARNED_ARTIFACT
from inframind.policy.features import (
    EXECUTOR_ACTIONS,
    EXECUTOR_FEATURES,
    FEATURE_SCHEMA,
    PLANNER_ACTIONS,
    PLANNER_FEATURES,
)
from inframind.policy.plans import CATALOGUE
from inframind.policy.runtime import LearnedPolicy, read_policy_file, write_policy_file
from inframind.policy.types import DEPTH_INDEX, DEPTHS
from inframind.sim.run import PlanRequest
from inframind_training.onnx_export import export_onnx, main
from support.training import decision_points

pytestmark = pytest.mark.unit


def _run(session, obs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feeds = {"obs": obs[None].astype(np.float32), "action_mask": mask[None].astype(bool)}
    logits, action = session.run(["logits", "action"], feeds)
    return logits[0], action[0]


def test_onnx_models_take_the_numpy_runtimes_decisions(tmp_path):
    planner_path, executor_path = export_onnx(LEARNED_ARTIFACT, tmp_path)
    planner = ort.InferenceSession(str(planner_path), providers=["CPUExecutionProvider"])
    executor = ort.InferenceSession(str(executor_path), providers=["CPUExecutionProvider"])
    runtime = LearnedPolicy(LEARNED_ARTIFACT)
    points = decision_points(300, seed=5)
    assert {isinstance(req, PlanRequest) for req, _ in points} == {True, False}
    for req, o in points:
        if isinstance(req, PlanRequest):
            logits, action = _run(planner, o["obs"], o["action_mask"])
            want = CATALOGUE.index(runtime.decide(req.snapshot, req.query))
        else:
            logits, action = _run(executor, o["obs"], o["action_mask"])
            choice = runtime.choose(req.snapshot, req.step)
            want = choice.pool * len(DEPTHS) + DEPTH_INDEX[choice.depth]
        assert int(action) == want
        assert np.all(np.isneginf(logits[~o["action_mask"].astype(bool)]))


def test_onnx_models_carry_the_version_schema_and_shapes(tmp_path):
    meta, _ = read_policy_file(LEARNED_ARTIFACT)
    paths = export_onnx(LEARNED_ARTIFACT, tmp_path)
    assert [p.name for p in paths] == [
        f"{LEARNED_ARTIFACT.stem}.planner.onnx",
        f"{LEARNED_ARTIFACT.stem}.executor.onnx",
    ]
    want = {"planner": (PLANNER_FEATURES, PLANNER_ACTIONS),
            "executor": (EXECUTOR_FEATURES, EXECUTOR_ACTIONS)}  # fmt: skip
    for path in paths:
        model = onnx.load(path)
        props = {p.key: p.value for p in model.metadata_props}
        assert props["version"] == meta["version"] and props["feature_schema"] == FEATURE_SCHEMA
        features, actions = want[props["role"]]
        obs, mask = model.graph.input
        assert obs.type.tensor_type.shape.dim[1].dim_value == len(features)
        assert mask.type.tensor_type.shape.dim[1].dim_value == actions


def test_an_artifact_from_another_schema_is_refused_and_nothing_is_written(tmp_path, capsys):
    rng = np.random.default_rng(0)
    old = tmp_path / "old.npz"
    write_policy_file(
        old,
        [(rng.normal(size=(len(PLANNER_FEATURES), PLANNER_ACTIONS)), np.zeros(PLANNER_ACTIONS))],
        [(rng.normal(size=(len(EXECUTOR_FEATURES), EXECUTOR_ACTIONS)), np.zeros(EXECUTOR_ACTIONS))],
        version="old",
        feature_schema="v0-000000000000",
    )
    out = tmp_path / "onnx"
    assert main([str(old), "--out", str(out)]) == 2
    assert "feature schema" in capsys.readouterr().err
    assert not out.exists()

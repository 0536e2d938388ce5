"""Smoke training end to end: RLlib PPO on the simulator, export, and the as-test bar."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ray.rllib", reason="training extras not installed (pip install .[train])")

from inframind.policy.runtime import LearnedPolicy
from inframind_training import train

pytestmark = pytest.mark.integration


def test_a_tiny_run_trains_exports_and_beats_a_random_policy(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    out = tmp_path / "policy.npz"
    code = train.main(
        [
            "--smoke",
            "--iterations=2",
            "--window-s=120",
            "--agent-queries=10",
            "--warmup-s=30",
            "--train-batch=400",
            "--minibatch=100",
            "--bc-episodes=4",
            "--bc-epochs=10",
            "--eval-duration-s=120",
            "--eval-loads=30",
            f"--out={out}",
            f"--run-dir={tmp_path / 'run'}",
            "--no-progress",
        ]
    )
    assert code == 0
    policy = LearnedPolicy(out)
    assert policy.meta["training"]["iterations"] == 2
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["iteration"] for h in history] == [1, 2]
    assert all(0 <= h["violation_rate"] <= 1 and h["lambda"] >= 0 for h in history)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["learned"]["quality"] > report["random"]["quality"]


def test_presets_and_flags_parse_into_one_dataclass():
    args = train.parse_args(["--full", "--loads-rpm=10,100", "--lr=3e-4"])
    assert args.mode == "full" and args.loads_rpm == (10.0, 100.0) and args.lr == 3e-4
    assert args.out == train.DEFAULT_ARTIFACT
    smoke = train.parse_args([])
    assert smoke.mode == "smoke" and smoke.out != train.DEFAULT_ARTIFACT
    tuned = train.parse_args(["--finetune", "--traces", "/traces", "--traces-days", "14"])
    assert tuned.traces_days == 14.0 and str(tuned.traces) == "/traces"
    for bad, says in (
        ("--traces-days=0", "--traces-days must be positive"),
        ("--dual=pid", "--dual must be"),
        ("--cost-ramp-from=1.5", "in \\[0, 1\\]"),
        ("--cost=guess", "--cost must be"),
    ):
        with pytest.raises(ValueError, match=says):
            train.parse_args([bad])


def test_snapshot_selection_never_trades_the_slo_for_quality():
    within = {"slo_compliance": 0.9991, "quality_expected": 0.40}
    richer_but_late = {"slo_compliance": 0.9978, "quality_expected": 0.42}
    later_still = {"slo_compliance": 0.9950, "quality_expected": 0.45}
    better_within = {"slo_compliance": 0.9995, "quality_expected": 0.41}

    def best(*candidates: dict) -> dict:
        return max(candidates, key=lambda m: train.selection_key(m, 0.999))

    assert best(within, richer_but_late) is within
    assert best(within, better_within, richer_but_late) is better_within
    assert best(richer_but_late, later_still) is richer_but_late  # none within: best SLO


def test_dual_ascent_moves_lambda_towards_the_slo_target():
    cfg = {"slo_target": 0.001, "dual_lr": 2.0, "lam_max": 3.0}
    # Additive: thousandths per iteration at this target, clipped to [0, lam_max].
    assert train.dual_step(0.5, 0.003, cfg) == pytest.approx(0.504)
    assert train.dual_step(0.0, 0.0, cfg) == 0.0
    # Relative: in proportion to the miss; from the floor when lambda is 0.
    rel = {**cfg, "dual": "relative", "dual_lr": 0.2, "lam_max": 20.0, "lam_floor": 0.05}
    assert train.dual_step(1.0, 0.003, rel) == pytest.approx(np.exp(0.4))
    assert train.dual_step(1.0, 0.0, rel) == pytest.approx(np.exp(-0.2))
    assert train.dual_step(1.0, 0.001, rel) == pytest.approx(1.0)
    assert train.dual_step(0.0, 0.002, rel) == pytest.approx(0.05 * np.exp(0.2))
    assert train.dual_step(19.0, 0.05, rel) == 20.0
    with pytest.raises(ValueError, match="dual must be"):
        train.dual_step(1.0, 0.0, {**cfg, "dual": "pid"})

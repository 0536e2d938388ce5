"""Export: the numpy runtime takes the same decisions as the trained torch modules."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray.rllib", reason="training extras not installed (pip install .[train])")

import gymnasium as gym
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from inframind.policy.features import EXECUTOR_ACTIONS, FEATURE_SCHEMA, PLANNER_ACTIONS
from inframind.policy.plans import CATALOGUE
from inframind.policy.runtime import LearnedPolicy, read_policy_file
from inframind.policy.types import DEPTH_INDEX, DEPTHS
from inframind.sim.run import PlanRequest
from inframind_training.env import executor_space, planner_space
from inframind_training.export import export_policy, torch_greedy
from inframind_training.module import MaskedPPOModule
from inframind_training.train import load_artifact_into
from support.training import decision_points

pytestmark = pytest.mark.unit

MODEL = {"fcnet_hiddens": [32, 32], "fcnet_activation": "tanh", "vf_share_layers": False}


def build(space: gym.Space, actions: int) -> MaskedPPOModule:
    spec = RLModuleSpec(
        module_class=MaskedPPOModule,
        observation_space=space,
        action_space=gym.spaces.Discrete(actions),
        model_config=MODEL,
    )
    return spec.build()


@pytest.fixture(scope="module")
def modules():
    import torch

    torch.manual_seed(0)
    return build(planner_space(), PLANNER_ACTIONS), build(executor_space(), EXECUTOR_ACTIONS)


def test_exported_policy_takes_the_torch_modules_greedy_actions(modules, tmp_path):
    planner, executor = modules
    path = tmp_path / "policy.npz"
    export_policy(planner, executor, path, "test-1", note="unit")
    runtime = LearnedPolicy(path)
    assert runtime.version == "test-1"
    requests = decision_points(400, seed=3)
    roles = {isinstance(req, PlanRequest) for req, _ in requests}
    assert roles == {True, False}
    for req, o in requests:
        if isinstance(req, PlanRequest):
            want = torch_greedy(planner, o["obs"][None], o["action_mask"][None])[0]
            got = CATALOGUE.index(runtime.decide(req.snapshot, req.query))
        else:
            want = torch_greedy(executor, o["obs"][None], o["action_mask"][None])[0]
            choice = runtime.choose(req.snapshot, req.step)
            got = choice.pool * len(DEPTHS) + DEPTH_INDEX[choice.depth]
        assert got == want


def test_artifact_records_schema_version_and_meta(modules, tmp_path):
    path = tmp_path / "policy.npz"
    export_policy(*modules, path, "v-meta", training={"lr": 1e-4})
    meta, params = read_policy_file(path)
    assert meta["feature_schema"] == FEATURE_SCHEMA
    assert meta["training"] == {"lr": 1e-4} and meta["activation"] == "tanh"
    assert params["executor/W0"].shape[1] == 32 and params["executor/W2"].shape[1] == 24


def test_fine_tuning_loads_an_artifact_back_into_the_modules(modules, tmp_path):
    path = tmp_path / "policy.npz"
    export_policy(*modules, path, "v1")
    fresh = build(planner_space(), PLANNER_ACTIONS), build(executor_space(), EXECUTOR_ACTIONS)
    load_artifact_into({"planner": fresh[0], "executor": fresh[1]}, path)
    for a, b in zip(modules, fresh, strict=True):
        for la, lb in zip(a.policy_layers(), b.policy_layers(), strict=True):
            assert np.array_equal(la.weight.detach().numpy(), lb.weight.detach().numpy())


def test_bench_resolves_learned_policies_by_path_and_scheduler(modules, tmp_path):
    from inframind.bench.scenarios import BenchError, resolve_policy
    from inframind.vocab import SchedulerKind

    path = tmp_path / "p.npz"
    export_policy(*modules, path, "bench-1")
    policy = resolve_policy(f"learned:{path}+fcfs")
    assert isinstance(policy, LearnedPolicy) and policy.version == "bench-1"
    assert policy.scheduler is SchedulerKind.FCFS and policy.name == f"learned:{path}+fcfs"
    with pytest.raises(BenchError, match="make train"):
        resolve_policy(f"learned:{tmp_path / 'missing.npz'}")

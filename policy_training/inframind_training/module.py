"""PPO's default MLP module with the env's action mask applied to its logits.

The observation is `{"obs": features, "action_mask": 0/1}`; the encoder and
heads see only `obs`, and masked actions get a logit of FLOAT_MIN, so they
are never sampled and carry no probability in the PPO loss. The network is
exactly what the numpy runtime runs (tanh MLP -> linear logits, argmax over
the mask), which keeps the export a matter of copying matrices.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.utils.torch_utils import FLOAT_MIN


class MaskedPPOModule(DefaultPPOTorchRLModule):
    def __init__(self, *args: Any, observation_space: gym.Space | None = None, **kwargs: Any):
        if not isinstance(observation_space, gym.spaces.Dict):
            raise ValueError("MaskedPPOModule needs a Dict space with 'obs' and 'action_mask'")
        self._dict_space = observation_space
        # The catalog builds the encoder from the feature vector's space alone.
        super().__init__(*args, observation_space=observation_space["obs"], **kwargs)

    def setup(self) -> None:
        super().setup()
        # Connectors read the module's space; they see what the env sends.
        self.observation_space = self._dict_space

    @staticmethod
    def _split(batch: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor | None]:
        obs = batch[Columns.OBS]
        if not isinstance(obs, dict):
            return batch, None
        return {**batch, Columns.OBS: obs["obs"]}, obs["action_mask"]

    @staticmethod
    def _mask(out: dict[str, Any], mask: torch.Tensor | None) -> dict[str, Any]:
        if mask is not None:
            logits = out[Columns.ACTION_DIST_INPUTS]
            out[Columns.ACTION_DIST_INPUTS] = torch.where(
                mask > 0, logits, torch.full_like(logits, FLOAT_MIN)
            )
        return out

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        inner, mask = self._split(batch)
        return self._mask(super()._forward(inner, **kwargs), mask)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        inner, mask = self._split(batch)
        return self._mask(super()._forward_train(inner, **kwargs), mask)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        inner, _ = self._split(batch)
        return super().compute_values(inner, embeddings)

    def policy_layers(self) -> list[torch.nn.Linear]:
        """The Linear layers from features to logits, in order (actor encoder, then pi head)."""
        actor = getattr(self.encoder, "actor_encoder", self.encoder)
        layers = [m for m in actor.modules() if isinstance(m, torch.nn.Linear)]
        layers += [m for m in self.pi.modules() if isinstance(m, torch.nn.Linear)]
        return layers

"""Dueling Q-networks (Wang et al. 2016): separate value and advantage streams over the same features.

Q(s, a) = V(s) + A(s, a) − mean_a' A(s, a'), which keeps V and A identifiable. The streams are MLPs over the features
(the Nature CNN's 512 for Atari) with the policy's `net_arch` hidden layers each. Models save and load through the
ordinary SB3 zip: `policy_kwargs` holds `dueling: True` and the policy class is one of the two below.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.dqn.policies import CnnPolicy, MlpPolicy, QNetwork
from torch import nn


class DuelingQNetwork(QNetwork):
    """SB3's QNetwork with a value stream and an advantage stream instead of one head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        action_dim = int(self.action_space.n)
        hidden = list(self.net_arch)
        self.q_net = nn.Sequential()  # replaced by the two streams below
        self.advantage = nn.Sequential(*create_mlp(self.features_dim, action_dim, hidden, self.activation_fn))
        self.value = nn.Sequential(*create_mlp(self.features_dim, 1, hidden, self.activation_fn))

    def forward(self, obs: Any) -> th.Tensor:
        features = self.extract_features(obs, self.features_extractor)
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(dim=1, keepdim=True)


class _Dueling:
    """Mixin for SB3's DQN policies: `dueling=True` builds `DuelingQNetwork`s (online and target)."""

    def __init__(self, *args: Any, dueling: bool = True, **kwargs: Any) -> None:
        self.dueling = dueling
        super().__init__(*args, **kwargs)

    def make_q_net(self) -> QNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)  # type: ignore[attr-defined]
        cls = DuelingQNetwork if self.dueling else QNetwork
        return cls(**net_args).to(self.device)  # type: ignore[attr-defined]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data["dueling"] = self.dueling
        return data


class DuelingCnnPolicy(_Dueling, CnnPolicy):
    """SB3's CnnPolicy (Nature CNN) with dueling streams."""


class DuelingMlpPolicy(_Dueling, MlpPolicy):
    """SB3's MlpPolicy with dueling streams."""


def policy_class(name: str, dueling: bool) -> Any:
    """The SB3 policy class (or name) for `policy` and `dueling`."""
    if not dueling:
        return name
    return DuelingCnnPolicy if name == "CnnPolicy" else DuelingMlpPolicy


def greedy_actions(policy: Any, observation: Any) -> np.ndarray | None:
    """argmax_a Q(s, a) for a batch of observations: what SB3's `policy.predict(batch, deterministic=True)` returns,
    without its per-call work (training-mode switch over every module, observation checks and reshapes), with
    images handed to the convolutions channels-last on CPU, the layout their weights have there, and under
    `inference_mode` (no autograd bookkeeping at all). For 8 Atari games: 2.3 ms per call through `predict`, 2.0
    with the direct argmax, 1.66 with `inference_mode` instead of `no_grad` (1.74; medians of 380 alternating
    calls). The actions are the same (`tests/test_play.py`).

    None when `policy` is not a Q-network policy or the batch is not one SB3 would pass through unchanged (another
    shape or dtype, a dict, channel-last images it would transpose): the caller then asks `predict`.
    """
    q_net = getattr(policy, "q_net", None)
    space = getattr(policy, "observation_space", None)
    if q_net is None or not isinstance(space, spaces.Box) or not isinstance(observation, np.ndarray):
        return None
    if observation.shape[1:] != space.shape or observation.dtype != space.dtype:
        return None
    if policy.training:
        policy.set_training_mode(False)
    with th.inference_mode():
        obs = th.as_tensor(observation, device=policy.device)
        if obs.dim() == 4 and obs.device.type == "cpu":
            obs = obs.contiguous(memory_format=th.channels_last)
        return q_net(obs).argmax(dim=1).cpu().numpy()

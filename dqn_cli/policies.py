"""Dueling Q-networks (Wang et al. 2016): separate value and advantage streams over the same features.

Q(s, a) = V(s) + A(s, a) − mean_a' A(s, a'), which keeps V and A identifiable. The streams are MLPs over the features
(the Nature CNN's 512 for Atari) with the policy's `net_arch` hidden layers each. Models save and load through the
ordinary SB3 zip: `policy_kwargs` holds `dueling: True` and the policy class is one of the two below.
"""

from __future__ import annotations

from typing import Any

import torch as th
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

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
        return self.q_values(self.extract_features(obs, self.features_extractor))

    def q_values(self, features: th.Tensor) -> th.Tensor:
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


def greedy_actions(policy: Any, observation: Any, q_values: Any = None) -> np.ndarray | None:
    """argmax_a Q(s, a) for a batch of observations: what SB3's `policy.predict(batch, deterministic=True)` returns,
    without its per-call work (training-mode switch over every module, observation checks and reshapes), with
    images handed to the convolutions channels-last on CPU, the layout their weights have there, and under
    `inference_mode` (no autograd bookkeeping at all). For 8 Atari games: 2.3 ms per call through `predict`, 2.0
    with the direct argmax, 1.66 with `inference_mode` instead of `no_grad` (1.74; medians of 380 alternating
    calls). The actions are the same (`tests/test_play.py`). `q_values`, a `PackedQNetwork` of the policy's
    Q-network, takes its place in the forward pass.

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
        return (q_net if q_values is None else q_values)(obs).argmax(dim=1).cpu().numpy()


def _packable(q_net: Any) -> bool:
    """A Q-network on CPU whose features are SB3's Nature CNN (convolutions, ReLUs, a flatten, a linear layer), with
    oneDNN's fused kernels in this torch: what `PackedQNetwork` computes."""
    from stable_baselines3.common.torch_layers import NatureCNN

    if not isinstance(q_net, QNetwork) or not isinstance(q_net.features_extractor, NatureCNN):
        return False
    if q_net.device.type != "cpu" or not th.backends.mkldnn.is_available():
        return False
    if not all(hasattr(th.ops.mkldnn, op) for op in _ONEDNN_OPS):
        return False
    layers = _feature_layers(q_net)
    return all(type(layer) in (nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear) for layer in layers) and all(
        layer.groups == 1 and layer.padding_mode == "zeros" for layer in layers if isinstance(layer, nn.Conv2d)
    )


def _feature_layers(q_net: Any) -> list[nn.Module]:
    """The Nature CNN's layers in the order its forward pass runs them: the convolutions', then the linear ones."""
    return [*q_net.features_extractor.cnn, *q_net.features_extractor.linear]


_ONEDNN_OPS = ("_reorder_convolution_weight", "_convolution_pointwise", "_reorder_linear_weight", "_linear_pointwise")


class PackedQNetwork:
    """A Q-network's forward pass for weights that stay fixed while it is used (one evaluation), on oneDNN's kernels
    with the weights reordered once into the blocked layouts those kernels read, and each ReLU fused into the layer
    before it. Torch's ordinary path reorders the convolutions' weights at every call and runs the 3136x512 linear
    layer through MKL, which took 0.46 ms at a batch of 8 here on one thread or two (oneDNN with the packed weight:
    0.26 and 0.16 ms). `benchmarks/eval_forward.py` times whole forward passes both ways.

    The convolutions give bit for bit what torch's do (the same oneDNN kernels); the linear layer's sums run in
    another order (Q-values within ~1e-6), so an action can differ from SB3's `predict` only where two Q-values tie
    to that precision. The heads after the features (one linear layer, or the dueling streams) run as they are.
    Built by `packed_q_network`; stale once the weights change (a training step): build it again then.
    """

    def __init__(self, q_net: QNetwork, batch_size: int) -> None:
        self.normalize = bool(q_net.normalize_images)
        self.steps: list[tuple[str, Any, Any]] = []
        shape = [batch_size, *q_net.observation_space.shape]  # type: ignore[misc]
        layers = _feature_layers(q_net)
        with th.inference_mode():
            for i, layer in enumerate(layers):
                fused = "relu" if i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU) else "none"
                if isinstance(layer, nn.Conv2d):
                    self.steps.append(("conv", self._conv(layer, shape), fused))
                    shape = [batch_size, *layer(th.zeros(1, *shape[1:])).shape[1:]]
                elif isinstance(layer, nn.Linear):
                    weight = th.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), batch_size)
                    self.steps.append(("linear", (weight, layer.bias.detach()), fused))
                elif isinstance(layer, nn.Flatten):
                    self.steps.append(("flatten", None, "none"))
        self.head = q_net.q_values if isinstance(q_net, DuelingQNetwork) else q_net.q_net

    @staticmethod
    def _conv(layer: nn.Conv2d, shape: list[int]) -> tuple[Any, ...]:
        geometry = (list(layer.padding), list(layer.stride), list(layer.dilation), layer.groups)
        weight = th.ops.mkldnn._reorder_convolution_weight(layer.weight.detach(), *geometry, shape)
        bias = None if layer.bias is None else layer.bias.detach()
        return (weight, bias, *geometry)

    def __call__(self, observation: th.Tensor) -> th.Tensor:
        """Q-values of a batch of uint8 images (N, C, H, W), under `inference_mode`."""
        with th.inference_mode():
            x = observation.contiguous(memory_format=th.channels_last).float()
            if self.normalize:
                x = x / 255.0  # SB3's preprocess_obs for images
            for kind, args, fused in self.steps:
                if kind == "conv":
                    weight, bias, padding, stride, dilation, groups = args
                    x = th.ops.mkldnn._convolution_pointwise(
                        x, weight, bias, padding, stride, dilation, groups, fused, [None], ""
                    )
                elif kind == "linear":
                    x = th.ops.mkldnn._linear_pointwise(x, *args, fused, [None], "")
                else:
                    x = x.flatten(1)
            return self.head(x)


def packed_q_network(policy: Any, batch_size: int, q_net: Any = None) -> PackedQNetwork | None:
    """A `PackedQNetwork` of `policy`'s Q-network (or of `q_net`, its target network) for batches of up to
    `batch_size`, or None where there is none (not a DQN policy, another features extractor, a GPU, a torch without
    oneDNN's fused kernels) or where, on two random images, it does not give the Q-network's values (a platform
    whose kernels differ): the caller then uses the Q-network itself."""
    q_net = getattr(policy, "q_net", None) if q_net is None else q_net
    if q_net is None or not _packable(q_net):
        return None
    space = q_net.observation_space
    probe = th.randint(0, 256, (2, *space.shape), generator=th.Generator().manual_seed(0)).to(th.uint8)
    try:
        packed = PackedQNetwork(q_net, batch_size)
        with th.inference_mode():
            agrees = th.allclose(packed(probe), q_net(probe), rtol=1e-4, atol=1e-4)
    except RuntimeError:  # oneDNN refused the layout
        return None
    return packed if agrees else None

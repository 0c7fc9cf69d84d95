"""The DQN itself: SB3's `DQN`, built from validated hyperparameters, that can stop cleanly between updates."""

from __future__ import annotations

import threading
import types
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.type_aliases import RolloutReturn
from torch.nn import functional as F

from dqn_cli.policies import greedy_actions
from dqn_cli.threads import beside

T = TypeVar("T")

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

    from dqn_cli.config import Hyperparams


class StopRequest:
    """Set from a signal handler; training stops at the next boundary between two training iterations."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_number: int | None = None

    def set(self, signal_number: int | None = None) -> None:
        self.signal_number = signal_number
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


class DQNAgent(DQN):
    """`stable_baselines3.DQN` that checks a `StopRequest` before each rollout.

    SB3 stops on a callback returning False *inside* a rollout, after the env stepped and before the transition is
    stored. Stopping here instead, between "collect rollout + gradient steps" iterations, leaves the step count,
    replay buffer and optimizer consistent with each other, so a checkpoint taken now resumes exactly. The saved zip
    is an ordinary SB3 DQN zip: `stable_baselines3.DQN.load` opens it.
    """

    stop_request: StopRequest | None = None
    double_q: bool = False  # saved in the zip's data as a plain flag
    side_pass: bool = True  # target network's forward pass on a second thread (`threads.beside`); off for A/B runs
    pack_target: bool = True  # the target network's forward pass on packed weights (`_target_network`); off for A/B
    _target_pack: tuple[Any, Any] | None = None  # (the target weights' identity, their PackedQNetwork or None)
    _next_random: np.ndarray | None = None  # the next warm-up step's actions, drawn ahead (`_sample_action`)

    def _setup_model(self) -> None:
        with warnings.catch_warnings():
            if (self.replay_buffer_kwargs or {}).get("n_steps") == self.n_steps:  # dqn's buffers take it this way
                warnings.filterwarnings(
                    "ignore", message=r"`n_steps=\d+` is ignored because a custom", category=UserWarning
                )
            super()._setup_model()
        fast_memory_format(self.policy)
        switch_mode_only_on_change(self.policy)

    def set_parameters(self, *args: Any, **kwargs: Any) -> None:
        super().set_parameters(*args, **kwargs)
        fast_memory_format(self.policy)  # a loaded optimizer state keeps the layout it was saved in

    def get_parameters(self) -> dict[str, dict]:
        """The state dicts `save` writes, every tensor in the standard layout whatever layout training uses: a
        loader that builds its network in the standard layout (plain SB3, a GPU) and Adam's fused kernel would
        otherwise pair the saved moments with the wrong weights."""
        return {name: standard_layout(state) for name, state in super().get_parameters().items()}

    def load_replay_buffer(self, path: Any, truncate_last_traj: bool = True) -> None:
        """SB3's loader insists on a `ReplayBuffer` subclass; dqn's compact buffers are `BaseBuffer`s."""
        from stable_baselines3.common.buffers import ReplayBuffer
        from stable_baselines3.common.save_util import load_from_pkl

        from dqn_cli.buffers import CompactReplayBuffer

        buffer = load_from_pkl(path, self.verbose)
        if not isinstance(buffer, ReplayBuffer | CompactReplayBuffer):
            raise TypeError(f"expected a replay buffer, found {type(buffer).__name__}")
        buffer.device = self.device
        self.replay_buffer = buffer  # type: ignore[assignment]  # a BaseBuffer with ReplayBuffer's API

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """SB3's DQN update, plus Double DQN targets and prioritized replay's weights and priority updates.

        Each next batch of the same call is sampled on the side thread after the target network's pass there
        (`_forward_passes`), while the online network's pass still runs here: the same draws in the same order, since
        nothing else draws from numpy's generator during the update. Not with prioritized replay, whose next batch
        depends on the priorities this step updates.
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        anneal = getattr(self.replay_buffer, "anneal", None)
        if anneal is not None:
            anneal(1.0 - self._current_progress_remaining)
        ahead = not hasattr(self.replay_buffer, "update_priorities")
        losses = []
        upcoming: tuple[Any, th.Tensor, th.Tensor] | None = None
        for step in range(gradient_steps):
            batch, observations, next_observations = upcoming or self._sample(batch_size)
            discounts = batch.discounts if batch.discounts is not None else self.gamma
            sample_next = (lambda: self._sample(batch_size)) if ahead and step + 1 < gradient_steps else None
            targets, current, upcoming = self._forward_passes(
                batch, observations, next_observations, discounts, sample_next
            )
            elementwise = F.smooth_l1_loss(current, targets, reduction="none")
            weights = getattr(batch, "weights", None)
            loss = (elementwise * weights).mean() if weights is not None else elementwise.mean()
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            clip_grad_norm(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            if weights is not None:
                td_errors = (targets - current).detach().cpu().numpy()
                self.replay_buffer.update_priorities(batch.indices, td_errors)  # type: ignore[union-attr]
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))

    def _sample(self, batch_size: int) -> tuple[Any, th.Tensor, th.Tensor]:
        """A batch from the replay buffer, and its observations and next observations in the convolutions' layout."""
        batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
        return batch, conv_layout(batch.observations), conv_layout(batch.next_observations)

    def _on_step(self) -> None:
        super()._on_step()
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:  # SB3 updated the target net
            self._target_pack = None

    def _target_network(self, batch_size: int) -> Any:
        """What computes the target network's Q-values: its `PackedQNetwork` where there is one (a Nature CNN on
        CPU), else the network itself. Its weights change only every `target_update_interval` env steps, so the
        oneDNN layouts its kernels read are made once per update rather than at every pass, each ReLU is fused into
        its layer, and the 3136x512 layer runs on oneDNN: on one thread, as in the side pass, a batch of 32 took
        8.3 ms against 9.5 here. Rebuilt after SB3's target update (`_on_step`) and whenever a target weight is
        replaced or changed in place through the parameter itself (a load)."""
        if not self.pack_target:
            return self.q_net_target
        identity = [batch_size, *((param.data_ptr(), param._version) for param in self.q_net_target.parameters())]
        if self._target_pack is None or self._target_pack[0] != identity:
            from dqn_cli.policies import PackedQNetwork, packed_q_network

            packed: PackedQNetwork | None = packed_q_network(self.policy, batch_size, self.q_net_target)
            self._target_pack = (identity, packed)
        return self._target_pack[1] or self.q_net_target

    def _forward_passes(
        self,
        batch: Any,
        observations: th.Tensor,
        next_observations: th.Tensor,
        discounts: Any,
        sample_next: Callable[[], T] | None = None,
    ) -> tuple[th.Tensor, th.Tensor, T | None]:
        """(TD targets, Q(s, a), `sample_next()`): the target network's pass, then `sample_next`, on a second thread
        beside the online network's pass on CPU."""
        target_network = self._target_network(len(next_observations))

        def targets() -> tuple[th.Tensor, T | None]:
            values = td_targets(self.q_net, target_network, next_observations, batch.rewards,
                                batch.dones, discounts, double_q=self.double_q)  # fmt: skip
            return values, None if sample_next is None else sample_next()

        def current() -> th.Tensor:
            return th.gather(self.q_net(observations), dim=1, index=batch.actions.long())

        if not self.side_pass:
            with th.no_grad():
                target_values, upcoming = targets()
            return target_values, current(), upcoming
        (target_values, upcoming), current_values = beside(targets, current, device=self.device)
        return target_values, current_values, upcoming

    def _excluded_save_params(self) -> list[str]:
        # The buffer class is dqn's: leaving it out keeps the zip loadable by plain SB3 without dqn installed.
        return [*super()._excluded_save_params(), "stop_request", "replay_buffer_class", "replay_buffer_kwargs",
                "_next_random", "_target_pack"]  # fmt: skip

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """ε-greedy per env: SB3's DQN draws one coin for the whole vector, so with n_envs > 1 either every env
        explores or none does. With one env this is SB3's behaviour, forward pass skipped when exploring."""
        if deterministic or not self.policy.is_vectorized_observation(observation):
            return super().predict(observation, state, episode_start, deterministic)
        n = observation.shape[0]
        explore = np.random.rand(n) < self.exploration_rate
        if explore.all():
            return np.array([self.action_space.sample() for _ in range(n)]), state
        greedy = greedy_actions(self.policy, observation)
        if greedy is not None:
            actions = greedy
        else:
            actions, state = self.policy.predict(observation, state, episode_start, deterministic)
        if explore.any():
            actions = np.where(explore, [self.action_space.sample() for _ in range(n)], actions)
        return actions, state

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """SB3's warm-up actions (uniform draws from the action space, in SB3's order), each vector step's drawn one
        step ahead and announced to an env that can start playing them early (`AleVecEnv.queue_next`): the emulators
        then run the next step while SB3 stores this one. The same draws reach the same games in the same order."""
        queue_next = getattr(self.env, "queue_next", None)
        ahead, self._next_random = self._next_random, None
        if queue_next is None or self.num_timesteps >= learning_starts:
            if ahead is not None:
                raise RuntimeError("warm-up actions drawn ahead for a step that is not a warm-up step")
            return super()._sample_action(learning_starts, action_noise, n_envs)
        actions = ahead if ahead is not None else self._random_actions(n_envs)
        after = self.num_timesteps + n_envs
        if after < learning_starts and after < self._total_timesteps:  # SB3 takes another warm-up step
            self._next_random = self._random_actions(n_envs)
            queue_next(self._next_random)
        return actions, actions

    def _random_actions(self, n_envs: int) -> np.ndarray:
        return np.array([self.action_space.sample() for _ in range(n_envs)])

    def collect_rollouts(self, *args: Any, **kwargs: Any) -> RolloutReturn:
        if self.stop_request is not None and self.stop_request.requested:
            return RolloutReturn(0, 0, continue_training=False)
        return super().collect_rollouts(*args, **kwargs)


def fast_memory_format(policy: Any) -> None:
    """Convolution weights channels-last on CPU, where oneDNN's kernels for that layout are faster: a Nature-CNN
    gradient step (batch 32, 2 threads) fell from ~25-30 ms to ~21-23 ms here, most of it convolution backward
    (10.4 -> 5.8 ms). The same computation in another memory order (sums may round differently); only 4-D tensors
    change.

    The optimizer's state is given each parameter's layout too: Adam's fused kernel walks a parameter and its
    moments as flat memory, so moments left in the old layout would be paired with the wrong weights.
    """
    if policy.device.type != "cpu":
        return
    policy.to(memory_format=th.channels_last)
    optimizer = getattr(policy, "optimizer", None)
    if optimizer is None:
        return
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, th.Tensor) and value.dim() == 4 and value.shape == param.shape:
                state[key] = value.contiguous(memory_format=th.channels_last)


def _set_training_mode_on_change(policy: Any, mode: bool) -> None:
    if policy.training != mode:
        type(policy).set_training_mode(policy, mode)


def switch_mode_only_on_change(policy: Any) -> None:
    """SB3's off-policy loop sets the policy to evaluation mode before every rollout, walking all of its modules
    (35-100 us here) even when they are in that mode already: with one rollout per vector step, 1-3% of a warm-up.
    This policy instance does the walk only when the mode changes (the class, and so saved zips, are untouched).
    """
    policy.set_training_mode = types.MethodType(_set_training_mode_on_change, policy)


def conv_layout(observations: th.Tensor) -> th.Tensor:
    """A batch of images channels-last on CPU, the layout `fast_memory_format` gives the convolutions' weights.

    The convolution would otherwise copy its float input into that layout (and again for its backward pass);
    reordering the uint8 batch first moves a quarter of the bytes, and the same values reach the same kernels
    (a gradient step is bit for bit the same). Measured here with the two alternating inside one `dqn train` run:
    0.7-1.0 ms of each ~26 ms gradient step. dqn's compact buffer samples its batches in that layout already (a
    no-op here); SB3's buffers (`replay_buffer_class: ReplayBuffer`) hand over standard-layout batches.
    """
    if observations.dim() == 4 and observations.device.type == "cpu":
        return observations.contiguous(memory_format=th.channels_last)
    return observations


def clip_grad_norm(parameters: Any, max_norm: float) -> th.Tensor:
    """`torch.nn.utils.clip_grad_norm_`, bit for bit, without its pass over every gradient when nothing is clipped.

    torch rescales the gradients by min(1, max_norm / (norm + 1e-6)) even when that is 1, which leaves them as they
    were; here the same coefficient is computed the same way and the rescaling runs only when it is below 1 (or
    not a number, which torch spreads to every gradient). 0.2-0.3 ms of a ~23 ms Nature-CNN gradient step on 2 cores.
    """
    with_grads = [p for p in parameters if p.grad is not None]
    total = th.nn.utils.get_total_norm([p.grad for p in with_grads])
    coefficient = max_norm / (total + 1e-6)
    if total.device.type != "cpu" or not bool(coefficient >= 1.0):  # elsewhere the check would wait for the device
        th.nn.utils.clip_grads_with_norm_(with_grads, max_norm, total)
    return total


def standard_layout(value: Any) -> Any:
    """`value` (a state dict, nested dicts and lists of tensors) with every tensor contiguous."""
    if isinstance(value, th.Tensor):
        return value.contiguous()
    if isinstance(value, dict):
        return {key: standard_layout(item) for key, item in value.items()}
    if isinstance(value, list):
        return [standard_layout(item) for item in value]
    return value


def td_targets(
    q_net: Any,
    q_target: Any,
    next_obs: th.Tensor,
    rewards: th.Tensor,
    dones: th.Tensor,
    discounts: Any,
    *,
    double_q: bool,
) -> th.Tensor:
    """r + γ (1 − done) Q_target(s', a'), with a' = argmax Q_target(s') (DQN) or argmax Q_online(s') (Double DQN)."""
    next_values = q_target(next_obs)
    if double_q:
        best = q_net(next_obs).argmax(dim=1, keepdim=True)
        next_value = next_values.gather(1, best)
    else:
        next_value = next_values.max(dim=1, keepdim=True)[0]
    return rewards + (1 - dones) * discounts * next_value


def policy_kwargs(hp: Hyperparams) -> dict[str, Any]:
    """SB3's `policy_kwargs` from the data-only schema: class names become the torch classes they name."""
    settings = hp.policy_kwargs
    kwargs: dict[str, Any] = {
        "activation_fn": getattr(th.nn, settings.activation_fn),
        "normalize_images": settings.normalize_images,
        "optimizer_class": getattr(th.optim, settings.optimizer_class),
        "optimizer_kwargs": dict(settings.optimizer_kwargs),
    }
    if settings.net_arch is not None:
        kwargs["net_arch"] = list(settings.net_arch)
    if settings.features_extractor_kwargs is not None:
        kwargs["features_extractor_kwargs"] = settings.features_extractor_kwargs.model_dump()
    return kwargs


def fast_optimizer_kwargs(hp: Hyperparams, device: str) -> dict[str, Any]:
    """Adam's fused kernel where torch has one: the same update, one kernel instead of a Python loop over tensors.

    On this project's 2-core CPU it takes a Nature-CNN gradient step from ~26 ms to ~21 ms (benchmarks/RESULTS.md).
    Left alone when the file sets `fused` or `foreach` itself.
    """
    from stable_baselines3.common.utils import get_device

    settings = hp.policy_kwargs
    if settings.optimizer_class not in ("Adam", "AdamW") or {"fused", "foreach"} & set(settings.optimizer_kwargs):
        return {}
    return {"fused": True} if get_device(device).type in ("cpu", "cuda") else {}


def learning_rate(hp: Hyperparams) -> Any:
    """A float, or SB3's picklable `LinearSchedule` down to 0 for `learning_rate_schedule: linear`."""
    if hp.learning_rate_schedule == "linear":
        from stable_baselines3.common.utils import LinearSchedule

        return LinearSchedule(hp.learning_rate, 0.0, 1.0)
    return hp.learning_rate


SB3_KEYS = (
    "buffer_size",
    "learning_starts",
    "batch_size",
    "tau",
    "gamma",
    "gradient_steps",
    "optimize_memory_usage",
    "n_steps",
    "target_update_interval",
    "exploration_fraction",
    "exploration_initial_eps",
    "exploration_final_eps",
    "max_grad_norm",
    "stats_window_size",
)


def uses_compact_buffer(hp: Hyperparams, observation_space: Any) -> bool:
    """CompactReplayBuffer for stacked uint8 images unless the file asks for SB3's own buffer."""
    import numpy as np

    if hp.replay_buffer_class != "auto":
        return hp.replay_buffer_class == "CompactReplayBuffer"
    shape: tuple[int, ...] = getattr(observation_space, "shape", None) or ()
    return len(shape) == 3 and observation_space.dtype == np.uint8 and shape[0] > 1 and not hp.optimize_memory_usage


def buffer_setup(hp: Hyperparams, observation_space: Any) -> dict[str, Any]:
    """`replay_buffer_class` and `replay_buffer_kwargs` for SB3's DQN."""
    from dqn_cli import prioritized
    from dqn_cli.buffers import CompactReplayBuffer

    per = (
        {"alpha": hp.prioritized_replay_alpha, "beta": hp.prioritized_replay_beta, "eps": hp.prioritized_replay_eps}
        if hp.prioritized_replay
        else {}
    )
    if uses_compact_buffer(hp, observation_space):
        cls = prioritized.PrioritizedCompactReplayBuffer if per else CompactReplayBuffer
        return {"replay_buffer_class": cls, "replay_buffer_kwargs": {"n_steps": hp.n_steps, "gamma": hp.gamma, **per}}
    if per:
        if hp.n_steps > 1:
            from dqn_cli.errors import ConfigError

            raise ConfigError("prioritized_replay with n_steps > 1 needs image observations (CompactReplayBuffer)")
        kwargs = {**per, "handle_timeout_termination": not hp.optimize_memory_usage}
        return {"replay_buffer_class": prioritized.PrioritizedReplayBuffer, "replay_buffer_kwargs": kwargs}
    if hp.optimize_memory_usage:  # SB3 refuses the combination with its default timeout handling
        return {"replay_buffer_kwargs": {"handle_timeout_termination": False}}
    return {}


def fresh_buffer(model: DQN, hp: Hyperparams) -> Any:
    """An empty replay buffer of the configured kind, for `model`."""
    from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer

    setup = buffer_setup(hp, model.observation_space)
    cls = setup.get("replay_buffer_class") or (NStepReplayBuffer if hp.n_steps > 1 else ReplayBuffer)
    kwargs = dict(setup.get("replay_buffer_kwargs", {}))
    if cls is NStepReplayBuffer:
        kwargs.update(n_steps=hp.n_steps, gamma=hp.gamma)
    return cls(hp.buffer_size, model.observation_space, model.action_space, device=model.device,
               n_envs=model.n_envs, optimize_memory_usage=hp.optimize_memory_usage, **kwargs)  # fmt: skip


def vector_schedule(hp: Hyperparams) -> tuple[Any, int]:
    """(train_freq, gradient_steps) in SB3's units, keeping the file's replay ratio when n_envs > 1.

    SB3 counts train_freq in vector steps (n_envs env steps each). The file means env steps: one phase of
    gradient_steps every train_freq env steps in total, so results stay comparable whatever n_envs is.
    """
    if isinstance(hp.train_freq, tuple):
        return tuple(hp.train_freq), hp.gradient_steps
    freq, n = hp.train_freq, hp.n_envs
    grad = freq if hp.gradient_steps == -1 else hp.gradient_steps  # -1: one gradient step per env step
    if n == 1:
        return freq, hp.gradient_steps
    if freq % n == 0:
        return freq // n, grad
    return 1, grad * n // freq  # n % freq == 0, checked by the config


def build(hp: Hyperparams, env: VecEnv, *, seed: int, device: str, tensorboard_log: str | None) -> DQNAgent:
    """A fresh agent for `env`, configured exactly by `hp`."""
    kwargs: dict[str, Any] = {key: getattr(hp, key) for key in SB3_KEYS}
    kwargs["train_freq"], kwargs["gradient_steps"] = vector_schedule(hp)
    kwargs.update(buffer_setup(hp, env.observation_space))
    from dqn_cli.policies import policy_class

    kwargs_policy = policy_kwargs(hp)
    kwargs_policy["optimizer_kwargs"].update(fast_optimizer_kwargs(hp, device))
    if hp.dueling:
        kwargs_policy["dueling"] = True
    model = DQNAgent(
        policy_class(hp.policy or "MlpPolicy", hp.dueling),
        env,
        learning_rate=learning_rate(hp),
        policy_kwargs=kwargs_policy,
        tensorboard_log=tensorboard_log,
        seed=seed,
        device=device,
        verbose=0,
        **kwargs,
    )
    model.double_q = hp.double_q
    return model

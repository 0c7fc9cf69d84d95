"""A replay buffer that stores each Atari frame once.

SB3's `ReplayBuffer` keeps every observation twice (obs and next_obs) as full 4-frame stacks: 56 KB per transition
for 84×84 Atari frames, 5.6 GB for rl_zoo3's 100k buffer, and a Nature-size 1M buffer does not fit in 24 GB.
Consecutive stacks share three of their four frames, so this buffer keeps one ring of frames per env and, per
transition, where its obs and next_obs stacks end in that ring and how many of their frames are real (a stack at
an episode start is zero-padded by `VecFrameStack`). Stacks are rebuilt when sampled: exactly the arrays SB3's
buffer would return, at ~7 KB per transition.

Nothing is assumed about the env: each added obs is compared with the frames already in the ring and only what is
new is stored, so resets, life losses, resumed runs and any frame-stacking wrapper are handled the same way.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from dqn_cli.pages import PagesAhead

# Frames kept beyond one per transition: episode starts store a few extra frames (rarely, with VecFrameStack).
FRAME_MARGIN = 0.01
# The most channels OpenCV's `merge` interleaves (CV_CN_MAX).
CV_MAX_CHANNELS = 512


class CompactReplayBuffer(BaseBuffer):
    """SB3-compatible replay buffer for stacked image observations (channel-first, uint8), with n-step returns."""

    _ahead: PagesAhead | None = None  # populates the ring's pages on its first pass (None once loaded: see pages.py)

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space[Any],
        action_space: spaces.Space[Any],
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        n_steps: int = 1,
        gamma: float = 0.99,
    ) -> None:
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs)
        shape = observation_space.shape
        if shape is None or len(shape) != 3 or observation_space.dtype != np.uint8:
            raise ValueError(f"CompactReplayBuffer needs stacked uint8 images (stack, H, W), got {observation_space}")
        self.buffer_size = max(buffer_size // n_envs, 1)
        self.stack = shape[0]
        self.capacity = self.buffer_size + int(self.buffer_size * FRAME_MARGIN) + 4 * self.stack
        self.frames = np.zeros((self.capacity, n_envs, *shape[1:]), dtype=np.uint8)
        self.frame_count = np.zeros(n_envs, dtype=np.int64)  # frames ever pushed, per env
        self.depth = np.zeros(n_envs, dtype=np.int64)  # real frames at the end of the ring's current stack
        self.obs_end = np.zeros((self.buffer_size, n_envs), dtype=np.int64)
        self.next_end = np.zeros((self.buffer_size, n_envs), dtype=np.int64)
        self.obs_depth = np.zeros((self.buffer_size, n_envs), dtype=np.uint8)
        self.next_depth = np.zeros((self.buffer_size, n_envs), dtype=np.uint8)
        self.actions = np.zeros((self.buffer_size, n_envs, self.action_dim), dtype=self._action_dtype(action_space))
        self.rewards = np.zeros((self.buffer_size, n_envs), dtype=np.float32)
        self.dones = np.zeros((self.buffer_size, n_envs), dtype=np.float32)
        self.timeouts = np.zeros((self.buffer_size, n_envs), dtype=np.float32)
        self.handle_timeout_termination = handle_timeout_termination
        self.n_steps, self.gamma = n_steps, gamma
        self._ahead = PagesAhead(self.frames)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ahead"] = None  # a loaded ring has all its pages already
        return state

    @staticmethod
    def _action_dtype(action_space: spaces.Space[Any]) -> Any:
        return np.float32 if action_space.dtype == np.float64 else action_space.dtype

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer's arrays."""
        arrays = (self.frames, self.obs_end, self.next_end, self.obs_depth, self.next_depth, self.actions)
        return sum(a.nbytes for a in arrays) + self.rewards.nbytes + self.dones.nbytes + self.timeouts.nbytes

    # --- storing ------------------------------------------------------------------------------------------

    def _push(self, env: int, frame: np.ndarray) -> None:
        self.frames[self.frame_count[env] % self.capacity, env] = frame
        self.frame_count[env] += 1

    def _holding(self, stacked: np.ndarray) -> np.ndarray:
        """Per env: True when `stacked[env]` is `stack - depth` zero frames then the ring's last `depth` frames."""
        envs = np.arange(self.n_envs)
        index = (self.frame_count[:, None] + np.arange(-self.stack, 0)) % self.capacity
        expected = self.frames[index, envs[:, None]]  # a fresh array: the stacks the ring ends with
        expected[np.arange(self.stack)[None, :] < (self.stack - self.depth)[:, None]] = 0  # their padding
        same = (expected == stacked).reshape(self.n_envs, -1).all(axis=1)
        return np.asarray(same & (self.depth > 0))

    def _restore(self, env: int, stacked: np.ndarray) -> None:
        """Make the ring of `env` end with `stacked`: push its real frames (leading all-zero frames are padding)."""
        real = np.flatnonzero(stacked.reshape(self.stack, -1).any(axis=1))
        depth = self.stack - int(real[0]) if len(real) else 1
        for frame in stacked[self.stack - depth :]:
            self._push(env, frame)
        self.depth[env] = depth

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store what is new in obs and next_obs, all envs at once in the usual case: obs is the stack the ring
        already ends with (the previous next_obs), and next_obs is obs shifted by one new frame."""
        for env in np.flatnonzero(~self._holding(obs)):
            self._restore(int(env), obs[env])
        self.obs_end[self.pos], self.obs_depth[self.pos] = self.frame_count - 1, self.depth
        shifted = (next_obs[:, :-1] == obs[:, 1:]).reshape(self.n_envs, -1).all(axis=1)
        moved = np.flatnonzero(shifted)
        self.frames[self.frame_count[moved] % self.capacity, moved] = next_obs[moved, -1]
        self.frame_count[moved] += 1
        self.depth[moved] = np.minimum(self.depth[moved] + 1, self.stack)
        if not shifted.all():  # rare: a reset the ring has not seen, a wrapper that is not a frame stack
            for env in np.flatnonzero(~shifted & ~self._holding(next_obs)):
                self._restore(int(env), next_obs[env])
        self.next_end[self.pos], self.next_depth[self.pos] = self.frame_count - 1, self.depth
        self.actions[self.pos] = np.array(action).reshape((self.n_envs, self.action_dim))
        self.rewards[self.pos] = np.array(reward)
        self.dones[self.pos] = np.array(done)
        if self.handle_timeout_termination:
            self.timeouts[self.pos] = np.array([info.get("TimeLimit.truncated", False) for info in infos])
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full, self.pos = True, 0
        if self._ahead is not None and not self._ahead.written(
            min(int(self.frame_count.max()), self.capacity) * self.frames.strides[0]
        ):
            self._ahead = None  # the whole ring asked for (or nothing to do here): no more work per add

    # --- sampling -----------------------------------------------------------------------------------------

    def _stacks(self, ends: np.ndarray, depths: np.ndarray, envs: np.ndarray) -> th.Tensor:
        """The stacks ending at `ends`, as the (batch, stack, H, W) tensor SB3's buffer returns.

        On CPU the tensor is built channels-last (the stack interleaved per pixel), the layout the convolutions'
        weights have there (`agent.fast_memory_format`): the same values, gathered one frame plane at a time and
        interleaved by OpenCV's `merge`, where gathering whole stacks and reordering them with torch took 3 to 6
        times as long (0.5-0.8 ms per batch of 32 against 0.1-0.3 ms here, twice per gradient step).
        """
        offsets = np.arange(self.stack) - (self.stack - 1)  # [-3, -2, -1, 0]
        index = (ends[:, None] + offsets) % self.capacity
        padding = np.arange(self.stack)[None, :] < (self.stack - depths[:, None].astype(np.int64))
        if self.device.type != "cpu" or self.stack > CV_MAX_CHANNELS:
            stacks = self.frames[index, envs[:, None]]  # a fresh array: padding is zeroed in place
            stacks[padding] = 0
            return self.to_torch(stacks)
        batch, height, width = len(ends), *self.frames.shape[2:]
        planes = []
        for k in range(self.stack):
            plane = self.frames[index[:, k], envs]  # a fresh array: padding is zeroed in place
            plane[padding[:, k]] = 0
            planes.append(plane.reshape(batch * height, width))
        interleaved = cv2.merge(planes).reshape(batch, height, width, self.stack)
        return th.from_numpy(interleaved).permute(0, 3, 1, 2)

    def valid(self, rows: np.ndarray, envs: np.ndarray) -> np.ndarray:
        """Whether the frames of these transitions are still in the ring (the oldest may have been overwritten)."""
        oldest_kept = self.frame_count[envs] - self.capacity
        first = np.minimum(
            self.obs_end[rows, envs] - self.obs_depth[rows, envs],
            self.next_end[rows, envs] - self.next_depth[rows, envs],
        )
        return first + 1 > oldest_kept

    def sample(self, batch_size: int, env: Any = None) -> ReplayBufferSamples:
        upper = self.buffer_size if self.full else self.pos
        rows = np.random.randint(0, upper, size=batch_size)
        envs = np.random.randint(0, self.n_envs, size=batch_size)
        for _ in range(100):  # rare: replace transitions whose frames were overwritten
            bad = ~self.valid(rows, envs)
            if not bad.any():
                break
            rows[bad] = np.random.randint(0, upper, size=int(bad.sum()))
        return self._get_samples(rows, env, envs)

    def _get_samples(
        self, batch_inds: np.ndarray, env: Any = None, env_indices: np.ndarray | None = None
    ) -> ReplayBufferSamples:
        if env_indices is None:
            env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        if self.n_steps > 1:
            return self._n_step_samples(batch_inds, env_indices)
        obs = self._stacks(self.obs_end[batch_inds, env_indices], self.obs_depth[batch_inds, env_indices], env_indices)
        nxt = self._stacks(
            self.next_end[batch_inds, env_indices], self.next_depth[batch_inds, env_indices], env_indices
        )
        dones = self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])
        return ReplayBufferSamples(
            observations=obs,
            actions=self.to_torch(self.actions[batch_inds, env_indices, :]),
            next_observations=nxt,
            dones=self.to_torch(dones.reshape(-1, 1)),
            rewards=self.to_torch(self.rewards[batch_inds, env_indices].reshape(-1, 1)),
        )

    def _n_step_samples(self, batch_inds: np.ndarray, env_indices: np.ndarray) -> ReplayBufferSamples:
        """SB3's NStepReplayBuffer arithmetic, on this buffer's storage."""
        last_valid = self.pos - 1
        saved = self.timeouts[last_valid].copy()
        self.timeouts[last_valid] = np.logical_or(saved, np.logical_not(self.dones[last_valid]))
        try:
            steps = np.arange(self.n_steps).reshape(1, -1)
            indices = (batch_inds[:, None] + steps) % self.buffer_size
            rewards = self.rewards[indices, env_indices[:, None]]
            ended = np.logical_or(
                self.dones[indices, env_indices[:, None]], self.timeouts[indices, env_indices[:, None]]
            )
            end = np.where(ended.any(axis=1), ended.argmax(axis=1), self.n_steps - 1)
            mask = steps <= end[:, None]
            discounts = self.gamma ** mask.sum(axis=1, keepdims=True).astype(np.float32)
            returns = (rewards * (self.gamma ** np.arange(self.n_steps, dtype=np.float32)) * mask).sum(
                axis=1, keepdims=True
            )
            last = (batch_inds + end) % self.buffer_size
            final_dones = self.dones[last, env_indices][:, None] * (1.0 - self.timeouts[last, env_indices][:, None])
        finally:
            self.timeouts[last_valid] = saved
        obs = self._stacks(self.obs_end[batch_inds, env_indices], self.obs_depth[batch_inds, env_indices], env_indices)
        nxt = self._stacks(self.next_end[last, env_indices], self.next_depth[last, env_indices], env_indices)
        return ReplayBufferSamples(
            observations=obs,
            actions=self.to_torch(self.actions[batch_inds, env_indices]),
            next_observations=nxt,
            dones=self.to_torch(final_dones.astype(np.float32)),
            rewards=self.to_torch(returns.astype(np.float32)),
            discounts=self.to_torch(discounts),
        )

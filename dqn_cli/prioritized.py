"""Prioritized experience replay (Schaul et al. 2016, proportional variant) on a sum-tree.

Transitions are drawn with probability P(i) = p_i^α / Σ_k p_k^α, where p_i = |TD error_i| + ε (new transitions get
the largest priority seen so far, so each is replayed at least once), and each sample is weighted by
w_i = (N · P(i))^−β / max_j w_j to correct the bias; β is annealed from its initial value to 1 over training.
Works on SB3's `ReplayBuffer` (any observation) and on `CompactReplayBuffer` (stacked frames, n-step returns).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer

from dqn_cli.buffers import CompactReplayBuffer


class SumTree:
    """A binary tree whose leaves hold priorities and whose nodes hold the sums of their children."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.leaves = 1 << max(size - 1, 0).bit_length()
        self.nodes = np.zeros(2 * self.leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.nodes[np.asarray(index) + self.leaves]

    def update(self, index: np.ndarray, priority: np.ndarray) -> None:
        """Set leaves `index` to `priority` and refresh the sums above them."""
        nodes = np.asarray(index, dtype=np.int64) + self.leaves
        self.nodes[nodes] = priority
        nodes = np.unique(nodes // 2)
        while nodes[0] >= 1:
            self.nodes[nodes] = self.nodes[2 * nodes] + self.nodes[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def find(self, prefix: np.ndarray) -> np.ndarray:
        """For each value in `prefix` (in [0, total)), the leaf where the running sum of priorities passes it."""
        prefix = np.asarray(prefix, dtype=np.float64).copy()
        nodes = np.ones(len(prefix), dtype=np.int64)
        while nodes[0] < self.leaves:
            left = 2 * nodes
            go_right = prefix >= self.nodes[left]
            prefix -= np.where(go_right, self.nodes[left], 0.0)
            nodes = left + go_right
        return np.minimum(nodes - self.leaves, self.size - 1)


class PrioritizedSamples(NamedTuple):
    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None
    weights: th.Tensor
    indices: np.ndarray


class _Prioritized:
    """Sum-tree sampling over the (row, env) slots of a replay buffer; the storage is the base class's."""

    buffer_size: int
    n_envs: int
    pos: int
    full: bool

    def __init__(self, *args: Any, alpha: float = 0.6, beta: float = 0.4, eps: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alpha, self.beta0, self.beta, self.eps = alpha, beta, beta, eps
        self.tree = SumTree(self.buffer_size * self.n_envs)
        self.max_priority = 1.0

    def anneal(self, progress: float) -> None:
        """β from its initial value to 1 as training progresses from 0 to 1."""
        self.beta = self.beta0 + (1.0 - self.beta0) * min(max(progress, 0.0), 1.0)

    def add(self, *args: Any, **kwargs: Any) -> None:
        row = self.pos
        super().add(*args, **kwargs)  # type: ignore[misc]
        slots = row * self.n_envs + np.arange(self.n_envs)
        self.tree.update(slots, np.full(self.n_envs, self.max_priority**self.alpha))

    def _draw(self, batch_size: int) -> np.ndarray:
        total = self.tree.total
        bounds = np.linspace(0.0, total, batch_size + 1)
        prefix = np.random.uniform(bounds[:-1], bounds[1:])  # stratified: one draw per equal slice of the sum
        return self.tree.find(np.minimum(prefix, np.nextafter(total, 0)))

    def sample(self, batch_size: int, env: Any = None) -> PrioritizedSamples:
        slots = self._draw(batch_size)
        slots = self._replace_unusable(slots)
        rows, envs = slots // self.n_envs, slots % self.n_envs
        stored = (self.buffer_size if self.full else self.pos) * self.n_envs
        probabilities = self.tree[slots] / self.tree.total
        weights = (stored * probabilities) ** (-self.beta)
        weights = (weights / weights.max()).astype(np.float32).reshape(-1, 1)
        obs, actions, next_obs, dones, rewards, discounts = self._gather(rows, envs)
        return PrioritizedSamples(
            obs, actions, next_obs, dones, rewards, discounts,
            weights=th.as_tensor(weights, device=self.device),  # type: ignore[attr-defined]
            indices=slots,
        )  # fmt: skip

    def _replace_unusable(self, slots: np.ndarray) -> np.ndarray:
        return slots

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        priorities = np.abs(td_errors).reshape(-1) + self.eps
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self.tree.update(slots, priorities**self.alpha)

    def _gather(self, rows: np.ndarray, envs: np.ndarray) -> tuple[Any, ...]:
        raise NotImplementedError


class PrioritizedReplayBuffer(_Prioritized, ReplayBuffer):  # type: ignore[misc]
    """Prioritized sampling over SB3's ReplayBuffer (one-step returns)."""

    def _gather(self, rows: np.ndarray, envs: np.ndarray) -> tuple[Any, ...]:
        next_obs = self.next_observations[rows, envs]
        dones = self.dones[rows, envs] * (1 - self.timeouts[rows, envs])
        data = (self.observations[rows, envs], self.actions[rows, envs], next_obs, dones.reshape(-1, 1),
                self.rewards[rows, envs].reshape(-1, 1))  # fmt: skip
        return (*map(self.to_torch, data), None)


class PrioritizedCompactReplayBuffer(_Prioritized, CompactReplayBuffer):  # type: ignore[misc]
    """Prioritized sampling over CompactReplayBuffer (stacked frames stored once, n-step returns)."""

    def _replace_unusable(self, slots: np.ndarray) -> np.ndarray:
        """Transitions whose frames left the ring get priority 0 and are drawn again."""
        for _ in range(100):
            bad = ~self.valid(slots // self.n_envs, slots % self.n_envs)
            if not bad.any():
                break
            self.tree.update(slots[bad], np.zeros(int(bad.sum())))
            slots[bad] = self._draw(int(bad.sum()))
        return slots

    def _gather(self, rows: np.ndarray, envs: np.ndarray) -> tuple[Any, ...]:
        samples = self._get_samples(rows, None, envs)
        return tuple(samples)

"""The compact replay buffer returns exactly what SB3's buffers return, at an eighth of the memory."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer

from dqn_cli import envs, hyperparams
from dqn_cli.buffers import CompactReplayBuffer


def fill(buffers: list, n_envs: int, steps: int, seed: int = 0) -> None:
    """Play SpaceInvaders with random actions, ending episodes on each life loss (many episode starts), and store
    the transitions exactly as SB3's off-policy loop does (terminal observations for finished episodes)."""
    info = envs.resolve("SpaceInvaders")
    hp, _ = hyperparams.resolve(info, None, [])
    venv = envs.make_vec_env(info, hp, seed=seed, n_envs=n_envs)
    rng = np.random.default_rng(seed)
    obs = venv.reset()
    for _ in range(steps):
        actions = rng.integers(venv.action_space.n, size=n_envs)
        new_obs, rewards, dones, infos = venv.step(actions)
        next_obs = new_obs.copy()
        for i, done in enumerate(dones):
            if done and infos[i].get("terminal_observation") is not None:
                next_obs[i] = infos[i]["terminal_observation"]
        for buffer in buffers:
            buffer.add(obs, next_obs, actions, rewards, dones, infos)
        obs = new_obs
    venv.close()


def assert_same(reference, compact, rows: np.ndarray, seed: int) -> None:
    np.random.seed(seed)
    expected = reference._get_samples(rows)
    np.random.seed(seed)
    env_indices = np.random.randint(0, high=compact.n_envs, size=(len(rows),))
    got = compact._get_samples(rows, None, env_indices)
    for name in expected._fields:
        a, b = getattr(expected, name), getattr(got, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.shape == b.shape and bool((a == b).all()), f"{name} differs"
    for stacks in (got.observations, got.next_observations):  # the layout the CPU convolutions take
        assert stacks.is_contiguous(memory_format=th.channels_last)


OBS = spaces.Box(0, 255, (4, 84, 84), np.uint8)
ACTIONS = spaces.Discrete(6)


@pytest.mark.parametrize("n_envs", [1, 3])
def test_same_samples_as_sb3_across_episode_ends_and_wraparound(n_envs: int) -> None:
    size = 600 * n_envs  # smaller than the steps played: the ring wraps around
    reference = ReplayBuffer(size, OBS, ACTIONS, device="cpu", n_envs=n_envs)
    compact = CompactReplayBuffer(size, OBS, ACTIONS, device="cpu", n_envs=n_envs)
    fill([reference, compact], n_envs, steps=900)
    assert compact.full and reference.full
    assert reference.dones.sum() >= 2 * n_envs, "the test needs episode ends in the buffer"
    rows = np.arange(compact.buffer_size)
    valid_everywhere = np.logical_and.reduce([compact.valid(rows, np.full_like(rows, e)) for e in range(n_envs)])
    assert valid_everywhere.mean() > 0.95, "only the very oldest transitions may lose their frames"
    valid_rows = rows[valid_everywhere]
    assert_same(reference, compact, valid_rows, seed=7)


def test_same_n_step_returns_as_sb3() -> None:
    reference = NStepReplayBuffer(500, OBS, ACTIONS, device="cpu", n_envs=2, n_steps=3, gamma=0.9)
    compact = CompactReplayBuffer(500, OBS, ACTIONS, device="cpu", n_envs=2, n_steps=3, gamma=0.9)
    fill([reference, compact], 2, steps=200, seed=1)
    rows = np.arange(200)
    assert_same(reference, compact, rows, seed=3)


def test_memory_per_transition() -> None:
    buffer = CompactReplayBuffer(100_000, OBS, ACTIONS, device="cpu")
    per_transition = buffer.nbytes / 100_000
    assert per_transition <= 7_500, per_transition
    sb3 = 2 * 4 * 84 * 84  # obs and next_obs stacks, as SB3 stores them
    assert sb3 / per_transition > 7.5
    # a Nature-size 1M buffer: under 8 GB (computed from the array shapes; not allocated here)
    assert per_transition * 1_000_000 < 8e9


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    buffer = CompactReplayBuffer(400, OBS, ACTIONS, device="cpu", n_envs=2)
    fill([buffer], 2, steps=150, seed=2)
    path = tmp_path / "buffer.pkl"
    path.write_bytes(pickle.dumps(buffer))
    loaded = pickle.loads(path.read_bytes())
    rows = np.arange(150)
    assert_same(buffer, loaded, rows, seed=5)
    assert loaded.pos == buffer.pos and np.array_equal(loaded.frame_count, buffer.frame_count)


def test_resumed_collection_after_a_fresh_reset_keeps_stacks_exact() -> None:
    """After a resume the env restarts mid-buffer: the buffer must notice the new episode by itself."""
    reference = ReplayBuffer(400, OBS, ACTIONS, device="cpu")
    compact = CompactReplayBuffer(400, OBS, ACTIONS, device="cpu")
    fill([reference, compact], 1, steps=120, seed=3)
    fill([reference, compact], 1, steps=120, seed=4)  # a new env, started without any done in between
    assert_same(reference, compact, np.arange(240), seed=1)


def test_rejects_non_image_spaces() -> None:
    with pytest.raises(ValueError, match="stacked uint8 images"):
        CompactReplayBuffer(10, spaces.Box(-1, 1, (4,), np.float32), ACTIONS)

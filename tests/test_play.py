"""`play`: the evaluation loop shared by eval, enjoy, tune and training's evaluations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dqn_cli.ale_vec import AleVecEnv, AtariSettings
from dqn_cli.play import play


class PixelPolicy:
    """A deterministic stand-in for an agent: the action is a function of the observation alone."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def predict(
        self, observation: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ):
        self.batch_sizes.append(len(observation))
        return (observation[:, -1, 60:70, :].sum(axis=(1, 2)) % 4).astype(np.int64), state


def breakout(n_envs: int) -> AleVecEnv:
    settings = AtariSettings(game="breakout", env_id="BreakoutNoFrameskip-v4", terminal_on_life_loss=False)
    return AleVecEnv(settings, n_envs)


def play_counting_live_steps(venv: AleVecEnv, episodes: int) -> tuple[Any, int, PixelPolicy]:
    live = 0
    step_async = venv.step_async

    def counting(actions: np.ndarray) -> None:
        nonlocal live
        live += int((~venv.paused).sum())
        step_async(actions)

    venv.step_async = counting  # type: ignore[method-assign]
    policy = PixelPolicy()
    result = play(policy, venv, episodes, epsilon=0.1, seed=4)
    venv.close()
    return result, live, policy


def test_finished_games_are_neither_stepped_nor_predicted(monkeypatch: pytest.MonkeyPatch) -> None:
    # 3 episodes on 2 games: game 0 plays one, game 1 two; 4 games for 3 episodes: one game never plays
    for n_envs in (2, 4):
        paused, live, policy = play_counting_live_steps(breakout(n_envs), 3)
        assert len(paused.returns) == 3
        assert live == paused.lengths.sum(), "each game stepped exactly for the episodes it counted"
        assert min(policy.batch_sizes) < n_envs and max(policy.batch_sizes) <= min(n_envs, 3)
        with monkeypatch.context() as patched:
            patched.setattr(AleVecEnv, "pause", None)  # an env that cannot pause: every game keeps stepping
            unpaused, live_unpaused, _ = play_counting_live_steps(breakout(n_envs), 3)
        assert np.array_equal(paused.returns, unpaused.returns) and np.array_equal(paused.lengths, unpaused.lengths)
        assert live_unpaused > live

"""Learning, not just running: rl_zoo3's CartPole-v1 DQN settings solve the task within their 50k-step budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import DQN


@pytest.mark.slow
def test_cartpole_learns_within_the_rl_zoo3_budget(dqn, workdir: Path) -> None:
    result = dqn("train", "--env", "CartPole-v1", "--seed", "3", "--eval-freq", "5000", "--eval-episodes", "10",
                 "--no-progress", "--no-tensorboard")  # fmt: skip
    assert result.code == 0, result.err
    run = workdir / "logs/dqn/CartPole-v1_1"
    with np.load(run / "evaluations.npz") as data:
        means, timesteps = data["results"].mean(axis=1), data["timesteps"]
        assert data["timesteps"][-1] >= 50_000 and data["results"].shape[1] == 10
    assert means.max() >= 400, f"evaluation means {means}"
    assert means[0] < 400, "the first evaluation comes before learning has happened"
    assert DQN.load(run / "best_model.zip").num_timesteps == int(timesteps[means.argmax()])

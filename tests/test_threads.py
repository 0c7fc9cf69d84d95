"""The torch threads a gradient step runs on: one for a small fully connected Q-network, all for larger ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch as th
from torch import nn

from dqn_cli.threads import torch_threads, training_threads


def mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))


def nature_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 20 * 20, 6))


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = th.get_num_threads()
    th.set_num_threads(2)
    yield
    th.set_num_threads(before)


def test_small_fully_connected_networks_train_on_one_thread_larger_ones_and_cnns_on_all(two_threads) -> None:
    assert training_threads(mlp(256), batch_size=64) == 1  # rl_zoo3's CartPole network: 4.3M multiply-adds
    assert training_threads(mlp(512), batch_size=32) == 1
    assert training_threads(mlp(1024), batch_size=256) == 2  # 270M multiply-adds
    assert training_threads(mlp(512), batch_size=256) == 2
    assert training_threads(nature_cnn(), batch_size=1) == 2


def test_networks_with_other_weighted_layers_keep_every_thread(two_threads) -> None:
    assert training_threads(nn.Sequential(nn.Conv1d(4, 8, 3), nn.Flatten(), nn.Linear(8, 2)), batch_size=1) == 2
    assert training_threads(nn.Sequential(nn.Linear(4, 64), nn.LayerNorm(64), nn.Linear(64, 2)), batch_size=1) == 2


def test_the_users_omp_num_threads_and_gpus_keep_the_count(two_threads, monkeypatch: pytest.MonkeyPatch) -> None:
    assert training_threads(mlp(256), batch_size=64, device=th.device("cuda")) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert training_threads(mlp(256), batch_size=64) == 2


def test_the_real_q_networks_are_judged_by_their_layers(two_threads) -> None:
    from dqn_cli import agent, envs, hyperparams

    def q_net(env_id: str, *settings: str) -> nn.Module:
        info = envs.resolve(env_id)
        hp, _ = hyperparams.resolve(info, None, ["buffer_size=1000", *settings])
        env = envs.make_vec_env(info, hp, seed=0, n_envs=1)
        try:
            return agent.build(hp, env, seed=0, device="cpu", tensorboard_log=None).q_net
        finally:
            env.close()

    assert training_threads(q_net("CartPole-v1"), batch_size=64) == 1
    assert training_threads(q_net("CartPole-v1", "dueling=true"), batch_size=64) == 1
    assert training_threads(q_net("CartPole-v1", "policy_kwargs={net_arch: [1024, 1024]}"), batch_size=64) == 2
    assert training_threads(q_net("SpaceInvaders"), batch_size=32) == 2


def test_the_thread_count_is_restored_after_the_block_even_on_error(two_threads) -> None:
    with pytest.raises(RuntimeError), torch_threads(1):
        assert th.get_num_threads() == 1
        raise RuntimeError("inside")
    assert th.get_num_threads() == 2


def test_cartpole_trains_on_one_thread_and_gives_the_threads_back(
    dqn, workdir: Path, two_threads, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dqn_cli.agent import DQNAgent

    seen: list[int] = []
    original = DQNAgent.train

    def train(self: DQNAgent, gradient_steps: int, batch_size: int = 100) -> None:
        seen.append(th.get_num_threads())
        original(self, gradient_steps, batch_size)

    monkeypatch.setattr(DQNAgent, "train", train)
    result = dqn("train", "--env", "CartPole-v1", "-n", "600", "--set", "learning_starts=100", "--eval-freq", "0",
                 "--seed", "0", "--no-progress", "--no-tensorboard")  # fmt: skip
    assert result.code == 0, result.err
    assert seen and set(seen) == {1}
    assert th.get_num_threads() == 2


@pytest.mark.parametrize(("omp", "expected"), [(None, 1), ("2", 2)])
def test_tuning_workers_take_their_share_of_cores_unless_the_user_set_omp_num_threads(
    two_threads, monkeypatch: pytest.MonkeyPatch, omp: str | None, expected: int
) -> None:
    from types import SimpleNamespace

    from dqn_cli import tune

    if omp is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    seen: list[int] = []
    study = SimpleNamespace(optimize=lambda *args, **kwargs: seen.append(th.get_num_threads()))
    monkeypatch.setattr(tune, "open_study", lambda spec, offset: study)
    tune.run_worker(SimpleNamespace(threads=1, timeout=None), budget=1, worker_id="w", offset=0)  # type: ignore[arg-type]
    assert seen == [expected]

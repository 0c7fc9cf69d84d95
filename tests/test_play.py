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


def atari_model(dueling: bool, n_envs: int = 1) -> Any:
    """A DQN on SpaceInvaders' native env with weights far from initialisation (distinct greedy actions per image)."""
    import torch as th

    from dqn_cli import agent, envs, hyperparams

    info = envs.resolve("SpaceInvaders")
    overrides = ["buffer_size=200", "learning_starts=40", f"dueling={dueling}", f"n_envs={n_envs}"]
    hp, _ = hyperparams.resolve(info, None, overrides)
    model = agent.build(
        hp, envs.make_vec_env(info, hp, seed=1, n_envs=n_envs), seed=1, device="cpu", tensorboard_log=None
    )
    generator = th.Generator().manual_seed(0)
    with th.no_grad():
        for param in model.q_net.parameters():
            param.copy_(th.randn(param.shape, generator=generator) * 0.05)
    return model


@pytest.mark.parametrize("dueling", [False, True])
def test_greedy_actions_are_sb3s_deterministic_predictions(dueling: bool) -> None:
    """The Q-network's argmax taken directly (`greedy_actions`) is what SB3's `predict` returns, bit for bit."""
    import torch as th

    from dqn_cli.play import greedy
    from dqn_cli.policies import greedy_actions

    model = atari_model(dueling)
    obs = np.random.default_rng(0).integers(0, 256, (64, 4, 84, 84), dtype=np.uint8)
    model.policy.set_training_mode(True)  # as a rollout finds it after a training step
    ours = greedy_actions(model.policy, obs)
    assert ours is not None and not model.policy.training
    sb3 = model.policy.predict(obs, deterministic=True)[0]
    assert ours.dtype == sb3.dtype and np.array_equal(ours, sb3)
    assert len(set(sb3.tolist())) > 1, "distinct actions, so the comparison can fail"
    with th.no_grad():
        q = model.q_net(th.as_tensor(obs))
    assert np.array_equal(ours, q.argmax(dim=1).numpy())
    # a batch SB3 would transpose (channel-last images) or one of another dtype: left to SB3's predict
    assert greedy_actions(model.policy, obs.transpose(0, 2, 3, 1)) is None
    assert greedy_actions(model.policy, obs.astype(np.float32)) is None
    assert np.array_equal(greedy(model, obs.transpose(0, 2, 3, 1)), sb3)
    assert greedy_actions(PixelPolicy(), obs) is None


@pytest.mark.parametrize("dueling", [False, True])
def test_the_packed_q_network_computes_the_q_networks_values(dueling: bool) -> None:
    """`PackedQNetwork` (oneDNN, weights reordered once): the Q-network's values to float precision, SB3's greedy
    actions, for batches smaller and larger than the one it was packed for."""
    import torch as th

    from dqn_cli.policies import packed_q_network

    model = atari_model(dueling)
    packed = packed_q_network(model.policy, 8)
    assert packed is not None
    for size in (1, 3, 8, 64):
        obs = np.random.default_rng(size).integers(0, 256, (size, 4, 84, 84), dtype=np.uint8)
        with th.no_grad():
            expected = model.q_net(th.as_tensor(obs))
        got = packed(th.as_tensor(obs))
        assert got.shape == expected.shape and th.allclose(got, expected, rtol=1e-5, atol=1e-5)
        assert np.array_equal(got.argmax(dim=1).numpy(), model.policy.predict(obs, deterministic=True)[0])
    assert len(set(got.argmax(dim=1).tolist())) > 1, "distinct actions, so the comparison can fail"
    with th.no_grad():  # weights packed once: a later change is not seen (play packs at every call)
        model.q_net.features_extractor.linear[0].weight.mul_(2.0)
    assert not th.allclose(packed(th.as_tensor(obs)), model.q_net(th.as_tensor(obs)), atol=1e-3)


def test_only_nature_cnn_q_networks_on_cpu_are_packed() -> None:
    from stable_baselines3 import DQN

    from dqn_cli.policies import packed_q_network

    cartpole = DQN("MlpPolicy", "CartPole-v1", device="cpu")
    assert packed_q_network(cartpole.policy, 8) is None
    assert packed_q_network(PixelPolicy(), 8) is None
    model = atari_model(False)
    assert packed_q_network(model.policy, 8) is not None
    model.policy.q_net.features_extractor.cnn[0].padding_mode = "circular"
    assert packed_q_network(model.policy, 8) is None


def test_a_packed_network_that_disagrees_with_the_q_network_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels that compute something else on some platform: `packed_q_network` checks and falls back."""
    from dqn_cli import policies

    model = atari_model(False)
    call = policies.PackedQNetwork.__call__
    monkeypatch.setattr(policies.PackedQNetwork, "__call__", lambda self, obs: call(self, obs) * 1.001)
    assert policies.packed_q_network(model.policy, 8) is None

    def refused(self: Any, obs: Any) -> Any:
        raise RuntimeError("could not create a primitive")

    monkeypatch.setattr(policies.PackedQNetwork, "__call__", refused)
    assert policies.packed_q_network(model.policy, 8) is None
    monkeypatch.setattr(policies.PackedQNetwork, "__call__", call)
    assert policies.packed_q_network(model.policy, 8) is not None


def test_evaluations_on_the_packed_network_play_the_same_games(monkeypatch: pytest.MonkeyPatch) -> None:
    """`play` on the packed Q-network (the default) and on the Q-network itself: the same episodes. The network is
    packed for the games side by side, and again for one game once the last game plays alone (oneDNN reorders the
    weights packed for more at every single-game call)."""
    from dqn_cli import policies

    model = atari_model(False, n_envs=4)
    packs: list[tuple[int, Any]] = []
    batches: list[tuple[int, Any]] = []
    pack, actions_of = policies.packed_q_network, policies.greedy_actions

    def counted(policy: Any, batch_size: int) -> Any:
        packs.append((batch_size, pack(policy, batch_size)))
        return packs[-1][1]

    def seen(policy: Any, observation: Any, q_values: Any = None) -> Any:
        batches.append((len(observation), q_values))
        return actions_of(policy, observation, q_values)

    monkeypatch.setattr(policies, "packed_q_network", counted)
    monkeypatch.setattr(policies, "greedy_actions", seen)
    packed = play(model, model.get_env(), 6, epsilon=0.05, seed=3)
    assert [size for size, _ in packs] == [4, 1], "packed for the 4 games, and for 1 once the last played alone"
    for_all, for_one = (network for _, network in packs)
    assert {size for size, _ in batches} > {1, 4}, "the games ended at different times"
    assert all((network is for_one) == (size == 1) and network in (for_all, for_one) for size, network in batches)
    again = play(model, model.get_env(), 6, epsilon=0.05, seed=3)
    assert [size for size, _ in packs] == [4, 1, 4, 1], "packed at every evaluation: the weights change in training"
    assert np.array_equal(packed.returns, again.returns) and np.array_equal(packed.lengths, again.lengths)
    monkeypatch.setattr(policies, "packed_q_network", lambda policy, batch_size: None)
    plain = play(model, model.get_env(), 6, epsilon=0.05, seed=3)
    assert np.array_equal(packed.returns, plain.returns) and np.array_equal(packed.lengths, plain.lengths)
    assert len(set(plain.lengths.tolist())) > 1


def test_prepared_resets_give_the_seeded_resets_games() -> None:
    def frames(venv: AleVecEnv, seed: int) -> list[np.ndarray]:
        venv.seed(seed)
        shown = [venv.reset()]
        shown += [venv.step(np.array([t % 4, (t + 1) % 4]))[0] for t in range(40)]
        return shown

    fresh = breakout(2)
    expected = frames(fresh, 4)
    fresh.close()
    venv = breakout(2)
    frames(venv, 9)  # games in play, then reset ahead of time for seed 4
    venv.prepare_reset([0, 1], 4)
    assert venv.paused.all() and {i: p.seed for i, p in venv.prepared.items()} == {0: 4, 1: 5}
    assert all(np.array_equal(a, b) for a, b in zip(frames(venv, 4), expected, strict=True))
    assert not venv.prepared, "the next reset takes the prepared games"
    venv.prepare_reset([1], 7)  # a seed the next reset does not ask for: the game is reset again
    assert all(np.array_equal(a, b) for a, b in zip(frames(venv, 4), expected, strict=True))
    venv.prepare_reset([0], 4)
    venv.close()  # waits for the side thread before closing the emulator


def test_an_evaluation_followed_by_another_prepares_its_resets() -> None:
    policy = PixelPolicy()
    fresh = breakout(2)
    expected = play(policy, fresh, 3, epsilon=0.1, seed=4)
    fresh.close()
    venv = breakout(2)
    results = []
    for again in (True, True, False):
        results.append(play(policy, venv, 3, epsilon=0.1, seed=4, again=again))
        assert sorted(venv.prepared) == ([0, 1] if again else []), "each game once it has played its share"
    venv.close()
    for result in results:
        assert np.array_equal(result.returns, expected.returns) and np.array_equal(result.lengths, expected.lengths)


def test_training_prepares_the_first_evaluation_only_when_one_will_come(tmp_path) -> None:
    from types import SimpleNamespace

    from dqn_cli.agent import StopRequest
    from dqn_cli.callbacks import EvalCallback

    class Recording:
        num_envs = 2

        def __init__(self) -> None:
            self.unwrapped, self.calls = self, []

        def prepare_reset(self, indices, seed: int) -> None:
            self.calls.append((list(indices), seed))

    for resumed_at, total, expected in (
        (0, 999, []),
        (0, 1000, [([0, 1], 3)]),
        (1500, 1999, []),
        (1500, 2000, [([0, 1], 3)]),
    ):
        env = Recording()
        callback = EvalCallback(env, tmp_path, eval_freq=1000, episodes=2, epsilon=0.01, seed=3, stop=StopRequest())
        callback.model = SimpleNamespace(_total_timesteps=total)
        callback.num_timesteps = resumed_at
        callback._on_training_start()
        assert env.calls == expected, (resumed_at, total)

"""Pieces of dqn's agent that must do exactly what SB3's does: clipping, warm-up actions, training-mode switches."""

from __future__ import annotations

import pytest
import torch as th

from dqn_cli.agent import clip_grad_norm


def grads_of(scale: float, seed: int = 0) -> list[th.nn.Parameter]:
    generator = th.Generator().manual_seed(seed)
    params = [th.nn.Parameter(th.zeros(shape)) for shape in [(32, 4, 8, 8), (32,), (512, 3136), (6, 512)]]
    for p in params:
        p.grad = th.randn(p.shape, generator=generator) * scale
    params.append(th.nn.Parameter(th.zeros(3)))  # no gradient: skipped by both
    return params


@pytest.mark.parametrize("scale", [1e-5, 1e-3, 1.0, float("nan")])
def test_clipping_is_torchs_bit_for_bit(scale: float) -> None:
    """Norms far under, just over (1e-3: ~1.3) and over max_norm 1.0, and a gradient that is not a number."""
    ours, torchs = grads_of(scale), grads_of(scale)
    if scale != scale:
        ours[1].grad[0] = torchs[1].grad[0] = float("nan")
        scale = 1.0
    total = clip_grad_norm(ours, max_norm=1.0)
    expected = th.nn.utils.clip_grad_norm_(torchs, max_norm=1.0)
    assert th.equal(total, expected) or (total.isnan() and expected.isnan())
    for a, b in zip(ours, torchs, strict=True):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert th.equal(a.grad.nan_to_num(7.0), b.grad.nan_to_num(7.0))


def test_clipping_rescales_only_over_max_norm() -> None:
    """Under max_norm the gradients are not even written (torch multiplies them by 1.0 in place)."""
    small, large = grads_of(1e-5), grads_of(1.0)
    grads = [p.grad for p in small if p.grad is not None]
    before, versions = [g.clone() for g in grads], [g._version for g in grads]
    clip_grad_norm(small, max_norm=1.0)
    assert all(th.equal(a, g) for a, g in zip(before, grads, strict=True))
    assert [g._version for g in grads] == versions, "no in-place pass over the gradients"
    large_versions = [p.grad._version for p in large if p.grad is not None]
    clip_grad_norm(large, max_norm=1.0)
    assert all(p.grad._version > v for p, v in zip(large, large_versions, strict=False))
    norm = th.linalg.vector_norm(th.cat([p.grad.flatten() for p in large if p.grad is not None]))
    assert abs(float(norm) - 1.0) < 1e-4


def test_the_policy_walks_its_modules_only_when_the_mode_changes() -> None:
    import copy

    from stable_baselines3.dqn.policies import DQNPolicy

    from dqn_cli import agent, envs, hyperparams

    info = envs.resolve("CartPole-v1")
    hp, _ = hyperparams.resolve(info, None, ["learning_starts=10"])
    model = agent.build(hp, envs.make_vec_env(info, hp, seed=0, n_envs=1), seed=0, device="cpu", tensorboard_log=None)
    walks: list[bool] = []
    model.q_net.train = lambda mode=True: walks.append(mode)  # type: ignore[method-assign]
    policy = model.policy
    for mode in (False, False, True, True, False):
        policy.set_training_mode(mode)
        assert policy.training is mode
    assert walks == [False, True, False]
    copied = copy.deepcopy(policy)
    copied.set_training_mode(True)
    assert copied.training and not policy.training, "a copy switches itself, not the original"
    assert type(policy).set_training_mode is DQNPolicy.set_training_mode


def test_warm_up_actions_drawn_ahead_fill_the_same_buffer_and_train_the_same() -> None:
    """Warm-up steps sent one step early (`AleVecEnv.queue_next`) give the run it would be without, through lost
    lives and FIRE resets, into the first gradient steps."""
    import numpy as np

    from dqn_cli import agent, envs, hyperparams

    info = envs.resolve("Breakout")
    hp, _ = hyperparams.resolve(info, None, ["buffer_size=1000", "learning_starts=600", "n_envs=4"])
    runs = []
    for ahead in (True, False):
        env = envs.make_vec_env(info, hp, seed=2, n_envs=4)
        announced: list[np.ndarray] = []
        queue_next = env.queue_next
        env.queue_next = (lambda a, q=queue_next, log=announced: (log.append(a), q(a))[1]) if ahead else None
        model = agent.build(hp, env, seed=2, device="cpu", tensorboard_log=None)
        model.learn(680)
        env.close()
        runs.append((model, announced))
    (ours, announced), (plain, _) = runs
    assert len(announced) == 600 // 4 - 1, "every warm-up step but the first was announced"
    assert ours.num_timesteps == plain.num_timesteps == 680 and ours._n_updates == plain._n_updates > 0
    arrays = {k: v for k, v in vars(plain.replay_buffer).items() if isinstance(v, np.ndarray)}
    assert "frames" in arrays, "the compact buffer's frames are compared"
    for key, value in arrays.items():
        assert np.array_equal(getattr(ours.replay_buffer, key), value), key
    assert np.array_equal(ours._last_obs, plain._last_obs)
    assert all(th.equal(a, b) for a, b in zip(ours.q_net.parameters(), plain.q_net.parameters(), strict=True))


def test_steps_sent_ahead_are_dropped_by_a_reset_or_close() -> None:
    import numpy as np

    from dqn_cli.ale_vec import AleVecEnv, AtariSettings

    env = AleVecEnv(AtariSettings(game="breakout", env_id="BreakoutNoFrameskip-v4"), 2)
    env.seed(1)
    first = env.reset()
    env.queue_next(np.array([1, 1]))
    env.step(np.array([0, 0]))
    assert env.in_flight is not None
    with pytest.raises(RuntimeError, match="queue_next"):
        env.step_async(np.array([2, 2]))  # not what was announced
    env.seed(1)
    assert np.array_equal(env.reset(), first) and env.in_flight is None
    env.step(np.array([3, 3]))  # sent as usual
    env.queue_next(np.array([1, 1]))
    env.step(np.array([0, 0]))
    assert env.in_flight is not None
    env.close()  # receives the step in flight before closing the emulators
    assert env.in_flight is None and env.queued is None

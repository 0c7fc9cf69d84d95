"""Channels-last convolution weights on CPU: same arithmetic as the standard layout, Adam's moments kept aligned."""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN
from torch.nn import functional as F

from dqn_cli import agent, envs, hyperparams
from dqn_cli.agent import DQNAgent


def atari_agent(n_envs: int = 1) -> DQNAgent:
    info = envs.resolve("SpaceInvaders")
    hp, _ = hyperparams.resolve(info, None, ["buffer_size=200", "learning_starts=40", f"n_envs={n_envs}"])
    env = envs.make_vec_env(info, hp, seed=3, n_envs=n_envs)
    return agent.build(hp, env, seed=3, device="cpu", tensorboard_log=None)


def convolution_tensors(model: DQNAgent) -> list[th.Tensor]:
    params = [p for p in model.policy.parameters() if p.dim() == 4]
    state = model.policy.optimizer.state
    moments = [v for p in params if p in state for v in state[p].values() if v.dim() == 4]
    return params + moments


def gradient_step(model: DQNAgent, seed: int) -> None:
    """One Adam step on a fixed batch through the online network."""
    generator = th.Generator().manual_seed(seed)
    obs = th.randint(0, 256, (8, 4, 84, 84), generator=generator, dtype=th.uint8)
    target = th.randn(8, 6, generator=generator)
    model.policy.optimizer.zero_grad()
    F.mse_loss(model.q_net(obs), target).backward()
    model.policy.optimizer.step()


def standard_layout_checkpoint(source: Path, target: Path) -> Path:
    """The zip as a run saved it before channels-last: every optimizer tensor in the standard (contiguous) layout."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "policy.optimizer.pth":
                with zin.open(name) as handle:
                    state = th.load(handle, weights_only=True)
                for moments in state["state"].values():
                    for key, value in moments.items():
                        moments[key] = value.contiguous()
                with zout.open(name, "w") as handle:
                    th.save(state, handle)
                continue
            zout.writestr(name, data)
    return target


def test_convolutions_train_channels_last_and_match_the_standard_layout() -> None:
    model = atari_agent()
    model.learn(80)  # 10 gradient steps: Adam's moments exist
    tensors = convolution_tensors(model)
    assert len(tensors) == 2 * 3 + 3 * 2  # 3 conv weights in each net, Adam's 2 moments for the online net's
    assert all(t.is_contiguous(memory_format=th.channels_last) for t in tensors)

    standard = copy.deepcopy(model.q_net).to(memory_format=th.contiguous_format)
    assert all(p.is_contiguous() for p in standard.parameters())
    obs = th.randint(0, 256, (4, 4, 84, 84), generator=th.Generator().manual_seed(1), dtype=th.uint8)
    for net in (model.q_net, standard):
        net.zero_grad()
        net(obs).square().sum().backward()
    with th.no_grad():
        assert th.allclose(model.q_net(obs), standard(obs), rtol=1e-4, atol=1e-5)
    for a, b in zip(model.q_net.parameters(), standard.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        assert th.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5)


def test_a_standard_layout_checkpoint_resumes_with_the_same_adam_update(tmp_path: Path) -> None:
    """Adam's fused kernel walks weights and moments as flat memory: moments left in the old layout would be paired
    with the wrong weights. Loading puts them in the weights' layout, so both checkpoints take the same step."""
    model = atari_agent()
    model.learn(80)
    model.save(tmp_path / "new.zip")
    old = standard_layout_checkpoint(tmp_path / "new.zip", tmp_path / "old.zip")
    loaded = [DQNAgent.load(path, device="cpu", buffer_size=1) for path in (tmp_path / "new.zip", old)]
    for each in loaded:
        assert all(t.is_contiguous(memory_format=th.channels_last) for t in convolution_tensors(each))
        gradient_step(each, seed=5)
    for a, b in zip(loaded[0].policy.parameters(), loaded[1].policy.parameters(), strict=True):
        assert th.equal(a, b)


def test_saved_zips_are_in_the_standard_layout_for_any_loader(tmp_path: Path) -> None:
    """Plain SB3 builds its network in the standard layout and Adam's fused kernel from the zip's optimizer_kwargs:
    continuing training there takes the same step as dqn does."""
    model = atari_agent()
    model.learn(80)
    path = tmp_path / "model.zip"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        for member in ("policy.pth", "policy.optimizer.pth"):
            with archive.open(member) as handle:
                state = th.load(handle, weights_only=True)
            tensors = [*state.values()] if member == "policy.pth" else [
                v for moments in state["state"].values() for v in moments.values()
            ]  # fmt: skip
            assert all(t.is_contiguous() for t in tensors), member
    plain = DQN.load(path, device="cpu", buffer_size=1)
    assert plain.policy.optimizer.defaults["fused"], "the zip asks for the fused kernel"
    ours = DQNAgent.load(path, device="cpu", buffer_size=1)
    for each in (plain, ours):
        gradient_step(each, seed=9)
    for a, b in zip(plain.policy.parameters(), ours.policy.parameters(), strict=True):
        assert th.allclose(a, b, rtol=0, atol=1e-6)


def test_batches_reach_the_convolutions_channels_last_and_train_bit_for_bit_the_same(monkeypatch) -> None:
    model = atari_agent()
    model.learn(80)
    start = (copy.deepcopy(model.policy.state_dict()), copy.deepcopy(model.policy.optimizer.state_dict()))
    layouts: list[bool] = []
    first_conv = next(m for m in model.q_net.modules() if isinstance(m, th.nn.Conv2d))
    first_conv.register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=th.channels_last))
    )

    def train_from_start(seed: int) -> list[th.Tensor]:
        model.policy.load_state_dict(start[0])
        model.policy.optimizer.load_state_dict(copy.deepcopy(start[1]))  # loading keeps the tensors it is given
        np.random.seed(seed)  # the batches the buffer samples
        model.train(gradient_steps=3, batch_size=16)
        return [p.detach().clone() for p in model.q_net.parameters()]

    reordered = train_from_start(7)
    assert layouts and all(layouts)
    sample = model.replay_buffer.sample

    def standard_sample(*args, **kwargs):  # the batch SB3's buffer would hand over: same values, standard layout
        batch = sample(*args, **kwargs)
        return batch._replace(
            observations=batch.observations.contiguous(), next_observations=batch.next_observations.contiguous()
        )

    with monkeypatch.context() as plain:
        plain.setattr(agent, "conv_layout", lambda observations: observations)
        plain.setattr(model.replay_buffer, "sample", standard_sample)
        layouts.clear()
        as_sampled = train_from_start(7)
        assert not any(layouts), "the convolutions get standard-layout input"
    assert all(th.equal(a, b) for a, b in zip(reordered, as_sampled, strict=True))
    assert not all(th.equal(a, b) for a, b in zip(reordered, train_from_start(8), strict=True)), "other batches"


def test_target_pass_on_a_second_thread_trains_bit_for_bit_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target network's forward pass runs beside the online one (threads.beside), each pass on one of the two
    torch threads: bit for bit what the same step gives with the passes one after the other, on one thread or on
    two, and to float rounding what it gives on the other count (the BLAS and oneDNN may split a layer's sums by
    thread count: on an Intel Xeon the side pass matched one thread and differed from two by ~1e-8 in Q-values; on
    an AMD EPYC it matched two threads and differed from one by ~4e-9 in the weights after 3 steps)."""
    import threading

    model = atari_agent()
    model.learn(80)
    start = (copy.deepcopy(model.policy.state_dict()), copy.deepcopy(model.policy.optimizer.state_dict()))
    target_threads: set[int] = set()
    targets = agent.td_targets

    def recorded_targets(*args: Any, **kwargs: Any) -> th.Tensor:
        target_threads.add(threading.get_ident())
        return targets(*args, **kwargs)

    monkeypatch.setattr(agent, "td_targets", recorded_targets)
    initial = [p.detach().clone() for p in model.q_net.parameters()]
    threads = th.get_num_threads()
    try:

        def train_from_start(side_pass: bool, double_q: bool, n_threads: int) -> list[th.Tensor]:
            th.set_num_threads(n_threads)
            model.side_pass, model.double_q = side_pass, double_q
            model.policy.load_state_dict(start[0])
            model.policy.optimizer.load_state_dict(copy.deepcopy(start[1]))
            np.random.seed(5)
            model.train(gradient_steps=3, batch_size=16)
            assert th.get_num_threads() == n_threads, "the step gives back the threads it split"
            return [p.detach().clone() for p in model.q_net.parameters()]

        for double_q in (False, True):
            target_threads.clear()
            beside = train_from_start(True, double_q, 2)
            assert target_threads and threading.get_ident() not in target_threads
            target_threads.clear()
            one_thread = train_from_start(False, double_q, 1)
            assert target_threads == {threading.get_ident()}
            two_threads = train_from_start(False, double_q, 2)
            references = (one_thread, two_threads)
            assert any(all(th.equal(a, b) for a, b in zip(beside, ref, strict=True)) for ref in references)
            for ref in references:
                assert all(th.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(beside, ref, strict=True))
            assert not all(th.equal(a, b) for a, b in zip(beside, initial, strict=True)), "the steps moved the weights"
    finally:
        th.set_num_threads(threads)


def test_a_failing_side_pass_raises_here_and_restores_the_threads() -> None:
    from dqn_cli.threads import beside

    threads = th.get_num_threads()
    th.set_num_threads(2)
    try:

        def fails() -> None:
            raise RuntimeError("side pass failed")

        with np.testing.assert_raises_regex(RuntimeError, "side pass failed"):
            beside(fails, lambda: th.ones(2, requires_grad=True) * 2, device=th.device("cpu"))
        assert th.get_num_threads() == 2
        side, main = beside(lambda: th.ones(2, requires_grad=True) * 3, lambda: th.ones(2, requires_grad=True) * 2,
                            device=th.device("cpu"))  # fmt: skip
        assert not side.requires_grad and main.requires_grad, "no graph for the side pass, the main one keeps it"
    finally:
        th.set_num_threads(threads)


def test_the_target_pass_runs_on_packed_weights_that_follow_every_change_of_the_target_network(tmp_path: Path) -> None:
    """The target network's Q-values come from a PackedQNetwork of it, rebuilt when SB3 updates the target network
    and when a load replaces its weights: always the network's values to float rounding."""
    from dqn_cli.policies import PackedQNetwork

    model = atari_agent(n_envs=2)
    model.learn(60)
    images = th.randint(0, 256, (16, 4, 84, 84), generator=th.Generator().manual_seed(0), dtype=th.uint8)

    def packed_agrees() -> PackedQNetwork:
        packed = model._target_network(16)
        assert isinstance(packed, PackedQNetwork)
        with th.no_grad():
            assert th.allclose(packed(images), model.q_net_target(images), rtol=1e-5, atol=1e-5)
        return packed

    first = packed_agrees()
    assert model._target_network(16) is first, "built once while the target network stays as it is"
    model.learn(model.target_update_interval, reset_num_timesteps=False)  # gradient steps, then a target update
    assert not th.allclose(first(images), model.q_net_target(images), rtol=1e-5, atol=1e-5), "the target moved"
    second = packed_agrees()
    model.save(tmp_path / "model.zip")
    model.set_parameters(str(tmp_path / "model.zip"))  # copies the saved weights into the networks
    assert packed_agrees() is not second
    model.pack_target = False
    assert model._target_network(16) is model.q_net_target


def test_batches_sampled_ahead_are_the_batches_sampled_in_turn() -> None:
    """Within one update the side thread samples each next batch while the online pass runs: the same draws in the
    same order, so three gradient steps in one update train bit for bit as three updates of one step each."""
    model = atari_agent()
    model.learn(80)
    start = (copy.deepcopy(model.policy.state_dict()), copy.deepcopy(model.policy.optimizer.state_dict()))

    def trained(calls: int, steps: int) -> list[th.Tensor]:
        model.policy.load_state_dict(start[0])
        model.policy.optimizer.load_state_dict(copy.deepcopy(start[1]))
        np.random.seed(11)
        for _ in range(calls):
            model.train(gradient_steps=steps, batch_size=16)
        return [p.detach().clone() for p in model.q_net.parameters()]

    together, in_turn = trained(1, 3), trained(3, 1)
    assert all(th.equal(a, b) for a, b in zip(together, in_turn, strict=True))
    assert not all(th.equal(a, b) for a, b in zip(together, trained(1, 2), strict=True)), "a step fewer differs"

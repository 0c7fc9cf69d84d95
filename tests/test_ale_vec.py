"""ALE's native path plays exactly what SB3's AtariWrapper path plays: same pixels, rewards, episode ends, lives."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.atari_wrappers import NoopResetEnv

from dqn_cli import envs, hyperparams, native
from dqn_cli.ale_vec import AleVecEnv, AtariSettings, NativeEmulator, VectorEmulator


@pytest.fixture(params=[True, False], ids=["compiled", "ale-vector"])
def compiled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Each test runs on dqn's compiled step and on ALE's vector env (the path where the step cannot be built)."""
    if request.param:
        assert native.library() is not None, native.native_status().reason  # CI has a compiler: it must build
    else:
        monkeypatch.setattr(native, "library", lambda: None)
    return bool(request.param)


def noop_wrappers(venv) -> list[NoopResetEnv]:
    found = []
    for env in venv.unwrapped.envs:
        while not isinstance(env, NoopResetEnv):
            env = env.env
        found.append(env)
    return found


def monitor_rows(folder: Path, n_envs: int) -> list[list[tuple[str, str]]]:
    rows = []
    for i in range(n_envs):
        with open(folder / f"{i}.monitor.csv", encoding="utf-8") as handle:
            next(handle)  # the JSON header (t_start differs)
            rows.append([(row["r"], row["l"]) for row in csv.DictReader(handle)])
    return rows


def both_paths(game: str, n_envs: int, evaluation: bool, tmp_path: Path, compiled: bool):
    info = envs.resolve(game)
    hp, _ = hyperparams.resolve(info, None, [])
    make = dict(seed=7, n_envs=n_envs, evaluation=evaluation)
    sb3 = envs.make_vec_env(info, hp, **make, vec_env="sb3", monitor_dir=tmp_path / "sb3")
    ale = envs.make_vec_env(info, hp, **make, vec_env="ale", monitor_dir=tmp_path / "ale")
    assert isinstance(ale, AleVecEnv) and not isinstance(sb3, AleVecEnv)
    emulator = NativeEmulator if compiled else VectorEmulator
    assert all(isinstance(game.emulator, emulator) for game in ale.games)
    assert ale.observation_space == sb3.observation_space and ale.action_space == sb3.action_space
    return sb3, ale


@pytest.mark.parametrize(
    ("game", "n_envs", "evaluation", "steps", "ahead"),
    [
        ("Breakout", 2, False, 1200, False),  # FIRE to start, lives lost often: episodic life + FIRE after each loss
        ("SpaceInvaders", 2, True, 1500, False),  # the evaluation protocol: full games, true scores
        ("MsPacman", 1, False, 2500, False),  # no FIRE action: no fire reset
        ("Breakout", 3, False, 1200, True),  # each step's actions announced ahead (warm-up), resets included
    ],
)
def test_same_observations_rewards_and_episode_ends_as_sb3(
    game: str, n_envs: int, evaluation: bool, steps: int, ahead: bool, tmp_path: Path, compiled: bool
) -> None:
    """Same seeds and actions through both paths, everything compared as each path computes it. The compiled step
    draws its no-op counts as SB3 does, from the same seeds; on ALE's vector env, ALE draws them, so SB3's count at
    each new game is set to ALE's. With `ahead`, the ALE path gets each step's actions one step early
    (`queue_next`) and starts playing them early."""
    sb3, ale = both_paths(game, n_envs, evaluation, tmp_path, compiled)
    noops = [] if compiled else noop_wrappers(sb3)
    rng = np.random.default_rng(0)
    planned = rng.integers(ale.action_space.n, size=(steps + 1, n_envs))
    sent: list[int] = []
    for game_ in ale.games:
        send = game_.send
        game_.send = lambda action, send=send: (sent.append(action), send(action))[1]  # type: ignore[method-assign]
    seen = Counter()

    def sync_noops() -> None:
        for wrapper, ale_game in zip(noops, ale.games, strict=False):
            wrapper.override_num_noops = ale_game.noops

    fast = ale.reset()
    sync_noops()
    assert np.array_equal(sb3.reset(), fast)
    for t in range(steps):
        actions = planned[t]
        if ahead and t + 1 < steps:
            ale.queue_next(planned[t + 1])
        sends_before = len(sent)
        ale.step_async(actions)
        if ahead and t > 0:
            assert len(sent) == sends_before, f"step {t}: its actions went out during the previous step"
        fast, fast_rewards, fast_dones, fast_infos = ale.step_wait()
        sync_noops()
        obs, rewards, dones, infos = sb3.step(actions)
        assert np.array_equal(obs, fast), f"step {t}: {(obs != fast).sum(axis=(1, 2, 3))} pixels differ"
        assert np.array_equal(rewards, fast_rewards) and np.array_equal(dones, fast_dones), f"step {t}"
        for i, (info, fast_info) in enumerate(zip(infos, fast_infos, strict=True)):
            assert info["lives"] == fast_info["lives"], f"step {t}, env {i}"
            assert info.get("episode", {}).get("r") == fast_info.get("episode", {}).get("r"), f"step {t}"
            assert info.get("episode", {}).get("l") == fast_info.get("episode", {}).get("l"), f"step {t}"
            assert info["TimeLimit.truncated"] == fast_info["TimeLimit.truncated"]
            if dones[i] and "episode" not in info:  # a lost life: its last observation is learnt from
                seen["life lost"] += 1
                assert np.array_equal(info["terminal_observation"], fast_info["terminal_observation"]), f"step {t}"
            elif dones[i]:  # a game over: the compiled step keeps SB3's max-pool buffer, ALE's vector env its own
                seen["game over"] += 1
                same = np.array_equal(info["terminal_observation"], fast_info["terminal_observation"])
                assert same or not compiled, f"step {t}"
                assert fast_info["terminal_observation"].shape == info["terminal_observation"].shape
        seen["reward"] += int((rewards != 0).sum())
    ale.close()
    sb3.close()
    assert seen["game over"] >= 2 and seen["reward"] > 0, seen  # the comparison went through new games
    if not evaluation:
        assert seen["life lost"] >= 2, seen
    assert monitor_rows(tmp_path / "ale", n_envs) == monitor_rows(tmp_path / "sb3", n_envs)


def test_no_op_starts_are_uniform_over_1_to_noop_max(compiled: bool) -> None:
    settings = AtariSettings(game="pong", env_id="PongNoFrameskip-v4", noop_max=4)
    venv = AleVecEnv(settings, 1)
    venv.seed(3)
    counts = Counter()
    for _ in range(120):
        venv.reset()
        counts[venv.games[0].noops] += 1
    venv.close()
    assert set(counts) == {1, 2, 3, 4}, counts  # SB3 draws 1..noop_max; ALE's own draw includes 0
    assert min(counts.values()) > 120 / 4 / 2, counts


def test_seeded_resets_repeat(compiled: bool) -> None:
    settings = AtariSettings(game="space_invaders", env_id="SpaceInvadersNoFrameskip-v4")

    def play(seed: int) -> list[np.ndarray]:
        venv = AleVecEnv(settings, 2)
        venv.seed(seed)
        frames = [venv.reset()]
        frames += [venv.step(np.array([t % 6, (t + 3) % 6]))[0] for t in range(50)]
        venv.close()
        return frames

    first, again, other = play(1), play(1), play(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True)), "other seeds, other no-ops"


def test_configurations_that_need_sb3s_wrappers_fall_back() -> None:
    atari = envs.resolve("Pong")
    hp, _ = hyperparams.resolve(atari, None, [])
    assert envs.ale_unsupported(atari, hp) is None
    v5 = envs.resolve("ALE/Pong-v5")
    assert "skips frames" in (envs.ale_unsupported(v5, hyperparams.resolve(v5, None, [])[0]) or "")
    sticky_wrapper, _ = hyperparams.resolve(atari, None, ["atari_wrapper.action_repeat_probability=0.25"])
    assert "sticky" in (envs.ale_unsupported(atari, sticky_wrapper) or "")
    cartpole = envs.resolve("CartPole-v1")
    assert envs.ale_unsupported(cartpole, hyperparams.resolve(cartpole, None, [])[0]) is not None
    venv = envs.make_vec_env(v5, hyperparams.resolve(v5, None, [])[0], seed=0, n_envs=1)
    assert not isinstance(venv, AleVecEnv)
    venv.close()


def test_train_says_when_a_configuration_needs_sb3s_wrappers(dqn) -> None:
    args = ("-n", "200", "--set", "learning_starts=1000", "--set", "buffer_size=500", "--eval-freq", "0",
            "--save-freq", "0", "--no-tensorboard", "--no-progress")  # fmt: skip
    v5 = dqn("train", "--env", "ALE/Pong-v5", *args)
    assert v5.code == 0, v5.err
    assert "Atari on SB3's wrappers, not ALE's native threads: ALE/Pong-v5 skips frames in the env" in v5.err
    native = dqn("train", "--env", "Pong", *args)
    assert native.code == 0 and "SB3's wrappers" not in native.err


def test_a_paused_game_stands_still_and_resumes_where_it_stopped(compiled: bool) -> None:
    settings = AtariSettings(game="breakout", env_id="BreakoutNoFrameskip-v4", terminal_on_life_loss=False)
    paused, reference = AleVecEnv(settings, 2), AleVecEnv(settings, 2)
    for venv in (paused, reference):
        venv.seed(5)
    start, same_start = paused.reset(), reference.reset()
    assert np.array_equal(start, same_start)
    paused.pause(np.array([False, True]))
    for t in range(20):
        obs, rewards, dones, infos = paused.step(np.array([t % 4, 3]))
        assert np.array_equal(obs[1], start[1]) and rewards[1] == 0 and not dones[1] and infos[1] == {}
    assert not np.array_equal(obs[0], start[0]), "the other game plays on"
    paused.pause(np.array([False, False]))
    resumed, _, _, resumed_infos = paused.step(np.array([0, 2]))
    expected, _, _, expected_infos = reference.step(np.array([0, 2]))
    assert np.array_equal(resumed[1], expected[1]) and resumed_infos[1] == expected_infos[1]
    paused.pause(np.array([True, True]))
    paused.reset()
    assert not paused.paused.any(), "a reset unpauses every game"
    for venv in (paused, reference):
        venv.close()


def test_steps_chosen_from_observations_play_on_torchs_team_as_on_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step whose actions came from the observations runs on torch's OpenMP team (`native.step_on_team`) and plays
    exactly what the pool's threads play, across lost lives, game overs and a paused game; warm-up steps sent ahead
    stay on the pool."""
    assert native.library() is not None, native.native_status().reason
    settings = AtariSettings(game="breakout", env_id="BreakoutNoFrameskip-v4")
    team, pool = AleVecEnv(settings, 3), AleVecEnv(settings, 3)
    real, on_team = native.step_on_team, []

    def step_on_team(on: native.Pool, games: list[native.NativeGame], actions: np.ndarray) -> bool:
        if on is not team.pool:
            return False
        on_team.append(real(on, games, actions))
        return on_team[-1]

    monkeypatch.setattr(native, "step_on_team", step_on_team)
    rng = np.random.default_rng(0)
    try:
        for venv in (team, pool):
            venv.seed(11)
        assert np.array_equal(team.reset(), pool.reset())
        ends, actions = 0, rng.integers(4, size=3)
        for t in range(1500):
            if t == 700:
                for venv in (team, pool):
                    venv.pause(np.array([False, True, False]))
            upcoming = rng.integers(4, size=3)
            if t % 50 == 0 and t < 700:  # warm-up-like: the next step's actions announced while this one is handled
                for venv in (team, pool):
                    venv.queue_next(upcoming)
            played = [venv.step(actions) for venv in (team, pool)]
            (obs, rewards, dones, infos), (obs_, rewards_, dones_, infos_) = played
            assert np.array_equal(obs, obs_) and np.array_equal(rewards, rewards_) and np.array_equal(dones, dones_), t
            for info, info_ in zip(infos, infos_, strict=True):
                last, last_ = info.pop("terminal_observation", None), info_.pop("terminal_observation", None)
                assert np.array_equal(np.asarray(last), np.asarray(last_)), t
                for record in (info, info_):
                    record.get("episode", {}).pop("t", None)  # the Monitor's wall time
                assert info == info_, t
            ends += int(dones.sum())
            actions = upcoming
        assert ends >= 3, "lives lost and games over along the way"
        assert on_team and all(on_team), "steps from observations ran on the team"
        assert len(on_team) < 1500, "steps sent ahead stayed on the pool"
    finally:
        team.close(), pool.close()


def thread_ids() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH") or not os.path.isdir("/proc/self/task"), reason="Linux only")
def test_emulator_threads_run_under_sched_batch_only_while_steps_are_sent_ahead(compiled: bool) -> None:
    """While warm-up steps are sent ahead, the emulator threads must not preempt the main thread that wakes them
    (threads.batch_policy); in any other step they must, or they wait for torch's spinning worker. No other thread's
    policy changes, the main thread's included."""
    before = {tid: os.sched_getscheduler(tid) for tid in thread_ids()}
    env = AleVecEnv(AtariSettings("pong", "PongNoFrameskip-v4"), 3)
    emulators = thread_ids() - set(before)

    def policies() -> set[int]:
        return {os.sched_getscheduler(tid) for tid in emulators}

    try:
        # ALE's vector env: a thread per game; the compiled step: a worker per core, at most one per game
        assert len(emulators) == (min(3, len(os.sched_getaffinity(0))) if compiled else 3)
        assert {tid for game in env.games for tid in game.thread_ids} == emulators
        env.reset()
        assert policies() == {os.SCHED_OTHER}
        actions = np.zeros(3, dtype=np.int64)
        for _ in range(3):  # warm-up: each step's successor announced
            env.queue_next(actions)
            env.step(actions)
            assert policies() == {os.SCHED_BATCH}
        env.step(actions)  # the announced step, nothing announced after it
        env.step(actions)  # chosen from the observations
        assert policies() == {os.SCHED_OTHER}
        assert {tid: os.sched_getscheduler(tid) for tid in before} == before
    finally:
        env.close()


def test_the_compiled_step_plays_sb3s_sticky_actions(tmp_path: Path, compiled: bool) -> None:
    """`--sticky`: ALE repeats the previous action with probability 0.25, from its own generator; the compiled step
    seeds that generator as Gymnasium's AtariEnv does, so the same seeds give the same repeats as SB3's path."""
    if not compiled:
        pytest.skip("ALE's vector env seeds ALE's generator its own way (README: the differences)")
    info = envs.resolve("Breakout")
    hp, _ = hyperparams.resolve(info, None, [])
    make = dict(seed=11, n_envs=2, sticky=True)
    sb3 = envs.make_vec_env(info, hp, **make, vec_env="sb3")
    ale = envs.make_vec_env(info, hp, **make, vec_env="ale")
    assert np.array_equal(sb3.reset(), ale.reset())
    rng = np.random.default_rng(1)
    for t in range(400):
        actions = rng.integers(ale.action_space.n, size=2)
        obs, rewards, dones, _ = sb3.step(actions)
        fast, fast_rewards, fast_dones, _ = ale.step(actions)
        assert np.array_equal(obs, fast) and np.array_equal(rewards, fast_rewards), f"step {t}"
        assert np.array_equal(dones, fast_dones), f"step {t}"
    sb3.close()
    ale.close()

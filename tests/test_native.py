"""dqn's compiled Atari step: ALE's screens and OpenCV's pixels exactly, built once, checked, and never a dead end."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dqn_cli import native
from dqn_cli.ale_vec import AleVecEnv, AtariSettings, NativeEmulator, VectorEmulator

SETTINGS = AtariSettings(game="pong", env_id="PongNoFrameskip-v4")


@pytest.fixture
def fresh_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty build cache, and `native_status` asked again (it is cached per process)."""
    monkeypatch.setenv("DQN_NATIVE_CACHE", str(tmp_path / "cache"))
    native.native_status.cache_clear()
    yield tmp_path / "cache"
    native.native_status.cache_clear()


@pytest.mark.parametrize("game", ["breakout", "space_invaders"])
def test_compiled_step_plays_ale_pys_screens_and_opencvs_pixels(game: str) -> None:
    lib = native.library()
    assert lib is not None, native.native_status().reason
    native.self_check(lib, game, steps=600)  # raw screens, observations, rewards, game overs, lives; new games


def test_the_self_check_catches_a_wrong_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = native.library()
    assert lib is not None
    table = native.gray_of_max.__wrapped__  # type: ignore[attr-defined]

    def off_by_one(palette: bytes) -> np.ndarray:
        wrong = table(palette).copy()
        np.fill_diagonal(wrong, wrong.diagonal() ^ 4)  # each colour's own gray off by 4, as a wrong grayscale
        return wrong

    monkeypatch.setattr(native, "gray_of_max", off_by_one)
    with pytest.raises(AssertionError, match="differ"):
        native.self_check(lib, "pong", steps=200)


def test_without_a_compiler_games_run_on_ales_vector_env(fresh_status: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "compiler", lambda: None)
    status = native.native_status()
    assert status.library is None and "no C++ compiler" in status.reason
    env = AleVecEnv(SETTINGS, 2)
    try:
        assert all(isinstance(game.emulator, VectorEmulator) for game in env.games)
        assert env.reset().shape == (2, 4, 84, 84)
    finally:
        env.close()
    with pytest.raises(native.NativeError, match=r"no C\+\+ compiler"):
        AleVecEnv(SETTINGS, 1, compiled=True)


@pytest.mark.parametrize(
    ("cxx", "says"),
    [
        ("no-such-c++", "CXX='no-such-c++' is not on PATH: install it, or unset CXX to use c++, g++ or clang++"),
        ('g++ "', "CXX='g++ \"' cannot be read as a command (No closing quotation): fix or unset it"),
    ],
)
def test_a_cxx_that_is_not_a_compiler_is_named_not_replaced(
    fresh_status: Path, monkeypatch: pytest.MonkeyPatch, cxx: str, says: str
) -> None:
    monkeypatch.setenv("CXX", cxx)
    status = native.native_status()
    assert status.library is None and status.reason == says
    assert not list(fresh_status.glob("*.so"))  # nothing built with another compiler


def test_cxx_may_carry_its_own_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gxx = native.compiler()
    if gxx is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("CXX", f"{gxx} -DDQN_UNUSED=1")
    source = tmp_path / "one.cpp"
    source.write_text('extern "C" int one() { return DQN_UNUSED; }\n')
    native.compile_library(source, tmp_path / "one.so", ["-O2", "-shared", "-fPIC"])
    assert ctypes.CDLL(str(tmp_path / "one.so")).one() == 1


def test_a_build_that_fails_its_check_is_never_used(
    fresh_status: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library whose frames differ (here: every pixel's lowest bit flipped) is built, checked in a child process,
    recorded as failed and left alone: games run on ALE's vector env, and the check is not run again."""
    source = tmp_path / "ale_step.cpp"
    text = native.SOURCE.read_text()
    rounding = "out[d] = static_cast<unsigned char>(v < 0 ? 0 : v > 255 ? 255 : v);"
    assert rounding in text
    source.write_text(text.replace(rounding, rounding.replace("out[d] = ", "out[d] = 1 ^ ")))
    monkeypatch.setattr(native, "SOURCE", source)
    status = native.native_status()
    assert status.library is None and "self-check failed" in status.reason, status.reason
    built = list(fresh_status.glob("ale_step-*.so"))
    assert len(built) == 1 and built[0].with_suffix(".json").exists()

    def no_second_check(*args: object, **kwargs: object) -> None:
        raise AssertionError("the check ran again")

    native.native_status.cache_clear()
    monkeypatch.setattr(subprocess, "run", no_second_check)
    assert "self-check failed" in native.native_status().reason
    env = AleVecEnv(SETTINGS, 1)
    assert isinstance(env.games[0].emulator, VectorEmulator)
    env.close()


def test_an_unwritable_cache_falls_back_and_says_where(
    fresh_status: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DQN_NATIVE_CACHE", str(blocker / "cache"))
    status = native.native_status()
    assert status.library is None
    assert status.reason.startswith("cannot build or load it: ") and "set DQN_NATIVE_CACHE to a writable folder" in (
        status.reason
    )
    assert blocker.read_text() == "not a folder", "nothing lost"


def test_the_build_is_reused_and_rebuilt_when_the_source_changes(
    fresh_status: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = native.native_status()
    assert first.library is not None, first.reason
    built = sorted(fresh_status.glob("ale_step-*.so"))
    assert len(built) == 1 and not list(fresh_status.glob("tmp*")), "built in place, nothing half-written left"
    native.native_status.cache_clear()
    assert native.native_status().library is not None and sorted(fresh_status.glob("ale_step-*.so")) == built
    marker = built[0].with_suffix(".json")
    marker.write_text('{"fail')  # cut short (a full disk, say): checked again, not trusted and not a crash
    native.native_status.cache_clear()
    assert native.native_status().library is not None and json.loads(marker.read_text()) == {"failure": None}

    source = tmp_path / "ale_step.cpp"
    source.write_text(native.SOURCE.read_text() + "\n// another version\n")
    monkeypatch.setattr(native, "SOURCE", source)
    native.native_status.cache_clear()
    assert native.native_status().library is not None
    assert len(list(fresh_status.glob("ale_step-*.so"))) == 2


def test_dqn_native_0_turns_the_compiled_step_off(fresh_status: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DQN_NATIVE", "maybe")
    assert native.native_status().reason == (
        "DQN_NATIVE='maybe' is not 0 or 1: unset it to use the compiled step, 0 to turn it off"
    )
    native.native_status.cache_clear()
    monkeypatch.setenv("DQN_NATIVE", "0")
    assert native.native_status().library is None
    env = AleVecEnv(SETTINGS, 1)
    assert isinstance(env.games[0].emulator, VectorEmulator)
    env.close()
    assert not fresh_status.exists(), "nothing built"


def test_games_share_one_worker_per_core() -> None:
    env = AleVecEnv(SETTINGS, 5)
    try:
        assert all(isinstance(game.emulator, NativeEmulator) for game in env.games)
        cores = len(os.sched_getaffinity(0))
        assert env.pool is not None and len(env.pool.thread_ids) == min(5, cores)
        assert all(game.thread_ids == env.pool.thread_ids for game in env.games)
        env.reset()
        obs, _, _, _ = env.step(np.zeros(5, dtype=np.int64))
        assert obs.shape == (5, 4, 84, 84) and obs[:, -1].any()
    finally:
        env.close()


def test_train_says_when_games_cannot_run_in_the_compiled_step(
    dqn, fresh_status: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("--env", "Pong", "-n", "200", "--set", "learning_starts=1000", "--set", "buffer_size=500",
            "--eval-freq", "0", "--save-freq", "0", "--no-tensorboard", "--no-progress")  # fmt: skip
    compiled = dqn("train", *args)
    assert compiled.code == 0, compiled.err
    assert "compiled step" not in compiled.err
    monkeypatch.setenv("DQN_NATIVE", "0")
    native.native_status.cache_clear()
    fallback = dqn("train", *args)
    assert fallback.code == 0, fallback.err
    assert (
        "Atari on ALE's vector env (the same observations, slower), not dqn's compiled step: turned off by "
        "DQN_NATIVE=0" in fallback.err
    )


def _two_games(pool: native.Pool) -> tuple[native.NativeGame, native.NativeGame]:
    rom = native.rom_path("breakout")
    kwargs = {"seed": 7, "sticky": 0.25, "full_action_space": False, "frame_skip": 4, "size": 84, "max_frames": None}
    return native.NativeGame(pool, rom, **kwargs), native.NativeGame(pool, rom, **kwargs)  # type: ignore[arg-type]


def test_steps_on_torchs_openmp_team_play_what_the_pool_plays() -> None:
    import torch

    lib = native.library()
    assert lib is not None, native.native_status().reason
    pool = native.Pool(lib, torch.get_num_threads())
    on_pool, on_team = _two_games(pool)
    rng = np.random.default_rng(3)
    try:
        for game in (on_pool, on_team):
            game.reset(5)
        for t in range(500):
            action = int(rng.integers(len(on_pool.action_set)))
            on_pool.send(action)
            expected = on_pool.recv()
            assert native.step_on_team(pool, [on_team], np.array([action])), "torch's libgomp team was not found"
            frame, info = on_team.recv()
            assert np.array_equal(frame, expected[0]) and np.array_equal(info, expected[1]), f"step {t}"
            if info[1]:  # game over: both start again alike
                assert np.array_equal(on_pool.reset(3)[0], on_team.reset(3)[0])
    finally:
        on_pool.close(), on_team.close(), pool.close()


def test_a_team_smaller_than_the_pool_leaves_the_steps_to_the_pool() -> None:
    import torch

    lib = native.library()
    assert lib is not None, native.native_status().reason
    pool = native.Pool(lib, torch.get_num_threads() + 1)
    game, other = _two_games(pool)
    try:
        game.reset(5)
        assert not native.step_on_team(pool, [game], np.array([1]))
        game.send(1)  # the game was left as it was: not waiting for a step that never comes
        assert game.recv()[0].any()
    finally:
        game.close(), other.close(), pool.close()


def test_steps_received_at_once_move_each_games_frame_stack_as_one_by_one() -> None:
    lib = native.library()
    assert lib is not None, native.native_status().reason
    pool = native.Pool(lib, 2)
    singles, batched = _two_games(pool), _two_games(pool)
    rng = np.random.default_rng(4)
    expected = np.zeros((2, 4, 84, 84), dtype=np.uint8)
    stacks = rng.integers(0, 256, (3, 4, 84, 84), dtype=np.uint8)  # game 0 in row 2, game 1 in row 0, row 1 idle
    expected[:] = stacks[[2, 0]]
    idle_row = stacks[1].copy()
    try:
        for game in (*singles, *batched):
            game.reset(7)
        for t in range(400):
            actions = rng.integers(len(singles[0].action_set), size=2)
            infos = []
            for i, game in enumerate(singles):
                game.send(int(actions[i]))
                frame, info = game.recv()
                expected[i, :-1] = expected[i, 1:].copy()
                expected[i, -1] = frame
                infos.append(info)
            for i, game in enumerate(batched):
                game.send(int(actions[i]))
            rows = native.recv_stacked(list(batched), stacks, np.array([2, 0]))
            assert np.array_equal(rows, np.array(infos)), f"step {t}"
            assert np.array_equal(stacks[[2, 0]], expected), f"step {t}: frame stacks differ"
            for i in np.flatnonzero(rows[:, 1]):  # game over: both start again alike
                assert np.array_equal(singles[i].reset(3)[0], batched[i].reset(3)[0])
        assert np.array_equal(stacks[1], idle_row), "a row no game was received into is left as it was"
    finally:
        for game in (*singles, *batched):
            game.close()
        pool.close()


def test_receiving_at_once_refuses_stacks_it_cannot_fill_and_names_a_failed_step() -> None:
    lib = native.library()
    assert lib is not None, native.native_status().reason
    pool = native.Pool(lib, 1)
    game, other = _two_games(pool)
    try:
        game.reset(5), other.reset(5)
        wrong_stacks = (np.zeros((2, 4, 84, 84), dtype=np.float32), np.zeros((2, 4, 42, 42), dtype=np.uint8))
        for wrong in (*wrong_stacks, np.zeros((2, 0, 84, 84), dtype=np.uint8), np.zeros(84 * 84, dtype=np.uint8)):
            with pytest.raises(ValueError, match="frame stacks"):
                native.recv_stacked([game], wrong, np.array([0]))
        with pytest.raises(ValueError, match="rows"):
            native.recv_stacked([game], np.zeros((2, 4, 84, 84), dtype=np.uint8), np.array([2]))
        game.send(0)
        other.send(len(other.action_set))  # no such action: the step fails in the emulator
        with pytest.raises(native.NativeError):
            native.recv_stacked([game, other], np.zeros((2, 4, 84, 84), dtype=np.uint8), np.array([0, 1]))
    finally:
        game.close(), other.close(), pool.close()

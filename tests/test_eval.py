"""`dqn eval`, `dqn enjoy` and safe loading, on real SpaceInvaders agents trained by dqn and by rl_zoo3."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import DQN

from dqn_cli import envs, hyperparams, loading
from dqn_cli.ale_vec import AleVecEnv
from dqn_cli.record import decode

import agents

ENV_ID = "SpaceInvadersNoFrameskip-v4"
RUN = Path("logs/dqn") / f"{ENV_ID}_1"


def eval_json(dqn, *args: str) -> dict:
    result = dqn("eval", *args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_eval_prints_a_table_and_saves_the_result(dqn, here: Path) -> None:
    result = dqn("eval", "--env", "SpaceInvaders", "--episodes", "2")
    assert result.code == 0, result.err
    for column in ("mean ± std", "median", "min", "max", "episodes", "mean − std", "human-normalized"):
        assert column in result.out
    saved = json.loads((here / RUN / "eval.json").read_text())
    assert saved["protocol"]["episodes"] == 2 and saved["protocol"]["epsilon"] == 0.01


def test_eval_json_schema_protocol_and_arithmetic(dqn, here: Path) -> None:
    result = eval_json(dqn, "--env", "SpaceInvaders", "--episodes", "3", "--seed", "5")
    returns = np.array(result["returns"])
    assert len(returns) == result["episodes"] == 3 and len(result["lengths"]) == 3
    assert result["mean"] == pytest.approx(returns.mean()) and result["std"] == pytest.approx(returns.std())
    assert result["median"] == pytest.approx(np.median(returns)) and result["min"] == returns.min()
    assert result["mean_minus_std"] == pytest.approx(returns.mean() - returns.std())
    human = result["human_normalized"]
    assert (human["random"], human["human"]) == (148.0, 1668.7)  # SpaceInvaders in the Atari-57 table
    assert human["mean"] == pytest.approx((returns.mean() - 148.0) / (1668.7 - 148.0))
    assert "dqn_zoo" in human["source"]
    assert result["protocol"] == {
        "episodes": 3, "epsilon": 0.01, "seed": 5, "n_envs": 3, "full_games": True, "clipped_rewards": False,
        "noop_max": 30, "max_frames_per_episode": 108_000, "sticky_actions": 0.0, "frame_skip": 4,
    }  # fmt: skip
    assert result["loaded"].startswith("safe") and result["num_timesteps"] == 600
    # full games with the true score: SpaceInvaders scores in multiples of 5, games last hundreds of steps
    assert (returns % 5 == 0).all() and min(result["lengths"]) > 200


def test_same_seed_same_result(dqn, here: Path) -> None:
    first = eval_json(dqn, "--env", "SpaceInvaders", "--episodes", "2", "--seed", "3")
    second = eval_json(dqn, "--env", "SpaceInvaders", "--episodes", "2", "--seed", "3")
    assert first["returns"] == second["returns"] and first["lengths"] == second["lengths"]


def test_protocol_options(dqn, here: Path) -> None:
    result = eval_json(dqn, "--run", str(RUN), "--episodes", "2", "--deterministic", "--sticky", "--n-envs", "2")
    assert result["protocol"]["epsilon"] == 0.0 and result["protocol"]["sticky_actions"] == 0.25
    assert result["protocol"]["n_envs"] == 2 and result["episodes"] == 2


def test_vec_env_chooses_ale_or_sb3_and_both_play_the_protocol(
    dqn, here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    native = []
    real = envs.make_vec_env

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        venv = real(*args, **kwargs)
        native.append(isinstance(venv, AleVecEnv))
        return venv

    monkeypatch.setattr(envs, "make_vec_env", spy)
    sb3 = eval_json(dqn, "--run", str(RUN), "--episodes", "2", "--vec-env", "sb3", "--n-envs", "1")
    ale = eval_json(dqn, "--run", str(RUN), "--episodes", "2")
    assert native == [False, True]
    assert sb3["protocol"]["n_envs"] == 1 and ale["protocol"]["n_envs"] == 2, "default: one game per episode"
    for result in (sb3, ale):
        assert len(result["returns"]) == 2 and min(result["lengths"]) > 200 and result["returns"][0] % 5 == 0
    bad = dqn("eval", "--run", str(RUN), "--vec-env", "gym")
    assert bad.code == 2 and "gym" in bad.err


def test_agent_selection_errors(dqn, here: Path) -> None:
    missing_run = dqn("eval", "--env", "SpaceInvaders", "--exp-id", "7")
    assert (
        missing_run.code == 2
        and "no run SpaceInvadersNoFrameskip-v4_7" in missing_run.err
        and "runs: 1" in missing_run.err
    )
    no_agent = dqn("eval", "--env", "Pong")
    assert no_agent.code == 2 and "dqn train --env Pong" in no_agent.err
    bare = dqn("eval", "--model", "nowhere/model.zip")
    assert bare.code == 2 and "pass --env" in bare.err


def test_rl_zoo3_run_folder_evaluates(dqn, workdir: Path) -> None:
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", "dqn", "--env", ENV_ID, "-n", "300", "-f", "logs",
           "--seed", "0", "--eval-freq", "-1", "--hyperparams", "learning_starts:100", "buffer_size:300"]  # fmt: skip
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        (workdir / RUN / ENV_ID / "config.yml").read_text().startswith("!!python/object/apply:collections.OrderedDict")
    )
    result = eval_json(dqn, "--env", "SpaceInvaders", "--episodes", "1")
    assert result["origin"] == "rl_zoo3" and result["protocol"]["frame_skip"] == 4


def same_actions(model_zip: Path, other_zip: Path) -> None:
    """The safely loaded `other_zip` picks the same greedy actions as SB3's load of `model_zip`."""
    info = envs.resolve(ENV_ID)
    hp, _ = hyperparams.resolve(info, None, [])
    env = envs.make_vec_env(info, hp, seed=0, n_envs=1, evaluation=True)
    policy, _ = loading.load_policy(other_zip, env)
    reference = DQN.load(model_zip, buffer_size=1)
    obs = env.reset()
    for _ in range(50):
        action, _ = policy.predict(obs, deterministic=True)
        assert action == reference.predict(obs, deterministic=True)[0]
        obs, *_ = env.step(np.random.default_rng(0).integers(6, size=1))


@pytest.mark.parametrize("channel_last", [False, True])
def test_sb3_1x_zip_with_old_gym_pickles_loads_and_plays(dqn, here: Path, channel_last: bool) -> None:
    original = here / RUN / f"{ENV_ID}.zip"
    old = agents.sb3_v1_style(original, here / "old_agent.zip", channel_last=channel_last)
    with pytest.raises(Exception, match="gym"):  # SB3's own loader needs the old `gym` package to unpickle it
        DQN.load(old, buffer_size=1)
    result = eval_json(dqn, "--model", str(old), "--env", "SpaceInvaders", "--episodes", "1")
    assert result["episodes"] == 1 and result["origin"] == "file"
    assert (here / "old_agent.eval.json").is_file()
    same_actions(original, old)


def test_known_key_pickle_payload_never_runs(dqn, here: Path) -> None:
    marker = here / "pwned-known"
    original = here / RUN / f"{ENV_ID}.zip"
    data = agents.read_data(original)
    data["observation_space"][":serialized:"] = agents.payload_b64(marker)
    data["policy_kwargs"][":serialized:"] = agents.payload_b64(marker)
    hostile = agents.rewrite(original, here / "hostile.zip", data=data)
    result = eval_json(dqn, "--model", str(hostile), "--env", "SpaceInvaders", "--episodes", "1")
    assert result["episodes"] == 1
    assert not marker.exists(), "a pickle in the model file ran"


def test_extra_key_pickle_payload_is_refused(dqn, here: Path) -> None:
    marker = here / "pwned-extra"
    original = here / RUN / f"{ENV_ID}.zip"
    data = agents.read_data(original)
    data["custom_callback"] = {":type:": "<class 'function'>", ":serialized:": agents.payload_b64(marker)}
    hostile = agents.rewrite(original, here / "hostile.zip", data=data)
    result = dqn("eval", "--model", str(hostile), "--env", "SpaceInvaders", "--episodes", "1")
    assert result.code == 2
    assert "custom_callback" in result.err and "--trust" in result.err and str(hostile) in result.err
    assert not marker.exists()


@pytest.mark.parametrize("member", ["policy.pth", "pytorch_variables.pth"])
def test_pickle_payload_in_weights_is_refused(dqn, here: Path, member: str) -> None:
    marker = here / f"pwned-{member}"
    original = here / RUN / f"{ENV_ID}.zip"
    hostile = agents.rewrite(original, here / "hostile.zip", members={member: agents.torch_payload(marker)})
    result = dqn("eval", "--model", str(hostile), "--env", "SpaceInvaders", "--episodes", "1")
    assert result.code == 2
    assert member in result.err and "refused" in result.err and "--trust" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not marker.exists()


def test_truncated_corrupt_non_zip_and_oversized_files(dqn, here: Path) -> None:
    original = (here / RUN / f"{ENV_ID}.zip").read_bytes()
    cases = {
        "truncated.zip": original[: len(original) // 2],
        "text.zip": b"this is not a model\n",
        "empty.zip": b"",
    }
    for name, content in cases.items():
        (here / name).write_bytes(content)
    with zipfile.ZipFile(here / "nodata.zip", "w") as archive:
        archive.writestr("hello.txt", "hi")
    with open(here / "huge.zip", "wb") as handle:
        handle.truncate(loading.MAX_FILE_BYTES + 1)  # sparse: no disk used
    for name in [*cases, "nodata.zip", "huge.zip"]:
        result = dqn("eval", "--model", str(here / name), "--env", "SpaceInvaders", "--episodes", "1")
        assert result.code == 2, name
        assert str(here / name) in result.err and "Traceback" not in result.err, name
        assert len(result.err.strip().splitlines()) == 1, result.err


def test_trust_uses_sb3_loader(dqn, here: Path) -> None:
    result = eval_json(dqn, "--env", "SpaceInvaders", "--episodes", "1", "--trust")
    assert result["loaded"].startswith("trusted")


def test_enjoy_records_a_decodable_video_and_gif(dqn, here: Path) -> None:
    result = dqn("enjoy", "--env", "SpaceInvaders", "--record", "--video-length", "120", "--gif")
    assert result.code == 0, result.err
    video, gif = (Path(line) for line in result.out.split())
    assert video == RUN / "videos" / f"{ENV_ID}-seed0.mp4" and video.stat().st_size > 0
    assert decode(video) == (120, (160, 210))  # colour frames at the native 160×210, exactly as many as asked
    from PIL import Image

    with Image.open(gif) as image:
        assert image.size == (80, 105) and image.n_frames > 1


def test_enjoy_headless_records_whole_episodes(dqn, here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = dqn("enjoy", "--env", "SpaceInvaders", "--video-dir", "clips", "--seed", "1")
    assert result.code == 0, result.err
    assert "no display found" in result.err
    line = next(line for line in result.err.splitlines() if line.startswith("episode 1: score"))
    length = int(line.split(" in ")[1].split()[0])
    frames, size = decode(Path(result.out.strip()))
    assert size == (160, 210)
    # every emulator frame: 4 per agent step, plus the reset, no-op and FIRE frames of at most two resets
    assert 4 * length < frames <= 4 * length + 2 * (1 + 30 + 2)
    assert Path(result.out.strip()).parent == Path("clips")


def test_enjoy_opens_a_window_when_there_is_a_display(here: Path) -> None:
    """With a display (a virtual X server here), enjoy renders the game in a window and writes no video."""
    import os

    if shutil.which("xvfb-run") is None:
        if os.environ.get("DQN_REQUIRE_XVFB"):
            pytest.fail("DQN_REQUIRE_XVFB is set but xvfb-run is missing")
        pytest.skip("no xvfb-run: `apt-get install xvfb` to run this test")
    env = {**os.environ, "SDL_AUDIODRIVER": "dummy"}
    cmd = ["xvfb-run", "-a", sys.executable, "-m", "dqn_cli", "enjoy", "--env", "SpaceInvaders", "--episodes", "1"]
    done = subprocess.run(cmd, cwd=here, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "episode 1: score" in done.stderr and "no display found" not in done.stderr
    assert not (here / RUN / "videos").exists()


def test_enjoy_records_classic_control_envs_too(dqn, workdir: Path) -> None:
    trained = dqn("train", "--env", "CartPole-v1", "-n", "300", "--eval-freq", "0", "--seed", "0", "--no-progress",
                  "--no-tensorboard")  # fmt: skip
    assert trained.code == 0, trained.err
    result = dqn("enjoy", "--env", "CartPole-v1", "--record", "--video-length", "40", "--episodes", "20")
    assert result.code == 0, result.err
    assert decode(Path(result.out.strip())) == (40, (600, 400))

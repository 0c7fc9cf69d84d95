"""`dqn train` end to end on real ALE games and SB3: run folders, interruption, exact resume, safe checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import DQN

from dqn_cli import callbacks, checkpoint, safe_yaml

from conftest import TINY_ATARI

RUN = Path("logs/dqn/SpaceInvadersNoFrameskip-v4_1")
CARTPOLE = Path("logs/dqn/CartPole-v1_1")


@pytest.fixture(scope="module")
def atari_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short SpaceInvaders run, shared by the layout tests (it is the slowest part of this module)."""
    root = tmp_path_factory.mktemp("atari")
    cmd = [sys.executable, "-m", "dqn_cli", "train", "--env", "SpaceInvaders", *TINY_ATARI]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return root


def test_atari_run_folder_has_the_rl_zoo3_layout(atari_run: Path) -> None:
    run = atari_run / RUN
    env_id = "SpaceInvadersNoFrameskip-v4"
    for name in (
        f"{env_id}.zip",
        "best_model.zip",
        "evaluations.npz",
        "0.monitor.csv",
        "resolved_config.yml",
        "command.txt",
    ):
        assert (run / name).is_file(), name
    for name in ("config.yml", "args.yml", "env_kwargs.yml"):
        assert (run / env_id / name).is_file(), name
    config = safe_yaml.load_file(run / env_id / "config.yml")
    assert config["frame_stack"] == 4 and config["learning_starts"] == 500 and config["buffer_size"] == 1000
    assert config["env_wrapper"][0]["stable_baselines3.common.atari_wrappers.AtariWrapper"]["frame_skip"] == 4
    assert safe_yaml.load_file(run / env_id / "args.yml")["seed"] == 1
    assert safe_yaml.load_file(run / "resolved_config.yml")["run"]["vec_env"] == "ale", "ALE's native path by default"
    assert list((run / "tensorboard").glob("DQN_1/events.out.tfevents.*"))


def test_atari_model_loads_with_plain_sb3(atari_run: Path) -> None:
    model = DQN.load(atari_run / RUN / "SpaceInvadersNoFrameskip-v4.zip", buffer_size=1)
    assert model.num_timesteps == 2000
    assert model.observation_space.shape == (4, 84, 84)
    assert model.action_space.n == 6
    assert model.policy.optimizer.defaults["fused"] is True, "Adam's fused kernel on CPU: same update, faster"
    best = DQN.load(atari_run / RUN / "best_model.zip", buffer_size=1)
    assert best.num_timesteps in (1000, 2000)


def test_atari_evaluations_play_full_games_unclipped(atari_run: Path) -> None:
    with np.load(atari_run / RUN / "evaluations.npz") as data:
        assert list(data["timesteps"]) == [1000, 2000]
        assert data["results"].shape == (2, 1)
        # A full SpaceInvaders game scores in 5s and 10s with 3 lives, far more than the clipped +1 per kill
        # a life-loss-terminated, clipped episode could give, and lasts hundreds of agent steps.
        assert (data["results"] >= 30).all() and (data["results"] % 5 == 0).all()
        assert (data["ep_lengths"] > 200).all()


def test_the_last_evaluation_scores_what_dqn_eval_scores(atari_run: Path, dqn) -> None:
    # Its seeded reset was prepared during the evaluation before it, which was prepared at the start of training
    # (AleVecEnv.prepare_reset): the same game as `dqn eval` plays with the final model and the run's seed.
    done = dqn("eval", "--run", str(atari_run / RUN), "--episodes", "1", "--seed", "1", "--json")
    assert done.code == 0, done.err
    result = json.loads(done.out)
    with np.load(atari_run / RUN / "evaluations.npz") as data:
        assert result["num_timesteps"] == data["timesteps"][-1] == 2000
        assert result["returns"] == list(data["results"][-1]) and result["lengths"] == list(data["ep_lengths"][-1])


def test_rl_zoo3_enjoy_plays_our_run(atari_run: Path) -> None:
    cmd = [sys.executable, "-m", "rl_zoo3.enjoy", "--algo", "dqn", "--env", "SpaceInvadersNoFrameskip-v4", "-f", "logs/",
           "--exp-id", "1", "--no-render", "-n", "300"]  # fmt: skip
    done = subprocess.run(cmd, cwd=atari_run, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Stacking 4 frames" in done.stdout


def test_second_run_gets_the_next_number(dqn, workdir: Path) -> None:
    args = ("--env", "CartPole-v1", "-n", "300", "--eval-freq", "0", "--seed", "0", "--no-progress", "--no-tensorboard")
    assert dqn("train", *args).code == 0
    assert dqn("train", *args).code == 0
    assert (workdir / "logs/dqn/CartPole-v1_2/CartPole-v1.zip").is_file()


def stop_with(monkeypatch: pytest.MonkeyPatch, signum: int, at_step: int) -> None:
    """Deliver a real signal to this process once training passes `at_step` (a user pressing Ctrl-C)."""
    original = callbacks.ProgressCallback._on_step
    sent = []

    def on_step(self: callbacks.ProgressCallback) -> bool:
        if self.num_timesteps >= at_step and not sent:
            sent.append(True)
            os.kill(os.getpid(), signum)
        return original(self)

    monkeypatch.setattr(callbacks.ProgressCallback, "_on_step", on_step)


def tensorboard_scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dirs = list((run / "tensorboard").iterdir())
    assert [d.name for d in dirs] == ["DQN_1"], "a resumed run continues the same TensorBoard curve"
    values: list[tuple[int, float]] = []
    for events in sorted(dirs[0].glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        values += [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []
    return sorted(values)


CARTPOLE_ARGS = (
    "--env",
    "CartPole-v1",
    "-n",
    "6000",
    "--seed",
    "5",
    "--eval-freq",
    "0",
    "--save-freq",
    "0",
    "--no-progress",
)


def test_ctrl_c_saves_and_resume_continues_exactly(dqn, workdir: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        stop_with(patch, signal.SIGINT, at_step=2100)
        first = dqn("train", *CARTPOLE_ARGS)
    assert first.code == 130, first.err
    assert "resume with: dqn train --resume logs/dqn/CartPole-v1_1" in first.err

    saved = checkpoint.complete(CARTPOLE)
    assert len(saved) == 1
    state = json.loads((saved[0] / "state.json").read_text())
    stopped_at = state["num_timesteps"]
    assert 2100 <= stopped_at < 2100 + 256 and state["replay_buffer"] is True  # stops at the end of the rollout
    interrupted = DQN.load(saved[0] / "model.zip", buffer_size=1)
    assert interrupted.num_timesteps == stopped_at and interrupted._n_calls == stopped_at
    assert DQN.load(CARTPOLE / "CartPole-v1.zip").num_timesteps == stopped_at
    interrupted.load_replay_buffer(saved[0] / "replay_buffer.pkl")
    assert interrupted.replay_buffer.pos == stopped_at, "every collected transition is in the saved buffer"

    second = dqn("train", "--resume", str(CARTPOLE), "--no-progress")
    assert second.code == 0, second.err
    assert f"resuming {CARTPOLE} at step {stopped_at:,} of 6,000" in second.err
    final = DQN.load(CARTPOLE / "CartPole-v1.zip")
    assert final.num_timesteps == 6144  # the same end as an uninterrupted run: 24 rollouts of train_freq=256
    assert final._n_updates == (6144 - 1000) // 256 * 128 + 128  # no gradient step lost or repeated

    # exploration continues from the stop, on the schedule of the original total (rl_zoo3 restarts it at 1.0)
    eps = tensorboard_scalars(CARTPOLE, "rollout/exploration_rate")
    assert any(step < stopped_at for step, _ in eps) and any(step > stopped_at for step, _ in eps)
    for step, value in eps:
        assert value == pytest.approx(1.0 + min(step / (0.16 * 6000), 1.0) * (0.04 - 1.0), abs=1e-6)
    assert (CARTPOLE / "command.txt").read_text().count("\n") == 2
    times = [float(line.split(",")[2]) for line in (CARTPOLE / "0.monitor.csv").read_text().splitlines()[2:]]
    assert times == sorted(times) and len(times) > 20, "episodes after the resume continue the run's clock"
    assert json.loads((CARTPOLE / "train_state.json").read_text())["status"] == "finished"
    finished = dqn("train", "--resume", str(CARTPOLE))
    assert finished.code == 2 and "already finished" in finished.err


def test_atari_on_the_native_path_resumes_exactly(dqn, workdir: Path) -> None:
    args = ("--env", "SpaceInvaders", "-n", "2400", "--set", "learning_starts=400", "--set", "buffer_size=2000",
            "--set", "n_envs=2", "--eval-freq", "0", "--save-freq", "0", "--seed", "4", "--no-progress")  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        stop_with(patch, signal.SIGINT, at_step=900)
        assert dqn("train", *args).code == 130
    stopped_at = json.loads((checkpoint.complete(RUN)[-1] / "state.json").read_text())["num_timesteps"]
    assert 900 <= stopped_at < 1000
    rows_before = [len((RUN / f"{i}.monitor.csv").read_text().splitlines()) for i in range(2)]

    second = dqn("train", "--resume", str(RUN), "--no-progress")
    assert second.code == 0, second.err
    final = DQN.load(RUN / "SpaceInvadersNoFrameskip-v4.zip", buffer_size=1)
    assert final.num_timesteps == 2400 and final.n_envs == 2
    assert final._n_updates == (2400 - 400) // 4, "one gradient step per 4 env steps across the 2 games, none lost"
    files = [(RUN / f"{i}.monitor.csv").read_text().splitlines() for i in range(2)]
    assert sum(map(len, files)) > sum(rows_before), "games finished after the resume are appended"
    for lines in files:
        assert lines[0].startswith('#{"t_start"') and lines[1] == "r,l,t", "one header, written at the start"
        times = [float(line.split(",")[2]) for line in lines[2:]]
        assert times == sorted(times), "episodes after the resume continue the run's clock"
        assert all(int(line.split(",")[1]) > 400 for line in lines[2:]), "lengths in emulator frames, as Monitor"


def test_vec_env_sb3_selects_sb3s_wrappers(dqn) -> None:
    shown = dqn("train", "--env", "Pong", "--vec-env", "sb3", "--dry-run")
    assert shown.code == 0 and "vec_env: sb3" in shown.out
    bad = dqn("train", "--env", "Pong", "--vec-env", "gym", "--dry-run")
    assert bad.code == 2 and "gym" in bad.err


def test_sigterm_exits_143_with_the_model_saved(workdir: Path) -> None:
    cmd = [sys.executable, "-m", "dqn_cli", "train", "--env", "CartPole-v1", "-n", "1000000", "--eval-freq", "0",
           "--save-freq", "0", "--seed", "2", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    monitor = workdir / CARTPOLE / "0.monitor.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not monitor.exists() or monitor.read_text().count("\n") < 5):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    model = DQN.load(workdir / CARTPOLE / "CartPole-v1.zip")
    assert 0 < model.num_timesteps < 1_000_000
    assert checkpoint.complete(workdir / CARTPOLE)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corrupt_or_missing_checkpoint_is_a_clear_error_that_overwrites_nothing(dqn, workdir: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        stop_with(patch, signal.SIGINT, at_step=1200)
        assert dqn("train", *CARTPOLE_ARGS).code == 130
    latest = checkpoint.complete(CARTPOLE)[-1]
    model_zip = latest / "model.zip"
    model_zip.write_bytes(model_zip.read_bytes()[:1000])
    before = {p: digest(p) for p in CARTPOLE.rglob("*") if p.is_file()}

    result = dqn("train", "--resume", str(CARTPOLE))
    assert result.code == 2
    assert str(model_zip) in result.err and "corrupt" in result.err
    assert {p: digest(p) for p in CARTPOLE.rglob("*") if p.is_file()} == before

    for path in (latest / "model.zip", latest / "replay_buffer.pkl", latest / "state.json"):
        path.unlink()
    missing = dqn("train", "--resume", str(CARTPOLE))
    assert missing.code == 2 and "no complete checkpoint" in missing.err
    nowhere = dqn("train", "--resume", "logs/dqn/nothing_here")
    assert nowhere.code == 2 and "no such folder" in nowhere.err


def test_interrupted_checkpoint_write_keeps_the_previous_one(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dqn_cli import agent, envs, hyperparams

    info = envs.resolve("CartPole-v1")
    hp, _ = hyperparams.resolve(info, None, ["learning_starts=10", "buffer_size=500"])
    model = agent.build(hp, envs.make_vec_env(info, hp, seed=0, n_envs=1), seed=0, device="cpu", tensorboard_log=None)
    model.learn(300)
    good, good_step = checkpoint.save(model, workdir, replay_buffer=True, keep=2), model.num_timesteps
    model.learn(300, reset_num_timesteps=False)

    def disk_full(path: Path) -> None:
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model, "save_replay_buffer", disk_full)
    with pytest.raises(OSError):
        checkpoint.save(model, workdir, replay_buffer=True, keep=2)
    assert checkpoint.complete(workdir) == [good]
    assert not list((workdir / "checkpoints").glob(".tmp-*")), "no half-written checkpoint is left behind"
    assert DQN.load(good / "model.zip").num_timesteps == good_step

    final, final_step = workdir / "CartPole-v1.zip", model.num_timesteps
    checkpoint.atomic_save_model(model, final)
    monkeypatch.setattr(model, "save", disk_full)
    with pytest.raises(OSError):
        checkpoint.atomic_save_model(model, final)
    assert DQN.load(final).num_timesteps == final_step > good_step, "the previous good model still loads"


def test_resume_after_a_hard_kill_uses_the_last_periodic_checkpoint(dqn, workdir: Path) -> None:
    cmd = [sys.executable, "-m", "dqn_cli", "train", "--env", "CartPole-v1", "-n", "1000000", "--eval-freq", "512",
           "--eval-episodes", "2", "--save-freq", "1024", "--seed", "4", "--no-progress", "--no-tensorboard"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(checkpoint.complete(workdir / CARTPOLE)) < 2:
        time.sleep(0.1)
    proc.kill()  # SIGKILL: no handler runs, like an out-of-memory kill or a power cut
    proc.wait(timeout=60)
    latest = checkpoint.complete(CARTPOLE)[-1]
    step = json.loads((latest / "state.json").read_text())["num_timesteps"]
    (CARTPOLE / "resolved_config.yml").write_text(
        (CARTPOLE / "resolved_config.yml").read_text().replace("n_timesteps: 1000000", f"n_timesteps: {step + 512}")
    )

    result = dqn("train", "--resume", str(CARTPOLE), "--no-progress")
    assert result.code == 0, result.err
    assert "has no replay buffer" in result.err and f"at step {step:,}" in result.err
    assert DQN.load(CARTPOLE / "CartPole-v1.zip").num_timesteps == step + 512
    with np.load(CARTPOLE / "evaluations.npz") as data:
        timesteps = list(data["timesteps"])
    assert timesteps == sorted(set(timesteps)), "evaluations made after the checkpoint are replaced, not duplicated"
    assert timesteps[-1] == step + 512


def test_several_envs_train_together(dqn, workdir: Path) -> None:
    result = dqn("train", "--env", "CartPole-v1", "-n", "1024", "--set", "n_envs=2", "--set", "learning_starts=100",
                 "--eval-freq", "0", "--seed", "0", "--no-progress", "--no-tensorboard")  # fmt: skip
    assert result.code == 0, result.err
    assert (CARTPOLE / "0.monitor.csv").is_file() and (CARTPOLE / "1.monitor.csv").is_file()
    assert DQN.load(CARTPOLE / "CartPole-v1.zip").n_envs == 2


def test_n_envs_keeps_the_replay_ratio(dqn, workdir: Path) -> None:
    updates = {}
    for n_envs in (1, 4):
        result = dqn("train", "--env", "CartPole-v1", "-n", "2048", "--set", f"n_envs={n_envs}", "--set", "learning_starts=0",
                     "--eval-freq", "0", "--seed", "0", "--no-progress", "--no-tensorboard", "--log-dir", f"l{n_envs}")  # fmt: skip
        assert result.code == 0, result.err
        model = DQN.load(workdir / f"l{n_envs}/dqn/CartPole-v1_1/CartPole-v1.zip")
        assert model.num_timesteps == 2048
        updates[n_envs] = model._n_updates
    assert updates[1] == updates[4] == 2048 // 256 * 128, "one phase of 128 gradient steps per 256 env steps"
    bad = dqn("config", "--env", "CartPole-v1", "--set", "n_envs=3")
    assert bad.code == 2 and "n_envs=3 with train_freq=256" in bad.err


def test_exploration_is_drawn_per_env() -> None:
    from dqn_cli import agent, envs, hyperparams

    info = envs.resolve("CartPole-v1")
    hp, _ = hyperparams.resolve(info, None, ["n_envs=64"])
    venv = envs.make_vec_env(info, hp, seed=0, n_envs=64)
    model = agent.build(hp, venv, seed=0, device="cpu", tensorboard_log=None)
    model.exploration_rate = 0.5
    obs = venv.reset()
    greedy, _ = model.predict(obs, deterministic=True)
    for _ in range(20):
        actions, _ = model.predict(obs)
        changed = float(np.mean(actions != greedy))
        # each env explores with probability 0.5 and then picks the other of 2 actions half the time: ~25% changed;
        # SB3's single coin for the whole vector would give 0% or ~50%
        assert 0.08 < changed < 0.45, changed

"""The command line contract: help, env names, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dqn_cli import envs


def test_help_lists_commands(dqn) -> None:
    result = dqn("--help")
    assert result.code == 0
    for command in ("train", "config", "games"):
        assert command in result.out


def test_train_help_lists_options(dqn) -> None:
    result = dqn("train", "--help")
    assert result.code == 0
    for option in (
        "--env",
        "--set",
        "--n-timesteps",
        "--seed",
        "--device",
        "--log-dir",
        "--resume",
        "--dry-run",
        "--no-progress",
    ):
        assert option in result.out


def test_module_entry_point_and_help_stays_light() -> None:
    code = "import sys, runpy; sys.argv=['dqn','--help']\ntry: runpy.run_module('dqn_cli', run_name='__main__')\nexcept SystemExit: pass\nprint(sorted(m for m in ('torch', 'stable_baselines3', 'gymnasium') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Usage" in out and out.strip().endswith("[]"), "dqn --help must not import torch, SB3 or gymnasium"


def test_unknown_option_is_usage_error(dqn) -> None:
    result = dqn("train", "--env", "Pong", "--no-such-option")
    assert result.code == 2 and "No such option" in result.err


def test_missing_env(dqn) -> None:
    result = dqn("train")
    assert result.code == 2 and "missing --env" in result.err


@pytest.mark.parametrize(
    ("name", "env_id"),
    [
        ("SpaceInvaders", "SpaceInvadersNoFrameskip-v4"),
        ("spaceinvaders", "SpaceInvadersNoFrameskip-v4"),
        ("SpaceInvadersNoFrameskip-v4", "SpaceInvadersNoFrameskip-v4"),
        ("ALE/SpaceInvaders-v5", "ALE/SpaceInvaders-v5"),
        ("ale/spaceinvaders-v5", "ALE/SpaceInvaders-v5"),
        ("cartpole-v1", "CartPole-v1"),
    ],
)
def test_env_names(name: str, env_id: str) -> None:
    assert envs.resolve(name).env_id == env_id


def test_typo_gets_did_you_mean(dqn) -> None:
    result = dqn("train", "--env", "SpaceInvader")
    assert result.code == 2 and "did you mean SpaceInvaders" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_continuous_action_space_is_refused(dqn, workdir) -> None:
    (workdir / "p.yml").write_text("n_timesteps: 1000\n")
    result = dqn("train", "--env", "Pendulum-v1", "-c", "p.yml")
    assert result.code == 2 and "Box action space" in result.err and "discrete" in result.err
    assert not (workdir / "logs").exists()


def test_non_atari_env_without_file(dqn) -> None:
    result = dqn("train", "--env", "Acrobot-v1")
    assert result.code == 2 and "no hyperparameters file for Acrobot-v1" in result.err and "-c" in result.err


def test_games_lists_shipped_files(dqn) -> None:
    result = dqn("games")
    assert result.code == 0
    assert (
        "SpaceInvadersNoFrameskip-v4" in result.out
        and "CartPole-v1" in result.out
        and "PongNoFrameskip-v4" in result.out
    )


def test_debug_shows_traceback(dqn) -> None:
    quiet = dqn("train", "--env", "Nope")
    loud = dqn("train", "--env", "Nope", "--debug")
    assert "Traceback" not in quiet.err and "Traceback" in loud.err and loud.code == 2


@pytest.mark.parametrize("command", ["train", "tune"])
def test_bad_device_is_a_usage_error(dqn, workdir, command: str) -> None:
    result = dqn(command, "--env", "CartPole-v1", "--device", "gpu")
    assert result.code == 2 and "--device 'gpu': expected auto, cpu, cuda" in result.err
    assert not (workdir / "logs").exists()


def test_resume_refuses_new_configuration(dqn) -> None:
    result = dqn("train", "--resume", "logs/dqn/CartPole-v1_1", "--env", "Pong", "--set", "gamma=0.9")
    assert result.code == 2 and "drop --env, --set" in result.err


@pytest.mark.parametrize(("given", "expected"), [(None, "30000"), ("7", "7")])
def test_cli_sets_a_short_openmp_spin_before_torch_loads_unless_the_user_did(given: str | None, expected: str) -> None:
    code = "import os, sys, runpy; sys.argv=['dqn','--help']\ntry: runpy.run_module('dqn_cli', run_name='__main__')\nexcept SystemExit: pass\nprint(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | ({"GOMP_SPINCOUNT": given} if given else {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip().endswith(f"{expected} False"), "set before torch (and libgomp) is loaded"

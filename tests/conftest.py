"""Shared helpers: run the real `dqn` entry point in-process, in a temporary working directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dqn_cli.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in its own folder, so `logs/` never leaks between tests."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def dqn(workdir: Path, capsys: pytest.CaptureFixture[str]):
    """Call `dqn ARGS...` in-process and return its exit code, stdout and stderr."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        captured = capsys.readouterr()
        return Result(int(exit_info.value.code or 0), captured.out, captured.err)

    return run


# A SpaceInvaders budget small enough for a test: a few thousand steps, a tiny buffer, one short evaluation.
TINY_ATARI = (
    "--n-timesteps", "2000", "--set", "learning_starts=500", "--set", "buffer_size=1000",
    "--eval-freq", "1000", "--eval-episodes", "1", "--save-freq", "1000", "--seed", "1", "--no-progress",
)  # fmt: skip


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding logs/ with one freshly trained tiny SpaceInvaders agent (trained once per session)."""
    root = tmp_path_factory.mktemp("trained")
    cmd = [sys.executable, "-m", "dqn_cli", "train", "--env", "SpaceInvaders", "-n", "600", "--set", "learning_starts=100",
           "--set", "buffer_size=600", "--eval-freq", "300", "--eval-episodes", "1", "--save-freq", "0", "--seed", "0",
           "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
def here(trained: Path, workdir: Path) -> Path:
    """The working directory, holding a copy of the trained agent's logs/."""
    shutil.copytree(trained / "logs", workdir / "logs")
    return workdir

"""Checkpoints that can be trusted: each one a folder written under a temporary name, then renamed into place.

A crash or a full disk while writing leaves the previous checkpoints untouched; a checkpoint folder without its
`state.json` (written last) is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dqn_cli.errors import DqnError

if TYPE_CHECKING:
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

CHECKPOINTS = "checkpoints"
MODEL = "model.zip"
REPLAY_BUFFER = "replay_buffer.pkl"
STATE = "state.json"


def atomic_save_model(model: OffPolicyAlgorithm, path: Path) -> None:
    """`model.save(path)` through a temporary file in the same folder, then an atomic rename."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.zip")
    try:
        model.save(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save(model: OffPolicyAlgorithm, run_dir: Path, *, replay_buffer: bool, keep: int) -> Path:
    """Write a checkpoint of `model` (optionally with its replay buffer), then keep only the newest `keep`."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{model.num_timesteps:012d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.save(tmp / MODEL)
        if replay_buffer:
            model.save_replay_buffer(tmp / REPLAY_BUFFER)
        state = {
            "num_timesteps": model.num_timesteps,
            "total_timesteps": model._total_timesteps,
            "replay_buffer": replay_buffer,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / STATE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        for path in tmp.iterdir():
            _fsync(path)
        if final.exists():  # same step saved again (e.g. a stop right after a periodic checkpoint)
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(root, keep)
    return final


def complete(run_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if (p / STATE).is_file() and (p / MODEL).is_file()]
    return sorted(found, key=lambda p: p.name)


def _prune(root: Path, keep: int) -> None:
    for old in complete(root.parent)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)


def read_state(checkpoint: Path) -> dict[str, Any]:
    try:
        state = json.loads((checkpoint / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DqnError(f"{checkpoint / STATE}: unreadable checkpoint state ({exc}); resume from another run") from None
    if not isinstance(state, dict) or not isinstance(state.get("num_timesteps"), int):
        raise DqnError(f"{checkpoint / STATE}: not a dqn checkpoint state; resume from another run")
    return state

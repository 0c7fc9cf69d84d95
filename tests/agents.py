"""Model zips crafted by the tests: SB3 1.x-style files and hostile ones."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path
from typing import Any


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def payload_b64(marker: Path) -> str:
    return base64.b64encode(pickle.dumps(Payload(marker))).decode()


def rewrite(
    source: Path, target: Path, *, data: dict[str, Any] | None = None, members: dict[str, bytes] | None = None
) -> Path:
    """Copy a model zip, replacing its `data` JSON and/or other members."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for name in zin.namelist():
            if name == "data" and data is not None:
                zout.writestr(name, json.dumps(data))
            elif members and name in members:
                zout.writestr(name, members[name])
            else:
                zout.writestr(name, zin.read(name))
    return target


def read_data(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("data"))


def _old_gym_pickle(module: str, name: str, state: dict[str, Any]) -> str:
    """A pickle of an object of `module.name` (a class of the old `gym` package, which is not installed)."""
    fake = types.ModuleType(module)
    cls = type(name, (), {"__module__": module})
    fake.__dict__[name] = cls
    parents = module.split(".")
    for i in range(1, len(parents) + 1):
        sys.modules.setdefault(".".join(parents[:i]), types.ModuleType(".".join(parents[:i])))
    sys.modules[module] = fake
    try:
        obj = cls()
        obj.__dict__.update(state)
        return base64.b64encode(pickle.dumps(obj)).decode()
    finally:
        for i in range(1, len(parents) + 1):
            sys.modules.pop(".".join(parents[:i]), None)


def sb3_v1_style(source: Path, target: Path, channel_last: bool) -> Path:
    """What the 2021 rl-trained-agents look like: old gym spaces and function schedules pickled in `data`."""
    data = read_data(source)
    shape = [84, 84, 4] if channel_last else [4, 84, 84]
    data["observation_space"] = {
        ":type:": "<class 'gym.spaces.box.Box'>",
        ":serialized:": _old_gym_pickle("gym.spaces.box", "Box", {"shape": tuple(shape), "dtype": "uint8"}),
        "dtype": "uint8", "shape": shape, "low": "[[[0 0 0 ...]]]", "high": "[[[255 255 255 ...]]]",
    }  # fmt: skip
    data["action_space"] = {
        ":type:": "<class 'gym.spaces.discrete.Discrete'>",
        ":serialized:": _old_gym_pickle("gym.spaces.discrete", "Discrete", {"n": 6}),
        "n": 6, "shape": [], "dtype": "int64",
    }  # fmt: skip
    for key in ("lr_schedule", "exploration_schedule"):
        data[key] = {
            ":type:": "<class 'function'>",
            ":serialized:": _old_gym_pickle("stable_baselines3.common.utils_v1", "func", {}),
        }
    for key in ("_stats_window_size", "_n_calls", "n_steps"):
        data.pop(key, None)
    members = {"_stable_baselines3_version": b"1.1.0a11"}
    return rewrite(source, target, data=data, members=members)


def torch_payload(marker: Path) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"weights": Payload(marker)}, buffer)
    return buffer.getvalue()

"""Loading any DQN zip safely: nothing inside the file is executed unless the user trusts it.

An SB3 zip holds `data` (JSON in which some entries are cloudpickled: `:serialized:`), `policy.pth` (weights) and a
few other files. `stable_baselines3.DQN.load` unpickles those entries, which runs whatever code they contain. Here
they are never unpickled: the spaces come from the environment built from trusted config, the policy's settings from
the readable copy SB3 writes beside each pickle, the network shape is checked against the weights, and the weights
load with `torch.load(weights_only=True)`. Only `--trust` falls back to SB3's full load.

This reads zips from dqn, rl_zoo3 and SB3 2.x, and from SB3 1.x (the 2021 rl-trained-agents, whose pickles refer
to the old `gym` package and to lambda schedules).
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dqn_cli.errors import DqnError

if TYPE_CHECKING:
    import gymnasium as gym
    from stable_baselines3.common.policies import BasePolicy

MAX_FILE_BYTES = 1 << 30  # a Nature-CNN DQN zip is ~20 MB with its optimizer state
MAX_DATA_BYTES = 64 << 20
# Entries SB3 pickles that a played agent does not need (or that are rebuilt): they are never unpickled.
KNOWN_SERIALIZED = {
    "policy_class", "policy_kwargs", "observation_space", "action_space", "lr_schedule", "learning_rate",
    "exploration_schedule", "_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer",
    "ep_success_buffer", "replay_buffer_class", "replay_buffer_kwargs", "train_freq", "action_noise",
    "_episode_storage", "_vec_normalize_env", "clip_range", "clip_range_vf", "target_kl", "device",
}  # fmt: skip
ACTIVATIONS = {"ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU"}
FEATURE_EXTRACTORS = {"NatureCNN", "FlattenExtractor"}
_CLASS_REPR = re.compile(r"<class '([\w.]+)'>")


class UnsafeModelError(DqnError):
    """The file holds something dqn will not load without `--trust`."""


@dataclass(frozen=True)
class ModelInfo:
    """What a zip says about itself, read without executing anything."""

    path: Path
    policy: str  # CnnPolicy or MlpPolicy
    policy_kwargs: dict[str, Any]
    n_actions: int | None
    observation_shape: tuple[int, ...] | None
    sb3_version: str
    num_timesteps: int | None


def _fail(path: Path, what: str, hint: str = "check that it is an SB3 DQN model (.zip)") -> DqnError:
    return DqnError(f"{path}: {what}; {hint}")


def _open(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise _fail(path, "no such file", "check the path")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise _fail(path, f"{size / 2**20:,.0f} MiB, larger than any DQN model ({MAX_FILE_BYTES >> 20} MiB)")
    try:
        archive = zipfile.ZipFile(path)
        bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _fail(path, f"not a readable zip file ({exc.__class__.__name__}: truncated or corrupt?)") from None
    if bad is not None:
        raise _fail(path, f"the zip member {bad} is corrupt (CRC mismatch)")
    if sum(member.file_size for member in archive.infolist()) > MAX_FILE_BYTES:
        raise _fail(path, "its members unpack to more than a DQN model can hold")
    if "data" not in archive.namelist() or "policy.pth" not in archive.namelist():
        raise _fail(path, f"no 'data' or 'policy.pth' inside (found {', '.join(archive.namelist()) or 'nothing'})")
    return archive


def _read_data(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    if archive.getinfo("data").file_size > MAX_DATA_BYTES:
        raise _fail(path, "its 'data' entry is larger than any model's")
    try:
        data = json.loads(archive.read("data"))
    except ValueError:
        raise _fail(path, "its 'data' entry is not JSON") from None
    if not isinstance(data, dict):
        raise _fail(path, "its 'data' entry is not a JSON object")
    return data


def _check_serialized(data: dict[str, Any], path: Path) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and ":serialized:" in value and key not in KNOWN_SERIALIZED:
            raise UnsafeModelError(
                f"{path}: unexpected pickled entry '{key}' in its data, which loading would execute; refused. "
                "If you trust where this file comes from, pass --trust"
            )


def _class_name(text: Any) -> str | None:
    match = _CLASS_REPR.search(str(text))
    return match.group(1).rsplit(".", 1)[-1] if match else None


def _literal(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _policy_kwargs(entry: Any, path: Path) -> dict[str, Any]:
    """SB3 stores a readable copy of each pickled dict item: rebuild `policy_kwargs` from that copy alone."""
    if not isinstance(entry, dict):
        return {}
    readable = {k: v for k, v in entry.items() if not k.startswith(":")}
    kwargs: dict[str, Any] = {}
    for key, value in readable.items():
        if key == "activation_fn":
            name = _class_name(value)
            if name not in ACTIVATIONS:
                raise UnsafeModelError(f"{path}: activation {value} cannot be rebuilt safely; pass --trust to load it")
            kwargs[key] = name
        elif key == "features_extractor_class":
            name = _class_name(value)
            if name not in FEATURE_EXTRACTORS:
                raise UnsafeModelError(f"{path}: features extractor {value} is not SB3's NatureCNN; pass --trust")
            kwargs[key] = name
        elif key in ("net_arch", "normalize_images", "features_extractor_kwargs", "dueling"):
            kwargs[key] = _literal(value)
        elif key in ("optimizer_class", "optimizer_kwargs"):
            continue  # playing needs no optimizer
        else:
            raise UnsafeModelError(f"{path}: policy_kwargs has '{key}', which dqn cannot rebuild; pass --trust")
    return kwargs


def _policy_name(data: dict[str, Any], weights: dict[str, Any]) -> str:
    readable = (
        str(data.get("policy_class", {}).get("__init__", "")) if isinstance(data.get("policy_class"), dict) else ""
    )
    for name in ("CnnPolicy", "MlpPolicy"):
        if f"{name}." in readable:
            return name
    return "CnnPolicy" if any(".cnn." in key for key in weights) else "MlpPolicy"


def _space_facts(data: dict[str, Any]) -> tuple[int | None, tuple[int, ...] | None]:
    action = data.get("action_space") if isinstance(data.get("action_space"), dict) else {}
    obs = data.get("observation_space") if isinstance(data.get("observation_space"), dict) else {}
    n = _literal(action.get("n"))  # type: ignore[union-attr]
    shape = _literal(obs.get("_shape", obs.get("shape")))  # type: ignore[union-attr]
    return (int(n) if isinstance(n, int) else None), (tuple(shape) if isinstance(shape, list | tuple) else None)


def _load_tensors(archive: zipfile.ZipFile, member: str, path: Path) -> Any:
    import pickle

    import torch as th

    try:
        return th.load(io.BytesIO(archive.read(member)), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UnsafeModelError(
            f"{path}: {member} is not a plain tensor file ({first_line[:160]}); refused. "
            "If you trust where this file comes from, pass --trust"
        ) from None


def inspect(path: Path) -> tuple[ModelInfo, dict[str, Any]]:
    """Read a zip's description and weights without executing anything in it."""
    with _open(path) as archive:
        data = _read_data(archive, path)
        _check_serialized(data, path)
        weights = _load_tensors(archive, "policy.pth", path)
        if "pytorch_variables.pth" in archive.namelist():
            _load_tensors(archive, "pytorch_variables.pth", path)  # DQN keeps nothing there; refuse what is hidden
        version = (
            archive.read("_stable_baselines3_version").decode(errors="replace").strip()
            if "_stable_baselines3_version" in archive.namelist()
            else "unknown"
        )
    if not isinstance(weights, dict) or not weights:
        raise _fail(path, "policy.pth holds no weights")
    n_actions, obs_shape = _space_facts(data)
    info = ModelInfo(
        path=path,
        policy=_policy_name(data, weights),
        policy_kwargs=_policy_kwargs(data.get("policy_kwargs"), path),
        n_actions=n_actions,
        observation_shape=obs_shape,
        sb3_version=version,
        num_timesteps=data.get("num_timesteps") if isinstance(data.get("num_timesteps"), int) else None,
    )
    return info, weights


def _sb3_policy_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    import torch as th
    from stable_baselines3.common import torch_layers

    built = dict(kwargs)
    if "activation_fn" in built:
        built["activation_fn"] = getattr(th.nn, built["activation_fn"])
    if "features_extractor_class" in built:
        built["features_extractor_class"] = getattr(torch_layers, built["features_extractor_class"])
    return built


def build_policy(
    info: ModelInfo, weights: dict[str, Any], observation_space: gym.Space[Any], action_space: gym.Space[Any]
) -> BasePolicy:
    """The model's Q-network for this env, with its weights; a mismatch with the env is a clear error."""
    from stable_baselines3.dqn.policies import CnnPolicy, MlpPolicy

    from dqn_cli.policies import policy_class

    n = getattr(action_space, "n", None)
    if info.n_actions is not None and n != info.n_actions:
        raise DqnError(f"{info.path}: the model plays {info.n_actions} actions, this env has {n}; is --env right?")
    kwargs = _sb3_policy_kwargs(info.policy_kwargs)
    dueling = bool(kwargs.pop("dueling", False))
    chosen = policy_class(info.policy, dueling)
    policy_cls = chosen if not isinstance(chosen, str) else (CnnPolicy if chosen == "CnnPolicy" else MlpPolicy)
    if dueling:
        kwargs["dueling"] = True
    policy = policy_cls(observation_space, action_space, lambda _: 0.0, **kwargs)  # type: ignore[arg-type]
    try:
        policy.load_state_dict(weights)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[0]
        raise DqnError(f"{info.path}: the weights do not fit this env's network ({detail}); is --env right?") from None
    policy.set_training_mode(False)
    from dqn_cli.agent import fast_memory_format

    fast_memory_format(policy)
    return policy


def load_trusted(path: Path, env: Any) -> BasePolicy:
    """SB3's own loader, which unpickles the file: only for sources the user trusts (`--trust`)."""
    from stable_baselines3 import DQN

    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "exploration_schedule": lambda _: 0.0}
    custom.update(observation_space=env.observation_space, action_space=env.action_space)
    try:
        model = DQN.load(path, env=env, custom_objects=custom, buffer_size=1, device="cpu")
    except Exception as exc:
        raise DqnError(f"{path}: SB3 could not load it ({exc.__class__.__name__}: {exc})") from None
    return model.policy


def load_policy(path: Path, env: Any, *, trust: bool = False) -> tuple[BasePolicy, ModelInfo | None]:
    """A ready-to-play policy for `env` from the zip at `path`: safe by default, SB3's full load with `trust`."""
    if trust:
        return load_trusted(path, env), None
    info, weights = inspect(path)
    return build_policy(info, weights, env.observation_space, env.action_space), info

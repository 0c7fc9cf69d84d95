"""Finding, reading and overriding hyperparameter files: from YAML on disk to one validated `Hyperparams`."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from dqn_cli import safe_yaml, zoo
from dqn_cli.config import Hyperparams, validate
from dqn_cli.envs import EnvInfo
from dqn_cli.errors import ConfigError

ATARI_DEFAULTS = "atari"


def shipped_dir() -> Path:
    """The `hyperparams/` folder: packaged with the wheel, or the repository's own in a source checkout."""
    packaged = Path(str(resources.files("dqn_cli"))) / "hyperparams"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "hyperparams"


def shipped_files() -> dict[str, Path]:
    """Stem -> file for every shipped hyperparameters file (e.g. 'SpaceInvaders', 'CartPole-v1', 'atari')."""
    return {path.stem: path for path in sorted(shipped_dir().glob("*.yml"))}


@dataclass(frozen=True)
class Selection:
    """Which file a run's hyperparameters come from, and why."""

    path: Path
    note: str | None = None  # said to the user, e.g. when falling back to the Atari defaults
    section: str | None = None  # the block used from an rl_zoo3-format file


def find(info: EnvInfo) -> Selection:
    """The shipped file for `info`: the game's own, else the Atari defaults, else an error saying what to do."""
    files = {stem.lower(): path for stem, path in shipped_files().items()}
    for stem in (info.game, info.env_id, info.name):
        if stem and stem.lower() in files and stem.lower() != ATARI_DEFAULTS:
            return Selection(files[stem.lower()])
    if info.is_atari:
        return Selection(
            files[ATARI_DEFAULTS],
            note=f"no hyperparameters file for {info.game}: using the Atari defaults ({files[ATARI_DEFAULTS].name})",
        )
    raise ConfigError(
        f"no hyperparameters file for {info.env_id} "
        f"(shipped: {', '.join(s for s in shipped_files() if s != ATARI_DEFAULTS)}); "
        f"write one and pass it with -c FILE.yml"
    )


def read(path: Path, info: EnvInfo) -> tuple[dict[str, Any], str | None]:
    """A file's raw mapping in dqn's schema; rl_zoo3-format files are converted (nothing in them is executed)."""
    data = safe_yaml.load_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of hyperparameter names to values, found {type(data).__name__}")
    if isinstance(data.get("hyperparams"), dict) and isinstance(data.get("run"), dict):
        return data["hyperparams"], None  # a run's resolved_config.yml: train again with the same values
    if not zoo.is_zoo_format(data):
        return data, None
    section, block = zoo.pick_section(data, info.env_id, info.is_atari, str(path))
    return zoo.convert(block, str(path)), section


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set key=value` items (dotted keys reach into sections; values are parsed as YAML data)."""
    merged: dict[str, Any] = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set learning_rate=2.5e-4")
        value = safe_yaml.parse(text, f"--set {key}") if text.strip() else None
        *parents, leaf = key.strip().split(".")
        node = merged
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section, so '{key}' cannot be set")
            node = child
        node[leaf] = value
    return merged


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def resolve(info: EnvInfo, config_file: Path | None, overrides: list[str]) -> tuple[Hyperparams, Selection]:
    """Read the file for `info` (or `config_file`), apply overrides, validate; fill in the env-dependent defaults."""
    selection = Selection(config_file) if config_file is not None else find(info)
    raw, section = read(selection.path, info)
    if section is not None:
        selection = Selection(selection.path, selection.note, section)
    source = str(selection.path) + (" with --set overrides" if overrides else "")
    hp = validate(apply_overrides(raw, overrides), source)
    if hp.policy is None:
        hp = hp.model_copy(update={"policy": "CnnPolicy" if info.is_atari else "MlpPolicy"})
    return hp, selection

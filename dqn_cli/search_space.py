"""The search space of `dqn tune`: a YAML file of hyperparameter ranges, validated before any trial runs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dqn_cli import safe_yaml
from dqn_cli.config import Hyperparams, closest_key, section_fields, validate
from dqn_cli.errors import ConfigError
from dqn_cli.hyperparams import apply_overrides, shipped_dir

if TYPE_CHECKING:
    import optuna

Scalar = bool | int | float | str | None


def default_file() -> Path:
    return shipped_dir() / "search_spaces" / "atari.yml"


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter's range."""

    key: str  # dotted hyperparameter name, e.g. policy_kwargs.net_arch
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def labels(self) -> list[Scalar]:
        """Optuna stores scalars only: list choices are stored under a readable label such as '[256, 256]'."""
        return [c if isinstance(c, Scalar) else json.dumps(c) for c in self.choices]

    def value(self, label: Any) -> Any:
        return self.choices[self.labels.index(label)] if self.choices else label

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices:
            return self.value(trial.suggest_categorical(self.key, self.labels))
        assert self.low is not None and self.high is not None
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        """Values that, when valid, make every value of the range valid (for checking before the study)."""
        return list(self.choices) if self.choices else [self.low, self.high]


def _dimension(key: str, spec: Any, source: str) -> Dimension:
    where = f"{source}: {key}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected {{low: A, high: B}} or {{choices: [...]}}, found {spec!r}")
    unknown = set(spec) - {"low", "high", "step", "log", "choices", "type"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: low, high, step, log, choices")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list, found {choices!r}")
        return Dimension(key, choices=tuple(choices))
    low: Any = spec.get("low")
    high: Any = spec.get("high")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"{where}: low and high must both be numbers, found {low!r} and {high!r}")
    if low >= high:
        raise ConfigError(f"{where}: low must be below high, found low={low} high={high}")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, found {low}")
    integer = spec.get("type") == "int" or (
        spec.get("type") != "float" and isinstance(low, int) and isinstance(high, int)
    )
    return Dimension(key, float(low), float(high), spec.get("step"), bool(spec.get("log")), integer)


def _nest(key: str, value: Any) -> dict[str, Any]:
    *parents, leaf = key.split(".")
    node: dict[str, Any] = {leaf: value}
    for parent in reversed(parents):
        node = {parent: node}
    return node


def merge(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with the dotted keys of `values` set."""
    merged = apply_overrides(base, [])
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = merged
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return merged


def _check_key(key: str, source: str) -> None:
    parts = key.split(".")
    for depth, part in enumerate(parts):
        loc = tuple(parts[:depth])
        if part not in section_fields(loc):
            suggestion = closest_key(part, loc)
            hint = f"did you mean '{'.'.join([*loc, suggestion])}'?" if suggestion else "see `dqn config --keys`"
            raise ConfigError(f"{source}: '{key}' is not a hyperparameter; {hint}")
    if key in ("n_timesteps", "n_envs", "policy"):
        raise ConfigError(f"{source}: '{key}' cannot be tuned (set it with --set or --trial-timesteps)")


def load(path: Path, base: dict[str, Any]) -> list[Dimension]:
    """Read and check a search space against the base hyperparameters: every value it can produce must validate."""
    data = safe_yaml.load_file(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a mapping of hyperparameter names to ranges")
    dims = []
    for key, spec in data.items():
        _check_key(str(key), str(path))
        dim = _dimension(str(key), spec, str(path))
        for value in dim.extremes():
            validate(merge(base, {dim.key: int(value) if dim.integer else value}), f"{path} ({dim.key}={value!r})")
        dims.append(dim)
    return dims


def bound_buffer(
    dims: list[Dimension], bytes_per_transition: int, budget_bytes: int, base: Hyperparams
) -> list[Dimension]:
    """Drop buffer_size choices (or lower the range) that would not fit in `budget_bytes` of memory."""
    limit = budget_bytes // max(bytes_per_transition, 1)
    out = []
    for dim in dims:
        if dim.key == "buffer_size":
            if dim.choices:
                kept = tuple(c for c in dim.choices if c <= limit)
                if not kept:
                    raise ConfigError(
                        f"buffer_size: no choice fits in memory (each transition takes {bytes_per_transition:,} bytes, "
                        f"at most {limit:,} transitions fit); add smaller choices to the search space"
                    )
                dim = Dimension(dim.key, choices=kept)
            elif dim.high is not None and dim.high > limit:
                if dim.low is not None and dim.low > limit:
                    raise ConfigError(
                        f"buffer_size: even low={dim.low:,.0f} exceeds the {limit:,} transitions that fit"
                    )
                dim = Dimension(dim.key, dim.low, float(limit), dim.step, dim.log, dim.integer)
        out.append(dim)
    if not any(d.key == "buffer_size" for d in dims) and base.buffer_size > limit:
        raise ConfigError(
            f"buffer_size {base.buffer_size:,} does not fit in memory ({limit:,} transitions fit); lower it with --set"
        )
    return out


def transition_bytes(observation_shape: tuple[int, ...], optimize_memory_usage: bool) -> int:
    """Bytes SB3's replay buffer takes per transition for uint8 observations (obs and next_obs)."""
    frame = math.prod(observation_shape)
    return frame * (1 if optimize_memory_usage else 2) + 64


def as_hyperparams(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted sampled values as the nested mapping of a hyperparameters file."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        node = _nest(key, value)
        _deep_update(nested, node)
    return nested


def _deep_update(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value

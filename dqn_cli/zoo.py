"""Import rl_zoo3-format hyperparameter files (as the Hugging Face Deep RL course writes them) without running them.

rl_zoo3 keys its files by env id and passes `policy_kwargs` through `eval`. Here the string is parsed with `ast`
and only literals, `dict(...)` and an allow-list of class names (`th.optim.RMSprop`, `nn.ReLU`, ...) are accepted.
"""

from __future__ import annotations

import ast
import contextlib
from typing import Any

from dqn_cli.config import ACTIVATIONS, OPTIMIZERS, Hyperparams
from dqn_cli.errors import ConfigError

ATARI_WRAPPER = "stable_baselines3.common.atari_wrappers.AtariWrapper"
_PREFIXES = ("", "th.", "torch.")
# dotted name in the file -> the canonical class name our schema stores
ALLOWED_NAMES: dict[str, str] = {
    **{f"{p}optim.{name}": name for p in _PREFIXES for name in OPTIMIZERS.values()},
    **{f"{p}nn.{name}": name for p in _PREFIXES for name in ACTIVATIONS.values()},
    "NatureCNN": "NatureCNN",
    "stable_baselines3.common.torch_layers.NatureCNN": "NatureCNN",
}
_ZOO_ONLY_KEYS = {"env_wrapper", "normalize", "callback", "vec_env_wrapper", "replay_buffer_class", "frame_stack"}


def is_zoo_format(data: dict[str, Any]) -> bool:
    """True for files keyed by env id (`SpaceInvadersNoFrameskip-v4: {...}`) rather than by hyperparameter."""
    known = set(Hyperparams.model_fields) | _ZOO_ONLY_KEYS
    return bool(data) and not (set(data) & known) and all(isinstance(v, dict) for v in data.values())


def pick_section(data: dict[str, Any], env_id: str, is_atari: bool, source: str) -> tuple[str, dict[str, Any]]:
    """The block for `env_id`, or rl_zoo3's shared `atari` block for an Atari game."""
    for name in (env_id, "atari" if is_atari else None):
        if name in data:
            return name, data[name]
    raise ConfigError(
        f"{source}: rl_zoo3-format file without a block for {env_id} (found: {', '.join(map(str, data))}); "
        f"add a '{env_id}:' block or pass the matching --env"
    )


def _literal(node: ast.AST, source: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool | type(None)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand, source)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(item, source) for item in node.elts]
    if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) for k in node.keys):
        return {k.value: _literal(v, source) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[union-attr]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value, source) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.Name | ast.Attribute) and ast.unparse(node) in ALLOWED_NAMES:
        return ALLOWED_NAMES[ast.unparse(node)]
    raise ConfigError(
        f"{source}: policy_kwargs: '{ast.unparse(node)}' is not allowed (only numbers, strings, lists, dict(...) "
        f"and the names {', '.join(sorted({n.split('.')[-1] for n in ALLOWED_NAMES}))}); "
        "write policy_kwargs as a YAML mapping instead"
    )


def parse_policy_kwargs(text: str, source: str) -> dict[str, Any]:
    """Parse rl_zoo3's `"dict(net_arch=[64, 64], optimizer_class=th.optim.RMSprop)"` without evaluating it."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ConfigError(
            f"{source}: policy_kwargs {text!r} is not a Python dict expression; write it as YAML"
        ) from None
    value = _literal(tree.body, source)
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: policy_kwargs {text!r} must be dict(...) or a YAML mapping")
    if value.get("features_extractor_class", "NatureCNN") != "NatureCNN":
        raise ConfigError(f"{source}: policy_kwargs: only the NatureCNN features extractor is supported")
    value.pop("features_extractor_class", None)
    return value


def _atari_wrapper(spec: Any, source: str) -> dict[str, Any]:
    items = spec if isinstance(spec, list) else [spec]
    settings: dict[str, Any] = {}
    for item in items:
        name, kwargs = next(iter(item.items())) if isinstance(item, dict) and len(item) == 1 else (item, {})
        if name != ATARI_WRAPPER:
            raise ConfigError(
                f"{source}: env_wrapper {name!r} is not supported; dqn applies {ATARI_WRAPPER} itself "
                "(configure it under atari_wrapper:)"
            )
        settings.update(kwargs or {})
    return settings


def _learning_rate(value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, str) and value.startswith("lin_"):
        out["learning_rate_schedule"] = "linear"
        value = value.removeprefix("lin_")
        with contextlib.suppress(ValueError):  # else left as a string: validation names it
            value = float(value)
    out["learning_rate"] = value


def convert(section: dict[str, Any], source: str) -> dict[str, Any]:
    """Turn one rl_zoo3 block into dqn's flat schema (validation happens afterwards, as for any file)."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key == "env_wrapper":
            out["atari_wrapper"] = _atari_wrapper(value, source)
        elif key == "policy_kwargs":
            out[key] = parse_policy_kwargs(value, source) if isinstance(value, str) else value
        elif key == "learning_rate":
            _learning_rate(value, out)
        elif key == "normalize":
            if value not in (False, None, "false", "False"):
                raise ConfigError(f"{source}: normalize: VecNormalize is not supported for DQN here; remove the key")
        elif key in ("callback", "vec_env_wrapper", "replay_buffer_class", "replay_buffer_kwargs"):
            raise ConfigError(
                f"{source}: {key} is an rl_zoo3 option dqn does not import (no code from files); remove it"
            )
        else:
            out[key] = value
    return out

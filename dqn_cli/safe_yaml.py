"""YAML as data: a safe loader that reads `1e-4` as a float and refuses duplicate keys and `!!python` tags."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from dqn_cli.errors import ConfigError

# YAML 1.1 (PyYAML) wants a dot in floats, so `1e-4` would be the string "1e-4"; YAML 1.2 and every
# hyperparameter file ever written mean the number. Same resolver as PyYAML's, with the dot optional.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class DataLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that treats `1e-4` as a float and a repeated mapping key as an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"line {line}: the key '{key}' appears twice in one mapping; keep only one of them")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


DataLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    DataLoader.yaml_implicit_resolvers[_first] = [
        (tag, rx) for tag, rx in DataLoader.yaml_implicit_resolvers.get(_first, []) if tag != "tag:yaml.org,2002:float"
    ]
DataLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[Any, Any]:
    """rl_zoo3 writes its config.yml as `!!python/object/apply:collections.OrderedDict [[[key, value], ...]]`."""
    if isinstance(node, yaml.SequenceNode) and node.value and isinstance(node.value[0], yaml.SequenceNode):
        pairs = loader.construct_sequence(node.value[0], deep=True)
        if all(isinstance(p, list) and len(p) == 2 for p in pairs):
            return {k: v for k, v in pairs}
    raise ConfigError(f"line {node.start_mark.line + 1}: an OrderedDict tag that is not a list of key/value pairs")


class ZooRunLoader(DataLoader):
    """Reads rl_zoo3's run files (`config.yml`, `args.yml`): plain data plus its one OrderedDict tag, nothing else."""


ZooRunLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)


def parse(text: str, source: str, loader: type[DataLoader] = DataLoader) -> Any:
    """Parse YAML text as data; any problem becomes one `ConfigError` line that names `source`."""
    try:
        return yaml.load(text, Loader=loader)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}: " if mark else ""
        tag = (exc.problem or "").split("tag ")[-1].strip("'").replace("tag:yaml.org,2002:", "!!")
        raise ConfigError(
            f"{source}: {where}the tag {tag} is not allowed; hyperparameter files are plain data "
            "(numbers, strings, lists, mappings): write the value without the tag"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: {where}not valid YAML ({problem}); fix the file's syntax") from None


def load_file(path: Path, loader: type[DataLoader] = DataLoader) -> Any:
    """Read and parse a YAML file, with a clear error when it is missing or unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.__class__.__name__}); check the path") from None
    return parse(text, str(path), loader)


def dump(data: Any) -> str:
    """Plain YAML that `DataLoader` reads back to the same values (keys in the order given)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)

"""Choosing the agent a command plays: the latest run of --env, --exp-id N, --run DIR, --model FILE.zip or --repo.

Run folders made by `dqn train` and by rl_zoo3 are both understood. The environment settings an agent is played
with (frame stack, Atari preprocessing, env kwargs) come from the run's own saved configuration, never from today's
defaults; rl_zoo3's `config.yml` is read without an unsafe YAML loader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqn_cli import envs, hyperparams, rundir, safe_yaml
from dqn_cli.config import Hyperparams, validate
from dqn_cli.errors import DqnError


@dataclass(frozen=True)
class Agent:
    """A model file and everything needed to play it."""

    model_path: Path
    run_dir: Path | None  # the run folder the model belongs to, if any
    env: envs.EnvInfo
    hyperparams: Hyperparams  # the env settings it was trained with (frame_stack, atari_wrapper, env_kwargs)
    origin: str  # "dqn", "rl_zoo3" or "file"


@dataclass(frozen=True)
class PlayRequest:
    """What eval and enjoy share: which agent, how many episodes, from which seed, how greedily, how loaded."""

    query: AgentQuery
    episodes: int = 1
    seed: int = 0
    epsilon: float = 0.01
    trust: bool = False


@dataclass(frozen=True)
class AgentQuery:
    """The agent-choosing options shared by eval, enjoy and push."""

    env: str | None = None
    exp_id: int | None = None
    run: Path | None = None
    model: Path | None = None
    best: bool = False
    log_dir: Path = Path("logs")
    repo: str | None = None  # a Hub repo, pulled into log_dir first
    revision: str | None = None
    endpoint: str | None = None


def _zoo_env_id(run_dir: Path) -> str | None:
    for params in sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "config.yml").is_file()):
        args_file = params / "args.yml"
        if args_file.is_file():
            args = safe_yaml.load_file(args_file, safe_yaml.ZooRunLoader)
            if isinstance(args, dict) and isinstance(args.get("env"), str):
                return args["env"]
        return params.name
    return None


def _zoo_play_settings(run_dir: Path, info: envs.EnvInfo) -> Hyperparams:
    """The env settings of an rl_zoo3 run, from its config.yml (only the keys that shape the env are used)."""
    config_file = run_dir / info.name / "config.yml"
    config = safe_yaml.load_file(config_file, safe_yaml.ZooRunLoader) if config_file.is_file() else {}
    if not isinstance(config, dict):
        raise DqnError(f"{config_file}: expected rl_zoo3's mapping of hyperparameters")
    from dqn_cli import zoo

    raw: dict[str, Any] = {}
    if "env_wrapper" in config:
        raw["atari_wrapper"] = zoo.convert({"env_wrapper": config["env_wrapper"]}, str(config_file))["atari_wrapper"]
    for key in ("frame_stack", "policy"):
        if key in config:
            raw[key] = config[key]
    args_file = run_dir / info.name / "args.yml"
    args = safe_yaml.load_file(args_file, safe_yaml.ZooRunLoader) if args_file.is_file() else {}
    env_kwargs = (args or {}).get("env_kwargs") or config.get("env_kwargs")
    if env_kwargs:
        raw["env_kwargs"] = env_kwargs
    return validate(raw, str(config_file))


def run_settings(run_dir: Path, env_hint: str | None = None) -> tuple[envs.EnvInfo, Hyperparams, str]:
    """The env, its settings and the origin ("dqn" or "rl_zoo3") of a run folder."""
    if not run_dir.is_dir():
        raise DqnError(f"{run_dir}: no such run folder; pass a folder such as logs/dqn/PongNoFrameskip-v4_1")
    if (run_dir / rundir.RESOLVED).is_file():
        resolved = rundir.read_resolved(run_dir)
        return envs.resolve(resolved.run.env_id), resolved.hyperparams, "dqn"
    env_id = _zoo_env_id(run_dir) or env_hint
    if env_id is None:
        raise DqnError(f"{run_dir}: neither a dqn nor an rl_zoo3 run folder (no config); pass --env and --model")
    info = envs.resolve(env_id)
    return info, _zoo_play_settings(run_dir, info), "rl_zoo3"


def _from_run(run_dir: Path, model: Path | None, best: bool, env_hint: str | None) -> Agent:
    info, hp, origin = run_settings(run_dir, env_hint)
    path = model or run_dir / (rundir.BEST_MODEL if best else f"{info.name}.zip")
    if not path.is_file():
        raise DqnError(f"{path}: no model in this run folder; was training stopped before the first save?")
    return Agent(path, run_dir, info, hp, origin)


def _latest_run(query: AgentQuery) -> Path:
    if query.env is None:
        raise DqnError("missing --env: name the game whose agent to use, or pass --run DIR or --model FILE.zip")
    info = envs.resolve(query.env)
    ids = rundir.run_ids(query.log_dir, info)
    if query.exp_id is not None:
        if query.exp_id not in ids:
            found = ", ".join(map(str, ids)) or "none"
            raise DqnError(f"no run {info.name}_{query.exp_id} under {query.log_dir / rundir.ALGO} (runs: {found})")
        return query.log_dir / rundir.ALGO / f"{info.name}_{query.exp_id}"
    with_model = [
        i for i in ids if rundir.model_path(query.log_dir / rundir.ALGO / f"{info.name}_{i}", info.name).is_file()
    ]
    if not with_model:
        raise DqnError(
            f"no trained agent for {info.env_id} under {query.log_dir / rundir.ALGO}: train one with "
            f"`dqn train --env {info.game or info.env_id}`, or pass --run, --model or --repo"
        )
    return query.log_dir / rundir.ALGO / f"{info.name}_{with_model[-1]}"


def select(query: AgentQuery, say: Callable[[str], None] = lambda _: None) -> Agent:
    """The agent the options point at (see the module docstring for the order)."""
    if query.repo is not None:
        from dqn_cli.hub import pull

        run_dir = pull(query.repo, revision=query.revision, endpoint=query.endpoint, log_dir=query.log_dir, say=say)
        return _from_run(run_dir, None, query.best, query.env)
    if query.model is not None:
        model = query.model
        parent = model.parent
        if parent.is_dir() and ((parent / rundir.RESOLVED).is_file() or _zoo_env_id(parent)):
            return _from_run(parent, model, False, query.env)
        if query.env is None:
            raise DqnError(f"{model}: not inside a run folder, so pass --env to say which game it plays")
        info = envs.resolve(query.env)
        hp, _ = hyperparams.resolve(info, None, [])
        if not model.is_file():
            raise DqnError(f"{model}: no such file; check the path")
        return Agent(model, None, info, hp, "file")
    if query.run is not None:
        return _from_run(query.run, None, query.best, query.env)
    return _from_run(_latest_run(query), None, query.best, query.env)

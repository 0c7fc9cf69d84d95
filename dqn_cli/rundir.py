"""The run folder, in rl_zoo3's layout: `<log_dir>/dqn/<EnvId>_<N>/` with `<EnvId>.zip` and `<EnvId>/*.yml`.

rl_zoo3's tools (`python -m rl_zoo3.enjoy --algo dqn --env <EnvId> -f logs/ --exp-id N`) read these folders;
dqn's own files (`resolved_config.yml`, `command.txt`, checkpoints/) sit beside rl_zoo3's.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

from dqn_cli import safe_yaml
from dqn_cli.config import ResolvedConfig
from dqn_cli.envs import EnvInfo
from dqn_cli.errors import DqnError
from dqn_cli.zoo import ATARI_WRAPPER

ALGO = "dqn"
RESOLVED = "resolved_config.yml"
COMMAND = "command.txt"
BEST_MODEL = "best_model.zip"
EVALUATIONS = "evaluations.npz"


def run_ids(log_dir: Path, info: EnvInfo) -> list[int]:
    """The N of every `<EnvId>_<N>` folder under `<log_dir>/dqn/`, ascending."""
    pattern = re.compile(re.escape(info.name) + r"_(\d+)$")
    algo_dir = log_dir / ALGO
    if not algo_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in algo_dir.iterdir() if (m := pattern.match(p.name)) and p.is_dir())


def create(log_dir: Path, info: EnvInfo) -> Path:
    """A new, empty run folder numbered one past the latest (safe when several runs start at once)."""
    (log_dir / ALGO).mkdir(parents=True, exist_ok=True)
    next_id = (run_ids(log_dir, info) or [0])[-1] + 1
    while True:
        run_dir = log_dir / ALGO / f"{info.name}_{next_id}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            next_id += 1


def model_path(run_dir: Path, env_name: str) -> Path:
    return run_dir / f"{env_name}.zip"


def _zoo_policy_kwargs(resolved: ResolvedConfig) -> str | None:
    """`policy_kwargs` as the `dict(...)` string rl_zoo3 evaluates (only the non-default parts)."""
    pk = resolved.hyperparams.policy_kwargs
    parts = []
    if pk.net_arch is not None:
        parts.append(f"net_arch={list(pk.net_arch)}")
    if pk.activation_fn != "ReLU":
        parts.append(f"activation_fn=nn.{pk.activation_fn}")
    if not pk.normalize_images:
        parts.append("normalize_images=False")
    if pk.features_extractor_kwargs is not None:
        parts.append(f"features_extractor_kwargs=dict(features_dim={pk.features_extractor_kwargs.features_dim})")
    if pk.optimizer_class != "Adam":
        parts.append(f"optimizer_class=th.optim.{pk.optimizer_class}")
    if pk.optimizer_kwargs:
        parts.append(f"optimizer_kwargs=dict({', '.join(f'{k}={v!r}' for k, v in pk.optimizer_kwargs.items())})")
    return f"dict({', '.join(parts)})" if parts else None


def zoo_config(resolved: ResolvedConfig, atari_wrapper_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """`<EnvId>/config.yml` as rl_zoo3 writes it: its hyperparameter names, sorted, wrappers as dotted paths."""
    hp = resolved.hyperparams
    sb3 = hp.model_dump(
        mode="json",
        exclude={
            "atari_wrapper",
            "env_kwargs",
            "learning_rate_schedule",
            "policy_kwargs",
            "frame_stack",
            "replay_buffer_class",
        },
    )
    config: dict[str, Any] = dict(sb3)
    if hp.learning_rate_schedule == "linear":
        config["learning_rate"] = f"lin_{hp.learning_rate}"
    if atari_wrapper_kwargs is not None:
        config["env_wrapper"] = [{ATARI_WRAPPER: atari_wrapper_kwargs}]
    if hp.frame_stack > 1:
        config["frame_stack"] = hp.frame_stack
    policy_kwargs = _zoo_policy_kwargs(resolved)
    if policy_kwargs:
        config["policy_kwargs"] = policy_kwargs
    return dict(sorted(config.items()))


def zoo_args(resolved: ResolvedConfig, log_dir: Path) -> dict[str, Any]:
    """`<EnvId>/args.yml`: the command-line arguments in rl_zoo3's names (rl_zoo3's enjoy reads env_kwargs here)."""
    run = resolved.run
    args = {
        "algo": ALGO,
        "env": run.env_id,
        "env_kwargs": dict(resolved.hyperparams.env_kwargs) or None,
        "eval_episodes": run.eval_episodes,
        "eval_freq": run.eval_freq,
        "device": run.device,
        "hyperparams": None,
        "log_folder": str(log_dir),
        "n_timesteps": resolved.hyperparams.n_timesteps,
        "save_freq": run.save_freq,
        "save_replay_buffer": run.save_replay_buffer,
        "seed": run.seed,
        "tensorboard_log": "",
        "trained_agent": "",
        "vec_env": "dummy",
    }
    return dict(sorted(args.items()))


def write_new(
    run_dir: Path, env_name: str, resolved: ResolvedConfig, atari_wrapper_kwargs: dict[str, Any] | None, log_dir: Path
) -> None:
    """Write the run's configuration files: ours (resolved config, command) and rl_zoo3's (config, args, env_kwargs)."""
    params = run_dir / env_name
    params.mkdir(exist_ok=True)
    (params / "config.yml").write_text(safe_yaml.dump(zoo_config(resolved, atari_wrapper_kwargs)), encoding="utf-8")
    (params / "args.yml").write_text(safe_yaml.dump(zoo_args(resolved, log_dir)), encoding="utf-8")
    (params / "env_kwargs.yml").write_text(safe_yaml.dump(dict(resolved.hyperparams.env_kwargs)), encoding="utf-8")
    (run_dir / RESOLVED).write_text(resolved_yaml(resolved), encoding="utf-8")
    append_command(run_dir)


def resolved_yaml(resolved: ResolvedConfig) -> str:
    header = "# The fully resolved configuration of this run (`dqn train -c` accepts this file as it is).\n"
    return header + safe_yaml.dump(resolved.model_dump(mode="json"))


def append_command(run_dir: Path) -> None:
    """Record the command line (train, then each resume) in `command.txt`."""
    with open(run_dir / COMMAND, "a", encoding="utf-8") as handle:
        handle.write(shlex.join(["dqn", *sys.argv[1:]]) + "\n")


def read_resolved(run_dir: Path) -> ResolvedConfig:
    path = run_dir / RESOLVED
    if not path.is_file():
        raise DqnError(f"{run_dir}: no {RESOLVED}, so this is not a dqn run folder; pass the folder `dqn train` made")
    data = safe_yaml.load_file(path)
    try:
        return ResolvedConfig.model_validate(data)
    except Exception as exc:
        raise DqnError(f"{path}: not a valid resolved config ({str(exc).splitlines()[0]}); was it edited?") from None

"""The model card (`README.md`) of a pushed agent: metadata the Hub and the Deep RL course leaderboard read, then
how the agent was evaluated, its hyperparameters, and how to use it with dqn and with rl_zoo3."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dqn_cli import __version__, safe_yaml

if TYPE_CHECKING:
    from dqn_cli.selection import Agent


def mean_reward(result: dict[str, Any]) -> str:
    """The leaderboard's format: `"X.XX +/- Y.YY"`."""
    return f"{result['mean']:.2f} +/- {result['std']:.2f}"


def metadata(agent: Agent, result: dict[str, Any]) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    env_id = agent.env.env_id
    data = ModelCardData(
        library_name="stable-baselines3",
        tags=[env_id, "deep-reinforcement-learning", "reinforcement-learning", "stable-baselines3", "dqn"],
        model_name="DQN",
        eval_results=[
            EvalResult(
                task_type="reinforcement-learning",
                task_name="reinforcement-learning",
                dataset_type=env_id,
                dataset_name=env_id,
                metric_type="mean_reward",
                metric_name="mean_reward",
                metric_value=mean_reward(result),
                verified=False,
            )
        ],
    )
    return data.to_yaml().rstrip() + "\n"


def _versions() -> str:
    rows = [f"dqn {__version__}"]
    for dist in ("stable_baselines3", "gymnasium", "ale-py", "torch"):
        try:
            rows.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            continue
    return ", ".join(rows)


def _protocol(result: dict[str, Any]) -> str:
    p = result["protocol"]
    lines = [
        f"- {result['episodes']} full games (no episode end on life loss), unclipped score, seed {p['seed']}",
        f"- ε-greedy with ε = {p['epsilon']}" if p["epsilon"] else "- greedy actions (ε = 0)",
    ]
    if p.get("noop_max") is not None:
        lines.append(
            f"- up to {p['noop_max']} no-op starts, {p['max_frames_per_episode']:,}-frame cap, "
            f"{p['frame_skip']} frames per action, sticky actions {p['sticky_actions']}"
        )
    return "\n".join(lines)


def model_card(agent: Agent, result: dict[str, Any], repo_id: str, folder: Path) -> str:
    env_id, name = agent.env.env_id, agent.env.name
    human = result.get("human_normalized")
    human_line = (
        f"| human-normalized | {100 * human['mean']:.1f}% (random {human['random']}, human {human['human']}) |\n"
        if human
        else ""
    )
    hyperparams = safe_yaml.dump(agent.hyperparams.model_dump(mode="json"))
    video = "\n![replay](replay.mp4)\n" if (folder / "replay.mp4").is_file() else ""
    curve = "\n![learning curve](learning_curve.png)\n" if (folder / "learning_curve.png").is_file() else ""
    return f"""---
{metadata(agent, result)}---

# DQN agent playing {env_id}

A Deep Q-Network agent for **{env_id}**, trained with [stable-baselines3](https://github.com/DLR-RM/stable-baselines3)
through `dqn` (in the rl_zoo3 repo layout: `{algo_zip(name)}`, `config.yml`, `results.json`, `replay.mp4`).
{video}
## Evaluation

| figure | value |
|---|---|
| mean ± std | {result["mean"]:.2f} ± {result["std"]:.2f} |
| median | {result["median"]:.2f} |
| min / max | {result["min"]:.2f} / {result["max"]:.2f} |
| mean − std | {result["mean_minus_std"]:.2f} |
{human_line}
Protocol:
{_protocol(result)}
{curve}
## Usage

With `dqn` (loads safely: no code from the file runs):

```bash
dqn pull {repo_id}
dqn eval --repo {repo_id}
dqn enjoy --repo {repo_id} --record
```

With rl_zoo3:

```bash
python -m rl_zoo3.load_from_hub --algo dqn --env {env_id} -orga {repo_id.split("/")[0]} -f logs/
python -m rl_zoo3.enjoy --algo dqn --env {env_id} -f logs/
```

With stable-baselines3 directly: `DQN.load("{algo_zip(name)}")`.

## Hyperparameters

```yaml
{hyperparams}```

## Versions

{_versions()}
"""


def algo_zip(env_name: str) -> str:
    return f"dqn-{env_name}.zip"

"""`dqn plot`: learning curves of one or many runs as a PNG, from dqn's and rl_zoo3's run folders alike.

Runs that share a configuration (the same hyperparameters, different seeds) are drawn as their mean with a 95%
confidence band; different configurations side by side, labelled by what differs between them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dqn_cli import curves, envs, rundir, safe_yaml, scores
from dqn_cli.errors import DqnError
from dqn_cli.selection import run_settings

FIGSIZE, DPI = (10, 6), 100  # 1000×600 pixels


@dataclass(frozen=True)
class PlotRequest:
    runs: tuple[Path, ...] = ()
    env: str | None = None
    log_dir: Path = Path("logs")
    x: str = "steps"  # steps or hours
    output: Path | None = None
    smooth: int = 100
    human: bool = False
    title: str | None = None


@dataclass(frozen=True)
class Run:
    path: Path
    env: envs.EnvInfo
    config: dict[str, Any]
    curve: curves.Curve


def _config(run_dir: Path, info: envs.EnvInfo) -> dict[str, Any]:
    if (run_dir / rundir.RESOLVED).is_file():  # through the schema, so runs from older versions get today's defaults
        return rundir.read_resolved(run_dir).hyperparams.model_dump(mode="json")
    config_file = run_dir / info.name / "config.yml"
    data = safe_yaml.load_file(config_file, safe_yaml.ZooRunLoader) if config_file.is_file() else {}
    return dict(data or {})


def load_runs(request: PlotRequest) -> list[Run]:
    folders = list(request.runs)
    if not folders:
        if request.env is None:
            raise DqnError("nothing to plot: pass --env GAME (all its runs) or --run DIR (repeatable)")
        info = envs.resolve(request.env)
        folders = [request.log_dir / rundir.ALGO / f"{info.name}_{i}" for i in rundir.run_ids(request.log_dir, info)]
        if not folders:
            raise DqnError(f"no runs of {info.env_id} under {request.log_dir / rundir.ALGO}; train one first")
    runs = []
    for folder in folders:
        info, hp, _ = run_settings(folder, request.env)
        # Monitor counts the env's own steps: emulator frames on *NoFrameskip ids, agent steps elsewhere
        curve = curves.read(folder, frames_per_step=envs.wrapper_frame_skip(info, hp) if info.is_atari else 1)
        if not len(curve.returns) and not len(curve.eval_means):
            raise DqnError(f"{folder}: no finished episode and no evaluation to plot yet")
        runs.append(Run(folder, info, _config(folder, info), curve))
    return runs


def group(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs with identical configurations together, labelled by the settings that tell the groups apart."""
    by_config: dict[str, list[Run]] = {}
    for run in runs:
        by_config.setdefault(json.dumps([run.env.env_id, run.config], sort_keys=True, default=str), []).append(run)
    configs = [members[0].config for members in by_config.values()]
    keys = sorted({k for c in configs for k in c if any(c.get(k) != o.get(k) for o in configs)})
    keys = [k for k in keys if k != "n_timesteps"]
    labelled = {}
    for members in by_config.values():
        first = members[0]
        shown = [f"{k}={first.config.get(k)}" for k in keys[:3]] + ([f"+{len(keys) - 3} more"] if len(keys) > 3 else [])
        label = ", ".join(shown) or first.env.env_id
        if len(by_config) > 1 and len({m.env.env_id for m in runs}) > 1:
            label = f"{first.env.env_id}: {label}"
        seeds = f" ({len(members)} runs)" if len(members) > 1 else f" ({first.path.name})"
        labelled[label + seeds] = members
    return labelled


def _y(values: np.ndarray, info: envs.EnvInfo, human: bool) -> np.ndarray:
    ref = scores.reference(info.game) if human else None
    return 100 * np.vectorize(ref.normalize)(values) if ref is not None and len(values) else values


def _draw_group(axes: Any, label: str, members: list[Run], request: PlotRequest, color: Any) -> None:
    series = []
    for run in members:
        x = run.curve.steps if request.x == "steps" else run.curve.hours
        if len(run.curve.returns):
            series.append((x, curves.smooth(_y(run.curve.returns, run.env, request.human), request.smooth)))
    if len(series) == 1:
        axes.plot(*series[0], color=color, label=label)
    elif series:
        end = min(s[0][-1] for s in series)
        grid = np.linspace(max(s[0][0] for s in series), end, 200)
        stacked = np.array([np.interp(grid, x, y) for x, y in series])
        mean, sem = stacked.mean(axis=0), stacked.std(axis=0, ddof=1) / np.sqrt(len(stacked))
        axes.plot(grid, mean, color=color, label=label)
        axes.fill_between(grid, mean - 1.96 * sem, mean + 1.96 * sem, color=color, alpha=0.2)
    if request.x == "steps":
        evals = [
            (r.curve.eval_steps, _y(r.curve.eval_means, r.env, request.human))
            for r in members
            if len(r.curve.eval_means)
        ]
        for i, (x, y) in enumerate(evals):
            axes.plot(
                x,
                y,
                "o",
                color=color,
                markersize=4,
                alpha=0.8,
                label=f"{label}: evaluations" if i == 0 and not series else None,
            )


def plot(request: PlotRequest) -> Path:
    """Draw the runs' curves into a PNG and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(request)
    groups = group(runs)
    figure, axes = plt.subplots(figsize=FIGSIZE)
    colors = plt.get_cmap("tab10")
    for i, (label, members) in enumerate(groups.items()):
        _draw_group(axes, label, members, request, colors(i % 10))
    human = request.human and any(scores.reference(r.env.game) for r in runs)
    axes.set_xlabel("env steps" if request.x == "steps" else "hours")
    axes.set_ylabel("human-normalized score (%)" if human else "episode return (game score)")
    axes.set_title(request.title or f"DQN on {', '.join(sorted({r.env.env_id for r in runs}))}")
    figure.text(0.99, 0.01, f"lines: training episodes (mean of {request.smooth}); dots: evaluations", ha="right",
                fontsize="small", color="gray")  # fmt: skip
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    output = request.output or request.log_dir / "plots" / f"{runs[0].env.name}.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=DPI)
    plt.close(figure)
    return output

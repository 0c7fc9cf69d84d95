"""Reading learning curves from run folders (dqn's and rl_zoo3's): training episodes and periodic evaluations."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dqn_cli.rundir import EVALUATIONS


@dataclass(frozen=True)
class Curve:
    """One run: training episode returns against env steps and wall time, and evaluation means."""

    name: str
    steps: np.ndarray  # env steps at the end of each training episode (all envs together)
    hours: np.ndarray  # wall-clock hours at the end of each training episode
    returns: np.ndarray  # true game score of each training episode
    eval_steps: np.ndarray
    eval_means: np.ndarray


def _monitor_rows(run_dir: Path) -> list[tuple[float, float, float]]:
    """(return, length, seconds since start) of every episode in the run's `*.monitor.csv` files, in time order."""
    rows: list[tuple[float, float, float]] = []
    for path in sorted(run_dir.glob("*.monitor.csv")):
        with open(path, encoding="utf-8") as handle:
            handle.readline()  # the '#{"t_start": ...}' header line
            for row in csv.DictReader(handle):
                try:
                    rows.append((float(row["r"]), float(row["l"]), float(row["t"])))
                except (KeyError, ValueError):
                    continue
    return sorted(rows, key=lambda r: r[2])


def read(run_dir: Path, frames_per_step: int = 1) -> Curve:
    """A run's curve. Monitor lengths are in emulator frames on Atari: divide by `frames_per_step` for env steps."""
    rows = _monitor_rows(run_dir)
    returns = np.array([r[0] for r in rows])
    steps = np.cumsum([r[1] / frames_per_step for r in rows]) if rows else np.array([])
    hours = np.array([r[2] / 3600 for r in rows])
    eval_steps, eval_means = np.array([]), np.array([])
    if (run_dir / EVALUATIONS).is_file():
        with np.load(run_dir / EVALUATIONS) as data:
            eval_steps, eval_means = data["timesteps"], data["results"].mean(axis=1)
    return Curve(run_dir.name, steps, hours, returns, eval_steps, eval_means)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over the last `window` points (shorter at the start)."""
    if len(values) == 0:
        return values
    cumulative = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(values) + 1) - counts]) / counts


def draw_single(curve: Curve, title: str, out: Path) -> Path:
    """A simple learning-curve PNG of one run (training returns, smoothed, and evaluation means)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    if len(curve.returns):
        axes.plot(curve.steps, curve.returns, color="tab:blue", alpha=0.25, linewidth=0.8)
        axes.plot(curve.steps, smooth(curve.returns, 100), color="tab:blue", label="training episodes (mean of 100)")
    if len(curve.eval_means):
        axes.plot(curve.eval_steps, curve.eval_means, "o-", color="tab:orange", label="evaluation (full games)")
    axes.set_xlabel("env steps")
    axes.set_ylabel("episode return (game score)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(figure)
    return out

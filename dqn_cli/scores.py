"""Summaries of evaluation episodes, and human-normalized scores from the Atari-57 random/human table.

The table (`data/atari_human_random.csv`) is the one used by DeepMind's DQN Zoo; its `source` column says where each
figure comes from. Human-normalized score = (score − random) / (human − random).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Reference:
    game: str
    random: float
    human: float
    source: str

    def normalize(self, score: float) -> float:
        return (score - self.random) / (self.human - self.random)


@cache
def references() -> dict[str, Reference]:
    """Lower-case game name -> its random and human scores."""
    text = resources.files("dqn_cli").joinpath("data/atari_human_random.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(text.splitlines())
    return {
        row["game"].lower(): Reference(row["game"], float(row["random"]), float(row["human"]), row["source"])
        for row in rows
    }


def reference(game: str | None) -> Reference | None:
    return references().get(game.lower()) if game else None


def summarize(returns: np.ndarray, game: str | None) -> dict[str, Any]:
    """mean ± std, median, min, max, mean − std (the Hugging Face leaderboard's figure) and human-normalized."""
    mean, std = float(np.mean(returns)), float(np.std(returns))
    summary: dict[str, Any] = {
        "mean": mean,
        "std": std,
        "median": float(np.median(returns)),
        "min": float(np.min(returns)),
        "max": float(np.max(returns)),
        "mean_minus_std": mean - std,
        "episodes": len(returns),
        "human_normalized": None,
    }
    ref = reference(game)
    if ref is not None:
        summary["human_normalized"] = {
            "mean": ref.normalize(mean),
            "median": ref.normalize(summary["median"]),
            "random": ref.random,
            "human": ref.human,
            "source": ref.source,
        }
    return summary

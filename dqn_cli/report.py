"""Printing results for people (tables); machines get JSON."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def eval_table(result: dict[str, Any], console: Console | None = None) -> None:
    """The evaluation result as a table, with the protocol underneath."""
    console = console or Console(width=None if Console().is_terminal else 120)
    table = Table(title=f"{result['env_id']} — {result['model']}", title_justify="left")
    for column in ("mean ± std", "median", "min", "max", "episodes", "mean − std"):
        table.add_column(column, justify="right")
    row = [
        f"{result['mean']:.2f} ± {result['std']:.2f}",
        f"{result['median']:.2f}",
        f"{result['min']:.2f}",
        f"{result['max']:.2f}",
        str(result["episodes"]),
        f"{result['mean_minus_std']:.2f}",
    ]
    human = result.get("human_normalized")
    if human:
        table.add_column("human-normalized", justify="right")
        row.append(f"{100 * human['mean']:.1f}%")
    table.add_row(*row)
    console.print(table)
    protocol = result["protocol"]
    facts = [f"ε={protocol['epsilon']}", f"seed={protocol['seed']}", "full games, unclipped score"]
    if protocol.get("noop_max") is not None:
        facts += [f"≤{protocol['noop_max']} no-op starts", f"cap {protocol['max_frames_per_episode']:,} frames"]
        facts.append(f"sticky actions {protocol['sticky_actions']}")
    console.print("protocol: " + ", ".join(facts))
    if human:
        console.print(f"human-normalized from random {human['random']} / human {human['human']} ({human['source']})")
    console.print(f"loading: {result['loaded']}; saved to {result['saved_to']}")


def tune_summary(result: Any, console: Console | None = None) -> None:
    """The best trials, the trial counts and where the study's files are."""
    console = console or Console(width=None if Console().is_terminal else 120)
    if result.interrupted:
        console.print(
            "[bold]interrupted[/bold]: the study keeps every finished trial; run the same command to continue"
        )
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.counts.items())) or "no trials"
    console.print(f"trials: {counts}")
    if result.last_error:
        console.print(f"latest trial error: {result.last_error} (every error is in trials.csv)")
    if result.top:
        table = Table(title="best trials", title_justify="left")
        table.add_column("trial", justify="right")
        table.add_column("mean return", justify="right")
        table.add_column("parameters")
        for row in result.top:
            params = ", ".join(f"{k}={v}" for k, v in row["params"].items())
            table.add_row(str(row["number"]), f"{row['value']:.2f}", params)
        console.print(table)
    for path in result.files:
        console.print(str(path))

"""Showing training progress: a live rich bar on a terminal, or plain log lines (`--no-progress`, pipes, CI)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def describe(stats: dict[str, Any]) -> str:
    """One line: `step 12,000/50,000 (24%) | 450 steps/s | ETA 1m24s | ε 0.31 | return 35.2 | eval 120.0 ± 3.0`."""
    parts = [
        f"step {stats['step']:,}/{stats['total']:,} ({min(100 * stats['step'] / max(stats['total'], 1), 100):.0f}%)",
        f"{stats['steps_per_s']:,.0f} steps/s",
        f"ETA {_duration(stats['eta_s'])}",
        f"ε {stats['epsilon']:.2f}",
    ]
    if stats["ep_return"] is not None:
        parts.append(f"return {stats['ep_return']:.1f}")
    if stats["eval"] is not None:
        parts.append(f"eval {stats['eval'][0]:.1f} ± {stats['eval'][1]:.1f}")
    return " | ".join(parts)


@contextmanager
def reporter(live: bool, stream: TextIO | None = None) -> Iterator[tuple[Callable[[dict[str, Any]], None], float]]:
    """A `(report, seconds between reports)` pair; a rich progress bar when `live`, else plain lines."""
    out = stream or sys.stderr
    if not live:
        yield (lambda stats: print(describe(stats), file=out, flush=True)), 30.0
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(
        BarColumn(),
        TextColumn("{task.description}"),
        console=Console(file=out),
        transient=False,
    ) as progress:
        task = progress.add_task("starting", total=None)

        def report(stats: dict[str, Any]) -> None:
            progress.update(task, completed=stats["step"], total=stats["total"], description=describe(stats))

        yield report, 0.5

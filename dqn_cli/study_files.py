"""What a tuning study leaves behind: the best hyperparameters as a file `dqn train -c` accepts, a CSV of every
trial, and Optuna's optimization-history and parameter-importance plots."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dqn_cli import safe_yaml, search_space
from dqn_cli.checkpoint import atomic_write_text
from dqn_cli.config import validate

if TYPE_CHECKING:
    from dqn_cli.tune import TuneResult, TuneSpec


def _label_values(spec: TuneSpec, params: dict[str, Any]) -> dict[str, Any]:
    dims = {d.key: d for d in spec.dims}
    return {key: dims[key].value(value) if key in dims else value for key, value in params.items()}


def best_yaml(study: Any, spec: TuneSpec) -> str | None:
    """The base hyperparameters with the best trial's values, fully resolved, with a header saying where from."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return None
    best = max(done, key=lambda t: t.value)
    hp = validate(search_space.merge(spec.base, _label_values(spec, best.params)), "best trial")
    header = (
        f"# Best trial {best.number} of Optuna study '{spec.study_name}' on {spec.env_id}: mean evaluation return "
        f"{best.value:.2f}\n# after {spec.trial_timesteps:,} training steps ({spec.eval_episodes} episodes per "
        f"evaluation). Search space: {spec.source}.\n# Train with: dqn train --env {spec.env_id} -c best.yml\n"
    )
    return header + safe_yaml.dump(hp.model_dump(mode="json"))


def trials_csv(study: Any, spec: TuneSpec) -> str:
    keys = [d.key for d in spec.dims]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "state", "value", "duration_s", *keys, "retried_from", "error", "worker"])
    for t in study.trials:
        values = _label_values(spec, t.params)
        duration = t.duration.total_seconds() if t.duration else ""
        writer.writerow(
            [t.number, t.state.name, "" if t.value is None else t.value, duration,
             *[json.dumps(values[k]) if isinstance(values.get(k), list) else values.get(k, "") for k in keys],
             t.system_attrs.get("failed_trial", ""), t.user_attrs.get("error", ""), t.user_attrs.get("worker", "")]
        )  # fmt: skip
    return out.getvalue()


def plots(study: Any, folder: Path) -> list[Path]:
    """Optuna's matplotlib plots, as PNG files (importance needs two finished trials with varied parameters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    from dqn_cli.tune import quiet_optuna

    quiet_optuna()

    written = []
    for name, draw in (
        ("optimization_history", ovm.plot_optimization_history),
        ("param_importances", ovm.plot_param_importances),
    ):
        try:
            axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
        figure: Any = axes.figure
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def write(study: Any, spec: TuneSpec, interrupted: bool) -> TuneResult:
    from dqn_cli.tune import TuneResult

    folder = spec.study_dir
    files = []
    best = best_yaml(study, spec)
    best_file = None
    if best is not None:
        best_file = folder / "best.yml"
        atomic_write_text(best_file, best)
        files.append(best_file)
    atomic_write_text(folder / "trials.csv", trials_csv(study, spec))
    files.append(folder / "trials.csv")
    files += plots(study, folder)
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    ranked = sorted(
        (t for t in study.trials if t.value is not None and t.state.name == "COMPLETE"), key=lambda t: -t.value
    )
    top = [{"number": t.number, "value": t.value, "params": _label_values(spec, t.params)} for t in ranked[:5]]
    errors = [t.user_attrs["error"] for t in study.trials if "error" in t.user_attrs]
    return TuneResult(folder, best_file, files, interrupted, counts, top, errors[-1] if errors else None)

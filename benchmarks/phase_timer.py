"""Run a module as `python -m` would and time its phases from the inside; the timings go to a JSON file.

`python benchmarks/phase_timer.py OUT.json MODULE:FUNCTION -m RUN_MODULE ARGS...` records

- `rollouts`: the wall time, env step count and the process's CPU time (all its threads) at the start of every
  `collect_rollouts` of SB3's off-policy loop (dqn and rl_zoo3 both train in it), so the benchmark reads the
  warm-up and training rates, and how busy the cores were, between any two step counts of one run: each interval
  between two rollouts is one rollout and the gradient steps after it;
- `evaluations`: the seconds of every call of MODULE:FUNCTION, the tool's evaluation function;
- `evaluation_cpu`: the process's CPU seconds during each of those calls.

Differencing whole runs instead (a run to step W against one to step W + K) left each figure at the mercy of the
machine's drift between the runs: the evaluation figure moved from 0.83x to 2.00x between runs of the same code.
"""

from __future__ import annotations

import atexit
import importlib
import json
import runpy
import sys
import time
from pathlib import Path
from typing import Any


def time_calls(owner: Any, name: str, seconds: list[float], cpu: list[float]) -> None:
    """Replace `owner.name` by a wrapper that appends each call's seconds to `seconds` and the process's CPU seconds
    during the call to `cpu`."""
    timed = getattr(owner, name)

    def timing(*call_args: Any, **kwargs: Any) -> Any:
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            return timed(*call_args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)

    setattr(owner, name, timing)


def mark_rollouts(marks: list[tuple[float, int, float]]) -> None:
    """Record (time, env steps so far, process CPU time) as every rollout of SB3's off-policy loop starts."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    collect = OffPolicyAlgorithm.collect_rollouts

    def marking(self: Any, *call_args: Any, **kwargs: Any) -> Any:
        marks.append((time.perf_counter(), int(self.num_timesteps), time.process_time()))
        return collect(self, *call_args, **kwargs)

    OffPolicyAlgorithm.collect_rollouts = marking  # type: ignore[method-assign]


def main() -> None:
    out, target, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: phase_timer.py OUT.json MODULE:FUNCTION -m RUN_MODULE ARGS...")
    if module == "dqn_cli":  # what dqn's `main` sets before torch loads; importing the timed function loads it
        from dqn_cli.threads import configure_openmp

        configure_openmp()
    where, name = target.split(":")
    evaluations: list[float] = []
    evaluation_cpu: list[float] = []
    rollouts: list[tuple[float, int, float]] = []
    time_calls(importlib.import_module(where), name, evaluations, evaluation_cpu)
    mark_rollouts(rollouts)
    timings = {"rollouts": rollouts, "evaluations": evaluations, "evaluation_cpu": evaluation_cpu}
    atexit.register(lambda: Path(out).write_text(json.dumps(timings)))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

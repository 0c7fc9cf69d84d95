"""Run a module as `python -m` would and time its phases from the inside; the timings go to a JSON file.

`python benchmarks/phase_timer.py OUT.json MODULE:FUNCTION -m RUN_MODULE ARGS...` records

- `rollouts`: the wall time, env step count, the process's CPU time (all its threads) and the machine's stolen CPU
  seconds (below) at the start of every `collect_rollouts` of SB3's off-policy loop (dqn and rl_zoo3 both train in
  it), so the benchmark reads the warm-up and training rates, how busy the cores were, and how much of them the
  host took, between any two step counts of one run: each interval between two rollouts is one rollout and the
  gradient steps after it;
- `evaluations`: the seconds of every call of MODULE:FUNCTION, the tool's evaluation function;
- `evaluation_cpu`: the process's CPU seconds during each of those calls;
- `evaluation_stolen`: the machine's stolen CPU seconds during each of those calls.

Stolen time is Linux's `steal` in /proc/stat: on a virtual machine, the time its virtual CPUs wanted to run while the
hypervisor ran something else. On the shared 2-core VM of the eleventh session it took up to 44% of the cores in a
5-second window of warm-up: a busy neighbour slows both tools, and dqn, which keeps both cores busy, more than
rl_zoo3, which keeps one. Elsewhere it reads 0.

Differencing whole runs instead (a run to step W against one to step W + K) left each figure at the mercy of the
machine's drift between the runs: the evaluation figure moved from 0.83x to 2.00x between runs of the same code.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any


class Steal:
    """The machine's stolen CPU seconds since boot, all CPUs together (the `steal` field of /proc/stat's first line;
    0 where there is no such file or field). The file stays open and is read again from its start at each call."""

    def __init__(self) -> None:
        self.ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        try:
            self.fd: int | None = os.open("/proc/stat", os.O_RDONLY)
        except OSError:
            self.fd = None

    def __call__(self) -> float:
        if self.fd is None:
            return 0.0
        fields = os.pread(self.fd, 256, 0).split(b"\n", 1)[0].split()
        return int(fields[8]) / self.ticks_per_second if len(fields) > 8 else 0.0


def time_calls(owner: Any, name: str, seconds: list[float], cpu: list[float], stolen: list[float]) -> None:
    """Replace `owner.name` by a wrapper that appends each call's seconds to `seconds`, the process's CPU seconds
    during the call to `cpu` and the machine's stolen CPU seconds during the call to `stolen`."""
    timed = getattr(owner, name)
    steal = Steal()

    def timing(*call_args: Any, **kwargs: Any) -> Any:
        start, start_cpu, start_steal = time.perf_counter(), time.process_time(), steal()
        try:
            return timed(*call_args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            stolen.append(steal() - start_steal)

    setattr(owner, name, timing)


def mark_rollouts(marks: list[tuple[float, int, float, float]]) -> None:
    """Record (time, env steps so far, process CPU time, machine's stolen CPU time) as every rollout of SB3's
    off-policy loop starts."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    collect = OffPolicyAlgorithm.collect_rollouts
    steal = Steal()

    def marking(self: Any, *call_args: Any, **kwargs: Any) -> Any:
        marks.append((time.perf_counter(), int(self.num_timesteps), time.process_time(), steal()))
        return collect(self, *call_args, **kwargs)

    OffPolicyAlgorithm.collect_rollouts = marking  # type: ignore[method-assign]


def main() -> None:
    out, target, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: phase_timer.py OUT.json MODULE:FUNCTION -m RUN_MODULE ARGS...")
    if module == "dqn_cli":  # what dqn's `main` sets before torch loads; importing the timed function loads it
        from dqn_cli import mkl
        from dqn_cli.threads import configure_openmp

        configure_openmp()
        mkl.enable()
    where, name = target.split(":")
    evaluations: list[float] = []
    evaluation_cpu: list[float] = []
    evaluation_stolen: list[float] = []
    rollouts: list[tuple[float, int, float, float]] = []
    time_calls(importlib.import_module(where), name, evaluations, evaluation_cpu, evaluation_stolen)
    mark_rollouts(rollouts)
    timings = {"rollouts": rollouts, "evaluations": evaluations, "evaluation_cpu": evaluation_cpu,
               "evaluation_stolen": evaluation_stolen}  # fmt: skip
    atexit.register(lambda: Path(out).write_text(json.dumps(timings)))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

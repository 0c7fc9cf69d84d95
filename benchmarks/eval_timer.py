"""Run a module as `python -m` would, timing every call of one function in it; the seconds go to a JSON file.

The benchmark times each tool's evaluations from the inside with this: `python benchmarks/eval_timer.py OUT.json
MODULE:FUNCTION -m RUN_MODULE ARGS...`. Differencing whole runs around a few seconds of evaluation left that figure
at the mercy of the machine's drift (0.83x to 2.00x between runs of the same code).
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


def main() -> None:
    out, target, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: eval_timer.py OUT.json MODULE:FUNCTION -m RUN_MODULE ARGS...")
    if module == "dqn_cli":  # what dqn's `main` sets before torch loads; importing the timed function loads it
        from dqn_cli.threads import configure_openmp

        configure_openmp()
    where, name = target.split(":")
    owner = importlib.import_module(where)
    timed = getattr(owner, name)
    seconds: list[float] = []

    def timing(*call_args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return timed(*call_args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(owner, name, timing)
    atexit.register(lambda: Path(out).write_text(json.dumps(seconds)))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

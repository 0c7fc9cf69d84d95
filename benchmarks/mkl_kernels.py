"""Benchmark: the Nature CNN's 3136x512 layer's matrix products with MKL's kernels chosen by the CPU's vendor (its
generic ones on AMD) and by its features (`dqn_cli.mkl`: AVX2 or AVX-512), in alternating pairs of processes.

Each process loads torch after `mkl.enable()` (or with `DQN_MKL_BY_FEATURES=0`), as `dqn` does, and times each product
on all the cores (median of `--calls` calls after a warm-up): the forward pass of a batch of 32, the two products of
its backward pass (the gradient of the input and of the weight), and an action's forward pass for 8 games. Prints
each pair's milliseconds and what `mkl.enable()` said. On an Intel CPU, or an AMD one without AVX2, both sides run
the same kernels. Usage: `python benchmarks/mkl_kernels.py [--pairs 3] [--calls 300]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from cli_args import positive

CHILD = """
import json, statistics, sys, time
from dqn_cli import mkl
from dqn_cli.threads import configure_openmp
configure_openmp()
said = mkl.enable()
import torch
generator = torch.Generator().manual_seed(0)
shapes = {"forward, batch 32": (32, 3136, 512), "gradient of the input": (32, 512, 3136),
          "gradient of the weight": (512, 32, 3136), "action, batch 8": (8, 3136, 512)}
times = {}
for name, (m, k, n) in shapes.items():
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    calls = []
    for i in range(int(sys.argv[1]) + 30):
        start = time.perf_counter()
        a @ b
        if i >= 30:
            calls.append(time.perf_counter() - start)
    times[name] = statistics.median(calls) * 1000
print(json.dumps({"said": said, "ms": times}))
"""


def measure(by_features: bool, calls: int) -> dict[str, Any]:
    env = {**os.environ, "DQN_MKL_BY_FEATURES": "1" if by_features else "0"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(calls)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=positive, default=3, help="alternating pairs of processes")
    parser.add_argument("--calls", type=positive, default=300, help="timed calls of each product per process")
    args = parser.parse_args()
    pairs = [(measure(False, args.calls), measure(True, args.calls)) for _ in range(args.pairs)]
    print(f"by vendor: {pairs[0][0]['said']}\nby features: {pairs[0][1]['said']}")
    print(f"{'ms (by vendor / by features)':30}" + "".join(f"{'pair ' + str(i + 1):>18}" for i in range(args.pairs)))
    for name in pairs[0][0]["ms"]:
        cells = [f"{vendor['ms'][name]:.2f} / {features['ms'][name]:.2f}" for vendor, features in pairs]
        print(f"{name:30}" + "".join(f"{cell:>18}" for cell in cells))


if __name__ == "__main__":
    main()

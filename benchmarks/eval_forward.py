"""Benchmark: an evaluation's forward pass (greedy actions for a batch of games), on the Q-network as torch runs it
and on the `PackedQNetwork` that `play` builds for each evaluation (oneDNN kernels, weights reordered once).

A Nature-CNN DQN on `--env`'s native env; random images; for each batch size, `--calls` calls of each kind,
alternating, after a warm-up. Prints the median milliseconds per call and the ratio as JSON, with the torch threads
dqn uses (all the cores) and dqn's OpenMP spin.
Usage: `python benchmarks/eval_forward.py [--env SpaceInvaders] [--calls 300] [--batch 1 4 8]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
from cli_args import positive
from emulator_ceiling import atari_rom


def median_ms(calls: list[float]) -> float:
    return round(statistics.median(calls) * 1000, 3)


def timed_calls(kinds: dict[str, Any], obs: np.ndarray, calls: int) -> dict[str, float]:
    """Median ms per call of each kind, the kinds called in turn."""
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for round_ in range(calls + 20):
        for name, choose in kinds.items():
            start = time.perf_counter()
            choose(obs)
            if round_ >= 20:  # the first calls warm caches and allocators
                times[name].append(time.perf_counter() - start)
    return {name: median_ms(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SpaceInvaders")
    parser.add_argument("--calls", type=positive, default=300)
    parser.add_argument("--batch", type=positive, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    atari_rom(args.env, parser)  # a usage error for a game that is not an Atari game
    from dqn_cli.threads import configure_openmp

    configure_openmp()  # torch's OpenMP settings as in dqn's commands, before torch loads
    import torch

    from dqn_cli import agent, envs, hyperparams
    from dqn_cli.policies import greedy_actions, packed_q_network

    info = envs.resolve(args.env)
    hp, _ = hyperparams.resolve(info, None, ["buffer_size=100", "learning_starts=10"])
    model = agent.build(hp, envs.make_vec_env(info, hp, seed=0, n_envs=1), seed=0, device="cpu", tensorboard_log=None)
    rows = []
    for batch in args.batch:
        packed = packed_q_network(model.policy, batch)
        obs = np.random.default_rng(batch).integers(0, 256, (batch, *model.observation_space.shape), dtype=np.uint8)
        kinds = {
            "q_network": lambda o: greedy_actions(model.policy, o),
            "packed": lambda o, p=packed: greedy_actions(model.policy, o, p),
        }
        ms = timed_calls(kinds, obs, args.calls)
        rows.append({"batch": batch, "ms_q_network": ms["q_network"], "ms_packed": ms["packed"],
                     "ratio": round(ms["q_network"] / ms["packed"], 2)})  # fmt: skip
    print(json.dumps({"env": args.env, "torch_threads": torch.get_num_threads(), "calls": args.calls, "rows": rows}))


if __name__ == "__main__":
    main()

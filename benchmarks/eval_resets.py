"""Benchmark: the seconds an evaluation waits for its seeded resets, started when it begins or ahead of it.

Every evaluation plays from the same seeds (PRODUCT.md, the evaluation protocol), and a seeded reset makes ALE reload
the ROM. dqn's native Atari env starts those resets ahead of time (`AleVecEnv.prepare_reset`: beside warm-up for the
first evaluation, beside the games still playing for each next one), so the evaluation finds its games ready. This
times `seed(s)` then `reset()` of `--n-envs` games both ways, alternating, and prints the medians as JSON.
Usage: `python benchmarks/eval_resets.py [--env SpaceInvaders] [--n-envs 8] [--repeat 5]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from cli_args import positive
from emulator_ceiling import atari_rom

from dqn_cli.ale_vec import AleVecEnv, AtariSettings


def timed_reset(env: AleVecEnv, seed: int) -> float:
    start = time.perf_counter()
    env.seed(seed)
    env.reset()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SpaceInvaders")
    parser.add_argument("--n-envs", type=positive, default=8)
    parser.add_argument("--repeat", type=positive, default=5)
    args = parser.parse_args()
    rom = atari_rom(args.env, parser)
    settings = AtariSettings(game=rom, env_id=args.env, terminal_on_life_loss=False, clip_reward=False)
    env = AleVecEnv(settings, args.n_envs)
    at_start, prepared = [], []
    for _ in range(args.repeat):
        at_start.append(timed_reset(env, 0))
        env.prepare_reset(range(args.n_envs), 0)
        time.sleep(1.0)  # what comes between evaluations (training) while the side threads reset the games
        prepared.append(timed_reset(env, 0))
    env.close()
    print(json.dumps({
        "env": args.env, "n_envs": args.n_envs,
        "reset_at_start_s": statistics.median(at_start), "reset_prepared_s": statistics.median(prepared),
    }))  # fmt: skip


if __name__ == "__main__":
    main()

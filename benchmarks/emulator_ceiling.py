"""Benchmark: how fast this machine emulates the game at all, with no agent, no Python per game and no replay buffer.

ALE's own C++ vector env (`ale_py.vector_env.AtariVectorEnv`) steps `--n-envs` games together on one thread per
core, with the frame skip (4) and the max-pool over the last two frames that SB3's `AtariWrapper` does, random
actions, raw RGB frames out (no grayscale or resize, the cheapest output). Nothing a training tool does during
warm-up can be cheaper than this, so these steps/s bound any tool's warm-up rate on the machine. A second figure adds
SB3's WarpFrame (grayscale, 84x84 by pixel area) for every frame on the calling thread: the preprocessing that
observations equal to SB3's AtariWrapper, pixel for pixel, cannot skip (ALE's own grayscale and max-pool give other
pixels). A third figure is dqn's own env alone: its compiled Atari step (which makes no RGB screens, so it can be
faster than the first), with SB3's whole preprocessing and frame stack, steps announced ahead as in warm-up: the most
dqn's warm-up could reach. `benchmarks/train_speed.py` runs this in every round and prints all three as multiples of
rl_zoo3's warm-up.
Usage: `python benchmarks/emulator_ceiling.py [--env SpaceInvaders] [--n-envs 8] [--steps 16000]` (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from cli_args import positive

from dqn_cli.ale_vec import warp_frame


def emulator_rate(rom: str, n_envs: int, steps: int, preprocess: bool = False) -> float:
    """Env steps per second of `n_envs` games of ALE's ROM `rom` on ALE's threads, `steps` env steps in all; with
    `preprocess`, each frame also goes through SB3's WarpFrame (dqn's `warp_frame`) on this thread."""
    from ale_py.vector_env import AtariVectorEnv

    vector = AtariVectorEnv(
        rom, n_envs, num_threads=os.cpu_count() or 1, frameskip=4, maxpool=True,
        noop_max=0, use_fire_reset=False, grayscale=False, img_height=210, img_width=160, stack_num=1,
        reward_clipping=False,
    )  # fmt: skip
    n_actions = int(vector.single_action_space.n)  # type: ignore[attr-defined]
    actions = np.random.default_rng(0).integers(n_actions, size=(steps // n_envs + 1, n_envs))
    vector.reset(seed=0)
    for row in actions[:20]:  # threads started, caches warm
        vector.step(row)
    start = time.perf_counter()
    for row in actions[20:]:
        frames = vector.step(row)[0]
        if preprocess:
            for frame in frames[:, 0]:
                warp_frame(frame, 84)
    seconds = time.perf_counter() - start
    vector.close()
    return (len(actions) - 20) * n_envs / seconds


def compiled_rate(rom: str, n_envs: int, steps: int) -> float | None:
    """Env steps per second of dqn's env alone on its compiled step (`dqn_cli.native`): the frame skip, SB3's max-pool
    and WarpFrame on the worker threads, SB3's wrapper bookkeeping and the frame stack in Python, each step's random
    actions announced one step ahead as in warm-up; no agent, no replay buffer. None where the step is unavailable."""
    from dqn_cli import native
    from dqn_cli.ale_vec import AleVecEnv, AtariSettings

    if native.library() is None:
        return None
    env = AleVecEnv(AtariSettings(rom, rom), n_envs, compiled=True)
    env.seed(0)
    env.reset()
    actions = np.random.default_rng(0).integers(env.action_space.n, size=(steps // n_envs + 1, n_envs))  # type: ignore[attr-defined]
    for row in actions[:20]:  # threads started, caches warm
        env.step(row)
    start = time.perf_counter()
    for t in range(20, len(actions)):
        if t + 1 < len(actions):
            env.queue_next(actions[t + 1])
        env.step(actions[t])
    seconds = time.perf_counter() - start
    env.close()
    return (len(actions) - 20) * n_envs / seconds


def atari_rom(env: str, parser: argparse.ArgumentParser) -> str:
    """ALE's ROM name for `--env`, or a one-line usage error for a name that is not an Atari game."""
    from dqn_cli import envs
    from dqn_cli.errors import DqnError

    try:
        info = envs.resolve(env)
    except DqnError as error:
        parser.error(str(error))
    if not info.is_atari:
        parser.error(f"--env {env}: expected an Atari game (SpaceInvaders, Pong, ...), found {info.env_id}")
    return envs.rom_name(info)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SpaceInvaders")
    parser.add_argument("--n-envs", type=positive, default=8)
    parser.add_argument("--steps", type=positive, default=16_000, help="env steps timed (over all games)")
    args = parser.parse_args()
    rom = atari_rom(args.env, parser)
    steps = max(args.steps, 21 * args.n_envs)
    rates = {
        "steps_per_s": emulator_rate(rom, args.n_envs, steps),
        "with_preprocessing_steps_per_s": emulator_rate(rom, args.n_envs, steps, preprocess=True),
        "compiled_steps_per_s": compiled_rate(rom, args.n_envs, steps),
    }
    print(json.dumps({"env": args.env, "n_envs": args.n_envs, "threads": os.cpu_count(), **rates}))


if __name__ == "__main__":
    main()

"""Benchmark: one DQN gradient step, dqn's against SB3's (what rl_zoo3 runs), alternated in one process.

Both agents fill their replay buffers with the same number of random SpaceInvaders steps, then take gradient steps
in turns (`train(gradient_steps=1)`: sampling a batch of 32, target and online forward passes, backward pass,
clipping, Adam), so that the machine's drift hits both alike; the script prints each one's median and quartiles
and the ratio. SB3's side is `stable_baselines3.DQN` as rl_zoo3 builds it (its `CnnPolicy`, Adam, SB3's
`ReplayBuffer`); dqn's is `dqn_cli.agent.build` (fused Adam, channels-last convolutions and batches, the compact
buffer, the lighter clipping). Both run rl_zoo3's Atari hyperparameters on the same torch threads.
Usage: `python benchmarks/step_speed.py [--steps 150] [--fill 2000]`.
"""

from __future__ import annotations

import argparse
import time

from cli_args import positive

from dqn_cli import mkl
from dqn_cli.threads import configure_openmp


def filled_agents(fill: int) -> dict[str, object]:
    from stable_baselines3 import DQN

    from dqn_cli import agent, envs, hyperparams

    info = envs.resolve("SpaceInvaders")
    settings = [f"buffer_size={fill * 2}", f"learning_starts={fill * 10}"]
    hp, _ = hyperparams.resolve(info, None, settings)
    ours = agent.build(hp, envs.make_vec_env(info, hp, seed=0, n_envs=1), seed=0, device="cpu", tensorboard_log=None)
    sb3_env = envs.make_vec_env(info, hp, seed=0, n_envs=1, vec_env="sb3")
    same = {key: getattr(hp, key) for key in agent.SB3_KEYS}  # the hyperparameters dqn hands to SB3 itself
    sb3 = DQN("CnnPolicy", sb3_env, learning_rate=hp.learning_rate, seed=0, device="cpu", **same)
    for model in (sb3, ours):
        model.learn(fill)  # random actions only: learning_starts is not reached
    return {"SB3 (rl_zoo3)": sb3, "dqn": ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive, default=150, help="gradient steps timed for each agent")
    parser.add_argument("--fill", type=positive, default=2000, help="random env steps stored before timing")
    args = parser.parse_args()
    configure_openmp()  # what `dqn` sets before torch loads; it applies to both agents here
    print(mkl.enable())  # likewise (MKL's AVX2/AVX-512 kernels on AMD CPUs too): both agents' linear layers

    import numpy as np
    import torch

    agents = filled_agents(args.fill)
    seconds: dict[str, list[float]] = {name: [] for name in agents}
    for step in range(args.steps + 10):  # the first 10 rounds warm up caches and oneDNN's kernels
        for name, model in agents.items():
            start = time.perf_counter()
            model.train(gradient_steps=1, batch_size=32)  # type: ignore[attr-defined]
            if step >= 10:
                seconds[name].append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} alternating gradient steps each")
    for name, times in seconds.items():
        low, mid, high = np.percentile(np.array(times) * 1e3, [25, 50, 75])
        print(f"{name:14} median {mid:6.2f} ms   quartiles {low:.2f}-{high:.2f}")
    sb3, ours = (float(np.median(times)) for times in seconds.values())
    print(f"dqn's gradient step is {sb3 / ours:.2f}x as fast as SB3's")


if __name__ == "__main__":
    main()

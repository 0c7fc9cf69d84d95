"""Benchmark: `dqn train` against `python -m rl_zoo3.train`, same game, hyperparameters and step budget.

Every figure comes from whole-process runs on this machine, one tool at a time (never side by side, so they do not
compete for cores). Each round runs each tool once for W + K env steps with learning_starts = W and one evaluation at
the end, under benchmarks/phase_timer.py, which times the phases from the inside:

    warm-up    (learning_starts not reached: env steps, random actions, replay-buffer adds)
               = env steps / seconds between the rollouts at W/10 and W steps
    training   (one gradient step every train_freq env steps, ε-greedy actions)
               = env steps / seconds between the rollouts at W and W + K steps (each rollout with its gradient steps)
    evaluation (full games, the eval env of each tool)
               = agent steps played in it (from evaluations.npz)
                 / seconds spent in the tool's evaluation function (dqn's `play`, SB3's `evaluate_policy`)

and prints steps/s for each tool, the ratio dqn / rl_zoo3, each run's peak memory (max RSS) and whole wall time
(start-up and saving included), each phase's CPU time per env step (all of the process's threads) with the cores
each tool kept busy and the cores the host took meanwhile (a virtual machine's stolen time: on a shared VM a busy
neighbour slows the tool that keeps both cores busy more than the one that keeps one), and the replay buffers' bytes
per transition. Each round also runs
benchmarks/emulator_ceiling.py (the game on ALE's C++ threads with no agent at all, then followed by SB3's WarpFrame
on every frame, which observations equal to SB3's pixel for pixel need) and prints both as multiples of rl_zoo3's
warm-up: no tool's warm-up can beat the first here. dqn starts its first evaluation's seeded resets (ALE reloads the
ROM: ~0.4 s for 8 games) beside warm-up, so they fall outside the evaluation's timing; the whole run's time counts
them.
The machine's speed drifts (each round's ratio is printed), so each figure is the median of `--repeat` rounds, the
tools alternating within each round so that drift hits both alike. Earlier versions differenced whole runs (a W-step
run against a W + K-step one), which added start-up and shut-down noise to the drift.
Both tools run the game's rl_zoo3 hyperparameters; dqn steps `--n-envs` games side by side (default 8) with the
same replay ratio, so both take the same number of gradient steps for the same env steps.
Usage: `python benchmarks/train_speed.py [--env SpaceInvaders] [--train-steps 4000] [--n-envs 8] [--repeat 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_args import positive

ZOO_ENV = {
    "SpaceInvaders": "SpaceInvadersNoFrameskip-v4",
    "Pong": "PongNoFrameskip-v4",
    "Breakout": "BreakoutNoFrameskip-v4",
}


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one command, run alone; its peak is read by a fresh wrapper process."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter(); r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
        "dt = time.perf_counter() - t\n"
        "if r.returncode: sys.stderr.write(r.stderr.decode()[-3000:]); sys.exit(r.returncode)\n"
        "print(json.dumps([dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))\n"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"benchmark run failed: {' '.join(cmd)}\n{done.stderr}")
    seconds, peak = json.loads(done.stdout)
    return seconds, peak


EVAL_FUNCTION = {
    "dqn_cli": "dqn_cli.callbacks:play",
    "rl_zoo3.train": "stable_baselines3.common.callbacks:evaluate_policy",
}


def phase_timed(cmd: list[str], out: Path) -> list[str]:
    """`cmd` (`python -m MODULE ...`) run under benchmarks/phase_timer.py, which writes its phases' timings."""
    module = cmd[2]
    timer = Path(__file__).with_name("phase_timer.py")
    return [cmd[0], str(timer), str(out), EVAL_FUNCTION[module], "-m", module, *cmd[3:]]


def phase(rollouts: list[list[float]], low: int, high: int) -> tuple[float, float, float]:
    """(env steps per second, the process's CPU seconds per env step, cores the host took) between the first and the
    last rollout that starts within [low, high] steps."""
    inside = [mark for mark in rollouts if low <= mark[1] <= high]
    if len(inside) < 2:
        raise SystemExit(f"benchmark: fewer than 2 rollouts between {low} and {high} steps; raise --warmup-steps or "
                         "--train-steps to a few times --n-envs")  # fmt: skip
    (t0, s0, c0, st0), (t1, s1, c1, st1) = inside[0], inside[-1]
    seconds = max(t1 - t0, 1e-9)
    return (s1 - s0) / seconds, (c1 - c0) / max(s1 - s0, 1), (st1 - st0) / seconds


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else the architecture: the figures depend on it, and this
    project's sessions have run on more than one kind of 2-core machine."""
    from dqn_cli import native

    model = native.cpu_field("model name")
    return f"{model} ({platform.machine()})" if model else platform.processor() or platform.machine()


def dqn_cmd(env: str, steps: int, starts: int, buffer: int, eval_episodes: int, n_envs: int = 1) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "dqn_cli",
        "train",
        "--env",
        env,
        "-n",
        str(steps),
        "--seed",
        "0",
        "--no-progress",
        "--no-tensorboard",
        "--save-freq",
        "0",
        "--set",
        f"learning_starts={starts}",
        "--set",
        f"buffer_size={buffer}",
        "--set",
        f"n_envs={n_envs}",
    ]
    if eval_episodes:
        return [*cmd, "--eval-freq", str(steps), "--eval-episodes", str(eval_episodes)]
    return [*cmd, "--eval-freq", "0"]


def zoo_cmd(env: str, steps: int, starts: int, buffer: int, eval_episodes: int, n_envs: int = 1) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "rl_zoo3.train",
        "--algo",
        "dqn",
        "--env",
        ZOO_ENV.get(env, env),
        "-n",
        str(steps),
        "--seed",
        "0",
        "-f",
        "zoo_logs",
        "--hyperparams",
        f"learning_starts:{starts}",
        f"buffer_size:{buffer}",
    ]
    if eval_episodes:
        return [*cmd, "--eval-freq", str(steps), "--eval-episodes", str(eval_episodes), "--n-eval-envs", "1"]
    return [*cmd, "--eval-freq", "-1"]


def measure(tool: str, args: argparse.Namespace) -> dict[str, float]:
    make, n = (dqn_cmd, args.n_envs) if tool == "dqn" else (zoo_cmd, 1)
    w, k, buffer = args.warmup_steps, args.train_steps, args.buffer_size
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        phases = cwd / "phases.json"
        seconds, peak = timed(phase_timed(make(args.env, w + k, w, buffer, args.eval_episodes, n), phases), cwd)
        timings = json.loads(phases.read_text())
        playing = sum(timings["evaluations"])
        eval_steps = evaluation_steps(cwd, frames_per_step=4 if tool == "rl_zoo3" else 1)
    warmup, warmup_cpu, warmup_stolen = phase(timings["rollouts"], w // 10, w)
    training, training_cpu, training_stolen = phase(timings["rollouts"], w, w + k)
    return {
        "warmup_steps_per_s": warmup,
        "train_steps_per_s": training,
        "eval_steps_per_s": eval_steps / max(playing, 1e-9),
        "eval_seconds_per_episode": playing / args.eval_episodes,
        "peak_rss_mb": peak,
        "whole_run_seconds": seconds,
        "warmup_cpu_ms_per_step": 1000 * warmup_cpu,
        "train_cpu_ms_per_step": 1000 * training_cpu,
        "eval_cpu_ms_per_step": 1000 * sum(timings["evaluation_cpu"]) / max(eval_steps, 1),
        "warmup_stolen_cores": warmup_stolen,
        "train_stolen_cores": training_stolen,
        "eval_stolen_cores": sum(timings["evaluation_stolen"]) / max(playing, 1e-9),
    }


def evaluation_steps(cwd: Path, frames_per_step: int) -> float:
    """Agent steps played in the last run's evaluation, from its evaluations.npz. Untrained agents of the two tools
    play games of different lengths, so evaluation speed is compared per step, not per episode. rl_zoo3 records
    Monitor's lengths in emulator frames (4 per step, plus at most 30 no-op frames per game: under 1%)."""
    import numpy as np

    newest = max(cwd.rglob("evaluations.npz"), key=lambda p: p.stat().st_mtime)
    with np.load(newest) as data:
        return float(data["ep_lengths"][-1].sum()) / frames_per_step


def emulator_alone(args: argparse.Namespace) -> dict[str, float]:
    """benchmarks/emulator_ceiling.py in a fresh process: the game emulated on ALE's threads, nothing else (and with
    SB3's frame preprocessing)."""
    script = Path(__file__).with_name("emulator_ceiling.py")
    cmd = [sys.executable, str(script), "--env", args.env, "--n-envs", str(args.n_envs)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"benchmark run failed: {' '.join(cmd)}\n{done.stderr}")
    figures = json.loads(done.stdout)
    return {key: float(figures[key]) for key in CEILINGS if figures.get(key) is not None}


CEILINGS = {
    "steps_per_s": "emulator alone",
    "with_preprocessing_steps_per_s": "then WarpFrame",  # SB3's grayscale + 84x84 resize of every frame, serially
    "compiled_steps_per_s": "dqn's env alone",  # its compiled step + SB3's bookkeeping and frame stack, no agent
}


def print_ceilings(rounds: dict[str, list[dict[str, float]]], emulator: list[dict[str, float]]) -> None:
    """The emulator alone (then followed by SB3's frame preprocessing), and dqn's env alone on its compiled step, as
    multiples of rl_zoo3's warm-up, by round: the most a tool's warm-up on ALE's vector env, and dqn's, could reach
    on this machine."""
    zoo = [r["warmup_steps_per_s"] for r in rounds["rl_zoo3"]]
    for key, label in CEILINGS.items():
        if not all(key in e for e in emulator):
            continue  # dqn's compiled step unavailable here
        rates = [e[key] for e in emulator]
        ratios = [rate / z for rate, z in zip(rates, zoo, strict=True)]
        median_rate, median_ratio = statistics.median(rates), statistics.median(ratios)  # as the tools' figures
        print(f"{label + ' steps/s':22}{'':12}{median_rate:12.1f}{median_ratio:17.2f}x  by round: "
              + " ".join(f"{r:.2f}x" for r in ratios))  # fmt: skip
    print(f"{'':22}(No agent. The first two: ALE's C++ vector env, raw RGB frames, then SB3's preprocessing of")
    print(f"{'':22} each frame after each step; the third: dqn's env on its compiled step, which bounds its warm-up)")


PHASES = [
    ("warm-up", "warmup_steps_per_s", "warmup_cpu_ms_per_step", "warmup_stolen_cores"),
    ("training", "train_steps_per_s", "train_cpu_ms_per_step", "train_stolen_cores"),
    ("eval", "eval_steps_per_s", "eval_cpu_ms_per_step", "eval_stolen_cores"),
]


def print_cpu(rounds: dict[str, list[dict[str, float]]]) -> None:
    """Each phase's CPU time per env step (the process's, all threads) and how many cores each tool kept busy, from
    the same runs; then what dqn's rate would be with every core busy at its CPU time per step, as a multiple of
    rl_zoo3's measured rate: a ratio a phase cannot beat on this machine without spending less CPU time per step
    (medians over rounds; threads that spin while they wait count as busy). Last, the cores the host took from this
    virtual machine meanwhile (stolen time, `phase_timer.Steal`): cores neither tool had."""
    cores = len(os.sched_getaffinity(0))
    print(f"{'CPU ms per env step':22}{'rl_zoo3':>12}{'dqn':>12}{'less CPU/step':>18}  cores busy (of {cores}): "
          "rl_zoo3, dqn; dqn with every core busy; cores the host took: rl_zoo3, dqn")  # fmt: skip
    pairs = list(zip(rounds["rl_zoo3"], rounds["dqn"], strict=True))
    for label, rate_key, cpu_key, stolen_key in PHASES:
        zoo_cpu = statistics.median(zoo[cpu_key] for zoo, _ in pairs)
        ours_cpu = statistics.median(ours[cpu_key] for _, ours in pairs)
        zoo_busy = statistics.median(zoo[rate_key] * zoo[cpu_key] / 1000 for zoo, _ in pairs)
        ours_busy = statistics.median(ours[rate_key] * ours[cpu_key] / 1000 for _, ours in pairs)
        full = statistics.median(cores * 1000 / ours[cpu_key] / zoo[rate_key] for zoo, ours in pairs)
        zoo_stolen = statistics.median(zoo[stolen_key] for zoo, _ in pairs)
        ours_stolen = statistics.median(ours[stolen_key] for _, ours in pairs)
        print(f"{label:22}{zoo_cpu:12.3f}{ours_cpu:12.3f}{zoo_cpu / ours_cpu:17.2f}x  {zoo_busy:.2f}, {ours_busy:.2f};"
              f" {full:.2f}x; {zoo_stolen:.2f}, {ours_stolen:.2f}")  # fmt: skip


def buffer_bytes() -> dict[str, float]:
    import numpy as np
    from gymnasium import spaces
    from stable_baselines3.common.buffers import ReplayBuffer

    from dqn_cli.buffers import CompactReplayBuffer

    obs, actions, n = spaces.Box(0, 255, (4, 84, 84), np.uint8), spaces.Discrete(6), 10_000
    sb3 = ReplayBuffer(n, obs, actions, device="cpu")
    sb3_bytes = sum(
        a.nbytes for a in (sb3.observations, sb3.next_observations, sb3.actions, sb3.rewards, sb3.dones, sb3.timeouts)
    )
    return {"sb3": sb3_bytes / n, "dqn": CompactReplayBuffer(n, obs, actions, device="cpu").nbytes / n}


def print_round_ratios(rounds: dict[str, list[dict[str, float]]], rows: list[tuple[str, str, bool]]) -> None:
    """Each round's dqn / rl_zoo3 ratio: how far this machine's drift moves the figures between rounds."""
    for label, key, _ in rows:
        ratios = [ours[key] / zoo[key] for zoo, ours in zip(rounds["rl_zoo3"], rounds["dqn"], strict=True)]
        print(f"{label + ' by round':40}" + " ".join(f"{r:.2f}x" for r in ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SpaceInvaders")
    parser.add_argument("--warmup-steps", type=positive, default=20_000, help="more steps, less start-up noise")
    parser.add_argument("--train-steps", type=positive, default=4_000, help="env steps with gradient steps (1 per 4)")
    parser.add_argument("--eval-episodes", type=positive, default=4)
    parser.add_argument("--buffer-size", type=positive, default=20_000)
    parser.add_argument(
        "--n-envs",
        type=positive,
        default=8,
        help="dqn's games stepped side by side on ALE's threads; the replay ratio (one gradient step per "
        "train_freq env steps in total) and so the number of gradient steps stay rl_zoo3's",
    )
    parser.add_argument("--repeat", type=positive, default=3, help="rounds; each figure is the median")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    import numpy as np
    import torch

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"python {platform.python_version()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; "
        f"rl_zoo3: 1 env (its Atari setting), dqn: n_envs={args.n_envs}"
    )
    from dqn_cli import native

    print(f"dqn's Atari step: {native.native_status().reason}")
    rounds: dict[str, list[dict[str, float]]] = {"rl_zoo3": [], "dqn": []}
    emulator: list[dict[str, float]] = []
    for _ in range(args.repeat):
        for tool in rounds:
            rounds[tool].append(measure(tool, args))
        emulator.append(emulator_alone(args))
    figures = {
        tool: {key: float(np.median([r[key] for r in runs])) for key in runs[0]} for tool, runs in rounds.items()
    }
    rows = [
        ("warm-up steps/s", "warmup_steps_per_s", True),
        ("training steps/s", "train_steps_per_s", True),
        ("eval steps/s", "eval_steps_per_s", True),
        ("eval s/episode", "eval_seconds_per_episode", False),
        ("peak memory MB", "peak_rss_mb", False),
        ("whole run s", "whole_run_seconds", False),  # start-up, warm-up, training, evaluation, saving
    ]
    print(f"{'':22}{'rl_zoo3':>12}{'dqn':>12}{'dqn vs rl_zoo3':>18}")
    for label, key, higher_is_better in rows:
        zoo, ours = figures["rl_zoo3"][key], figures["dqn"][key]
        ratio = ours / zoo if higher_is_better else zoo / ours
        print(f"{label:22}{zoo:12.1f}{ours:12.1f}{ratio:17.2f}x")
    print_round_ratios(rounds, rows[:3])
    print_cpu(rounds)
    print_ceilings(rounds, emulator)
    per = buffer_bytes()
    print(f"{'replay bytes/transition':22}{per['sb3']:12,.0f}{per['dqn']:12,.0f}{per['sb3'] / per['dqn']:17.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "figures": figures,
                    "rounds": rounds,
                    "emulator_alone": emulator,
                    "buffer_bytes": per,
                    "args": vars(args) | {"json": str(args.json)},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

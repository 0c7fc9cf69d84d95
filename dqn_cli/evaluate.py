"""`dqn eval`: play full games under the evaluation protocol and report honest scores."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqn_cli import __version__, checkpoint, envs, loading, scores
from dqn_cli.heap import frozen_setup
from dqn_cli.play import Protocol, games_side_by_side, play
from dqn_cli.selection import Agent, PlayRequest, select

RESULT = "eval.json"


@dataclass(frozen=True)
class EvalRequest(PlayRequest):
    episodes: int = 10
    sticky: bool = False
    n_envs: int = 0  # 0: one game per episode, up to 8
    vec_env: str = "ale"


def protocol_for(agent: Agent, episodes: int, epsilon: float, seed: int, n_envs: int, sticky: bool) -> Protocol:
    """The protocol these settings amount to, with the Atari facts filled in from the env itself."""
    hp, info = agent.hyperparams, agent.env
    return Protocol(
        episodes=episodes,
        epsilon=epsilon,
        seed=seed,
        n_envs=n_envs,
        noop_max=envs.EVAL_NOOP_MAX if info.is_atari else None,
        max_frames_per_episode=envs.max_frames(info, hp) if info.is_atari else None,
        sticky_actions=envs.sticky_probability(info, hp, sticky) if info.is_atari else None,
        frame_skip=(envs.wrapper_frame_skip(info, hp) * max(info.native_frame_skip, 1)) if info.is_atari else None,
    )


def result_path(agent: Agent) -> Path:
    """Where the result is kept: `eval.json` in the run folder, else `<model>.eval.json` beside the file."""
    if agent.run_dir is not None:
        return agent.run_dir / RESULT
    return agent.model_path.with_suffix(".eval.json")


def evaluate(request: EvalRequest, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Play `request.episodes` full games and return (and save) the result with its protocol."""
    agent = select(request.query, say)
    n_envs = games_side_by_side(request.n_envs, request.episodes)
    protocol = protocol_for(agent, request.episodes, request.epsilon, request.seed, n_envs, request.sticky)
    env = envs.make_vec_env(
        agent.env, agent.hyperparams, seed=request.seed, n_envs=n_envs, evaluation=True, sticky=request.sticky,
        vec_env=request.vec_env,
    )  # fmt: skip
    try:
        policy, info = loading.load_policy(agent.model_path, env, trust=request.trust)
        started = time.monotonic()
        with frozen_setup():
            episodes = play(policy, env, request.episodes, epsilon=request.epsilon, seed=request.seed)
        seconds = time.monotonic() - started
    finally:
        env.close()
    result = {
        "env_id": agent.env.env_id,
        "model": str(agent.model_path),
        "origin": agent.origin,
        "num_timesteps": info.num_timesteps if info else None,
        "loaded": "trusted (SB3 full load)" if request.trust else "safe (no code from the file ran)",
        "protocol": protocol.as_dict(),
        **scores.summarize(episodes.returns, agent.env.game),
        "returns": episodes.returns.tolist(),
        "lengths": episodes.lengths.tolist(),
        "seconds": round(seconds, 2),
        "dqn_version": __version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = result_path(agent)
    checkpoint.atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    result["saved_to"] = str(path)
    return result

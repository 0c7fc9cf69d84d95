"""`dqn enjoy`: watch an agent play in a window, or record it to MP4 (and GIF) on headless machines."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dqn_cli import envs, loading
from dqn_cli.agent import StopRequest
from dqn_cli.play import EvaluationAborted, play
from dqn_cli.record import RecordFrames, VideoWriter
from dqn_cli.selection import Agent, PlayRequest, select

ATARI_FPS = 60  # emulator frames per second of game time


@dataclass(frozen=True)
class EnjoyRequest(PlayRequest):
    record: bool = False
    video_dir: Path | None = None
    video_length: int | None = None  # frames
    gif: bool = False


@dataclass(frozen=True)
class EnjoyResult:
    returns: list[float]
    video: Path | None
    gif: Path | None
    frames: int


def has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _fps(agent: Agent) -> float:
    if agent.env.is_atari:
        return ATARI_FPS / max(agent.env.native_frame_skip, 1)
    import gymnasium as gym

    return float(gym.spec(agent.env.env_id).kwargs.get("render_fps", 0) or 30)


def video_path(agent: Agent, request: EnjoyRequest) -> Path:
    folder = request.video_dir or (agent.run_dir or agent.model_path.parent) / "videos"
    stem = agent.env.name if agent.model_path.stem == agent.env.name else f"{agent.env.name}-{agent.model_path.stem}"
    return folder / f"{stem}-seed{request.seed}.mp4"


def enjoy(request: EnjoyRequest, say: Callable[[str], None]) -> EnjoyResult:
    """Play `request.episodes` episodes, showing them or recording them."""
    agent = select(request.query, say)
    record = request.record or not has_display()
    if record and not request.record:
        say("no display found: recording a video instead (pass --record to do so without this note)")
    writer = None
    if record:
        # pygame (classic-control rendering) initialises SDL's video and audio even to draw off-screen
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        path = video_path(agent, request)
        writer = VideoWriter(path, _fps(agent), request.video_length, path.with_suffix(".gif") if request.gif else None)
    env = envs.make_vec_env(
        agent.env, agent.hyperparams, seed=request.seed, n_envs=1, evaluation=True,
        render_mode="rgb_array" if record else "human",
        base_wrapper=(lambda e: RecordFrames(e, writer)) if writer is not None else None,
    )  # fmt: skip
    returns: list[float] = []
    stop = _FullVideoStop(writer)
    try:
        policy, _ = loading.load_policy(agent.model_path, env, trust=request.trust)

        def shown(index: int, score: float, length: int) -> None:
            returns.append(score)
            say(f"episode {index}: score {score:g} in {length} steps")

        try:
            play(policy, env, request.episodes, epsilon=request.epsilon, seed=request.seed, stop=stop, on_episode=shown)
        except EvaluationAborted:
            say(f"video full ({request.video_length} frames): stopped playing")
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        env.close()
    video, gif = writer.close() if writer is not None else (None, None)
    return EnjoyResult(returns, video, gif, writer.frames if writer is not None else 0)


class _FullVideoStop(StopRequest):
    """Ends play once the video holds `--video-length` frames."""

    def __init__(self, writer: VideoWriter | None) -> None:
        super().__init__()
        self.writer = writer

    @property
    def requested(self) -> bool:
        return self.writer is not None and self.writer.full

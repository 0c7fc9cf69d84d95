"""Writing what the agent sees to video: MP4 through the ffmpeg binary that imageio-ffmpeg ships, GIF through Pillow.

Frames are taken from the emulator itself, in full colour at the game's native resolution (210×160 for Atari),
every emulator frame (60 per second of game time), below the preprocessing the agent sees.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

GIF_EVERY = 4  # keep one frame in four: 15 fps for Atari
GIF_SCALE = 2  # half size
GIF_MAX_FRAMES = 600  # 40 s of Atari play: small enough for a README


class VideoWriter:
    """Streams RGB frames into an MP4 (and optionally a GIF), written under a temporary name then renamed."""

    def __init__(self, path: Path, fps: float, max_frames: int | None = None, gif: Path | None = None) -> None:
        self.path, self.fps, self.max_frames, self.gif = path, fps, max_frames, gif
        self.tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
        self.frames = 0
        self._writer: Any = None
        self._gif_frames: list[Any] = []

    @property
    def full(self) -> bool:
        return self.max_frames is not None and self.frames >= self.max_frames

    def add(self, frame: np.ndarray) -> None:
        if self.full:
            return
        if self._writer is None:
            self._start(frame.shape[1], frame.shape[0])
        self._writer.send(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        if self.gif is not None and self.frames % GIF_EVERY == 0 and len(self._gif_frames) < GIF_MAX_FRAMES:
            self._gif_frames.append(frame[::GIF_SCALE, ::GIF_SCALE].copy())
        self.frames += 1

    def _start(self, width: int, height: int) -> None:
        import imageio_ffmpeg

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = imageio_ffmpeg.write_frames(
            str(self.tmp), (width, height), fps=self.fps, codec="libx264", pix_fmt_out="yuv420p",
            macro_block_size=2, quality=7, ffmpeg_log_level="error",
        )  # fmt: skip
        self._writer.send(None)

    def close(self) -> tuple[Path | None, Path | None]:
        """Finish the files; returns (mp4, gif), None for what holds no frame."""
        if self._writer is None:
            return None, None
        self._writer.close()
        os.replace(self.tmp, self.path)
        gif = self._write_gif() if self.gif is not None and self._gif_frames else None
        return self.path, gif

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)

    def _write_gif(self) -> Path:
        from PIL import Image

        assert self.gif is not None
        images = [Image.fromarray(frame) for frame in self._gif_frames]
        tmp = self.gif.with_name(f".{self.gif.stem}.{os.getpid()}.tmp.gif")
        duration = round(1000 * GIF_EVERY / self.fps)
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=True)
        os.replace(tmp, self.gif)
        return self.gif


class RecordFrames(gym.Wrapper[Any, Any, Any, Any]):
    """Hands every rendered frame of the raw env (after reset and after each step) to a `VideoWriter`."""

    def __init__(self, env: gym.Env[Any, Any], writer: VideoWriter) -> None:
        super().__init__(env)
        self.writer = writer

    def reset(self, **kwargs: Any) -> Any:
        result = self.env.reset(**kwargs)
        self._capture()
        return result

    def step(self, action: Any) -> Any:
        result = self.env.step(action)
        self._capture()
        return result

    def _capture(self) -> None:
        frame = self.env.render()
        if isinstance(frame, np.ndarray):
            self.writer.add(frame)


def decode(path: Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (width, height)) of a video, by decoding every frame."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    count = sum(1 for _ in reader)
    return count, tuple(meta["size"])

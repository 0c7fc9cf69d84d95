"""What happens around the learning loop: evaluation, checkpoints and progress reporting (SB3 callbacks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from dqn_cli import checkpoint
from dqn_cli.agent import StopRequest
from dqn_cli.play import EvaluationAborted, play, prepare_resets
from dqn_cli.rundir import BEST_MODEL, EVALUATIONS


class _Every:
    """Fires when the step count passes each multiple of `period` (continues correctly after a resume)."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.next_at: int | None = None

    def due(self, num_timesteps: int) -> bool:
        if self.period <= 0:
            return False
        if self.next_at is None:
            self.next_at = (num_timesteps // self.period + 1) * self.period
        if num_timesteps < self.next_at:
            return False
        self.next_at = (num_timesteps // self.period + 1) * self.period
        return True


class EvalCallback(BaseCallback):
    """Evaluates every `eval_freq` env steps on a separate env that plays full games with the true score.

    Writes `evaluations.npz` (SB3's format: timesteps, results, ep_lengths) and `best_model.zip`, both atomically.
    Runs between training iterations, when the agent's state is consistent.
    """

    def __init__(
        self,
        eval_env: Any,
        run_dir: Path,
        *,
        eval_freq: int,
        episodes: int,
        epsilon: float,
        seed: int,
        stop: StopRequest,
    ) -> None:
        super().__init__()
        self.eval_env, self.run_dir, self.episodes, self.epsilon, self.seed, self.stop = (
            eval_env,
            run_dir,
            episodes,
            epsilon,
            seed,
            stop,
        )
        self.schedule = _Every(eval_freq)
        self.timesteps: list[int] = []
        self.results: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.last: tuple[float, float] | None = None

    def restore(self, up_to_step: int) -> None:
        """Continue the history in `evaluations.npz`, dropping evaluations newer than the resumed checkpoint."""
        path = self.run_dir / EVALUATIONS
        if not path.is_file():
            return
        with np.load(path) as data:
            keep = data["timesteps"] <= up_to_step
            self.timesteps = [int(t) for t in data["timesteps"][keep]]
            self.results = list(data["results"][keep])
            self.lengths = list(data["ep_lengths"][keep])
        if self.results:
            self.last = (float(np.mean(self.results[-1])), float(np.std(self.results[-1])))

    @property
    def another_evaluation_follows(self) -> bool:
        next_at = self.schedule.next_at
        return next_at is not None and next_at <= self.model._total_timesteps

    @property
    def best_mean(self) -> float:
        return max((float(np.mean(r)) for r in self.results), default=-np.inf)

    def _on_training_start(self) -> None:
        first_at = (self.num_timesteps // self.schedule.period + 1) * self.schedule.period
        if first_at <= self.model._total_timesteps:  # an evaluation will come: start its resets, beside warm-up
            prepare_resets(self.eval_env, self.seed)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.schedule.due(self.num_timesteps) and not self.stop.requested:
            self.evaluate()

    def _on_training_end(self) -> None:
        self._on_rollout_start()  # an evaluation due at the very last step

    def evaluate(self) -> None:
        try:
            episodes = play(
                self.model,
                self.eval_env,
                self.episodes,
                epsilon=self.epsilon,
                seed=self.seed,
                stop=self.stop,
                again=self.another_evaluation_follows,
            )
        except EvaluationAborted:
            return
        best = self.best_mean
        self.timesteps.append(self.num_timesteps)
        self.results.append(episodes.returns)
        self.lengths.append(episodes.lengths)
        self.last = (episodes.mean, episodes.std)
        self._write_history()
        if episodes.mean > best:
            checkpoint.atomic_save_model(self.model, self.run_dir / BEST_MODEL)  # type: ignore[arg-type]
        self.logger.record("eval/mean_reward", episodes.mean)
        self.logger.record("eval/mean_ep_length", float(np.mean(episodes.lengths)))
        self.logger.dump(self.num_timesteps)

    def _write_history(self) -> None:
        tmp = self.run_dir / f".{EVALUATIONS}.tmp.npz"
        np.savez(
            tmp, timesteps=np.array(self.timesteps), results=np.array(self.results), ep_lengths=np.array(self.lengths)
        )
        tmp.replace(self.run_dir / EVALUATIONS)


class CheckpointCallback(BaseCallback):
    """Saves a resumable checkpoint every `save_freq` env steps, between training iterations."""

    def __init__(self, run_dir: Path, *, save_freq: int, replay_buffer: bool, keep: int) -> None:
        super().__init__()
        self.run_dir, self.replay_buffer, self.keep = run_dir, replay_buffer, keep
        self.schedule = _Every(save_freq)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.schedule.due(self.num_timesteps):
            checkpoint.save(self.model, self.run_dir, replay_buffer=self.replay_buffer, keep=self.keep)  # type: ignore[arg-type]


class ProgressCallback(BaseCallback):
    """Reports steps, steps/s, ETA, ε and returns, to a live progress bar or (plain mode) a line every `every` s."""

    def __init__(self, report: Callable[[dict[str, Any]], None], evaluation: EvalCallback | None, every: float) -> None:
        super().__init__()
        self.report, self.evaluation, self.every = report, evaluation, every
        self.started = self.last_report = 0.0
        self.start_step = 0

    def _on_training_start(self) -> None:
        self.started = self.last_report = time.monotonic()
        self.start_step = self.num_timesteps
        self._emit(time.monotonic())

    def _on_step(self) -> bool:
        now = time.monotonic()
        if now - self.last_report >= self.every:
            self._emit(now)
        return True

    def _on_training_end(self) -> None:
        self._emit(time.monotonic())

    def _emit(self, now: float) -> None:
        self.last_report = now
        total = self.model._total_timesteps
        elapsed = max(now - self.started, 1e-9)
        speed = (self.num_timesteps - self.start_step) / elapsed
        episodes = [float(info["r"]) for info in self.model.ep_info_buffer or []]
        self.report(
            {
                "step": self.num_timesteps,
                "total": total,
                "steps_per_s": speed,
                "eta_s": (total - self.num_timesteps) / speed if speed > 0 else None,
                "epsilon": float(self.model.exploration_schedule(self.model._current_progress_remaining)),  # type: ignore[attr-defined]
                "ep_return": float(np.mean(episodes)) if episodes else None,
                "eval": self.evaluation.last if self.evaluation is not None else None,
            }
        )

"""ALE's native emulators behind SB3's `VecEnv`: SB3's Atari preprocessing, pixel for pixel, without its wrappers.

Each game runs in an `ale_py.vector_env.AtariVectorEnv` of one env, so the emulator, the frame skip and the
max-pool run in C++ on ALE's own thread and the games of a vector step run side by side. One AtariVectorEnv of n
games cannot be used directly: it steps every game together, while SB3's `AtariWrapper` resets a game with steps of
its own (no-ops, FIRE then RIGHT, a no-op after a lost life) inside the vector step in which that game ended.

What runs in Python is the bookkeeping of SB3's wrapper stack, in the same order (NoopResetEnv, MaxAndSkipEnv,
EpisodicLifeEnv, FireResetEnv, WarpFrame, ClipRewardEnv, then Monitor, DummyVecEnv, VecFrameStack and
VecTransposeImage), so that the same seeds and actions give the same observations, rewards and episode ends;
`tests/test_ale_vec.py` checks it against SB3 frame by frame. What differs never reaches a learning target (the
README lists it): the random no-op count at a new game (uniform over 1..noop_max as SB3's) and sticky actions draw
from ALE's generator, the observation of a game-over step is max-pooled over the frames ALE captured before the game
ended, rewards during the no-op start are not added to Monitor's score, and the 108,000-frame truncation lands on
a step boundary.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from dqn_cli.threads import batch_policy, started_threads

if TYPE_CHECKING:
    from ale_py.vector_env import AtariVectorEnv

FIRE, RIGHT, NOOP = 1, 2, 0  # the indices FireResetEnv and EpisodicLifeEnv press (minimal action sets)
NO_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class AtariSettings:
    """SB3's AtariWrapper arguments plus the emulator settings one game is played with."""

    game: str  # ROM name, snake case (space_invaders)
    env_id: str  # written into Monitor files
    frame_skip: int = 4
    noop_max: int = 30
    screen_size: int = 84
    terminal_on_life_loss: bool = True
    clip_reward: bool = True
    frame_stack: int = 4
    sticky: float = 0.0
    full_action_space: bool = False
    max_frames: int | None = 108_000


@dataclass
class Step:
    """One frame-skipped step of one game, as MaxAndSkipEnv returns it (before WarpFrame)."""

    frame: np.ndarray  # RGB 210x160x3, max-pooled over the last two frames
    reward: float
    game_over: bool
    truncated: bool
    lives: int
    frame_number: int
    episode_frame_number: int


@dataclass
class Monitor:
    """SB3's Monitor for one game: the true score and length (emulator frames) of every finished game."""

    env_id: str
    path: Path | None = None
    override_existing: bool = True
    t_start: float = field(default_factory=time.time)
    score: float = 0.0
    writer: Any = None

    def open(self) -> None:
        if self.path is not None and self.writer is None:
            from stable_baselines3.common.monitor import ResultsWriter

            header: dict[str, float | str] = {"t_start": self.t_start, "env_id": self.env_id}
            self.writer = ResultsWriter(str(self.path), header=header, override_existing=self.override_existing)

    def record(self, step: Step) -> dict[str, float] | None:
        self.score += step.reward
        if not (step.game_over or step.truncated):
            return None
        episode = {
            "r": round(self.score, 6),
            "l": step.episode_frame_number,
            "t": round(time.time() - self.t_start, 6),
        }
        self.score = 0.0
        if self.writer is not None:
            self.writer.write_row(episode)
        return episode

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def warp_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """SB3's WarpFrame on one RGB frame: grayscale, then `size` x `size` with pixel-area interpolation."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return np.asarray(cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA))


class Game:
    """One emulator on its own ALE thread, with SB3's AtariWrapper bookkeeping around it."""

    def __init__(self, settings: AtariSettings, monitor: Monitor) -> None:
        self.settings = settings
        self.monitor = monitor
        self.ale, self.thread_ids = started_threads(lambda: self._emulator(settings))
        self.n_actions = int(self.ale.single_action_space.n)  # type: ignore[attr-defined]
        self.has_fire = FIRE in self._meanings_with("FIRE")
        self.lives = 0
        self.was_real_done = True
        self.seed: int | None = None
        self.current_lives = 0  # ALE's count after the latest step or reset (EpisodicLifeEnv reads it at reset)
        self.noops = 0  # single-frame no-ops at the last new game
        self.last_episode: dict[str, float] | None = None

    @staticmethod
    def _emulator(settings: AtariSettings) -> AtariVectorEnv:
        """One game in an AtariVectorEnv of its own: its emulator thread plays the frame skip and the max-pool."""
        from ale_py.vector_env import AtariVectorEnv

        return AtariVectorEnv(
            settings.game,
            1,
            num_threads=1,
            frameskip=settings.frame_skip,
            maxpool=settings.frame_skip > 1,
            # ALE draws 0..noop_max-1 single-frame no-ops; SB3 draws 1..noop_max: ask for one more, redraw zeros
            noop_max=settings.noop_max + 1 if settings.noop_max > 0 else 0,
            use_fire_reset=False,
            grayscale=False,
            img_height=210,
            img_width=160,
            stack_num=1,
            reward_clipping=False,
            episodic_life=False,
            life_loss_info=False,
            repeat_action_probability=settings.sticky,
            full_action_space=settings.full_action_space,
            max_num_frames_per_episode=NO_LIMIT,
        )

    def _meanings_with(self, name: str) -> list[int]:
        from ale_py import Action

        actions = self.ale.ale.get_action_set()
        return [i for i, action in enumerate(actions) if action == getattr(Action, name)]

    # -- the emulator ------------------------------------------------------------------------------------------
    def send(self, action: int) -> None:
        # Python lists, not numpy arrays: ALE's binding converts them element by element, ~10 us less a call here
        self.ale.ale.send([action], [1.0])  # type: ignore[arg-type]  # its stub says ndarray; it takes sequences

    def recv(self) -> Step:
        obs, reward, terminated, _, info = self.ale.ale.recv()
        step = self._step_from(obs, float(reward[0]), bool(terminated[0]), info)
        self.last_episode = self.monitor.record(step)
        return step

    def _step_from(self, obs: np.ndarray, reward: float, game_over: bool, info: dict[str, Any]) -> Step:
        episode_frames = int(info["episode_frame_number"][0])
        limit = self.settings.max_frames
        self.current_lives = int(info["lives"][0])
        return Step(
            frame=obs[0, 0],
            reward=reward,
            game_over=game_over,
            truncated=not game_over and limit is not None and episode_frames >= limit,
            lives=self.current_lives,
            frame_number=int(info["frame_number"][0]),
            episode_frame_number=episode_frames,
        )

    def skip_step(self, action: int) -> Step:
        """MaxAndSkipEnv.step (with Monitor underneath)."""
        self.send(action)
        return self.recv()

    def raw_reset(self) -> np.ndarray:
        """NoopResetEnv.reset: a new game after 1..noop_max single-frame no-ops (none when noop_max is 0)."""
        while True:
            seed = None if self.seed is None else np.array([self.seed], dtype=np.int64)
            self.seed = None
            obs, info = self.ale.reset(seed=seed)
            self.noops = int(info["episode_frame_number"][0])
            if self.settings.noop_max == 0 or self.noops > 0:
                break
        self.monitor.score = 0.0
        self.current_lives = int(info["lives"][0])
        return np.asarray(obs[0, 0])

    # -- SB3's wrappers, in SB3's order --------------------------------------------------------------------------
    def episodic_step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        """EpisodicLifeEnv.step: a lost life ends the episode (the game goes on)."""
        return self.finish_step(self.skip_step(action))

    def finish_step(self, step: Step) -> tuple[np.ndarray, float, bool, bool]:
        """EpisodicLifeEnv.step's bookkeeping on a step already taken."""
        terminated = step.game_over
        if self.settings.terminal_on_life_loss:
            self.was_real_done = step.game_over or step.truncated
            if 0 < step.lives < self.lives:
                terminated = True
            self.lives = step.lives
        return step.frame, step.reward, terminated, step.truncated

    def episodic_reset(self) -> np.ndarray:
        """EpisodicLifeEnv.reset: a new game after a game over, a no-op step after a lost life."""
        if not self.settings.terminal_on_life_loss or self.was_real_done:
            frame = self.raw_reset()
        else:
            step = self.skip_step(NOOP)
            frame = step.frame
            if step.game_over or step.truncated:
                frame = self.raw_reset()
        self.lives = self.current_lives
        return frame

    def reset(self) -> np.ndarray:
        """FireResetEnv.reset (in games with FIRE) over EpisodicLifeEnv.reset, then WarpFrame."""
        frame = self.episodic_reset()
        if self.has_fire:
            frame, _, terminated, truncated = self.episodic_step(FIRE)
            if terminated or truncated:
                self.episodic_reset()
            frame, _, terminated, truncated = self.episodic_step(RIGHT)
            if terminated or truncated:  # SB3 returns this step's frame even so: keep it from ALE's next write
                frame = frame.copy()
                self.episodic_reset()
        return self.warp(frame)

    def warp(self, frame: np.ndarray) -> np.ndarray:
        return warp_frame(frame, self.settings.screen_size)

    def close(self) -> None:
        self.ale.close()
        self.monitor.close()


class Prepared(NamedTuple):
    """A game's seeded reset started ahead of time (`AleVecEnv.prepare_reset`): the seed and the reset's frame."""

    seed: int
    frame: Future[np.ndarray]


class AleVecEnv(VecEnv):
    """n games behind SB3's VecEnv API, returning what DummyVecEnv + VecFrameStack + VecTransposeImage return."""

    def __init__(
        self,
        settings: AtariSettings,
        n_envs: int,
        *,
        monitor_dir: Path | None = None,
        override_existing: bool = True,
    ) -> None:
        self.settings = settings
        self.games = [
            Game(
                settings,
                Monitor(
                    settings.env_id,
                    path=monitor_dir / f"{i}.monitor.csv" if monitor_dir is not None else None,
                    override_existing=override_existing,
                ),
            )
            for i in range(n_envs)
        ]
        self.monitors_opened = False
        size, stack = settings.screen_size, settings.frame_stack
        observation_space = spaces.Box(0, 255, (stack, size, size), dtype=np.uint8)
        super().__init__(n_envs, observation_space, spaces.Discrete(self.games[0].n_actions))
        self.stacked = np.zeros((n_envs, stack, size, size), dtype=np.uint8)
        self.actions = np.zeros(n_envs, dtype=np.int64)
        self.paused = np.zeros(n_envs, dtype=bool)
        self.queued: np.ndarray | None = None  # the next step's actions, sent as each game's current step is handled
        self.in_flight: np.ndarray | None = None  # actions the emulators are playing before step_async asks for them
        self.prepared: dict[int, Prepared] = {}  # seeded resets started ahead of the reset that will use them
        self.batched = False  # emulator threads under SCHED_BATCH (`_batch_policy`)
        self._side: ThreadPoolExecutor | None = None

    @property
    def monitors(self) -> list[Monitor]:
        return [game.monitor for game in self.games]

    def _open_monitors(self) -> None:
        if not self.monitors_opened:  # after the caller had its chance to set t_start (resume)
            for monitor in self.monitors:
                monitor.open()
            self.monitors_opened = True

    def reset(self) -> np.ndarray:
        self._drain()
        self._open_monitors()
        self.paused[:] = False
        self.stacked[:] = 0
        self.stacked[:, -1] = self._reset_games()
        self._reset_seeds()
        self._reset_options()
        return self.stacked.copy()

    def _reset_games(self) -> list[np.ndarray]:
        """Every game's reset, or its prepared one (`prepare_reset`) where that was started with this seed. A seeded
        reset makes ALE reload the ROM (~0.1 s here, GIL released): those run side by side."""
        frames: list[Future[np.ndarray] | np.ndarray] = []
        for i, game in enumerate(self.games):
            seed, prepared = self._seeds[i], self.prepared.pop(i, None)
            if prepared is not None and prepared.seed == seed:
                frames.append(prepared.frame)
            elif seed is not None and len(self.games) > 1:
                self._wait(prepared)
                frames.append(self._start_reset(i, seed))
            else:
                self._wait(prepared)
                game.seed = game.seed if seed is None else seed
                game.was_real_done = True
                frames.append(game.reset())
        return [frame.result() if isinstance(frame, Future) else frame for frame in frames]

    @staticmethod
    def _wait(prepared: Prepared | None) -> None:
        """Let a prepared reset finish: the game is the caller's once the side thread is done with it."""
        if prepared is not None:
            prepared.frame.result()

    def _start_reset(self, i: int, seed: int) -> Future[np.ndarray]:
        """Game i's reset from `seed` (a new game: ALE reloads the ROM), on a side thread."""
        game = self.games[i]
        game.seed, game.was_real_done = seed, True
        if self._side is None:
            self._side = ThreadPoolExecutor(max_workers=len(self.games), thread_name_prefix="dqn-ale-reset")
        return self._side.submit(game.reset)

    def prepare_reset(self, indices: Sequence[int], seed: int) -> None:
        """Start, now and on side threads, the resets that `seed(seed)` then `reset()` will do for these games, and
        leave the games out of every step until then (paused). An evaluation calls it for each game as soon as the
        game has played its share, with the seed of the next evaluation: ALE's ROM reload at a seeded reset (~0.1 s
        of CPU a game here) then runs beside the games still playing, on cores they leave idle, instead of at the
        start of the next evaluation. The reset that follows takes the prepared game as it is where its seed is
        the one prepared, and resets it again where not: the same games either way."""
        self._drain()
        for i in indices:
            self._wait(self.prepared.pop(i, None))
            self.paused[i] = True
            self.prepared[i] = Prepared(seed + i, self._start_reset(i, seed + i))  # VecEnv.seed: seed + index

    def pause(self, paused: np.ndarray) -> None:
        """Leave these games as they are (not stepped: same observation, no reward, not done) until they are unpaused
        or the env is reset. An evaluation stops playing a game once it has all the episodes it needs from it."""
        self.paused = np.asarray(paused, dtype=bool).reshape(self.num_envs).copy()
        self.paused[list(self.prepared)] = True  # being reset on a side thread (`prepare_reset`)

    def queue_next(self, actions: np.ndarray) -> None:
        """Announce the next vector step's actions while this one runs (random warm-up actions do not depend on the
        observations): `step_wait` sends each game its next action as soon as it has handled the game's current step
        (and its reset), so the emulators play the next step while the caller stores this one. Each game gets the
        same actions in the same order as without; the next `step_async` must bring exactly these actions."""
        if self.paused.any():
            raise RuntimeError("queue_next with paused games")
        self.queued = np.asarray(actions, dtype=np.int64).reshape(self.num_envs).copy()

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        if self.in_flight is not None:
            if not np.array_equal(self.in_flight, self.actions):
                raise RuntimeError(f"step_async({self.actions}) after queue_next({self.in_flight})")
            self.in_flight = None
            return
        self._batch_policy(self.queued is not None)
        for i in map(int, np.flatnonzero(~self.paused)):
            self.games[i].send(int(self.actions[i]))

    def _batch_policy(self, on: bool) -> None:
        """The emulator threads under `SCHED_BATCH` while steps are sent ahead (warm-up), not otherwise: see
        `threads.batch_policy`."""
        if on != self.batched:
            batch_policy([tid for game in self.games for tid in game.thread_ids], on)
            self.batched = on

    def step_wait(self) -> VecEnvStepReturn:
        live = np.flatnonzero(~self.paused)
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        queued, self.queued = self.queued, None
        for i in map(int, live):
            frame = self._step_game(i, rewards, dones, infos)
            stack = self.stacked[i]  # shifted in place: np.roll and fancy indexing cost ~0.2 ms a vector step
            if dones[i]:
                infos[i]["terminal_observation"] = np.concatenate((stack[1:], frame[None]))
                stack[:] = 0
                frame = self.games[i].reset()
            else:
                stack[:-1] = stack[1:]
            stack[-1] = frame
            if queued is not None:
                self.games[i].send(int(queued[i]))
        self.in_flight = queued
        return self.stacked.copy(), rewards, dones, infos

    def _drain(self) -> None:
        """Receive and drop the steps sent ahead (`queue_next`) that no `step_async` asked for: a reset or close
        follows, which starts new games anyway."""
        if self.in_flight is not None:
            for game in self.games:
                game.ale.ale.recv()
            self.in_flight = None
        self.queued = None

    def _step_game(self, i: int, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]) -> np.ndarray:
        """Receive game i's step: its reward, done and info go into the vector step's arrays; returns its frame."""
        game = self.games[i]
        step = game.recv()
        frame, reward, terminated, truncated = game.finish_step(step)
        rewards[i] = np.sign(reward) if self.settings.clip_reward else reward
        dones[i] = terminated or truncated
        infos[i] = {
            "lives": step.lives,
            "episode_frame_number": step.episode_frame_number,
            "frame_number": step.frame_number,
            "TimeLimit.truncated": truncated and not terminated,
        }
        if game.last_episode is not None:
            infos[i]["episode"] = game.last_episode
        return game.warp(frame)

    def close(self) -> None:
        self._drain()
        for prepared in self.prepared.values():
            self._wait(prepared)
        self.prepared.clear()
        if self._side is not None:
            self._side.shutdown()
        for game in self.games:
            game.close()

    def _indices(self, indices: VecEnvIndices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            return [None for _ in self._indices(indices)]
        return [getattr(self.games[i], attr_name) for i in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for i in self._indices(indices):
            setattr(self.games[i], attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list[Any]:
        return [getattr(self.games[i], method_name)(*args, **kwargs) for i in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        from stable_baselines3.common.atari_wrappers import AtariWrapper
        from stable_baselines3.common.monitor import Monitor as SB3Monitor

        wrapped = wrapper_class in (SB3Monitor, AtariWrapper)  # what this env does in their place
        return [wrapped for _ in self._indices(indices)]

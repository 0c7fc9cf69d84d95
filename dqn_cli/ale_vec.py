"""ALE's emulators behind SB3's `VecEnv`: SB3's Atari preprocessing, pixel for pixel, without its wrappers.

Each game's frame skip, max-pool and WarpFrame run in C++ and the games of a vector step run side by side: in dqn's
compiled step (`NativeEmulator`, `dqn_cli.native`: ALE's C++ API on a pool of one worker thread per core) where it
builds and passes its check, else in an `ale_py.vector_env.AtariVectorEnv` of one env per game (`VectorEmulator`:
ALE's thread plays the frame skip and max-pool, OpenCV's WarpFrame runs on the caller's thread). One AtariVectorEnv
of n games cannot be used: it steps every game together, while SB3's `AtariWrapper` resets a game with steps of its
own (no-ops, FIRE then RIGHT, a no-op after a lost life) inside the vector step in which that game ended.

What runs in Python is the bookkeeping of SB3's wrapper stack, in the same order (NoopResetEnv, MaxAndSkipEnv,
EpisodicLifeEnv, FireResetEnv, WarpFrame, ClipRewardEnv, then Monitor, DummyVecEnv, VecFrameStack and
VecTransposeImage), so that the same seeds and actions give the same observations, rewards and episode ends;
`tests/test_ale_vec.py` checks it against SB3 frame by frame on both emulators. On the compiled step, only rewards
during the no-op start are not added to Monitor's score (0 in practice). On ALE's vector env also (never reaching a
learning target; the README lists it): the random no-op count at a new game (uniform over 1..noop_max as SB3's) and
sticky actions draw from ALE's generator, the observation of a game-over step is max-pooled over the frames ALE
captured before the game ended, and the 108,000-frame truncation lands on a step boundary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from dqn_cli import native
from dqn_cli.threads import batch_policy, started_threads

if TYPE_CHECKING:
    from ale_py.vector_env import AtariVectorEnv

FIRE, RIGHT, NOOP = 1, 2, 0  # the indices FireResetEnv and EpisodicLifeEnv press (minimal action sets)
ALE_FIRE = 1  # ale_py.Action.FIRE
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
    """One frame-skipped step of one game, as MaxAndSkipEnv then WarpFrame return it."""

    frame: np.ndarray  # WarpFrame's observation of the max-pool over the last two frames
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


class VectorEmulator:
    """One game in an `AtariVectorEnv` of its own: ALE's thread plays the frame skip and the max-pool of RGB
    screens; SB3's WarpFrame runs here, on the caller's thread. The path where the compiled step is unavailable."""

    def __init__(self, settings: AtariSettings) -> None:
        self.settings = settings
        self.ale, self.thread_ids = started_threads(lambda: self._emulator(settings))
        self.action_set = [int(action.value) for action in self.ale.ale.get_action_set()]
        self.noops = 0  # single-frame no-ops at the last new game

    @staticmethod
    def _emulator(settings: AtariSettings) -> AtariVectorEnv:
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

    def send(self, action: int) -> None:
        # Python lists, not numpy arrays: ALE's binding converts them element by element, ~10 us less a call here
        self.ale.ale.send([action], [1.0])  # type: ignore[arg-type]  # its stub says ndarray; it takes sequences

    def recv(self) -> Step:
        obs, reward, terminated, _, info = self.ale.ale.recv()
        episode_frames = int(info["episode_frame_number"][0])
        limit = self.settings.max_frames
        game_over = bool(terminated[0])
        return Step(
            frame=warp_frame(obs[0, 0], self.settings.screen_size),
            reward=float(reward[0]),
            game_over=game_over,
            truncated=not game_over and limit is not None and episode_frames >= limit,
            lives=int(info["lives"][0]),
            frame_number=int(info["frame_number"][0]),
            episode_frame_number=episode_frames,
        )

    def reset(self, seed: int | None) -> tuple[np.ndarray, int]:
        """NoopResetEnv.reset: a new game after 1..noop_max single-frame no-ops (none when noop_max is 0); the
        warped frame and the lives. The no-op count is drawn by ALE."""
        while True:
            obs, info = self.ale.reset(seed=None if seed is None else np.array([seed], dtype=np.int64))
            seed = None
            self.noops = int(info["episode_frame_number"][0])
            if self.settings.noop_max == 0 or self.noops > 0:
                break
        return warp_frame(obs[0, 0], self.settings.screen_size), int(info["lives"][0])

    def close(self) -> None:
        self.ale.close()


class NativeEmulator:
    """One game in dqn's compiled step (`dqn_cli.native`): the frame skip, SB3's max-pool buffer and WarpFrame run
    on the pool's worker threads. Seeds and no-op counts are drawn as Gymnasium's AtariEnv and SB3's NoopResetEnv
    draw them (`SeedSequence(seed)` gives the no-op generator's seed and ALE's), and truncation is ALE's own, so a
    game plays exactly what SB3's wrappers play."""

    def __init__(self, settings: AtariSettings, pool: native.Pool) -> None:
        self.settings = settings
        np_seed, ale_seed = np.random.SeedSequence().generate_state(2)
        self.game = native.NativeGame(
            pool,
            native.rom_path(settings.game),
            seed=int(np.int32(ale_seed)),
            sticky=settings.sticky,
            full_action_space=settings.full_action_space,
            frame_skip=settings.frame_skip,
            size=settings.screen_size,
            max_frames=settings.max_frames,
        )
        self.np_random, _ = seeding.np_random(int(np_seed))
        self.action_set = self.game.action_set
        self.thread_ids = pool.thread_ids
        self.noops = 0

    def send(self, action: int) -> None:
        self.game.send(action)

    def recv(self) -> Step:
        frame, (reward, game_over, truncated, lives, frame_number, episode_frames) = self.game.recv()
        return Step(
            frame, float(reward), bool(game_over), bool(truncated), int(lives), int(frame_number), int(episode_frames)
        )

    def reset(self, seed: int | None) -> tuple[np.ndarray, int]:
        """AtariEnv.reset(seed) (ALE's seed and the ROM again, only when seeded), then NoopResetEnv's no-ops."""
        if seed is not None:
            np_seed, ale_seed = np.random.SeedSequence(seed).generate_state(2)
            self.game.seed(int(np.int32(ale_seed)))
            self.np_random, _ = seeding.np_random(int(np_seed))
        noop_max = self.settings.noop_max
        self.noops = int(self.np_random.integers(1, noop_max + 1)) if noop_max > 0 else 0
        frame, (lives, _, _) = self.game.reset(self.noops)
        return frame, int(lives)

    def close(self) -> None:
        self.game.close()


Emulator = VectorEmulator | NativeEmulator


class Game:
    """One game's emulator with SB3's AtariWrapper bookkeeping around it."""

    def __init__(self, settings: AtariSettings, monitor: Monitor, pool: native.Pool | None = None) -> None:
        self.settings = settings
        self.monitor = monitor
        self.emulator: Emulator = VectorEmulator(settings) if pool is None else NativeEmulator(settings, pool)
        self.thread_ids = self.emulator.thread_ids
        self.n_actions = len(self.emulator.action_set)
        self.has_fire = self.n_actions > FIRE and self.emulator.action_set[FIRE] == ALE_FIRE
        self.lives = 0
        self.was_real_done = True
        self.seed: int | None = None
        self.current_lives = 0  # ALE's count after the latest step or reset (EpisodicLifeEnv reads it at reset)
        self.last_episode: dict[str, float] | None = None

    @property
    def noops(self) -> int:
        """Single-frame no-ops at the last new game."""
        return self.emulator.noops

    # -- the emulator ------------------------------------------------------------------------------------------
    def send(self, action: int) -> None:
        self.emulator.send(action)

    def recv(self) -> Step:
        return self.observe(self.emulator.recv())

    def observe(self, step: Step) -> Step:
        """Monitor's and EpisodicLifeEnv's view of a step received from the emulator."""
        self.current_lives = step.lives
        self.last_episode = self.monitor.record(step)
        return step

    def skip_step(self, action: int) -> Step:
        """MaxAndSkipEnv.step (with Monitor underneath)."""
        self.send(action)
        return self.recv()

    def raw_reset(self) -> np.ndarray:
        """NoopResetEnv.reset, seeded once after `seed` was set."""
        seed, self.seed = self.seed, None
        frame, self.current_lives = self.emulator.reset(seed)
        self.monitor.score = 0.0
        return frame

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
            if terminated or truncated:  # SB3 returns this step's frame even so
                self.episodic_reset()
        return frame

    def close(self) -> None:
        self.emulator.close()
        self.monitor.close()


def _pool(n_envs: int) -> native.Pool | None:
    """Worker threads for the compiled step: one per core the process may use, at most one per game."""
    lib = native.library()
    if lib is None:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return native.Pool(lib, max(1, min(n_envs, cores)))


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
        compiled: bool | None = None,
    ) -> None:
        """`compiled`: play the games in dqn's compiled step (True), on ALE's vector env (False), or the first where
        it is available (None: `native.native_status` says why not)."""
        self.settings = settings
        self.pool = _pool(n_envs) if compiled is not False else None
        if compiled and self.pool is None:
            raise native.NativeError(f"the compiled step is unavailable: {native.native_status().reason}")
        self.games = [
            Game(
                settings,
                Monitor(
                    settings.env_id,
                    path=monitor_dir / f"{i}.monitor.csv" if monitor_dir is not None else None,
                    override_existing=override_existing,
                ),
                self.pool,
            )
            for i in range(n_envs)
        ]
        emulators = [game.emulator for game in self.games]
        # the games' handles in the compiled step (empty on ALE's vector env), found once rather than at every step
        self.native_games = [emulator.game for emulator in emulators if isinstance(emulator, NativeEmulator)]
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
        live = np.flatnonzero(~self.paused)
        if self.queued is None and self._step_on_team(live):
            return
        for i in map(int, live):
            self.games[i].send(int(self.actions[i]))

    def _step_on_team(self, live: np.ndarray) -> bool:
        """Play the live games' steps now on torch's OpenMP team (`native.step_on_team`), where the games are in the
        compiled step and no step is sent ahead (`queue_next`, whose steps run beside the caller's work on the
        pool); False where the pool has to play them."""
        games = self._native_games(live)
        return self.pool is not None and bool(games) and native.step_on_team(self.pool, games, self.actions[live])

    def _native_games(self, live: np.ndarray) -> list[native.NativeGame]:
        """The live games' handles in the compiled step; empty where the games are not there (ALE's vector env)."""
        return [self.native_games[i] for i in live] if len(self.native_games) == self.num_envs else []

    def _batch_policy(self, on: bool) -> None:
        """The emulator threads under `SCHED_BATCH` while steps are sent ahead (warm-up), not otherwise: see
        `threads.batch_policy`."""
        if on != self.batched:
            batch_policy(sorted({tid for game in self.games for tid in game.thread_ids}), on)
            self.batched = on

    def step_wait(self) -> VecEnvStepReturn:
        live = np.flatnonzero(~self.paused)
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        queued, self.queued = self.queued, None
        # Steps sent ahead (warm-up) are received game by game, each game sent its next action as soon as its step is
        # handled, so the pool plays on meanwhile; the others are all done or all awaited: received at once.
        received = self._receive(live) if queued is None else None
        for j, i in enumerate(live.tolist()):
            step = received[j] if received is not None else self._receive_one(i)
            self._record(i, step, rewards, dones, infos)
            if dones[i]:
                stack = self.stacked[i]
                infos[i]["terminal_observation"] = stack.copy()
                stack[:] = 0
                stack[-1] = self.games[i].reset()
            if queued is not None:
                self.games[i].send(int(queued[i]))
        self.in_flight = queued
        return self.stacked.copy(), rewards, dones, infos

    def _receive(self, live: np.ndarray) -> list[Step]:
        """The live games' steps, each game's frame stack moved up by one frame with the step's frame put last: in one
        call into the compiled step where the games are there (`native.recv_stacked`), else game by game."""
        games = self._native_games(live)
        if not games:
            return [self._receive_one(i) for i in live.tolist()]
        rows = native.recv_stacked(games, self.stacked, live).tolist()
        return [
            Step(self.stacked[i, -1], float(r[0]), bool(r[1]), bool(r[2]), r[3], r[4], r[5])
            for i, r in zip(live.tolist(), rows, strict=True)
        ]

    def _receive_one(self, i: int) -> Step:
        """Game i's step, its frame stack moved up by one frame with the step's frame put last."""
        step = self.games[i].emulator.recv()
        stack = self.stacked[i]  # moved in place: np.roll and fancy indexing cost ~0.2 ms a vector step
        stack[:-1] = stack[1:]
        stack[-1] = step.frame
        return step

    def _drain(self) -> None:
        """Receive and drop the steps sent ahead (`queue_next`) that no `step_async` asked for: a reset or close
        follows, which starts new games anyway."""
        if self.in_flight is not None:
            for game in self.games:
                game.emulator.recv()
            self.in_flight = None
        self.queued = None

    def _record(self, i: int, step: Step, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """Game i's step, received: its reward, done and info go into the vector step's arrays."""
        game = self.games[i]
        _, reward, terminated, truncated = game.finish_step(game.observe(step))
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

    def close(self) -> None:
        self._drain()
        for prepared in self.prepared.values():
            self._wait(prepared)
        self.prepared.clear()
        if self._side is not None:
            self._side.shutdown()
        for game in self.games:
            game.close()
        if self.pool is not None:
            self.pool.close()

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

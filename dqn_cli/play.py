"""Playing full games with a trained agent under a fixed, recorded protocol (PRODUCT.md, "The evaluation protocol")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

import numpy as np

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

    from dqn_cli.agent import StopRequest


class EvaluationAborted(Exception):
    """A stop was requested while episodes were being played."""


class Predictor(TypingProtocol):
    """An SB3 algorithm or policy: anything with SB3's `predict`."""

    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> Any: ...


@dataclass(frozen=True)
class Protocol:
    """How episodes were played; stored next to every result."""

    episodes: int
    epsilon: float
    seed: int
    n_envs: int = 1
    full_games: bool = True  # no episode end on life loss
    clipped_rewards: bool = False
    noop_max: int | None = None  # Atari only: up to this many random no-ops at the start
    max_frames_per_episode: int | None = None  # Atari only (108,000 frames = 30 minutes of play)
    sticky_actions: float | None = None  # Atari only: repeat_action_probability
    frame_skip: int | None = None  # Atari only: emulator frames per agent step

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Episodes:
    """Returns (true game scores) and lengths (agent steps) of the episodes played, in the order they ended."""

    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


MAX_SIDE_BY_SIDE = 8


def greedy(model: Predictor, observations: np.ndarray, q_values: Any = None) -> np.ndarray:
    """The model's greedy actions for a batch: straight from its Q-network where it has one (`greedy_actions`), or
    from `q_values` (a `PackedQNetwork` of it) where given."""
    from dqn_cli.policies import greedy_actions

    actions = greedy_actions(getattr(model, "policy", model), observations, q_values)
    return actions if actions is not None else np.asarray(model.predict(observations, deterministic=True)[0])


def greedy_player(model: Predictor, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """`greedy` for the length of one `play`, in which the weights stay fixed: on the Q-network's weights packed
    once for oneDNN where that works (`policies.PackedQNetwork`: 1.3-1.5x faster at 8 games here)."""
    from dqn_cli.policies import packed_q_network

    packed = packed_q_network(getattr(model, "policy", model), batch_size)
    return lambda observations: greedy(model, observations, packed)


def prepare_resets(env: VecEnv, seed: int, indices: Sequence[int] | None = None) -> None:
    """Start the seeded resets of the next `play` with this seed now, where the env can (dqn's native Atari env:
    `AleVecEnv.prepare_reset`), so that they run beside whatever comes first (warm-up, the games still playing)."""
    prepare = getattr(env.unwrapped, "prepare_reset", None)
    if prepare is not None:
        prepare(range(env.num_envs) if indices is None else indices, seed)


def games_side_by_side(requested: int, episodes: int) -> int:
    """`requested`, or (0) one game per episode up to 8: more games than episodes would only play unused games."""
    return requested or min(episodes, MAX_SIDE_BY_SIDE)


class _Evaluation:
    """One `play`'s bookkeeping: which games still owe episodes, the episodes' scores, and the ε draws of each step
    (drawn per step for all games, in the order of the step-by-step loop, whichever game asks first)."""

    def __init__(self, env: VecEnv, episodes: int, epsilon: float, seed: int, again: bool) -> None:
        n = self.n_envs = env.num_envs
        self.env, self.epsilon, self.seed, self.again = env, epsilon, seed, again
        self.targets = np.array([(episodes + i) // n for i in range(n)])
        self.counts = np.zeros(n, dtype=int)
        self.running = np.zeros(n)
        self.steps = np.zeros(n, dtype=int)
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.rng = np.random.default_rng(seed)
        self.draws: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def active(self) -> np.ndarray:
        return self.counts < self.targets

    def _draw(self, step: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Step `step`'s ε draws: which games explore, and their random actions (drawn only when one does)."""
        if step not in self.draws:
            explore = self.rng.random(self.n_envs) < self.epsilon
            n_actions = self.env.action_space.n  # type: ignore[attr-defined]
            self.draws[step] = (explore, self.rng.integers(n_actions, size=self.n_envs) if explore.any() else None)
            self.draws.pop(step - 2, None)
        return self.draws[step]

    def actions(
        self, choose: Callable[[np.ndarray], np.ndarray], obs: np.ndarray, live: np.ndarray, step: int
    ) -> np.ndarray:
        """ε-greedy actions of step `step` for the games `live` (indices); the others' entries are unused."""
        actions = np.zeros(self.n_envs, dtype=np.int64)
        if not live.size:  # no draws either: the step-by-step loop draws only for steps that some game plays
            return actions
        actions[live] = choose(obs[live])
        explore, random_actions = self._draw(step)
        return actions if random_actions is None else np.where(explore, random_actions, actions)

    def record(
        self,
        live: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
        on_episode: Callable[[int, float, int], None] | None,
    ) -> None:
        """A step of the games `live` (indices): scores, and the episodes that ended, in the order of the games."""
        owed = self.active()
        self.running[live] += rewards[live]
        self.steps[live] += 1
        for i in live[dones[live]]:
            if owed[i]:
                episode = infos[i].get("episode")  # Monitor's record: the true game score
                self.returns.append(float(episode["r"]) if episode else float(self.running[i]))
                self.lengths.append(int(self.steps[i]))  # agent steps (Monitor counts emulator frames on Atari)
                self.counts[i] += 1
                if on_episode is not None:
                    on_episode(len(self.returns), self.returns[-1], self.lengths[-1])
            self.running[i], self.steps[i] = 0.0, 0
        if self.again and (done := live[self.counts[live] >= self.targets[live]]).size:
            prepare_resets(self.env, self.seed, done.tolist())


def play(
    model: Predictor,
    env: VecEnv,
    episodes: int,
    *,
    epsilon: float,
    seed: int,
    stop: StopRequest | None = None,
    on_episode: Callable[[int, float, int], None] | None = None,
    again: bool = False,
) -> Episodes:
    """Play `episodes` episodes, ε-greedy on the model's greedy action, from a fixed seed.

    Episodes are spread evenly over the env's copies (as SB3's `evaluate_policy` does), so that short episodes
    from one copy do not crowd out the others. The same model, env and seed give the same result. A copy that has
    played its share is left out of the forward pass and, where the env can pause it (dqn's native Atari env), no
    longer stepped: the last games of an evaluation do not carry idle ones. With `again` (another evaluation with
    this env and seed will follow), such a game's seeded reset for that evaluation starts right away, beside the
    games still playing (`AleVecEnv.prepare_reset`). Where the env can pause games and has two or more, the games
    play in two halves that take turns (`_play_in_halves`); the episodes are those of the step-by-step loop.
    """
    evaluation = _Evaluation(env, episodes, epsilon, seed, again)
    env.seed(seed)
    obs = np.asarray(env.reset())
    pause = getattr(env.unwrapped, "pause", None)
    choose = greedy_player(model, env.num_envs)
    if pause is not None and env.num_envs > 1:
        _play_in_halves(env, evaluation, choose, obs, pause, stop, on_episode)
    else:
        _play_step_by_step(env, evaluation, choose, obs, pause, stop, on_episode)
    return Episodes(np.array(evaluation.returns), np.array(evaluation.lengths))


def _check_stop(stop: StopRequest | None) -> None:
    if stop is not None and stop.requested:
        raise EvaluationAborted


def _play_step_by_step(
    env: VecEnv,
    evaluation: _Evaluation,
    choose: Callable[[np.ndarray], np.ndarray],
    obs: np.ndarray,
    pause: Callable[[np.ndarray], None] | None,
    stop: StopRequest | None,
    on_episode: Callable[[int, float, int], None] | None,
    step: int = 0,
) -> None:
    """One vector step after another, from step `step`: every game still owing episodes in one forward pass, then
    in one step."""
    while (active := evaluation.active()).any():
        _check_stop(stop)
        if pause is not None:
            pause(~active)
        actions = evaluation.actions(choose, obs, np.flatnonzero(active), step)
        new_obs, rewards, dones, infos = env.step(actions)
        obs = np.asarray(new_obs)
        evaluation.record(np.flatnonzero(active), rewards, dones, infos, on_episode)
        step += 1


def _play_in_halves(
    env: VecEnv,
    evaluation: _Evaluation,
    choose: Callable[[np.ndarray], np.ndarray],
    obs: np.ndarray,
    pause: Callable[[np.ndarray], None],
    stop: StopRequest | None,
    on_episode: Callable[[int, float, int], None] | None,
) -> None:
    """The games in two halves that take turns: while one half's emulators play its step, the forward pass picks
    the other half's next actions, so that the network and the emulators run at the same time instead of in turn.
    Each half plays the steps of the step-by-step loop in its order with the same ε draws, so the episodes are
    the same and end in the same order. Torch gets the cores the playing half leaves it (one of 2 cores for 8
    games here). 8 games of an untrained SpaceInvaders agent, resets prepared: 1,279 against 1,078 steps/s for the
    step-by-step loop (medians of 5 alternating evaluations, 5 of 5 faster); with torch's two threads instead of
    one, halves were slower than the step-by-step loop (963 against 1,159)."""
    import torch

    halves = np.array_split(np.arange(env.num_envs), 2)
    steps = [0, 0]
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - len(halves[0])))
    try:
        half = 0
        live = halves[half][evaluation.active()[halves[half]]]
        actions = evaluation.actions(choose, obs, live, 0)
        while live.size:
            _check_stop(stop)
            playing = np.ones(env.num_envs, dtype=bool)
            playing[live] = False
            pause(playing)
            env.step_async(actions)
            other = 1 - half
            next_live = halves[other][evaluation.active()[halves[other]]]
            next_actions = evaluation.actions(choose, obs, next_live, steps[other])
            new_obs, rewards, dones, infos = env.step_wait()
            obs[live] = new_obs[live]
            evaluation.record(live, rewards, dones, infos, on_episode)
            steps[half] += 1
            if not next_live.size:  # the other half is done: the rest, all of this half, at this half's step
                break
            half, live, actions = other, next_live, next_actions
    finally:
        torch.set_num_threads(threads)
    _play_step_by_step(env, evaluation, choose, obs, pause, stop, on_episode, step=steps[half])

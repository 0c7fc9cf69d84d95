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
    once for oneDNN where that works (`policies.PackedQNetwork`: 1.3-1.5x faster at 8 games here).

    Packed for `batch_size` games, and again for one game when the last game plays alone: oneDNN's linear layer
    reorders weights packed for a larger batch at every single-game call (2.2 against 0.57 ms here); for the
    sizes in between the packing for `batch_size` is as fast as their own."""
    from dqn_cli.policies import packed_q_network

    policy = getattr(model, "policy", model)
    packed = {batch_size: packed_q_network(policy, batch_size)}

    def choose(observations: np.ndarray) -> np.ndarray:
        size = 1 if len(observations) == 1 else batch_size
        if size not in packed:
            packed[size] = packed_q_network(policy, size)
        return greedy(model, observations, packed[size])

    return choose


def prepare_resets(env: VecEnv, seed: int, indices: Sequence[int] | None = None) -> None:
    """Start the seeded resets of the next `play` with this seed now, where the env can (dqn's native Atari env:
    `AleVecEnv.prepare_reset`), so that they run beside whatever comes first (warm-up, the games still playing)."""
    prepare = getattr(env.unwrapped, "prepare_reset", None)
    if prepare is not None:
        prepare(range(env.num_envs) if indices is None else indices, seed)


def games_side_by_side(requested: int, episodes: int) -> int:
    """`requested`, or (0) one game per episode up to 8: more games than episodes would only play unused games."""
    return requested or min(episodes, MAX_SIDE_BY_SIDE)


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
    games still playing (`AleVecEnv.prepare_reset`).
    """
    n_envs = env.num_envs
    targets = np.array([(episodes + i) // n_envs for i in range(n_envs)])
    counts = np.zeros(n_envs, dtype=int)
    running = np.zeros(n_envs)
    steps = np.zeros(n_envs, dtype=int)
    returns: list[float] = []
    lengths: list[int] = []
    rng = np.random.default_rng(seed)
    env.seed(seed)
    obs = env.reset()
    pause = getattr(env.unwrapped, "pause", None)
    choose = greedy_player(model, n_envs)
    while (active := counts < targets).any():
        if stop is not None and stop.requested:
            raise EvaluationAborted
        if pause is not None:
            pause(~active)
        actions = np.zeros(n_envs, dtype=np.int64)
        actions[active] = choose(np.asarray(obs)[active])
        explore = rng.random(n_envs) < epsilon
        if explore.any():
            actions = np.where(explore, rng.integers(env.action_space.n, size=n_envs), actions)  # type: ignore[attr-defined]
        obs, rewards, dones, infos = env.step(actions)
        running += rewards
        steps += 1
        for i in np.flatnonzero(dones):
            if active[i]:
                episode = infos[i].get("episode")  # Monitor's record: the true game score
                returns.append(float(episode["r"]) if episode else float(running[i]))
                lengths.append(int(steps[i]))  # agent steps (Monitor's count is in emulator frames on Atari)
                counts[i] += 1
                if on_episode is not None:
                    on_episode(len(returns), returns[-1], lengths[-1])
            running[i], steps[i] = 0.0, 0
        if again and (done := np.flatnonzero(active & (counts >= targets))).size:
            prepare_resets(env, seed, done.tolist())
    return Episodes(np.array(returns), np.array(lengths))

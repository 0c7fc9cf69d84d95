"""Environment ids and construction: short names, Atari preprocessing, frame stacking, vectorisation."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dqn_cli.errors import DqnError

if TYPE_CHECKING:
    import gymnasium as gym
    from stable_baselines3.common.vec_env import VecEnv

    from dqn_cli.config import Hyperparams

ATARI_ENTRY_POINT = "ale_py.env:AtariEnv"
EVAL_NOOP_MAX = 30  # Mnih et al. (2015): evaluation episodes start with up to 30 random no-ops
STICKY_ACTIONS = 0.25  # Machado et al. (2018), and ALE/*-v5's default


@dataclass(frozen=True)
class EnvInfo:
    """What `--env` resolved to."""

    env_id: str  # the Gymnasium id, e.g. SpaceInvadersNoFrameskip-v4 or ALE/SpaceInvaders-v5
    game: str | None  # Atari short name (SpaceInvaders), None for other envs
    native_frame_skip: int  # emulator frames per env.step(): 1 for *NoFrameskip, 4 for ALE/*-v5

    @property
    def is_atari(self) -> bool:
        return self.game is not None

    @property
    def name(self) -> str:
        """The id as used in file and folder names (rl_zoo3's EnvironmentName: '/' becomes '-')."""
        return self.env_id.replace("/", "-")


@cache
def _registry() -> dict[str, Any]:
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    return dict(gym.registry)


def atari_game(env_id: str) -> str | None:
    """`SpaceInvaders` for any Atari id of that game (v0/v4/NoFrameskip/ALE v5), None for non-Atari ids."""
    spec = _registry().get(env_id)
    if spec is None or spec.entry_point != ATARI_ENTRY_POINT:
        return None
    return re.sub(r"(NoFrameskip|Deterministic)?-v\d+$", "", env_id.removeprefix("ALE/"))


def rom_name(info: EnvInfo) -> str:
    """ALE's ROM name of an Atari env (`space_invaders` for SpaceInvadersNoFrameskip-v4)."""
    return str(_registry()[info.env_id].kwargs["game"])


def _short_names() -> dict[str, str]:
    """lower-case short name -> the id it means (`spaceinvaders` -> SpaceInvadersNoFrameskip-v4)."""
    return {
        env_id.removesuffix("NoFrameskip-v4").lower(): env_id
        for env_id in _registry()
        if env_id.endswith("NoFrameskip-v4")
    }


def resolve(name: str, extra_names: tuple[str, ...] = ()) -> EnvInfo:
    """Resolve `--env`: a short Atari name (any case), or a Gymnasium id (any case); typos get suggestions."""
    registry = _registry()
    by_lower = {env_id.lower(): env_id for env_id in registry}
    env_id = name if name in registry else by_lower.get(name.lower()) or _short_names().get(name.lower())
    if env_id is None:
        choices = [*_short_names_cased(), *extra_names, *registry]
        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
        close += [
            c for c in difflib.get_close_matches(name.lower(), [c.lower() for c in choices], n=3) if c not in close
        ]
        hint = f"did you mean {' or '.join(dict.fromkeys(_cased(c, choices) for c in close[:3]))}?" if close else ""
        raise DqnError(
            f"unknown environment '{name}'; {hint or 'expected an Atari game name (SpaceInvaders) or a Gymnasium id'} "
            "(`dqn games` lists the games with hyperparameters)"
        )
    spec = registry[env_id]
    frame_skip = spec.kwargs.get("frameskip", 1)
    return EnvInfo(
        env_id=env_id, game=atari_game(env_id), native_frame_skip=frame_skip if isinstance(frame_skip, int) else 0
    )


def _short_names_cased() -> list[str]:
    return [env_id.removesuffix("NoFrameskip-v4") for env_id in _registry() if env_id.endswith("NoFrameskip-v4")]


def _cased(candidate: str, choices: list[str]) -> str:
    return next((c for c in choices if c.lower() == candidate.lower()), candidate)


def wrapper_frame_skip(info: EnvInfo, hp: Hyperparams) -> int:
    """Frames AtariWrapper skips: 4 on *NoFrameskip ids, 1 where the env skips frames itself."""
    native = hp.env_kwargs.get("frameskip", info.native_frame_skip)
    requested = hp.atari_wrapper.frame_skip
    if native != 1 and requested not in (None, 1):
        raise DqnError(
            f"{info.env_id} already skips frames (frameskip={native}); atari_wrapper.frame_skip={requested} would "
            f"skip again: remove atari_wrapper.frame_skip, or use {info.game}NoFrameskip-v4"
        )
    if requested is not None:
        return requested
    return 4 if native == 1 else 1


def atari_wrapper_kwargs(info: EnvInfo, hp: Hyperparams, evaluation: bool = False) -> dict[str, Any]:
    kwargs = hp.atari_wrapper.model_dump()
    kwargs["frame_skip"] = wrapper_frame_skip(info, hp)
    if evaluation:  # the evaluation protocol plays full games with the true score, from up to 30 no-ops
        kwargs.update(terminal_on_life_loss=False, clip_reward=False, noop_max=EVAL_NOOP_MAX)
    return kwargs


def make_vec_env(
    info: EnvInfo,
    hp: Hyperparams,
    *,
    seed: int,
    n_envs: int,
    evaluation: bool = False,
    monitor_dir: Path | None = None,
    monitor_kwargs: dict[str, Any] | None = None,
    render_mode: str | None = None,
    sticky: bool = False,
    base_wrapper: Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]] | None = None,
    vec_env: str = "ale",
) -> VecEnv:
    """The vectorised env a DQN of `hp` trains (or is evaluated) on: Monitor, AtariWrapper, frame stack, CHW.

    Atari games run on ALE's native emulator threads (`dqn_cli.ale_vec`) unless `vec_env` is "sb3" or the
    configuration needs SB3's wrappers (see `ale_unsupported`); both give the same observations.
    """
    if vec_env == "ale" and render_mode is None and base_wrapper is None and ale_unsupported(info, hp) is None:
        return _ale_vec_env(info, hp, seed, n_envs, evaluation, monitor_dir, monitor_kwargs, sticky)
    from stable_baselines3.common.atari_wrappers import AtariWrapper
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.preprocessing import is_image_space
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

    _registry()
    env_kwargs = dict(hp.env_kwargs)
    if render_mode is not None:
        env_kwargs["render_mode"] = render_mode
    if sticky and info.is_atari:
        env_kwargs["repeat_action_probability"] = STICKY_ACTIONS
    wrapper_kwargs = atari_wrapper_kwargs(info, hp, evaluation) if info.is_atari else None

    def make(**kwargs: Any) -> gym.Env[Any, Any]:
        import gymnasium

        env = gymnasium.make(info.env_id, **kwargs)
        return base_wrapper(env) if base_wrapper is not None else env

    try:
        venv = sb3_make_vec_env(
            make,
            n_envs=n_envs,
            seed=seed,
            env_kwargs=env_kwargs,
            monitor_dir=str(monitor_dir) if monitor_dir is not None else None,
            monitor_kwargs=monitor_kwargs,
            wrapper_class=AtariWrapper if info.is_atari else None,
            wrapper_kwargs=wrapper_kwargs,
            vec_env_cls=DummyVecEnv,
        )
    except TypeError as exc:
        raise DqnError(f"{info.env_id}: env_kwargs {env_kwargs} rejected ({exc}); fix env_kwargs") from None
    check_discrete(info, venv.action_space)
    if hp.frame_stack > 1:
        venv = VecFrameStack(venv, n_stack=hp.frame_stack)
    if is_image_space(venv.observation_space) and not _channel_first(venv.observation_space):
        venv = VecTransposeImage(venv)
    return venv


ALE_ENV_KWARGS = {"repeat_action_probability", "full_action_space", "max_num_frames_per_episode"}


def ale_unsupported(info: EnvInfo, hp: Hyperparams) -> str | None:
    """Why this configuration must run on SB3's env path (None when ALE's native path plays it identically)."""
    if not info.is_atari:
        return f"{info.env_id} is not an Atari game"
    if info.native_frame_skip != 1 or hp.env_kwargs.get("frameskip", 1) != 1:
        return f"{info.env_id} skips frames in the env (use {info.game}NoFrameskip-v4 for the native path)"
    extra = sorted(set(hp.env_kwargs) - ALE_ENV_KWARGS - {"frameskip"})
    if extra:
        return f"env_kwargs {', '.join(extra)} are only understood by Gymnasium's AtariEnv"
    if hp.atari_wrapper.action_repeat_probability > 0:
        return "atari_wrapper.action_repeat_probability is SB3's sticky-action wrapper"
    return None


def _ale_vec_env(
    info: EnvInfo,
    hp: Hyperparams,
    seed: int,
    n_envs: int,
    evaluation: bool,
    monitor_dir: Path | None,
    monitor_kwargs: dict[str, Any] | None,
    sticky: bool,
) -> VecEnv:
    from dqn_cli.ale_vec import AleVecEnv, AtariSettings

    kwargs = atari_wrapper_kwargs(info, hp, evaluation)
    settings = AtariSettings(
        game=rom_name(info),
        env_id=info.env_id,
        frame_skip=kwargs["frame_skip"],
        noop_max=kwargs["noop_max"],
        screen_size=kwargs["screen_size"],
        terminal_on_life_loss=kwargs["terminal_on_life_loss"],
        clip_reward=kwargs["clip_reward"],
        frame_stack=hp.frame_stack,
        sticky=sticky_probability(info, hp, sticky),
        full_action_space=bool(hp.env_kwargs.get("full_action_space", False)),
        max_frames=max_frames(info, hp),
    )
    override = (monitor_kwargs or {}).get("override_existing", True)
    venv = AleVecEnv(settings, n_envs, monitor_dir=monitor_dir, override_existing=override)
    venv.seed(seed)
    return venv


def sticky_probability(info: EnvInfo, hp: Hyperparams, sticky: bool) -> float:
    """The repeat_action_probability the env plays with."""
    if sticky:
        return STICKY_ACTIONS
    value = hp.env_kwargs.get(
        "repeat_action_probability", _registry()[info.env_id].kwargs.get("repeat_action_probability", 0.0)
    )
    return float(value) if isinstance(value, int | float) else 0.0


def max_frames(info: EnvInfo, hp: Hyperparams) -> int | None:
    value = hp.env_kwargs.get(
        "max_num_frames_per_episode", _registry()[info.env_id].kwargs.get("max_num_frames_per_episode")
    )
    return int(value) if isinstance(value, int | float) else None


def _channel_first(space: gym.Space[Any]) -> bool:
    shape: tuple[int, ...] = getattr(space, "shape", None) or ()
    return len(shape) == 3 and shape[0] < shape[-1]


def check_discrete(info: EnvInfo, action_space: gym.Space[Any]) -> None:
    from gymnasium import spaces

    if not isinstance(action_space, spaces.Discrete):
        raise DqnError(
            f"{info.env_id} has a {type(action_space).__name__} action space; DQN needs discrete actions: "
            "pick an env with discrete actions (CartPole-v1, any Atari game) or an algorithm for continuous control"
        )

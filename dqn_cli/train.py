"""`dqn train`: resolve the configuration, create the run folder, learn, and stop or resume cleanly."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dqn_cli import __version__, checkpoint, envs, hyperparams, rundir
from dqn_cli.config import ResolvedConfig, RunSettings, check_device
from dqn_cli.errors import DqnError

Say = Callable[[str], None]
STATE = "train_state.json"


@dataclass(frozen=True)
class TrainRequest:
    """What the user asked for on the command line."""

    env: str
    config_file: Path | None = None
    overrides: tuple[str, ...] = ()
    n_timesteps: int | None = None
    seed: int | None = None
    device: str = "auto"
    log_dir: Path = Path("logs")
    run: dict[str, Any] = field(default_factory=dict)  # RunSettings fields given explicitly (eval_freq, ...)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model_path: Path
    num_timesteps: int
    total_timesteps: int
    stopped_by: int | None  # the signal that stopped training early, None when it ran to the end


def resolve(request: TrainRequest) -> tuple[envs.EnvInfo, ResolvedConfig, hyperparams.Selection]:
    """Validate everything the run needs, before any environment is created."""
    info = envs.resolve(request.env)
    overrides = list(request.overrides)
    if request.n_timesteps is not None:
        overrides.append(f"n_timesteps={request.n_timesteps}")
    hp, selection = hyperparams.resolve(info, request.config_file, overrides)
    if info.is_atari:
        envs.wrapper_frame_skip(info, hp)  # refuses a second frame skip on ALE/*-v5 before anything starts
    check_device(request.device)
    settings = RunSettings(
        env_id=info.env_id,
        seed=request.seed if request.seed is not None else secrets.randbelow(2**31),
        device=request.device,
        hyperparams_file=str(selection.path) + (f" (rl_zoo3 block {selection.section})" if selection.section else ""),
        **request.run,
    )
    return info, ResolvedConfig(dqn_version=__version__, run=settings, hyperparams=hp), selection


def _say_compiled_step(say: Say) -> None:
    """One line when Atari games cannot run in dqn's compiled step (built here on first use): why, and that the
    fallback plays the same games, slower."""
    from dqn_cli import native

    status = native.native_status()
    if status.library is None:
        say(f"Atari on ALE's vector env (the same observations, slower), not dqn's compiled step: {status.reason}")


def train(request: TrainRequest, *, live_progress: bool, say: Say) -> TrainResult:
    """Start a new run in a new folder `<log_dir>/dqn/<EnvId>_<N>/`."""
    info, resolved, selection = resolve(request)
    if selection.note:
        say(selection.note)
    envs.check_discrete(info, _action_space(info))
    run_dir = rundir.create(request.log_dir, info)
    say(f"run folder: {run_dir}")
    reason = envs.ale_unsupported(info, resolved.hyperparams) if info.is_atari else None
    if reason is not None and resolved.run.vec_env == "ale":
        say(f"Atari on SB3's wrappers, not ALE's native threads: {reason}")
    elif info.is_atari and resolved.run.vec_env == "ale":
        _say_compiled_step(say)
    wrapper_kwargs = envs.atari_wrapper_kwargs(info, resolved.hyperparams) if info.is_atari else None
    rundir.write_new(run_dir, info.name, resolved, wrapper_kwargs, request.log_dir)
    env = _train_env(info, resolved, run_dir, resume=False)
    from dqn_cli import agent

    model = agent.build(
        resolved.hyperparams,
        env,
        seed=resolved.run.seed,
        device=resolved.run.device,
        tensorboard_log=_tensorboard_dir(run_dir, resolved),
    )
    return _learn(model, info, resolved, run_dir, resumed_at=None, live_progress=live_progress, say=say)


def resume(run_dir: Path, *, live_progress: bool, say: Say) -> TrainResult:
    """Continue a stopped run in its own folder, from its newest complete checkpoint, up to the original total."""
    if not run_dir.is_dir():
        raise DqnError(f"--resume {run_dir}: no such folder; pass a run folder such as logs/dqn/PongNoFrameskip-v4_1")
    resolved = rundir.read_resolved(run_dir)
    state = _read_run_state(run_dir)
    if state.get("status") == "finished":
        raise DqnError(f"{run_dir}: training already finished at {state['num_timesteps']:,} steps; start a new run")
    found = checkpoint.complete(run_dir)
    if not found:
        raise DqnError(f"{run_dir}: no complete checkpoint to resume from (checkpoints/ is empty); start a new run")
    latest = found[-1]
    ckpt_state = checkpoint.read_state(latest)
    info = envs.resolve(resolved.run.env_id)
    env = _train_env(info, resolved, run_dir, resume=True)
    model = _load_checkpoint(latest, ckpt_state, env, resolved, say)
    model.tensorboard_log = _tensorboard_dir(run_dir, resolved)  # the saved path was relative to the first run's cwd
    rundir.append_command(run_dir)
    say(f"resuming {run_dir} at step {model.num_timesteps:,} of {resolved.hyperparams.n_timesteps:,}")
    return _learn(model, info, resolved, run_dir, resumed_at=model.num_timesteps, live_progress=live_progress, say=say)


def _load_checkpoint(latest: Path, state: dict[str, Any], env: Any, resolved: ResolvedConfig, say: Say) -> Any:
    from dqn_cli.agent import DQNAgent, fresh_buffer

    try:
        # buffer_size=1: the real buffer comes from the checkpoint; never hold two of them in memory
        model = DQNAgent.load(latest / checkpoint.MODEL, env=env, device=resolved.run.device, buffer_size=1)
    except Exception as exc:
        raise DqnError(f"{latest / checkpoint.MODEL}: cannot load the checkpoint ({exc}); it may be corrupt") from None
    model.buffer_size = resolved.hyperparams.buffer_size
    if state.get("replay_buffer"):
        try:
            model.load_replay_buffer(latest / checkpoint.REPLAY_BUFFER)
        except Exception as exc:
            raise DqnError(f"{latest / checkpoint.REPLAY_BUFFER}: cannot load the replay buffer ({exc})") from None
    else:
        say(f"{latest.name} has no replay buffer (--save-replay-buffer was off): the buffer refills from empty")
        model.replay_buffer = fresh_buffer(model, resolved.hyperparams)
    model._last_obs = None  # the env is new: SB3 resets it and starts a fresh episode
    return model


def _action_space(info: envs.EnvInfo) -> Any:
    import gymnasium as gym

    probe = gym.make(info.env_id)
    try:
        return probe.action_space
    finally:
        probe.close()


def _tensorboard_dir(run_dir: Path, resolved: ResolvedConfig) -> str | None:
    return str(run_dir / "tensorboard") if resolved.run.tensorboard else None


def _train_env(info: envs.EnvInfo, resolved: ResolvedConfig, run_dir: Path, *, resume: bool) -> Any:
    hp = resolved.hyperparams
    venv = envs.make_vec_env(
        info,
        hp,
        seed=resolved.run.seed,
        n_envs=hp.n_envs,
        monitor_dir=run_dir,
        monitor_kwargs={"override_existing": not resume},
        vec_env=resolved.run.vec_env,
    )
    if resume:
        _continue_monitor_clocks(venv, run_dir)
    return venv


def _continue_monitor_clocks(venv: Any, run_dir: Path) -> None:
    """Appended Monitor rows keep counting time from the run's start (the header's t_start), not the resume's."""
    for index, env in enumerate(_monitors(venv)):
        try:
            with open(run_dir / f"{index}.monitor.csv", encoding="utf-8") as handle:
                header = json.loads(handle.readline().lstrip("#"))
            env.t_start = float(header["t_start"])
        except (OSError, ValueError, KeyError, TypeError):
            continue


def _monitors(venv: Any) -> list[Any]:
    """The objects that write `<i>.monitor.csv` (each has the `t_start` its rows are timed from)."""
    from stable_baselines3.common.monitor import Monitor

    if hasattr(venv.unwrapped, "monitors"):  # dqn_cli.ale_vec.AleVecEnv
        return list(venv.unwrapped.monitors)
    found = []
    for env in venv.unwrapped.envs:
        while not isinstance(env, Monitor) and hasattr(env, "env"):
            env = env.env
        found.append(env)
    return found


def _read_run_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _write_run_state(run_dir: Path, status: str, model: Any) -> None:
    state = {"status": status, "num_timesteps": model.num_timesteps, "total_timesteps": model._total_timesteps}
    checkpoint.atomic_write_text(run_dir / STATE, json.dumps(state, indent=2))


def _learn(
    model: Any,
    info: envs.EnvInfo,
    resolved: ResolvedConfig,
    run_dir: Path,
    *,
    resumed_at: int | None,
    live_progress: bool,
    say: Say,
) -> TrainResult:
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList

    from dqn_cli.agent import StopRequest
    from dqn_cli.callbacks import CheckpointCallback, EvalCallback, ProgressCallback
    from dqn_cli.heap import frozen_setup
    from dqn_cli.play import games_side_by_side
    from dqn_cli.progress import reporter
    from dqn_cli.signals import stop_on_signals
    from dqn_cli.threads import torch_threads, training_threads

    run = resolved.run
    stop = StopRequest()
    model.stop_request = stop
    evaluation = None
    if run.eval_freq > 0:
        n_eval = games_side_by_side(run.eval_envs, run.eval_episodes)
        eval_env = envs.make_vec_env(
            info, resolved.hyperparams, seed=run.seed, n_envs=n_eval, evaluation=True, vec_env=run.vec_env
        )
        evaluation = EvalCallback(
            eval_env,
            run_dir,
            eval_freq=run.eval_freq,
            episodes=run.eval_episodes,
            epsilon=run.eval_epsilon,
            seed=run.seed,
            stop=stop,
        )
        if resumed_at is not None:
            evaluation.restore(resumed_at)
    saver = CheckpointCallback(
        run_dir, save_freq=run.save_freq, replay_buffer=run.save_replay_buffer, keep=run.keep_checkpoints
    )
    total = resolved.hyperparams.n_timesteps
    _write_run_state(run_dir, "running", model)
    threads = torch_threads(training_threads(model.q_net, model.batch_size, model.device))
    with reporter(live_progress) as (report, every), stop_on_signals(stop, lambda _: None), frozen_setup(), threads:
        callbacks: list[BaseCallback] = [c for c in (evaluation, saver) if c is not None]
        callbacks.append(ProgressCallback(report, evaluation, every))
        model.learn(
            total_timesteps=total - (resumed_at or 0),
            callback=CallbackList(callbacks),
            log_interval=4,
            tb_log_name="DQN",
            reset_num_timesteps=resumed_at is None,
        )
    final = rundir.model_path(run_dir, info.name)
    checkpoint.atomic_save_model(model, final)
    if stop.requested:
        saved = checkpoint.save(model, run_dir, replay_buffer=True, keep=run.keep_checkpoints)
        _write_run_state(run_dir, "interrupted", model)
        say(f"stopped at step {model.num_timesteps:,}; saved {final} and checkpoint {saved.name}")
        say(f"resume with: dqn train --resume {run_dir}")
    else:
        _write_run_state(run_dir, "finished", model)
        say(f"finished {model.num_timesteps:,} steps; model: {final}")
    return TrainResult(run_dir, final, model.num_timesteps, total, stop.signal_number if stop.requested else None)

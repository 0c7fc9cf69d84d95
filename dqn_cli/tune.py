"""`dqn tune`: Optuna search over DQN hyperparameters, from one process to many machines sharing a study.

Storage: an SQLite file under the study folder (created before any worker starts), or any Optuna RDB URL such as
`postgresql://user@host/db` for workers on several machines. Trials send a heartbeat; a trial whose worker died
(SIGKILL, out of memory, power cut) is marked failed after a grace period and retried with the same parameters, and
it does not count against the budget. Each `dqn tune` command runs `--n-trials` trials, spread over `--n-jobs`
worker processes; a local worker that dies is replaced for the trials it had left.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dqn_cli import envs, hyperparams, search_space
from dqn_cli.config import check_device, validate
from dqn_cli.errors import ConfigError, DqnError
from dqn_cli.search_space import Dimension

Say = Callable[[str], None]
SAMPLERS = ("tpe", "random", "cmaes")
PRUNERS = ("median", "halving", "hyperband", "none")
FINISHED_OUTCOME = "outcome"  # user attr set when a worker finishes a trial (complete, pruned or failed)


@dataclass(frozen=True)
class TuneRequest:
    env: str
    config_file: Path | None = None
    overrides: tuple[str, ...] = ()
    search_space: Path | None = None
    n_trials: int = 20
    timeout: float | None = None
    trial_timesteps: int | None = None
    n_evaluations: int = 5
    eval_episodes: int = 5
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    study_name: str | None = None
    storage: str | None = None
    n_jobs: int = 1
    log_dir: Path = Path("logs")
    device: str = "cpu"
    heartbeat_interval: int = 10
    vec_env: str = "ale"


@dataclass(frozen=True)
class TuneSpec:
    """Everything a worker process needs (picklable): validated before the study starts."""

    env_id: str
    base: dict[str, Any]
    dims: list[Dimension]
    trial_timesteps: int
    n_evaluations: int
    eval_episodes: int
    seed: int
    device: str
    storage_url: str
    study_name: str
    study_dir: Path
    sampler: str
    pruner: str
    heartbeat_interval: int
    timeout: float | None
    threads: int = 1
    source: str = ""
    vec_env: str = "ale"


@dataclass
class TuneResult:
    study_dir: Path
    best_file: Path | None
    files: list[Path] = field(default_factory=list)
    interrupted: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    top: list[dict[str, Any]] = field(default_factory=list)
    last_error: str | None = None  # of the failed trials, the latest error (all are in trials.csv)


# --- preparing: every check happens here, before a study or a trial exists ----------------------------------


def _available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _observation_shape(info: envs.EnvInfo, base_hp: Any) -> tuple[int, ...]:
    if info.is_atari:
        size = base_hp.atari_wrapper.screen_size
        return (base_hp.frame_stack, size, size)
    import gymnasium as gym

    probe = gym.make(info.env_id)
    try:
        return tuple(probe.observation_space.shape or (1,)) + (
            (base_hp.frame_stack,) if base_hp.frame_stack > 1 else ()
        )
    finally:
        probe.close()


def _check_budget(dims: list[Dimension], base_hp: Any, trial_timesteps: int, n_evaluations: int) -> None:
    if n_evaluations > trial_timesteps:
        raise ConfigError(f"--n-evaluations {n_evaluations} exceeds --trial-timesteps {trial_timesteps}")
    starts = next((d for d in dims if d.key == "learning_starts"), None)
    lowest = (min(starts.choices) if starts.choices else starts.low) if starts else base_hp.learning_starts
    if lowest is not None and lowest >= trial_timesteps:
        raise ConfigError(
            f"learning_starts {lowest:,.0f} ≥ --trial-timesteps {trial_timesteps:,}: no trial would train; lower "
            "learning_starts (--set or the search space) or raise --trial-timesteps"
        )


def prepare(request: TuneRequest) -> TuneSpec:
    """Validate the request and describe the study; creates nothing."""
    if request.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {request.sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if request.pruner not in PRUNERS:
        raise ConfigError(f"--pruner {request.pruner!r}: expected one of {', '.join(PRUNERS)}")
    check_device(request.device)
    info = envs.resolve(request.env)
    selection = hyperparams.Selection(request.config_file) if request.config_file else hyperparams.find(info)
    raw, _ = hyperparams.read(selection.path, info)
    base = hyperparams.apply_overrides(raw, list(request.overrides))
    base_hp = validate(base, str(selection.path))
    if base_hp.policy is None:
        base["policy"] = "CnnPolicy" if info.is_atari else "MlpPolicy"
    space_file = request.search_space or search_space.default_file()
    dims = search_space.load(space_file, base)
    trial_timesteps = request.trial_timesteps or min(base_hp.n_timesteps, 100_000)
    _check_budget(dims, base_hp, trial_timesteps, request.n_evaluations)
    per_transition = search_space.transition_bytes(_observation_shape(info, base_hp), base_hp.optimize_memory_usage)
    dims = search_space.bound_buffer(dims, per_transition, int(_available_memory() * 0.6) // request.n_jobs, base_hp)
    study_name = request.study_name or f"dqn-{info.name}"
    study_dir = request.log_dir / "tune" / info.name / study_name
    storage = request.storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    return TuneSpec(
        env_id=info.env_id, base=base, dims=dims, trial_timesteps=trial_timesteps,
        n_evaluations=request.n_evaluations, eval_episodes=request.eval_episodes, seed=request.seed,
        device=request.device, storage_url=storage, study_name=study_name, study_dir=study_dir,
        sampler=request.sampler, pruner=request.pruner, heartbeat_interval=request.heartbeat_interval,
        timeout=request.timeout, threads=max(1, (os.cpu_count() or 1) // request.n_jobs), source=str(space_file),
        vec_env=request.vec_env,
    )  # fmt: skip


# --- the study ---------------------------------------------------------------------------------------------


def make_storage(spec: TuneSpec) -> Any:
    """Optuna's RDB storage with heartbeats; retried while several workers create the same fresh database."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    engine_kwargs = (
        {"connect_args": {"timeout": 60}} if spec.storage_url.startswith("sqlite") else {"pool_pre_ping": True}
    )
    for attempt in range(8):
        try:
            return optuna.storages.RDBStorage(
                spec.storage_url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=spec.heartbeat_interval,
                grace_period=3 * spec.heartbeat_interval,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
        except Exception as exc:  # two workers creating the tables of a fresh database at once
            if attempt == 7 or "could not connect" in str(exc).lower() or "no such" in str(exc).lower():
                raise DqnError(f"storage {_redact(spec.storage_url)}: {str(exc).splitlines()[0]}") from None
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def _redact(url: str) -> str:
    """A storage URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}" if ":" in credentials else url
    return url


def make_sampler(spec: TuneSpec, offset: int) -> Any:
    import optuna

    seed = spec.seed + offset
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True)


def make_pruner(spec: TuneSpec) -> Any:
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=spec.n_evaluations // 3)
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.n_evaluations)
    return optuna.pruners.NopPruner()


def quiet_optuna() -> None:
    """Optuna's experimental-feature warnings and per-trial INFO lines say nothing to a `dqn tune` user."""
    import warnings

    import optuna

    # ERROR: a failed trial is reported once, in the summary and trials.csv, not as a traceback per trial
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_study(spec: TuneSpec, offset: int = 0) -> Any:
    import optuna

    quiet_optuna()
    return optuna.create_study(
        study_name=spec.study_name,
        storage=make_storage(spec),
        sampler=make_sampler(spec, offset),
        pruner=make_pruner(spec),
        direction="maximize",
        load_if_exists=True,
    )


# --- one trial ---------------------------------------------------------------------------------------------


def _trial_callback(trial: Any, eval_env: Any, spec: TuneSpec) -> Any:
    """Evaluates `n_evaluations` times, reports each mean to the pruner, and stops the trial when it says so."""
    from stable_baselines3.common.callbacks import BaseCallback

    from dqn_cli.play import play, prepare_resets

    every = max(spec.trial_timesteps // spec.n_evaluations, 1)

    class TrialEval(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_at, self.step, self.pruned = every, 0, False
            self.last_mean: float | None = None

        def _on_training_start(self) -> None:
            prepare_resets(eval_env, spec.seed)  # the first evaluation's, beside warm-up

        def _on_step(self) -> bool:
            return True

        def _on_rollout_start(self) -> None:
            if self.num_timesteps >= self.next_at and not self.pruned:
                self.next_at += every
                self._evaluate()

        def _on_training_end(self) -> None:
            if not self.pruned and self.step < spec.n_evaluations:
                self._evaluate()  # the last evaluation falls on the final step

        def _evaluate(self) -> None:
            again = self.step + 1 < spec.n_evaluations
            episodes = play(self.model, eval_env, spec.eval_episodes, epsilon=0.01, seed=spec.seed, again=again)
            self.last_mean = episodes.mean
            trial.report(episodes.mean, self.step)
            self.step += 1
            if trial.should_prune():
                self.pruned = True
                self.model.stop_request.set()  # type: ignore[attr-defined]

    return TrialEval()


def run_trial(trial: Any, spec: TuneSpec, worker_id: str) -> float:
    """Train one sampled configuration for `trial_timesteps` steps; its score is the last evaluation's mean."""
    import optuna

    from dqn_cli import agent
    from dqn_cli.heap import frozen_setup
    from dqn_cli.play import games_side_by_side
    from dqn_cli.threads import torch_threads, training_threads

    trial.set_user_attr("worker", worker_id)
    values = {dim.key: dim.suggest(trial) for dim in spec.dims}
    raw = search_space.merge(spec.base, {**values, "n_timesteps": spec.trial_timesteps})
    hp = validate(raw, f"trial {trial.number}")
    info = envs.resolve(spec.env_id)
    seed = spec.seed + trial.number
    env = envs.make_vec_env(info, hp, seed=seed, n_envs=hp.n_envs, vec_env=spec.vec_env)
    eval_env = envs.make_vec_env(
        info, hp, seed=spec.seed, n_envs=games_side_by_side(0, spec.eval_episodes), evaluation=True,
        vec_env=spec.vec_env,
    )  # fmt: skip
    try:
        model = agent.build(hp, env, seed=seed, device=spec.device, tensorboard_log=None)
        model.stop_request = agent.StopRequest()
        callback = _trial_callback(trial, eval_env, spec)
        with frozen_setup(), torch_threads(training_threads(model.q_net, model.batch_size, model.device)):
            model.learn(spec.trial_timesteps, callback=callback)
    finally:
        env.close()
        eval_env.close()
    if callback.pruned:
        trial.set_user_attr(FINISHED_OUTCOME, "pruned")
        raise optuna.TrialPruned
    trial.set_user_attr(FINISHED_OUTCOME, "complete")
    return float(callback.last_mean)


def _objective(spec: TuneSpec, worker_id: str) -> Callable[[Any], float]:
    import optuna

    def objective(trial: Any) -> float:
        try:
            return run_trial(trial, spec, worker_id)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # fails this trial alone (e.g. out of memory); the study goes on
            trial.set_user_attr(FINISHED_OUTCOME, "failed")
            trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc)[:300]}")
            raise

    return objective


def run_worker(spec: TuneSpec, budget: int, worker_id: str, offset: int) -> None:
    """One worker: run `budget` trials of the study (entry point of worker processes)."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ:  # the count the user set is kept; else each worker its share of cores
        torch.set_num_threads(spec.threads)
    study = open_study(spec, offset)
    study.optimize(
        _objective(spec, worker_id), n_trials=budget, timeout=spec.timeout, catch=(Exception,), gc_after_trial=True
    )


# --- running workers ---------------------------------------------------------------------------------------


def _finished_by(study: Any, worker_id: str) -> int:
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("worker") == worker_id and FINISHED_OUTCOME in t.user_attrs
    )


def _split(n_trials: int, n_jobs: int) -> list[int]:
    return [n_trials // n_jobs + (1 if i < n_trials % n_jobs else 0) for i in range(n_jobs)]


def _supervise(spec: TuneSpec, n_trials: int, n_jobs: int, say: Say) -> None:
    """Run the budget over `n_jobs` processes; a worker that dies is replaced for the trials it had left."""
    context = multiprocessing.get_context("spawn")
    study = open_study(spec)
    slots: list[tuple[Any, str, int, int]] = []  # (process, worker id, budget, offset)
    for offset, budget in enumerate(_split(n_trials, n_jobs)):
        if budget:
            slots.append(_start(context, spec, budget, offset))
    respawns = 0
    try:
        while slots:
            time.sleep(0.5)
            for slot in list(slots):
                process, worker_id, budget, offset = slot
                if process.is_alive():
                    continue
                slots.remove(slot)
                left = budget - _finished_by(study, worker_id)
                if process.exitcode != 0 and left > 0 and respawns < 3 * n_jobs:
                    respawns += 1
                    say(f"worker {offset} died (exit {process.exitcode}); starting another for its {left} trial(s)")
                    slots.append(_start(context, spec, left, offset + n_jobs * respawns))
    except KeyboardInterrupt:
        for process, *_ in slots:
            process.terminate()
        for process, *_ in slots:
            process.join(timeout=30)
        raise


def _start(context: Any, spec: TuneSpec, budget: int, offset: int) -> tuple[Any, str, int, int]:
    worker_id = uuid.uuid4().hex[:12]
    process = context.Process(target=run_worker, args=(spec, budget, worker_id, offset), daemon=False)
    process.start()
    return process, worker_id, budget, offset


def tune(request: TuneRequest, say: Say) -> TuneResult:
    """Prepare (all checks), create the study, run the trials, and write the study's files even on Ctrl-C."""
    from dqn_cli import study_files

    spec = prepare(request)
    spec.study_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(spec)  # creates the storage and the study before any worker starts
    already = len(study.trials)
    say(f"study {spec.study_name} ({already} trials so far) in {_redact(spec.storage_url)}; files in {spec.study_dir}")
    interrupted = False
    try:
        if request.n_jobs == 1:
            run_worker(spec, request.n_trials, uuid.uuid4().hex[:12], 0)
        else:
            _supervise(spec, request.n_trials, request.n_jobs, say)
    except KeyboardInterrupt:
        interrupted = True
    return study_files.write(open_study(spec), spec, interrupted)

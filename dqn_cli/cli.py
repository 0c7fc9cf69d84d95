"""The command line: parse, call one core function, map errors to exit codes. No training logic lives here."""

from __future__ import annotations

import json
import signal
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from dqn_cli import __version__, mkl
from dqn_cli.errors import DqnError, ExitStatus
from dqn_cli.threads import configure_openmp

app = typer.Typer(
    name="dqn",
    help="Train, tune, evaluate, record and share Deep Q-Network agents on Atari games.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EnvOption = Annotated[
    str | None,
    typer.Option("--env", "-e", help="Game (SpaceInvaders, any case), Gymnasium id (ALE/Pong-v5) or env with a file."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Hyperparameters file (dqn format, or rl_zoo3 format keyed by env id)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override one hyperparameter: key=value (repeatable; policy_kwargs.net_arch=[64])."
    ),
]
TimestepsOption = Annotated[int | None, typer.Option("--n-timesteps", "-n", min=1, help="Training budget (env steps).")]
SeedOption = Annotated[int | None, typer.Option("--seed", min=0, help="Random seed (default: drawn and recorded).")]


class VecEnvChoice(str, Enum):
    """`--vec-env`: how Atari games are stepped (the same observations either way)."""

    ale = "ale"
    sb3 = "sb3"


VecEnvOption = Annotated[
    VecEnvChoice, typer.Option(help="Atari envs: ALE's native threads, or SB3's wrappers (same observations).")
]


def _request(
    env: str | None,
    config: Path | None,
    overrides: list[str] | None,
    n_timesteps: int | None,
    seed: int | None,
    **extra: Any,
) -> Any:
    from dqn_cli.train import TrainRequest

    if env is None:
        raise DqnError("missing --env: name a game (--env SpaceInvaders) or a Gymnasium id; `dqn games` lists them")
    return TrainRequest(
        env=env, config_file=config, overrides=tuple(overrides or ()), n_timesteps=n_timesteps, seed=seed, **extra
    )


def _say(message: str) -> None:
    typer.echo(message, err=True)


@app.command()
def train(
    env: EnvOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    n_timesteps: TimestepsOption = None,
    seed: SeedOption = None,
    device: Annotated[str, typer.Option(help="torch device: auto, cpu, cuda, cuda:1, mps.")] = "auto",
    log_dir: Annotated[Path, typer.Option("--log-dir", "-f", help="Root of the run folders.")] = Path("logs"),
    eval_freq: Annotated[int, typer.Option(min=0, help="Env steps between evaluations (0: none).")] = 25_000,
    eval_episodes: Annotated[int, typer.Option(min=1, help="Full games per evaluation.")] = 5,
    eval_envs: Annotated[int, typer.Option(min=0, help="Games played side by side (0: up to 8).")] = 0,
    vec_env: VecEnvOption = VecEnvChoice.ale,
    save_freq: Annotated[int, typer.Option(min=0, help="Env steps between checkpoints (0: only on stop).")] = 100_000,
    keep_checkpoints: Annotated[int, typer.Option(min=1, help="Newest checkpoints kept.")] = 2,
    save_replay_buffer: Annotated[
        bool, typer.Option(help="Include the replay buffer in periodic checkpoints.")
    ] = False,
    tensorboard: Annotated[bool, typer.Option(help="Write TensorBoard logs in the run folder.")] = True,
    progress: Annotated[bool, typer.Option(help="Live progress bar (else a log line every 30 s).")] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the fully resolved configuration and exit.")
    ] = False,
    resume: Annotated[Path | None, typer.Option(help="Continue a stopped run in its folder, up to its total.")] = None,
) -> int:
    """Train a DQN agent: hyperparams/<Game>.yml -> logs/dqn/<EnvId>_<N>/."""
    from dqn_cli import train as core

    live = progress and sys.stderr.isatty()
    if resume is not None:
        given = [flag for flag, value in (("--env", env), ("-c", config), ("--set", overrides), ("-n", n_timesteps),
                                          ("--seed", seed)) if value]  # fmt: skip
        if given:
            raise DqnError(f"--resume continues a run with its own saved configuration; drop {', '.join(given)}")
        result = core.resume(resume, live_progress=live, say=_say)
    else:
        run = {
            "eval_freq": eval_freq,
            "eval_episodes": eval_episodes,
            "eval_envs": eval_envs,
            "vec_env": vec_env.value,
            "save_freq": save_freq,
            "keep_checkpoints": keep_checkpoints,
            "save_replay_buffer": save_replay_buffer,
            "tensorboard": tensorboard,
        }
        request = _request(env, config, overrides, n_timesteps, seed, device=device, log_dir=log_dir, run=run)
        if dry_run:
            return _print_config(request)
        result = core.train(request, live_progress=live, say=_say)
    if result.stopped_by == signal.SIGTERM:
        return ExitStatus.TERMINATED
    if result.stopped_by is not None:
        return ExitStatus.INTERRUPTED
    return ExitStatus.SUCCESS


def _print_config(request: Any) -> int:
    from dqn_cli import rundir
    from dqn_cli.train import resolve

    _, resolved, selection = resolve(request)
    if selection.note:
        _say(selection.note)
    typer.echo(rundir.resolved_yaml(resolved), nl=False)
    return ExitStatus.SUCCESS


@app.command("config")
def config_command(
    env: EnvOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    n_timesteps: TimestepsOption = None,
    seed: SeedOption = None,
    keys: Annotated[bool, typer.Option("--keys", help="List every hyperparameter key with its default.")] = False,
) -> int:
    """Print the fully resolved configuration of `dqn train` (same as `dqn train --dry-run`)."""
    if keys:
        from dqn_cli.config import keys_help

        for key, default, description in keys_help():
            typer.echo(f"{key:42} {default:12} {description}")
        return ExitStatus.SUCCESS
    return _print_config(_request(env, config, overrides, n_timesteps, seed))


ExpIdOption = Annotated[int | None, typer.Option("--exp-id", min=1, help="Run number N of logs/dqn/<EnvId>_N.")]
RunOption = Annotated[Path | None, typer.Option("--run", help="A run folder (dqn's or rl_zoo3's).")]
ModelOption = Annotated[Path | None, typer.Option("--model", help="A model zip (SB3 1.x/2.x, rl_zoo3 or dqn).")]
BestOption = Annotated[bool, typer.Option("--best", help="Use the run's best_model.zip.")]
LogDirOption = Annotated[Path, typer.Option("--log-dir", "-f", help="Root of the run folders.")]
EpisodesOption = Annotated[int, typer.Option("--episodes", min=1, help="Episodes (full games) to play.")]
EvalSeedOption = Annotated[int, typer.Option("--seed", min=0, help="Seed of the envs and of ε-greedy.")]
EpsilonOption = Annotated[float, typer.Option("--epsilon", min=0.0, max=1.0, help="ε of the ε-greedy policy.")]
DeterministicOption = Annotated[bool, typer.Option("--deterministic", help="Greedy actions only (ε = 0).")]
RepoOption = Annotated[str | None, typer.Option("--repo", help="A Hub repo ORG/NAME: pulled into --log-dir first.")]
RevisionOption = Annotated[str | None, typer.Option("--revision", help="Branch, tag or commit of the Hub repo.")]
EndpointOption = Annotated[
    str | None, typer.Option("--endpoint", help="Hub URL (default: HF_ENDPOINT or huggingface.co).")
]
TrustOption = Annotated[
    bool, typer.Option("--trust", help="Load with SB3's full loader, which runs code in the file: trusted files only.")
]


def _query(
    env: str | None, exp_id: int | None, run: Path | None, model: Path | None, best: bool, log_dir: Path,
    repo: str | None = None, revision: str | None = None, endpoint: str | None = None,
) -> Any:  # fmt: skip
    from dqn_cli.selection import AgentQuery

    return AgentQuery(env, exp_id, run, model, best, log_dir, repo, revision, endpoint)


@app.command("eval")
def eval_command(
    env: EnvOption = None,
    exp_id: ExpIdOption = None,
    run: RunOption = None,
    model: ModelOption = None,
    best: BestOption = False,
    log_dir: LogDirOption = Path("logs"),
    episodes: EpisodesOption = 10,
    seed: EvalSeedOption = 0,
    epsilon: EpsilonOption = 0.01,
    deterministic: DeterministicOption = False,
    sticky: Annotated[bool, typer.Option("--sticky", help="Sticky actions (repeat probability 0.25).")] = False,
    n_envs: Annotated[
        int, typer.Option("--n-envs", min=0, help="Games played side by side (0: one per episode, up to 8).")
    ] = 0,
    vec_env: VecEnvOption = VecEnvChoice.ale,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    repo: RepoOption = None,
    revision: RevisionOption = None,
    endpoint: EndpointOption = None,
    trust: TrustOption = False,
) -> int:
    """Evaluate an agent on full games: mean ± std, median, min, max, human-normalized score."""
    from dqn_cli.evaluate import EvalRequest, evaluate
    from dqn_cli.report import eval_table

    request = EvalRequest(
        query=_query(env, exp_id, run, model, best, log_dir, repo, revision, endpoint), episodes=episodes, seed=seed,
        epsilon=0.0 if deterministic else epsilon, sticky=sticky, n_envs=n_envs, vec_env=vec_env.value, trust=trust,
    )  # fmt: skip
    result = evaluate(request, _say)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        eval_table(result)
    return ExitStatus.SUCCESS


@app.command()
def enjoy(
    env: EnvOption = None,
    exp_id: ExpIdOption = None,
    run: RunOption = None,
    model: ModelOption = None,
    best: BestOption = False,
    log_dir: LogDirOption = Path("logs"),
    episodes: EpisodesOption = 1,
    seed: EvalSeedOption = 0,
    epsilon: EpsilonOption = 0.01,
    deterministic: DeterministicOption = False,
    record: Annotated[bool, typer.Option("--record", help="Write an MP4 instead of opening a window.")] = False,
    video_dir: Annotated[Path | None, typer.Option(help="Folder of the video (default: the run's videos/).")] = None,
    video_length: Annotated[int | None, typer.Option(min=1, help="At most this many frames (60 per second).")] = None,
    gif: Annotated[bool, typer.Option("--gif", help="Also write a small GIF (for READMEs).")] = False,
    repo: RepoOption = None,
    revision: RevisionOption = None,
    endpoint: EndpointOption = None,
    trust: TrustOption = False,
) -> int:
    """Watch an agent play, or record it (headless machines record)."""
    from dqn_cli.enjoy import EnjoyRequest
    from dqn_cli.enjoy import enjoy as play_agent

    request = EnjoyRequest(
        query=_query(env, exp_id, run, model, best, log_dir, repo, revision, endpoint), episodes=episodes, seed=seed,
        epsilon=0.0 if deterministic else epsilon, record=record, video_dir=video_dir, video_length=video_length,
        gif=gif, trust=trust,
    )  # fmt: skip
    result = play_agent(request, _say)
    if result.video is not None:
        typer.echo(str(result.video))
    if result.gif is not None:
        typer.echo(str(result.gif))
    return ExitStatus.SUCCESS


@app.command()
def tune(
    env: EnvOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    n_trials: Annotated[int, typer.Option("--n-trials", min=1, help="Trials this command runs.")] = 20,
    timeout: Annotated[float | None, typer.Option(min=1, help="Stop starting trials after this many seconds.")] = None,
    trial_timesteps: Annotated[int | None, typer.Option(min=1, help="Training steps per trial.")] = None,
    n_evaluations: Annotated[int, typer.Option(min=1, help="Evaluations per trial (reported to the pruner).")] = 5,
    eval_episodes: Annotated[int, typer.Option(min=1, help="Episodes per evaluation.")] = 5,
    sampler: Annotated[str, typer.Option(help="tpe, random or cmaes.")] = "tpe",
    pruner: Annotated[str, typer.Option(help="median, halving, hyperband or none.")] = "median",
    seed: Annotated[int, typer.Option(min=0, help="Seed of the sampler and of the trials.")] = 0,
    study_name: Annotated[str | None, typer.Option(help="Study to create or continue (default dqn-<EnvId>).")] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna RDB URL, e.g. postgresql://user@host/db (default: SQLite in the study folder)."),
    ] = None,
    n_jobs: Annotated[int, typer.Option("--n-jobs", min=1, help="Worker processes on this machine.")] = 1,
    search_space: Annotated[
        Path | None, typer.Option(help="Search-space YAML (default: the shipped Atari one).")
    ] = None,
    log_dir: LogDirOption = Path("logs"),
    device: Annotated[str, typer.Option(help="torch device for the trials.")] = "auto",
    heartbeat_interval: Annotated[int, typer.Option(min=1, help="Seconds between trial heartbeats.")] = 10,
    vec_env: VecEnvOption = VecEnvChoice.ale,
) -> int:
    """Search hyperparameters with Optuna; writes best.yml for `dqn train -c`, trials.csv and plots."""
    from dqn_cli.report import tune_summary
    from dqn_cli.tune import TuneRequest
    from dqn_cli.tune import tune as run_tune

    if env is None:
        raise DqnError("missing --env: name the game to tune (--env SpaceInvaders)")
    request = TuneRequest(
        env=env, config_file=config, overrides=tuple(overrides or ()), search_space=search_space, n_trials=n_trials,
        timeout=timeout, trial_timesteps=trial_timesteps, n_evaluations=n_evaluations, eval_episodes=eval_episodes,
        sampler=sampler, pruner=pruner, seed=seed, study_name=study_name, storage=storage, n_jobs=n_jobs,
        log_dir=log_dir, device=device, heartbeat_interval=heartbeat_interval, vec_env=vec_env.value,
    )  # fmt: skip
    result = run_tune(request, _say)
    tune_summary(result)
    return ExitStatus.INTERRUPTED if result.interrupted else ExitStatus.SUCCESS


@app.command()
def push(
    env: EnvOption = None,
    repo_id: Annotated[
        str | None, typer.Option("--repo-id", help="Hub repo to push to (default <you>/dqn-<EnvId>).")
    ] = None,
    exp_id: ExpIdOption = None,
    run: RunOption = None,
    model: ModelOption = None,
    best: BestOption = False,
    log_dir: LogDirOption = Path("logs"),
    repo: RepoOption = None,
    episodes: Annotated[int, typer.Option("--episodes", min=1, help="Full games for the card's score.")] = 10,
    seed: EvalSeedOption = 0,
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    commit_message: Annotated[str | None, typer.Option(help="Message of the commit.")] = None,
    endpoint: EndpointOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Build the folder and list it; upload nothing.")] = False,
    trust: TrustOption = False,
) -> int:
    """Evaluate, record and share an agent on the Hugging Face Hub (rl_zoo3's repo layout)."""
    from dqn_cli.hub import PushRequest
    from dqn_cli.hub import push as share

    request = PushRequest(
        query=_query(env, exp_id, run, model, best, log_dir, repo, None, endpoint), repo_id=repo_id, episodes=episodes,
        seed=seed, private=private, commit_message=commit_message, endpoint=endpoint, dry_run=dry_run, trust=trust,
    )  # fmt: skip
    outcome = share(request, _say)
    if outcome.commit_url:
        typer.echo(outcome.commit_url)
    return ExitStatus.SUCCESS


@app.command()
def pull(
    repo_id: Annotated[str, typer.Argument(help="Hub repo ORG/NAME, e.g. sb3/dqn-SpaceInvadersNoFrameskip-v4.")],
    revision: RevisionOption = None,
    endpoint: EndpointOption = None,
    log_dir: LogDirOption = Path("logs"),
) -> int:
    """Download a shared agent into logs/ as a run folder, ready for eval, enjoy and push."""
    from dqn_cli.hub import pull as fetch

    typer.echo(str(fetch(repo_id, revision=revision, endpoint=endpoint, log_dir=log_dir, say=_say)))
    return ExitStatus.SUCCESS


@app.command()
def plot(
    env: EnvOption = None,
    run: Annotated[
        list[Path] | None, typer.Option("--run", help="A run folder (repeatable); default: all of --env.")
    ] = None,
    log_dir: LogDirOption = Path("logs"),
    x: Annotated[str, typer.Option("--x", help="steps or hours.")] = "steps",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="PNG file (default logs/plots/<EnvId>.png).")
    ] = None,
    smooth: Annotated[int, typer.Option(min=1, help="Training episodes averaged per point.")] = 100,
    human: Annotated[bool, typer.Option("--human", help="Human-normalized scores (Atari-57 games).")] = False,
    title: Annotated[str | None, typer.Option(help="Title of the figure.")] = None,
) -> int:
    """Draw learning curves as a PNG: runs of one config as a mean with a band, configs side by side."""
    from dqn_cli.plot import PlotRequest
    from dqn_cli.plot import plot as draw

    if x not in ("steps", "hours"):
        raise DqnError(f"--x {x!r}: expected steps or hours")
    path = draw(PlotRequest(tuple(run or ()), env, log_dir, x, output, smooth, human, title))
    typer.echo(str(path))
    return ExitStatus.SUCCESS


@app.command()
def games() -> int:
    """List the games and envs that have a hyperparameters file."""
    from dqn_cli import envs, hyperparams

    for stem, path in hyperparams.shipped_files().items():
        if stem == hyperparams.ATARI_DEFAULTS:
            continue
        info = envs.resolve(stem)
        typer.echo(f"{stem:16} {info.env_id:32} {path}")
    typer.echo("Any other Atari game trains with the Atari defaults (hyperparams/atari.yml).")
    return ExitStatus.SUCCESS


@app.command()
def version() -> int:
    """Print the version of dqn and of the libraries it drives."""
    from importlib.metadata import version as dist_version

    typer.echo(f"dqn {__version__}")
    for dist in ("stable_baselines3", "gymnasium", "ale-py", "torch"):
        typer.echo(f"{dist} {dist_version(dist)}")
    return ExitStatus.SUCCESS


def _fail(status: ExitStatus, message: str, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc()
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(int(status))


def _is_usage_error(exc: Exception) -> bool:
    """Typer bundles its own copy of click, so its exceptions are recognised by shape rather than by class."""
    return callable(getattr(exc, "show", None)) and getattr(exc, "exit_code", None) == ExitStatus.USAGE


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the `dqn` console script and of `python -m dqn_cli`."""
    configure_openmp()  # before anything imports torch
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not {"-h", "--help"} & set(args):  # help needs no torch: no first-run build and check
        mkl.enable()  # before torch too (MKL's AVX2/AVX-512 kernels on AMD CPUs); quiet: `dqn_cli.mkl` says why not
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        code = app(args=args, prog_name="dqn", standalone_mode=False)
    except DqnError as exc:
        _fail(exc.exit_status, str(exc), debug)
    except KeyboardInterrupt:
        _fail(ExitStatus.INTERRUPTED, "interrupted", debug)
    except Exception as exc:
        if _is_usage_error(exc):  # Typer's own (vendored click) parsing errors: its usage text, exit 2
            exc.show()  # type: ignore[attr-defined]
            raise SystemExit(int(ExitStatus.USAGE)) from None
        if type(exc).__name__ == "Abort":
            raise SystemExit(int(ExitStatus.INTERRUPTED)) from None
        # a runtime failure: one line, the traceback on --debug
        _fail(ExitStatus.ERROR, f"{type(exc).__name__}: {exc} (run again with --debug for the traceback)", debug)
    raise SystemExit(int(code or 0))

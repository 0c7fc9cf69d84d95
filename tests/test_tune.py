"""`dqn tune` on real Optuna storages: SQLite by default, PostgreSQL for workers on several machines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from dqn_cli import safe_yaml, tune

SPACE = """\
learning_rate: {low: 1.0e-4, high: 5.0e-3, log: true}
gamma: {choices: [0.98, 0.99]}
policy_kwargs.net_arch: {choices: [[64], [128, 128]]}
"""
TINY = ("--env", "CartPole-v1", "--trial-timesteps", "600", "--n-evaluations", "2", "--eval-episodes", "2",
        "--set", "learning_starts=100", "--set", "train_freq=64", "--set", "gradient_steps=32", "--device", "cpu")  # fmt: skip
STUDY_DIR = Path("logs/tune/CartPole-v1")
Finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture
def space(workdir: Path) -> Path:
    path = workdir / "space.yml"
    path.write_text(SPACE)
    return path


def load(study_name: str, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=storage)


def sqlite_url(workdir: Path, study_name: str) -> str:
    return f"sqlite:///{workdir / STUDY_DIR / study_name / 'study.db'}"


def test_tiny_study_writes_yaml_csv_and_plots_and_the_yaml_trains(dqn, workdir: Path, space: Path) -> None:
    result = dqn("tune", *TINY, "--n-trials", "3", "--search-space", str(space), "--study-name", "s1")
    assert result.code == 0, result.err
    folder = workdir / STUDY_DIR / "s1"
    assert "best trials" in result.out and "3 complete" in result.out
    rows = (folder / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("number,state,value")
    for name in ("optimization_history.png", "param_importances.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = safe_yaml.load_file(folder / "best.yml")
    study = load("s1", sqlite_url(workdir, "s1"))
    assert best["learning_rate"] == pytest.approx(study.best_params["learning_rate"])
    assert best["policy_kwargs"]["net_arch"] in ([64], [128, 128])
    assert best["n_timesteps"] == 50_000, "the file keeps the game's full budget, not the trial budget"
    trained = dqn("train", "--env", "CartPole-v1", "-c", str(folder / "best.yml"), "-n", "300", "--eval-freq", "0",
                  "--no-progress", "--no-tensorboard")  # fmt: skip
    assert trained.code == 0, trained.err

    again = dqn("tune", *TINY, "--n-trials", "1", "--search-space", str(space), "--study-name", "s1")
    assert again.code == 0 and "(3 trials so far)" in again.err
    assert len(load("s1", sqlite_url(workdir, "s1")).trials) == 4, "resuming a study by name continues it"


def test_concurrent_local_workers_run_the_exact_trial_count(dqn, workdir: Path, space: Path) -> None:
    result = dqn("tune", *TINY, "--n-trials", "4", "--n-jobs", "2", "--search-space", str(space), "--study-name", "par")
    assert result.code == 0, result.err
    trials = load("par", sqlite_url(workdir, "par")).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state in Finished for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "two processes shared the study"


@pytest.fixture
def postgres_url() -> str:
    """A fresh database on the PostgreSQL server that .ci/start-postgres started."""
    server = os.environ.get("DQN_TEST_POSTGRES_URL")
    if not server:
        if os.environ.get("DQN_REQUIRE_POSTGRES"):
            pytest.fail("DQN_REQUIRE_POSTGRES is set but DQN_TEST_POSTGRES_URL is not")
        pytest.skip("no PostgreSQL server: run `export DQN_TEST_POSTGRES_URL=$(bash .ci/start-postgres)`")
    import psycopg

    name = f"dqn_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    yield server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_postgres_workers_started_together_share_one_study(workdir: Path, space: Path, postgres_url: str) -> None:
    cmd = [sys.executable, "-m", "dqn_cli", "tune", *TINY, "--n-trials", "2", "--search-space", str(space),
           "--storage", postgres_url, "--study-name", "shared"]  # fmt: skip
    workers = [
        subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
    trials = load("shared", postgres_url).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3], "no lost and no duplicated trial"
    assert all(t.state in Finished for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2


def test_a_sigkilled_workers_trial_is_retried(dqn, workdir: Path, space: Path) -> None:
    cmd = [sys.executable, "-m", "dqn_cli", "tune", *TINY, "--trial-timesteps", "50000", "--n-trials", "1",
           "--search-space", str(space), "--study-name", "kill", "--heartbeat-interval", "1"]  # fmt: skip
    worker = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = sqlite_url(workdir, "kill")
    deadline = time.monotonic() + 120
    running: list[optuna.trial.FrozenTrial] = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.5)
        try:
            running = [t for t in load("kill", url).trials if t.state == optuna.trial.TrialState.RUNNING and t.params]
        except (KeyError, Exception):
            running = []
    assert running, "the worker never started its trial"
    time.sleep(1.5)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    killed = running[0]
    time.sleep(5)  # the grace period (three heartbeats) and a second: heartbeats are stored to the whole second

    result = dqn("tune", *TINY, "--n-trials", "1", "--search-space", str(space), "--study-name", "kill",
                 "--heartbeat-interval", "1")  # fmt: skip
    assert result.code == 0, result.err
    trials = load("kill", url).trials
    assert trials[killed.number].state == optuna.trial.TrialState.FAIL, "not left RUNNING forever"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params and retried[0].state in Finished
    assert sum(t.state in Finished for t in trials) == 1, "the killed trial did not eat the budget of this run"


def test_bad_search_space_is_rejected_before_any_trial(dqn, workdir: Path) -> None:
    cases = {
        "learning_rat: {low: 1.0e-4, high: 1.0e-3}\n": [
            "'learning_rat' is not a hyperparameter",
            "did you mean 'learning_rate'",
        ],
        "gamma: {low: 0.9, high: 1.5}\n": ["gamma", "less than or equal to 1"],
        "batch_size: {choices: []}\n": ["batch_size", "non-empty list"],
        "learning_rate: {low: 0, high: 0.1, log: true}\n": ["log range needs low > 0"],
        "gamma: 0.99\n": ["gamma", "expected {low: A, high: B} or {choices: [...]}"],
        "n_timesteps: {choices: [1000, 2000]}\n": ["cannot be tuned"],
    }
    for text, fragments in cases.items():
        path = workdir / "bad.yml"
        path.write_text(text)
        result = dqn("tune", *TINY, "--search-space", str(path), "--n-trials", "1")
        assert result.code == 2, text
        assert str(path) in result.err or "bad.yml" in result.err
        for fragment in fragments:
            assert fragment in result.err, (text, result.err)
        assert not (workdir / "logs").exists(), "nothing is created before the configuration is known to be good"


def test_learning_starts_beyond_the_trial_budget_is_a_config_error(dqn, space: Path) -> None:
    result = dqn("tune", *TINY, "--set", "learning_starts=5000", "--search-space", str(space))
    assert result.code == 2 and "learning_starts" in result.err and "--trial-timesteps" in result.err


def raise_in_trial(monkeypatch: pytest.MonkeyPatch, number: int, error: BaseException) -> None:
    """Make trial `number` raise `error` where training would run (an out-of-memory error, a Ctrl-C)."""
    original = tune.run_trial

    def run_trial(trial, spec, worker_id):  # type: ignore[no-untyped-def]
        if trial.number == number:
            raise error
        return original(trial, spec, worker_id)

    monkeypatch.setattr(tune, "run_trial", run_trial)


def test_a_trial_failing_at_run_time_fails_alone(
    dqn, workdir: Path, space: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raise_in_trial(monkeypatch, 0, MemoryError("cannot allocate the replay buffer"))
    result = dqn("tune", *TINY, "--n-trials", "2", "--search-space", str(space), "--study-name", "oom")
    assert result.code == 0, result.err
    trials = load("oom", sqlite_url(workdir, "oom")).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL and "MemoryError" in trials[0].user_attrs["error"]
    assert trials[1].state == optuna.trial.TrialState.COMPLETE
    assert "MemoryError" in (workdir / STUDY_DIR / "oom" / "trials.csv").read_text()
    assert "latest trial error: MemoryError" in result.out and "Traceback" not in result.err


def test_ctrl_c_prints_a_summary_and_exits_130(
    dqn, workdir: Path, space: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raise_in_trial(monkeypatch, 1, KeyboardInterrupt())
    result = dqn("tune", *TINY, "--n-trials", "5", "--search-space", str(space), "--study-name", "stop")
    assert result.code == 130
    assert "interrupted" in result.out and "1 complete" in result.out
    assert (workdir / STUDY_DIR / "stop" / "best.yml").is_file()


def test_trials_use_the_chosen_env_path_and_play_evaluations_side_by_side(
    dqn, space: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[dict] = []

    def make_vec_env(info, hp, **kwargs):  # type: ignore[no-untyped-def]
        made.append(kwargs)
        if len(made) == 2:
            raise RuntimeError("enough: both envs of the trial were asked for")

    monkeypatch.setattr(tune.envs, "make_vec_env", make_vec_env)
    result = dqn("tune", *TINY, "--n-trials", "1", "--search-space", str(space), "--vec-env", "sb3")
    assert result.code == 0, result.err
    train, evaluation = made
    assert train["vec_env"] == evaluation["vec_env"] == "sb3"
    assert evaluation["evaluation"] and evaluation["n_envs"] == 2, "one game per evaluation episode"
    assert dqn("tune", *TINY, "--vec-env", "gym").code == 2

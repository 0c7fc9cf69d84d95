"""`dqn push` and `dqn pull` over real HTTP, against a Hub-compatible server on 127.0.0.1 (tests/hub_server.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hub_server import FakeHub
from huggingface_hub import ModelCard

ENV_ID = "SpaceInvadersNoFrameskip-v4"
REPO = f"alice/dqn-{ENV_ID}"
TOKEN = "hf_good_secret_token_123"
OTHER = "hf_bob_token_456"
PUSHED = {"README.md", f"dqn-{ENV_ID}.zip", "config.yml", "env_kwargs.yml", "args.yml", "results.json", "replay.mp4",
          "resolved_config.yml", "train_eval_metrics.zip", "learning_curve.png"}  # fmt: skip
PUSH = ("push", "--env", "SpaceInvaders", "--repo-id", REPO, "--episodes", "2")


@pytest.fixture
def hub(here: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeHub(tokens={TOKEN: "alice", OTHER: "bob"}, orgs={"alice": ["course-org"]}) as server:
        server.patch_env(monkeypatch, here / "hf")
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def commits(hub: FakeHub, repo: str = REPO) -> int:
    return len(hub.repos[repo].commits)


def test_push_then_pull_round_trip(dqn, here: Path, hub: FakeHub) -> None:
    result = dqn(*PUSH)
    assert result.code == 0, result.err
    remote = hub.repos[REPO].files
    assert set(remote) >= PUSHED
    staged = here / "logs/dqn" / f"{ENV_ID}_1" / "hub"
    for name in PUSHED:
        assert remote[name] == (staged / name).read_bytes(), name
    assert remote[f"dqn-{ENV_ID}.zip"] == (here / "logs/dqn" / f"{ENV_ID}_1" / f"{ENV_ID}.zip").read_bytes()
    results = json.loads(remote["results.json"])
    assert results["n_eval_episodes"] == 2 and results["protocol"]["epsilon"] == 0.01

    pulled = dqn("pull", REPO, "--log-dir", "elsewhere")
    assert pulled.code == 0, pulled.err
    run = Path(pulled.out.strip())
    assert run == Path("elsewhere/dqn") / f"{ENV_ID}_1"
    assert (run / f"{ENV_ID}.zip").read_bytes() == remote[f"dqn-{ENV_ID}.zip"]
    assert (run / ENV_ID / "config.yml").read_bytes() == remote["config.yml"]
    evaluated = dqn("eval", "--run", str(run), "--episodes", "1", "--json")
    assert evaluated.code == 0, evaluated.err
    assert json.loads(evaluated.out)["loaded"].startswith("safe")


def test_repush_without_change_makes_no_commit(dqn, hub: FakeHub) -> None:
    assert dqn(*PUSH).code == 0
    before = commits(hub)
    again = dqn(*PUSH)
    assert again.code == 0, again.err
    assert "no new commit" in again.err and commits(hub) == before


def test_model_card_metadata(dqn, hub: FakeHub) -> None:
    assert dqn(*PUSH).code == 0
    card = ModelCard(hub.repos[REPO].files["README.md"].decode())
    data = card.data.to_dict()
    assert data["library_name"] == "stable-baselines3"
    assert {ENV_ID, "deep-reinforcement-learning", "reinforcement-learning", "stable-baselines3"} <= set(data["tags"])
    metric = data["model-index"][0]["results"][0]["metrics"][0]
    assert metric["type"] == "mean_reward" and re.fullmatch(r"-?\d+\.\d\d \+/- \d+\.\d\d", metric["value"])
    assert data["model-index"][0]["results"][0]["dataset"]["name"] == ENV_ID
    for section in (
        "## Evaluation",
        "Protocol",
        "## Hyperparameters",
        "## Versions",
        "rl_zoo3.load_from_hub",
        "dqn pull",
    ):
        assert section in card.text


def test_no_token_says_how_to_log_in_before_evaluating(dqn, here: Path, hub: FakeHub, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN")
    result = dqn(*PUSH)
    assert result.code == 2 and "hf auth login" in result.err
    assert not hub.requests, "nothing was sent"
    assert not (here / "logs/dqn" / f"{ENV_ID}_1" / "eval.json").exists(), "nothing was evaluated"


def test_bad_token_is_rejected_before_evaluating(dqn, here: Path, hub: FakeHub, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    result = dqn(*PUSH)
    assert result.code == 2 and "rejected the token" in result.err
    assert not (here / "logs/dqn" / f"{ENV_ID}_1" / "eval.json").exists()


def test_another_users_namespace_is_refused(dqn, hub: FakeHub) -> None:
    result = dqn("push", "--env", "SpaceInvaders", "--repo-id", "bob/dqn-x", "--episodes", "1")
    assert result.code == 2 and "403" in result.err and "bob/dqn-x" in result.err
    assert "bob/dqn-x" not in hub.repos or commits(hub, "bob/dqn-x") <= 1


def test_default_repo_id_is_the_users_and_private_is_private(dqn, hub: FakeHub) -> None:
    result = dqn("push", "--env", "SpaceInvaders", "--episodes", "1", "--private", "--commit-message", "first agent")
    assert result.code == 0, result.err
    repo = hub.repos[f"alice/dqn-{ENV_ID}"]
    assert repo.private is True
    assert repo.commits[-1].title == "first agent"


def test_server_errors_retry_then_succeed(dqn, hub: FakeHub) -> None:
    hub.fail_next(503, 2, path_contains="/preupload/")
    hub.fail_next(429, 1, path_contains="/info/lfs/objects/batch")
    result = dqn(*PUSH)
    assert result.code == 0, result.err
    assert set(hub.repos[REPO].files) >= PUSHED


def test_failure_before_the_commit_leaves_the_repo_unchanged_and_a_rerun_commits_once(dqn, hub: FakeHub) -> None:
    hub.fail_next(503, 1, path_contains="/commit/")
    failed = dqn(*PUSH)
    assert failed.code == 1 and "nothing was committed" in failed.err and "run the same command again" in failed.err
    assert set(hub.repos[REPO].files) == {".gitattributes"}
    before = commits(hub)
    assert dqn(*PUSH).code == 0
    assert commits(hub) == before + 1


def test_dry_run_uploads_nothing(dqn, here: Path, hub: FakeHub) -> None:
    result = dqn(*PUSH, "--dry-run")
    assert result.code == 0, result.err
    for name in PUSHED:
        assert f"would upload {name}" in result.err
    assert REPO not in hub.repos


def test_the_token_never_leaks(dqn, here: Path, hub: FakeHub) -> None:
    outputs = [dqn(*PUSH), dqn("pull", REPO, "--log-dir", "pulled")]
    for result in outputs:
        assert result.code == 0, result.err
        assert TOKEN not in result.out + result.err
    for request in hub.requests:
        assert TOKEN.encode() not in request.body
    for path in here.rglob("*"):
        if path.is_file() and "hf" not in path.relative_to(here).parts[:1]:
            assert TOKEN.encode() not in path.read_bytes(), path
    for name, content in hub.repos[REPO].files.items():
        assert TOKEN.encode() not in content, name


ZOO_CONFIG = b"""!!python/object/apply:collections.OrderedDict
- - - env_wrapper
    - - stable_baselines3.common.atari_wrappers.AtariWrapper
  - - frame_stack
    - 4
  - - policy
    - CnnPolicy
"""


def model_bytes(here: Path) -> bytes:
    return (here / "logs/dqn" / f"{ENV_ID}_1" / f"{ENV_ID}.zip").read_bytes()


def test_pull_rl_zoo3_layout_and_eval_with_repo(dqn, here: Path, hub: FakeHub) -> None:
    files = {f"dqn-{ENV_ID}.zip": model_bytes(here), "config.yml": ZOO_CONFIG, "env_kwargs.yml": b"{}\n",
             "results.json": b'{"mean_reward": 1.0}', "replay.mp4": b"\x00" * 100}  # fmt: skip
    hub.add_repo(f"sb3/dqn-{ENV_ID}", files=files)
    result = dqn("eval", "--repo", f"sb3/dqn-{ENV_ID}", "--episodes", "1", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["origin"] == "rl_zoo3"
    again = dqn("eval", "--repo", f"sb3/dqn-{ENV_ID}", "--episodes", "1", "--json")
    assert again.code == 0 and "already pulled" in again.err


def test_pull_flat_course_layout(dqn, here: Path, hub: FakeHub) -> None:
    hub.add_repo("student/dqn-course", files={f"dqn-{ENV_ID}.zip": model_bytes(here), "results.json": b"{}"})
    pulled = dqn("pull", "student/dqn-course")
    assert pulled.code == 0, pulled.err
    result = dqn("eval", "--run", pulled.out.strip(), "--episodes", "1", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["protocol"]["frame_skip"] == 4


def test_pull_errors(dqn, here: Path, hub: FakeHub, monkeypatch) -> None:
    missing = dqn("pull", "nobody/nothing")
    assert missing.code == 2 and "repo not found" in missing.err
    hub.add_repo("alice/not-a-model", files={"notes.txt": b"hello"})
    no_model = dqn("pull", "alice/not-a-model")
    assert no_model.code == 2 and "no DQN model" in no_model.err
    hub.add_repo("org/gated", files={f"dqn-{ENV_ID}.zip": model_bytes(here)}, gated=True)
    gated = dqn("pull", "org/gated")
    assert gated.code == 2 and "gated" in gated.err
    hub.add_repo("carol/secret", files={f"dqn-{ENV_ID}.zip": model_bytes(here)}, private=True)
    private = dqn("pull", "carol/secret")
    assert private.code == 2 and "not found" in private.err and "private" in private.err
    revision = dqn("pull", "alice/not-a-model", "--revision", "no-such-branch")
    assert revision.code == 2 and "revision not found" in revision.err
    for bad in ("noslash", "a/b c"):
        malformed = dqn("pull", bad)
        assert malformed.code == 2 and "expected ORG/NAME" in malformed.err
    push = dqn("push", "--env", "SpaceInvaders", "--repo-id", "not valid")
    assert push.code == 2 and "--repo-id" in push.err and not hub.requests_matching("POST", "/api/repos/create")

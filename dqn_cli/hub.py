"""`dqn push` and `dqn pull`: sharing agents on the Hugging Face Hub in the SB3/rl_zoo3 repo layout.

Built on `huggingface_hub.HfApi` directly (rl_zoo3's push_to_hub/load_from_hub do not work with
huggingface_hub 2.x). The token comes from `HF_TOKEN` or the `hf auth login` cache, and only ever goes into the
Authorization header: it is never printed, logged, written into a file, or uploaded.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dqn_cli import rundir, safe_yaml
from dqn_cli.errors import DqnError
from dqn_cli.zoo import ATARI_WRAPPER

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from dqn_cli.selection import Agent

Say = Callable[[str], None]
ALGO = "dqn"
STAGING = "hub"  # the folder a push builds inside the run folder
HUB_RECORD = "hub.json"  # where a pulled run came from


class HubError(DqnError):
    """A Hub operation failed for a reason the user can act on."""


def hub_endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def check_repo_id(repo_id: str, option: str) -> str:
    """`ORG/NAME` as the Hub accepts it, or a one-line error naming the option."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(
            f"{option} {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.'), e.g. sb3/dqn-PongNoFrameskip-v4"
        ) from None
    if "/" not in repo_id:
        raise HubError(f"{option} {repo_id!r}: expected ORG/NAME with the namespace, e.g. sb3/dqn-PongNoFrameskip-v4")
    return repo_id


def require_token() -> str:
    """The user's token, or a clear message saying how to log in (before any work starts)."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HubError("no Hugging Face token: run `hf auth login` (or set HF_TOKEN) with a token that can write")
    return token


def make_api(endpoint: str | None, token: str | None) -> HfApi:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(endpoint), token=token or False)


def explain(exc: Exception, repo_id: str, endpoint: str, during: str) -> DqnError:
    """One line for any Hub failure: what failed and what to do."""
    from huggingface_hub import errors

    where = f"{repo_id} on {endpoint}"
    if isinstance(exc, errors.GatedRepoError):
        return HubError(f"{where} is gated: accept its conditions on the repo page, then `hf auth login`")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return HubError(f"{where}: repo not found (or private: log in with an account that can see it)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubError(f"{where}: revision not found; check --revision")
    if isinstance(exc, errors.EntryNotFoundError):
        return HubError(f"{where}: a file is missing from the repo ({str(exc).splitlines()[0][:120]})")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        return HubError(f"{endpoint} rejected the token (HTTP 401): log in again with `hf auth login`")
    if status == 403:
        return HubError(f"{where}: the token may not {during} here (HTTP 403); use your own namespace or a write token")
    reason = f"HTTP {status}" if status else type(exc).__name__
    error = DqnError(f"{during} {where} failed ({reason}); nothing was committed, so run the same command again")
    error.exit_status = error.exit_status.ERROR
    return error


def whoami(api: HfApi, endpoint: str) -> str:
    try:
        return str(api.whoami()["name"])
    except Exception as exc:
        raise explain(exc, "your account", endpoint, "check the token with") from None


# --- push ---------------------------------------------------------------------------------------------------


def results_json(result: dict[str, Any]) -> dict[str, Any]:
    """rl_zoo3's `results.json` keys, plus the protocol the figures were measured with."""
    return {
        "mean_reward": round(result["mean"], 2),
        "std_reward": round(result["std"], 2),
        "is_deterministic": result["protocol"]["epsilon"] == 0.0,
        "n_eval_episodes": result["episodes"],
        "mean_minus_std": round(result["mean_minus_std"], 2),
        "human_normalized_mean": result["human_normalized"]["mean"] if result["human_normalized"] else None,
        "protocol": result["protocol"],
        "returns": result["returns"],
    }


def _metrics_zip(run_dir: Path | None, out: Path) -> Path | None:
    """`train_eval_metrics.zip` as rl_zoo3 makes it (monitor CSVs and evaluations.npz), with fixed timestamps."""
    files = sorted([*run_dir.glob("*.monitor.csv"), *run_dir.glob(rundir.EVALUATIONS)]) if run_dir else []
    if not files:
        return None
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            info = zipfile.ZipInfo(path.name, date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return out


def stage(agent: Agent, result: dict[str, Any], video: Path | None, repo_id: str, folder: Path) -> list[Path]:
    """Build the folder that becomes the repo: every file deterministic, so an unchanged agent re-pushes nothing."""
    from dqn_cli import curves
    from dqn_cli.model_card import model_card

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    name = agent.env.name
    shutil.copyfile(agent.model_path, folder / f"{ALGO}-{name}.zip")
    params = agent.run_dir / name if agent.run_dir else None
    for file in ("config.yml", "env_kwargs.yml", "args.yml"):
        if params is not None and (params / file).is_file():
            shutil.copyfile(params / file, folder / file)
    if not (folder / "env_kwargs.yml").is_file():
        (folder / "env_kwargs.yml").write_text(safe_yaml.dump(dict(agent.hyperparams.env_kwargs)), encoding="utf-8")
    if agent.run_dir and (agent.run_dir / rundir.RESOLVED).is_file():
        shutil.copyfile(agent.run_dir / rundir.RESOLVED, folder / rundir.RESOLVED)
    (folder / "results.json").write_text(json.dumps(results_json(result), indent=2) + "\n", encoding="utf-8")
    if video is not None:
        shutil.copyfile(video, folder / "replay.mp4")
    _metrics_zip(agent.run_dir, folder / "train_eval_metrics.zip")
    if agent.run_dir is not None:
        curve = curves.read(
            agent.run_dir, frames_per_step=4 if agent.env.is_atari and agent.env.native_frame_skip == 1 else 1
        )
        if len(curve.returns) or len(curve.eval_means):
            curves.draw_single(curve, f"DQN on {agent.env.env_id}", folder / "learning_curve.png")
    (folder / "README.md").write_text(model_card(agent, result, repo_id, folder), encoding="utf-8")
    return sorted(p for p in folder.rglob("*") if p.is_file())


@dataclass(frozen=True)
class PushOutcome:
    repo_id: str
    files: list[Path]
    commit_url: str | None  # None: dry run, or nothing changed


def upload(
    folder: Path, repo_id: str, *, endpoint: str, token: str, private: bool, message: str, say: Say
) -> str | None:
    """Create the repo if needed and upload the folder in one commit; None when nothing changed."""
    api = make_api(endpoint, token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        before = api.model_info(repo_id).sha
        # huggingface_hub leaves out files whose content the repo already has and commits nothing when no file
        # changed; the commit is made only after every LFS object is uploaded, so a failure leaves the repo as it was.
        info = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model", commit_message=message)
    except DqnError:
        raise
    except Exception as exc:
        raise explain(exc, repo_id, endpoint, "upload to") from None
    if info.oid == before:
        say(f"{repo_id} already holds exactly these files: no new commit")
        return None
    return str(info.commit_url)


@dataclass(frozen=True)
class PushRequest:
    query: Any  # selection.AgentQuery
    repo_id: str | None = None
    episodes: int = 10
    seed: int = 0
    private: bool = False
    commit_message: str | None = None
    endpoint: str | None = None
    dry_run: bool = False
    video_length: int = 3600  # frames: one minute of play
    trust: bool = False


def push(request: PushRequest, say: Say) -> PushOutcome:
    """Evaluate, record, build the repo folder, and upload it in one commit (or, with dry_run, list it)."""
    import tempfile

    from dqn_cli.enjoy import EnjoyRequest, enjoy
    from dqn_cli.evaluate import EvalRequest, evaluate
    from dqn_cli.selection import AgentQuery, select

    endpoint = hub_endpoint(request.endpoint)
    if request.repo_id is not None:
        check_repo_id(request.repo_id, "--repo-id")
    token = None if request.dry_run else require_token()  # before any evaluation starts
    user = whoami(make_api(endpoint, token), endpoint) if token else "USER"  # a rejected token fails here, early
    agent = select(request.query)
    repo_id = request.repo_id or f"{user}/dqn-{agent.env.name}"
    query = AgentQuery(model=agent.model_path, env=agent.env.env_id)
    say(f"evaluating {agent.model_path} on {request.episodes} full games")
    result = evaluate(EvalRequest(query=query, episodes=request.episodes, seed=request.seed, trust=request.trust))
    with tempfile.TemporaryDirectory() as videos:
        clip = EnjoyRequest(query=query, seed=request.seed, record=True, video_dir=Path(videos),
                            video_length=request.video_length, trust=request.trust)  # fmt: skip
        video = enjoy(clip, lambda _: None).video
        folder = (agent.run_dir or agent.model_path.parent) / STAGING
        files = stage(agent, result, video, repo_id, folder)
    if request.dry_run:
        for path in files:
            say(f"would upload {path.relative_to(folder)} ({path.stat().st_size:,} bytes)")
        return PushOutcome(repo_id, files, None)
    assert token is not None
    message = request.commit_message or f"DQN on {agent.env.env_id}: {result['mean']:.2f} +/- {result['std']:.2f}"
    url = upload(folder, repo_id, endpoint=endpoint, token=token, private=request.private, message=message, say=say)
    return PushOutcome(repo_id, files, url)


# --- pull ---------------------------------------------------------------------------------------------------

PULL_PATTERNS = ["*.zip", "*.yml", "*.yaml", "*.json", "README.md"]


def _env_from_repo(files: list[str], folder: Path, repo_id: str) -> str:
    """The env id of a downloaded repo: rl_zoo3's args.yml, else the model zip's name, else the card's metadata."""
    if (folder / "args.yml").is_file():
        args = safe_yaml.load_file(folder / "args.yml", safe_yaml.ZooRunLoader)
        if isinstance(args, dict) and isinstance(args.get("env"), str):
            return args["env"]
    for name in files:
        if name.startswith(f"{ALGO}-") and name.endswith(".zip") and "/" not in name:
            return name.removeprefix(f"{ALGO}-").removesuffix(".zip")
    raise HubError(
        f"{repo_id}: no DQN model in the repo (expected {ALGO}-<EnvId>.zip; found {', '.join(files) or 'nothing'})"
    )


def _existing_pull(log_dir: Path, repo_id: str, sha: str) -> Path | None:
    for record in sorted((log_dir / rundir.ALGO).glob(f"*/{HUB_RECORD}")):
        data = json.loads(record.read_text(encoding="utf-8"))
        if data.get("repo_id") == repo_id and data.get("sha") == sha:
            return record.parent
    return None


def pull(repo_id: str, *, revision: str | None, endpoint: str | None, log_dir: Path, say: Say) -> Path:
    """Download a DQN repo into a run folder of `log_dir` that eval, enjoy and push accept; reused if already there."""
    import tempfile

    from huggingface_hub import get_token, snapshot_download

    from dqn_cli import envs

    check_repo_id(repo_id, "repo")
    base = hub_endpoint(endpoint)
    api = make_api(base, get_token())
    try:
        info = api.model_info(repo_id, revision=revision)
    except Exception as exc:
        raise explain(exc, repo_id, base, "read") from None
    existing = _existing_pull(log_dir, repo_id, str(info.sha))
    if existing is not None:
        say(f"{repo_id}@{str(info.sha)[:8]} already pulled: {existing}")
        return existing
    with tempfile.TemporaryDirectory() as tmp:
        try:
            snapshot_download(repo_id, revision=info.sha, endpoint=base, token=get_token() or False,
                              local_dir=tmp, allow_patterns=PULL_PATTERNS)  # fmt: skip
        except Exception as exc:
            raise explain(exc, repo_id, base, "download") from None
        folder = Path(tmp)
        files = sorted(
            p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts
        )
        env_info = envs.resolve(_env_from_repo(files, folder, repo_id))
        run_dir = rundir.create(log_dir, env_info)
        _install(folder, run_dir, env_info)
    record = {"repo_id": repo_id, "sha": info.sha, "revision": revision or "main", "endpoint": base}
    (run_dir / HUB_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    say(f"pulled {repo_id}@{str(info.sha)[:8]} into {run_dir}")
    return run_dir


def _install(folder: Path, run_dir: Path, info: Any) -> None:
    """Lay the downloaded files out as a run folder (rl_zoo3's layout, plus dqn's resolved config if pushed by dqn)."""
    name = info.name
    shutil.copyfile(folder / f"{ALGO}-{name}.zip", rundir.model_path(run_dir, name))
    params = run_dir / name
    params.mkdir()
    for file in ("config.yml", "env_kwargs.yml", "args.yml"):
        if (folder / file).is_file():
            shutil.copyfile(folder / file, params / file)
    if not (params / "config.yml").is_file():  # the flat course layout: the zoo's Atari defaults
        config: dict[str, Any] = {
            "frame_stack": 4,
            "env_wrapper": [ATARI_WRAPPER],
        }
        (params / "config.yml").write_text(safe_yaml.dump(config if info.is_atari else {}), encoding="utf-8")
    if not (params / "args.yml").is_file():
        (params / "args.yml").write_text(
            safe_yaml.dump({"algo": ALGO, "env": info.env_id, "env_kwargs": None}), encoding="utf-8"
        )
    for file in (rundir.RESOLVED, "results.json", "README.md"):
        if (folder / file).is_file():
            shutil.copyfile(folder / file, run_dir / file)

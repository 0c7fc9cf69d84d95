"""The real huggingface_hub client (httpx2) against FakeHub over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import FakeHub, git_blob_oid
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

GOOD, BOB, READ_ONLY = "hf_good_alice_secret", "hf_bob_secret", "hf_read_only_secret"
BIG = random.Random(0).randbytes(20_000)  # > 10 KB and binary: goes through LFS
SMALL = b"learning_rate: 0.0001\nbuffer_size: 100000\n"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    tokens: dict[str, str | tuple[str, str]] = {GOOD: "alice", BOB: "bob", READ_ONLY: ("alice", "read")}
    with FakeHub(tokens=tokens, orgs={"alice": ["course-org"]}) as server:
        server.patch_env(monkeypatch, tmp_path)
        yield server
        assert server.errors == []


@pytest.fixture
def api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=GOOD)


def make_folder(root: Path) -> Path:
    folder = root / "agent"
    folder.mkdir()
    (folder / "config.yml").write_bytes(SMALL)
    (folder / "dqn-PongNoFrameskip-v4.zip").write_bytes(BIG)
    (folder / "README.md").write_text("---\nlibrary_name: stable-baselines3\n---\n# DQN agent\n", encoding="utf-8")
    return folder


def download(hub: FakeHub, repo_id: str, filename: str, tmp_path: Path, **kwargs) -> bytes:
    kwargs.setdefault("token", GOOD)
    path = hf_hub_download(repo_id, filename, endpoint=hub.endpoint, cache_dir=tmp_path / "cache", **kwargs)
    return Path(path).read_bytes()


def test_whoami_with_good_and_bad_token(hub: FakeHub, api: HfApi) -> None:
    me = api.whoami()
    assert me["name"] == "alice"
    assert [org["name"] for org in me["orgs"]] == ["course-org"]
    with pytest.raises(HfHubHTTPError) as info:
        HfApi(endpoint=hub.endpoint, token="hf_wrong").whoami()
    assert info.value.response.status_code == 401
    assert "Invalid user token" in str(info.value)


def test_upload_folder_then_download_byte_identical(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    repo_id = "alice/dqn-PongNoFrameskip-v4"
    url = api.create_repo(repo_id, repo_type="model", private=False, exist_ok=True)
    assert url.repo_id == repo_id
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id  # 409 + exist_ok: fine
    info = api.upload_folder(folder_path=make_folder(tmp_path), repo_id=repo_id, commit_message="first push")

    repo = hub.repos[repo_id]
    assert len(repo.commits) == 2  # the Hub's "initial commit" (.gitattributes), then the upload
    assert info.oid == repo.head
    assert repo.lfs_paths == {"dqn-PongNoFrameskip-v4.zip"}
    assert repo.files["dqn-PongNoFrameskip-v4.zip"] == BIG
    assert len(hub.requests_matching("POST", ".git/info/lfs/objects/batch")) == 1
    assert len(hub.requests_matching("PUT", "/_fakehub/lfs-upload/")) == 1
    assert len(hub.requests_matching("POST", "/lfs/objects/verify")) == 1
    assert api.list_repo_files(repo_id) == [".gitattributes", "README.md", "config.yml", "dqn-PongNoFrameskip-v4.zip"]
    assert [c.title for c in api.list_repo_commits(repo_id)] == ["first push", "initial commit"]

    model = api.model_info(repo_id, files_metadata=True)
    assert model.sha == repo.head and model.private is False and model.id == repo_id
    lfs = {s.rfilename: s.lfs for s in model.siblings or []}
    assert lfs["dqn-PongNoFrameskip-v4.zip"].sha256 == hashlib.sha256(BIG).hexdigest()
    tree = {f.path: f for f in api.list_repo_tree(repo_id, recursive=True)}
    assert tree["config.yml"].blob_id == git_blob_oid(SMALL) and tree["config.yml"].lfs is None

    assert download(hub, repo_id, "dqn-PongNoFrameskip-v4.zip", tmp_path) == BIG
    assert download(hub, repo_id, "config.yml", tmp_path, revision=repo.head) == SMALL
    head = hub.requests_matching("HEAD", "/resolve/main/dqn-PongNoFrameskip-v4.zip")[0]
    assert head.status == 200
    # The token goes in the Authorization header only: never in a request body (LFS upload, commit, ...).
    assert all(GOOD.encode() not in r.body for r in hub.requests)
    assert all(r.headers.get("authorization") in (None, f"Bearer {GOOD}") for r in hub.requests)
    assert "authorization" not in hub.requests_matching("PUT", "/_fakehub/lfs-upload/")[0].headers


def test_unchanged_repush_makes_no_commit(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    repo_id = "alice/dqn-repush"
    folder = make_folder(tmp_path)
    api.create_repo(repo_id)
    first = api.upload_folder(folder_path=folder, repo_id=repo_id)
    puts = len(hub.requests_matching("PUT"))

    again = api.upload_folder(folder_path=folder, repo_id=repo_id)
    assert len(hub.repos[repo_id].commits) == 2
    assert again.oid == first.oid
    assert len(hub.requests_matching("POST", "/commit/")) == 1  # the client skipped the commit call
    assert len(hub.requests_matching("PUT")) == puts  # the LFS object was not uploaded again

    (folder / "config.yml").write_bytes(SMALL + b"gamma: 0.99\n")
    api.upload_folder(folder_path=folder, repo_id=repo_id)
    repo = hub.repos[repo_id]
    assert len(repo.commits) == 3
    assert repo.commits[-1].operations == [{"key": "file", "path": "config.yml"}]


def test_snapshot_download_of_a_seeded_repo(hub: FakeHub, tmp_path: Path) -> None:
    files = {
        "dqn-SpaceInvadersNoFrameskip-v4.zip": BIG,
        "config.yml": SMALL,
        "replay.mp4": b"\0video",
        "dqn-SpaceInvadersNoFrameskip-v4/_stable_baselines3_version": b"2.7.0\n",
    }
    repo = hub.add_repo("sb3/dqn-SpaceInvadersNoFrameskip-v4", files=files)
    folder = snapshot_download(
        "sb3/dqn-SpaceInvadersNoFrameskip-v4",
        endpoint=hub.endpoint,
        token=False,
        local_dir=tmp_path / "pulled",
        allow_patterns=["*.zip", "*.yml", "*/*"],
    )
    pulled = {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in Path(folder).rglob("*")
        if p.is_file() and ".cache" not in p.parts
    }
    assert pulled == {k: v for k, v in files.items() if k != "replay.mp4"}
    assert repo.lfs_paths == {"dqn-SpaceInvadersNoFrameskip-v4.zip", "replay.mp4"}
    cached = snapshot_download(
        "sb3/dqn-SpaceInvadersNoFrameskip-v4",
        endpoint=hub.endpoint,
        token=False,
        revision=repo.head,
        cache_dir=tmp_path / "cache",
    )
    assert (Path(cached) / "replay.mp4").read_bytes() == b"\0video"


def test_writing_into_another_namespace_is_forbidden(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("bob/not-yours", exist_ok=True)
    assert info.value.response.status_code == 403
    assert not isinstance(info.value, RepositoryNotFoundError)

    hub.add_repo("bob/public", files={"a.txt": b"bob's"})
    assert api.create_repo("bob/public", exist_ok=True).repo_id == "bob/public"  # 403 but the repo exists: no error
    with pytest.raises(HfHubHTTPError) as info:
        api.upload_file(path_or_fileobj=b"alice's", path_in_repo="a.txt", repo_id="bob/public")
    assert info.value.response.status_code == 403
    assert hub.repos["bob/public"].files == {"a.txt": b"bob's"}

    with pytest.raises(HfHubHTTPError) as info:  # a read token cannot write, even into its own namespace
        HfApi(endpoint=hub.endpoint, token=READ_ONLY).create_repo("alice/read-only")
    assert info.value.response.status_code == 403

    api.create_repo("course-org/shared")  # the user's org is fine
    api.upload_file(path_or_fileobj=b"ok", path_in_repo="b.txt", repo_id="course-org/shared")
    assert hub.repos["course-org/shared"].files["b.txt"] == b"ok"


def test_missing_repo_file_and_revision(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/missing")
    with pytest.raises(RepositoryNotFoundError):
        download(hub, "alice/missing", "a.txt", tmp_path)
    hub.add_repo("alice/present", files={"a.txt": b"a"})
    with pytest.raises(EntryNotFoundError):
        download(hub, "alice/present", "b.txt", tmp_path)
    with pytest.raises(RevisionNotFoundError):
        download(hub, "alice/present", "a.txt", tmp_path, revision="v9")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alice/present", revision="0" * 40)


def test_gated_repo(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo("course-org/gated", files={"model.zip": BIG}, gated=True)
    bob = HfApi(endpoint=hub.endpoint, token=BOB)
    assert bob.model_info("course-org/gated").gated == "auto"  # metadata stays public
    for token in (BOB, False):
        with pytest.raises(GatedRepoError):
            download(hub, "course-org/gated", "model.zip", tmp_path, token=token)
    assert download(hub, "course-org/gated", "model.zip", tmp_path, token=GOOD) == BIG  # alice is in course-org
    hub.grant_access("course-org/gated", "bob")
    assert download(hub, "course-org/gated", "model.zip", tmp_path / "bob", token=BOB) == BIG


def test_private_repo_is_invisible_to_others(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    api.create_repo("alice/secret", private=True)
    api.upload_file(path_or_fileobj=b"hidden", path_in_repo="x.txt", repo_id="alice/secret")
    assert hub.repos["alice/secret"].private
    assert api.model_info("alice/secret").private is True
    bob = HfApi(endpoint=hub.endpoint, token=BOB)
    for call in (
        lambda: bob.model_info("alice/secret"),
        lambda: bob.list_repo_files("alice/secret"),
        lambda: download(hub, "alice/secret", "x.txt", tmp_path, token=BOB),
        lambda: download(hub, "alice/secret", "x.txt", tmp_path, token=False),
    ):
        with pytest.raises(RepositoryNotFoundError) as info:
            call()
        assert not isinstance(info.value, GatedRepoError)
    assert download(hub, "alice/secret", "x.txt", tmp_path) == b"hidden"


def test_download_retries_through_two_503s(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo("alice/flaky", files={"model.zip": BIG})
    hub.fail_next(503, 2, path_contains="/resolve/")
    assert download(hub, "alice/flaky", "model.zip", tmp_path) == BIG
    statuses = [(r.method, r.status) for r in hub.requests_matching(path_contains="/resolve/")]
    assert statuses == [("HEAD", 503), ("HEAD", 503), ("HEAD", 200), ("GET", 200)]


def test_upload_retries_429_but_commit_does_not_retry_503(hub: FakeHub, api: HfApi) -> None:
    api.create_repo("alice/rate-limited")
    hub.fail_next(429, 1, path_contains="/preupload/")
    hub.fail_next(503, 1, method="PUT")  # the LFS upload to the storage href
    api.upload_file(path_or_fileobj=BIG, path_in_repo="model.zip", repo_id="alice/rate-limited")
    assert hub.repos["alice/rate-limited"].files["model.zip"] == BIG
    assert [r.status for r in hub.requests_matching("PUT")] == [503, 200]

    hub.fail_next(503, 1, path_contains="/commit/")
    with pytest.raises(HfHubHTTPError) as info:
        api.upload_file(path_or_fileobj=b"new", path_in_repo="new.txt", repo_id="alice/rate-limited")
    assert info.value.response.status_code == 503
    assert len(hub.repos["alice/rate-limited"].commits) == 2


def test_multipart_lfs_upload_and_commit_operations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeHub(tokens={GOOD: "alice"}, multipart_chunk_size=8192) as hub:
        hub.patch_env(monkeypatch, tmp_path)
        api = HfApi(token=GOOD)  # endpoint from the patched huggingface_hub.constants
        api.create_repo("alice/ops")
        api.create_commit(
            "alice/ops",
            [CommitOperationAdd("weights/model.bin", BIG), CommitOperationAdd("notes.txt", b"v1")],
            commit_message="add",
        )
        assert len(hub.requests_matching("PUT", "/_fakehub/lfs-upload/")) == 3  # 20 000 bytes in 8 KiB parts
        assert hub.repos["alice/ops"].files["weights/model.bin"] == BIG
        assert download(hub, "alice/ops", "weights/model.bin", tmp_path) == BIG

        stale = hub.repos["alice/ops"].commits[0].oid
        with pytest.raises(HfHubHTTPError) as info:
            api.create_commit(
                "alice/ops", [CommitOperationDelete("notes.txt")], commit_message="rm", parent_commit=stale
            )
        assert info.value.response.status_code == 412
        api.create_commit("alice/ops", [CommitOperationDelete("weights/")], commit_message="rm folder")
        assert sorted(hub.repos["alice/ops"].files) == [".gitattributes", "notes.txt"]
        assert hub.errors == []

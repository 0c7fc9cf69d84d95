"""A Hugging Face Hub-compatible HTTP server for tests (stdlib only), spoken to by the real `huggingface_hub` client.

`FakeHub` runs a `ThreadingHTTPServer` on 127.0.0.1 (ephemeral port) in a background thread and implements the
subset of the Hub's HTTP API that `huggingface_hub` 2.4 (httpx2) uses for pushing and pulling model repos, with the
same URLs, headers, JSON bodies and error conventions, worked out from huggingface_hub's own source code:

    from hub_server import FakeHub  # tests/ is on sys.path under pytest (as for `import agents`)

    with FakeHub(tokens={"hf_good": "alice"}, orgs={"alice": ["course-org"]}) as hub:
        hub.patch_env(monkeypatch, tmp_path)            # env vars + huggingface_hub.constants (see below)
        api = HfApi(endpoint=hub.endpoint, token="hf_good")
        api.create_repo("alice/dqn-Pong", exist_ok=True)
        api.upload_folder(folder_path=folder, repo_id="alice/dqn-Pong")
        hub.add_repo("sb3/dqn-SpaceInvadersNoFrameskip-v4", files={"dqn-SpaceInvadersNoFrameskip-v4.zip": b"..."})
        hf_hub_download("sb3/dqn-SpaceInvadersNoFrameskip-v4", "...zip", endpoint=hub.endpoint, cache_dir=tmp_path)
        assert len(hub.repos["alice/dqn-Pong"].commits) == 2   # "initial commit" (.gitattributes) + the upload

Endpoints (`{type}` is models|datasets|spaces|kernels; repo ids are always `namespace/name`):
    GET  /api/whoami-v2                                 name, orgs, auth.accessToken.role
    POST /api/repos/create, DELETE /api/repos/delete    like the Hub, a created repo gets an "initial commit"
                                                        holding a `.gitattributes` (so list_repo_files shows it)
    POST /api/validate-yaml                             README.md check done by upload_folder/create_commit (no-op)
    GET  /api/{type}/{id}[/revision/{rev}]              model_info/repo_info: id, sha, siblings, private, gated...
                                                        (`?blobs=true` adds size/blobId/lfs to siblings)
    GET  /api/{type}/{id}/tree/{rev}[/{path}]           list_repo_tree/list_repo_files (`recursive`, `expand`)
    POST /api/{type}/{id}/paths-info/{rev}              get_paths_info
    GET  /api/{type}/{id}/commits/{rev}, /refs          list_repo_commits, list_repo_refs
    GET  /api/{type}/{id}/auth-check[/write]            auth_check
    POST /api/{type}/{id}/preupload/{rev}               upload mode per file ("lfs" when size > lfs_threshold,
                                                        a NUL byte in the 512-byte sample, or an LFS suffix such as
                                                        .zip/.mp4/.bin/.pt), `shouldIgnore` (.gitignore) and `oid`
    POST /{id}.git/info/lfs/objects/batch               git-lfs batch API: an upload href per missing object
    PUT  /_fakehub/lfs-upload/{upload_id}[/{part}]      the "storage" href (no auth, like a presigned S3 URL); the
                                                        body's sha256 and size must match; multipart when
                                                        `multipart_chunk_size` is set (completion is a POST)
    POST /{id}.git/info/lfs/objects/verify              the verify action (huggingface_hub does call it)
    POST /api/{type}/{id}/commit/{rev}                  NDJSON: header / file (base64) / lfsFile (must have been
                                                        uploaded) / deletedFile / deletedFolder; `parentCommit`
                                                        mismatch -> 412; `?create_pr=1` makes refs/pr/N
    HEAD/GET /{id}/resolve/{rev}/{path}                 hf_hub_download/snapshot_download: X-Repo-Commit, ETag (git
                                                        blob sha1), X-Linked-Etag + X-Linked-Size (sha256 and size,
                                                        LFS files only), Content-Length, Accept-Ranges/Range (206)
    Revisions: a branch ("main", "refs/pr/N"), a full commit sha or a unique hex prefix (>= 7 chars).

Auth (every request): `Authorization: Bearer <token>` is looked up in `tokens` (token -> user, or token ->
(user, "read"|"write")). A token the server does not know -> 401 with `X-Error-Message: Invalid credentials in
Authorization header` (huggingface_hub raises a plain HfHubHTTPError; whoami() says "Invalid user token.").
A user owns a namespace when it is their name or one of their `orgs`. Reads of a private repo the user does not
own, and of a missing repo -> `X-Error-Code: RepoNotFound` (401 without a token, 404 with one, like the Hub) ->
RepositoryNotFoundError. Writes (create repo, preupload, LFS batch, commit) into a namespace the user does not own
-> 403 (HfHubHTTPError, `.response.status_code == 403`); without any token -> 401. A gated repo (`gated=True`)
shows its metadata and tree to everyone, but /resolve answers 401/403 with `X-Error-Code: GatedRepo` ->
GatedRepoError, except for its owners and users given `hub.grant_access(repo_id, user)`. Missing file ->
404 `EntryNotFound` (+ X-Repo-Commit) -> EntryNotFoundError (RemoteEntryNotFoundError); unknown revision -> 404
`RevisionNotFound` -> RevisionNotFoundError.

Re-pushing unchanged files: the skip happens client-side, and depends on the server's preupload answer. For every
file, `preupload` returns the `oid` of the file currently at that path (git blob sha1 for a regular file, sha256 for
an LFS file, exactly what `CommitOperationAdd._local_oid` computes). `create_commit` drops every addition whose
remote oid equals its local oid and, when nothing is left, makes no POST /commit at all: it logs "No files have been
modified since last commit. Skipping to prevent empty commit." and returns a CommitInfo for the current head
(via GET repo_info). So `len(hub.repos[repo_id].commits)` does not change. Unchanged LFS files are not uploaded again
either: the LFS batch API answers "already present" (no `actions`) for an oid the repo already stores. The server
itself always creates a new commit when /commit is called (even if the tree does not change), so the "no new
commit" behaviour that tests observe really comes from huggingface_hub + correct preupload oids.

Retries (huggingface_hub 2.4, `http_backoff`: 5 retries on 408/429/500/502/503/504 and on network errors; the wait
is 1 s, 2 s, 4 s... or `Retry-After` + 1 s on a 429, so `fail_next(429)` (Retry-After: 0) costs 1 s per retry):
    retry by themselves: preupload, LFS batch, LFS PUT (single and multipart parts), LFS verify, multipart completion,
        paginated listings (list_repo_tree / list_repo_files / list_repo_commits, and the tree listing inside
        snapshot_download), and the HEAD /resolve of hf_hub_download/snapshot_download: its first HEAD does not
        retry, but on a 429/5xx with nothing in the local cache it is repeated with backoff (so `fail_next(503, 2)`
        then hf_hub_download succeeds after ~1 s).
    the GET /resolve download (http_get) retries 408 and 429 only (a 503 there raises).
    no retry: whoami, create_repo, delete_repo, repo_info/model_info (so snapshot_download's first call), the
        POST /commit of create_commit/upload_folder, validate-yaml, auth_check, list_repo_refs.

What a test must set (`hub.patch_env(monkeypatch, tmp_path)` does all of it): huggingface_hub reads its env vars
into `huggingface_hub.constants` at import time, so setting env vars inside a test is not enough once it has been
imported; the constants are patched too:
    HF_HUB_DISABLE_XET=1 / constants.HF_HUB_DISABLE_XET = True   (required: hf_xet is installed, and without this
        uploads go through Xet, which FakeHub does not implement; downloads never use Xet here because the server
        sends no X-Xet-Hash header)
    HF_HUB_DISABLE_TELEMETRY=1, HF_HUB_DISABLE_UPDATE_CHECK=1, HF_HUB_OFFLINE unset (constants.HF_HUB_OFFLINE=False)
    HF_HOME / HF_HUB_CACHE / HF_ASSETS_CACHE / HF_XET_CACHE / HF_TOKEN_PATH under tmp_path, so nothing touches ~/.cache
        and no token saved by `hf auth login` on the machine is picked up; HF_TOKEN / HUGGING_FACE_HUB_TOKEN /
        HF_OIDC_RESOURCE removed (set HF_TOKEN afterwards, with monkeypatch, to test code that reads it)
    HF_ENDPOINT + constants.ENDPOINT + constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.endpoint, for code that does not
        pass `endpoint=` (HfApi() and hf_hub_download() default to constants.ENDPOINT).

Limitations: no Xet (upload or download), no git (clone/push over git), no CDN redirect for LFS files (they are served
directly with X-Linked-* headers, so the Authorization header is never dropped on LFS downloads as with the real
CDN), no branches/tags API, no discussions API (create_pr only makes the refs/pr/N ref), no LFS `download`
operation, no real YAML validation, repo ids need a namespace, and state lives in memory for the `with` block only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fnmatch
import hashlib
import json
import re
import secrets
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

__all__ = ["Blob", "Commit", "FakeHub", "HubRepo", "RecordedRequest", "git_blob_oid"]

# Extensions the Hub's default `.gitattributes` (plus .mp4) sends to LFS.
DEFAULT_LFS_SUFFIXES = (
    ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gz", ".h5", ".joblib", ".lfs", ".mlmodel", ".model",
    ".msgpack", ".mp4", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt", ".pth", ".rar",
    ".safetensors", ".tar", ".tflite", ".tgz", ".wasm", ".xz", ".zip", ".zst",
)  # fmt: skip
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
HEX_RE = re.compile(r"^[0-9a-f]{7,40}$")


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as `oid`/`blobId`/ETag for a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _repo_key(repo_type: str, repo_id: str) -> str:
    return f"{URL_PREFIXES[repo_type]}{repo_id}"


# --- repository model -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """One file's content; `lfs` says whether it is stored as an LFS object (pointer in git) or as a git blob."""

    data: bytes
    lfs: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def git_oid(self) -> str:
        """The git blob id: of the content for a regular file, of the LFS pointer file for an LFS file."""
        return git_blob_oid(self.pointer if self.lfs else self.data)

    @property
    def content_oid(self) -> str:
        """What preupload reports as `oid`, and what huggingface_hub compares with `CommitOperationAdd._local_oid`."""
        return self.sha256 if self.lfs else git_blob_oid(self.data)


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    tree: dict[str, Blob]
    operations: list[dict[str, str]] = field(default_factory=list)  # [{"key": "file"|"lfsFile"|..., "path": ...}]


@dataclass
class HubRepo:
    repo_id: str
    repo_type: str = "model"
    private: bool = False
    gated: bool = False
    owner: str | None = None  # an extra user with read/write access, besides the namespace's owners
    created_at: str = field(default_factory=_now)
    refs: dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N -> commit oid
    all_commits: dict[str, Commit] = field(default_factory=dict)  # oid -> commit, every branch, creation order
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content (the LFS store)
    gated_users: set[str] = field(default_factory=set)
    next_pr: int = 1

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def head(self) -> str:
        return self.refs["main"]

    def history(self, oid: str | None) -> list[Commit]:
        """Commits reachable from `oid`, newest first."""
        out = []
        while oid is not None:
            commit = self.all_commits[oid]
            out.append(commit)
            oid = commit.parent
        return out

    @property
    def commits(self) -> list[Commit]:
        """History of `main`, oldest first: `len(repo.commits)` is the number of commits on main."""
        return list(reversed(self.history(self.refs.get("main"))))

    @property
    def files(self) -> dict[str, bytes]:
        """The files on `main` (path -> bytes)."""
        return {path: blob.data for path, blob in self.tree("main").items()}

    @property
    def lfs_paths(self) -> set[str]:
        """Paths on `main` stored as LFS objects."""
        return {path for path, blob in self.tree("main").items() if blob.lfs}

    def resolve(self, revision: str) -> str | None:
        """A branch/ref name, a full commit sha or a unique hex prefix -> commit oid (None if unknown)."""
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.all_commits:
            return revision
        if HEX_RE.match(revision):
            matches = [oid for oid in self.all_commits if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None

    def tree(self, revision: str) -> dict[str, Blob]:
        oid = self.resolve(revision)
        return dict(self.all_commits[oid].tree) if oid is not None else {}

    def add_commit(
        self,
        tree: dict[str, Blob],
        *,
        branch: str,
        parent: str | None,
        title: str,
        message: str = "",
        author: str = "",
        operations: list[dict[str, str]] | None = None,
    ) -> Commit:
        tree_id = hashlib.sha1(
            "".join(f"{path}\0{blob.git_oid}\n" for path, blob in sorted(tree.items())).encode()
        ).hexdigest()
        seed = f"tree {tree_id}\nparent {parent}\nauthor {author}\nseq {len(self.all_commits)}\n\n{title}\n{message}"
        commit = Commit(
            oid=hashlib.sha1(seed.encode()).hexdigest(),
            parent=parent,
            title=title,
            message=message,
            author=author,
            date=_now(),
            tree=dict(tree),
            operations=list(operations or []),
        )
        self.all_commits[commit.oid] = commit
        self.refs[branch] = commit.oid
        for blob in tree.values():
            if blob.lfs:
                self.lfs_objects.setdefault(blob.sha256, blob.data)
        return commit


# --- HTTP plumbing ----------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the server received it. `headers` has lower-cased names; `path` includes the query string."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # the status the server answered


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Request:
    method: str
    path: str  # without the query string, still percent-encoded
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    user: str | None = None
    role: str = "write"

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def flag(self, name: str) -> bool:
        return any(v.lower() in ("1", "true") for v in self.query.get(name, []))


@dataclass
class _Fault:
    status: int
    remaining: int
    path_contains: str | None
    method: str | None
    retry_after: str | None


def _json(status: int, obj: Any, headers: dict[str, str] | None = None, content_type: str = "application/json"):
    return _Response(status, json.dumps(obj).encode(), {"Content-Type": content_type, **(headers or {})})


def _error(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> _Response:
    extra = {"X-Error-Message": message, **(headers or {})}
    if code is not None:
        extra["X-Error-Code"] = code
    return _json(status, {"error": message}, extra)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every response carries a Content-Length
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.hub._connections.add(self.connection)

    def finish(self) -> None:
        self.server.hub._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._read_body()
        response = self.server.hub._handle(self.command, self.path, dict(self.headers.items()), body)
        self.send_response(response.status)
        headers = {"Content-Length": str(len(response.body)), **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: FakeHub


Route = tuple[str, "re.Pattern[str]", Callable[[_Request, "re.Match[str]"], _Response]]
API_REPO = r"^/api/(?P<type>models|datasets|spaces|kernels)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
GIT_REPO = r"^/(?:(?P<prefix>datasets|spaces|kernels)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)"


# --- the server -------------------------------------------------------------------------------------------------


class FakeHub:
    """A Hub-compatible HTTP server on 127.0.0.1 for tests. See the module docstring for what it implements.

    Args:
        tokens: token -> user name, or token -> (user name, "read" | "write"). Unknown tokens get a 401.
        orgs: user name -> organisations the user belongs to (the user may write into them).
        lfs_threshold: files larger than this many bytes are uploaded as LFS (the real Hub uses 10 MB).
        lfs_suffixes: file extensions always uploaded as LFS.
        multipart_chunk_size: if set, LFS objects larger than this are uploaded with the multipart protocol.
    """

    def __init__(
        self,
        tokens: dict[str, str | tuple[str, str]] | None = None,
        orgs: dict[str, list[str]] | None = None,
        *,
        lfs_threshold: int = 10 * 1024,
        lfs_suffixes: Iterable[str] = DEFAULT_LFS_SUFFIXES,
        multipart_chunk_size: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.tokens: dict[str, tuple[str, str]] = {
            token: (value, "write") if isinstance(value, str) else (value[0], value[1])
            for token, value in (tokens or {}).items()
        }
        self.orgs: dict[str, list[str]] = {user: list(names) for user, names in (orgs or {}).items()}
        self.lfs_threshold = lfs_threshold
        self.lfs_suffixes = tuple(s.lower() for s in lfs_suffixes)
        self.multipart_chunk_size = multipart_chunk_size
        self.repos: dict[str, HubRepo] = {}  # repo_id (models) or "datasets/<id>", "spaces/<id>" -> repo
        self.requests: list[RecordedRequest] = []
        self.errors: list[BaseException] = []  # exceptions raised while handling requests (answered with a 500)
        self._faults: list[_Fault] = []
        self._uploads: dict[str, dict[str, Any]] = {}  # upload id -> {"repo", "oid", "size", "parts"}
        self._lock = threading.RLock()
        self._connections: set[Any] = set()
        self._host, self._port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._build_routes()

    # --- lifecycle ---

    def start(self) -> FakeHub:
        self._server = _Server((self._host, self._port), _Handler)
        self._server.hub = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="FakeHub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        # huggingface_hub keeps one shared httpx client with pooled keep-alive connections: drop them (only if the
        # module is loaded; this file does not import huggingface_hub).
        http_module = sys.modules.get("huggingface_hub.utils._http")
        if http_module is not None:
            http_module.close_session()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "FakeHub is not running: use it as a context manager or call start()"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- helpers for tests ---

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes] | None = None,
        *,
        private: bool = False,
        gated: bool = False,
        owner: str | None = None,
        repo_type: str = "model",
        message: str = "initial commit",
    ) -> HubRepo:
        """Seed a repo with one commit holding exactly `files` (no `.gitattributes` is added).

        `owner`: a user given read/write access on top of the namespace's owners (the namespace itself, i.e. the
        part of `repo_id` before "/", is owned by the user of that name and the members of the org of that name).
        """
        assert "/" in repo_id, "repo ids need a namespace"
        repo = HubRepo(repo_id=repo_id, repo_type=repo_type, private=private, gated=gated, owner=owner)
        tree = {path: Blob(data, self._is_lfs(path, len(data), data[:512])) for path, data in (files or {}).items()}
        ops = [{"key": "lfsFile" if blob.lfs else "file", "path": path} for path, blob in tree.items()]
        repo.add_commit(tree, branch="main", parent=None, title=message, author=owner or repo.namespace, operations=ops)
        with self._lock:
            self.repos[_repo_key(repo_type, repo_id)] = repo
        return repo

    def grant_access(self, repo_id: str, user: str, repo_type: str = "model") -> None:
        """Let `user` download from a gated repo."""
        with self._lock:
            self.repos[_repo_key(repo_type, repo_id)].gated_users.add(user)

    def fail_next(
        self,
        status: int,
        count: int = 1,
        path_contains: str | None = None,
        *,
        method: str | None = None,
        retry_after: str | None = "0",
    ) -> None:
        """The next `count` requests whose path contains `path_contains` (and with `method`, if given) get `status`.

        A 429 carries `Retry-After: <retry_after>` (huggingface_hub then waits retry_after + 1 seconds). Faults are
        consumed in the order they were added; a request consumes at most one.
        """
        with self._lock:
            self._faults.append(_Fault(status, count, path_contains, method.upper() if method else None, retry_after))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_matching(self, method: str | None = None, path_contains: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method.upper()) and (path_contains is None or path_contains in r.path)
            ]

    def patch_env(self, monkeypatch: Any, tmp_path: Path, *, set_endpoint: bool = True) -> None:
        """Point huggingface_hub at this server and at `tmp_path` (env vars and `huggingface_hub.constants`)."""
        from huggingface_hub import constants  # imported here: the server itself needs only the stdlib

        home = Path(tmp_path) / "hf_home"
        paths = {
            "HF_HOME": home,
            "HF_HUB_CACHE": home / "hub",
            "HUGGINGFACE_HUB_CACHE": home / "hub",
            "HF_ASSETS_CACHE": home / "assets",
            "HF_XET_CACHE": home / "xet",
            "HF_TOKEN_PATH": home / "token",
        }
        for name in (
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "HF_OIDC_RESOURCE",
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
        ):
            monkeypatch.delenv(name, raising=False)
        for name, value in {
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            **{k: str(v) for k, v in paths.items()},
        }.items():
            monkeypatch.setenv(name, value)
        for name, path in paths.items():
            monkeypatch.setattr(constants, name, str(path))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_UPDATE_CHECK", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        if set_endpoint:
            monkeypatch.setenv("HF_ENDPOINT", self.endpoint)
            monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
            monkeypatch.setattr(
                constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
            )

    # --- request handling ---

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Response:
        lowered = {name.lower(): value for name, value in headers.items()}
        record = RecordedRequest(method, raw_path, lowered, body)
        with self._lock:
            self.requests.append(record)
            try:
                response = self._dispatch(method, raw_path, lowered, body)
            except Exception as exc:  # a bug in FakeHub or a malformed request: answer 500, keep it for the test
                self.errors.append(exc)
                response = _error(500, f"FakeHub internal error: {exc!r}")
            record.status = response.status
        return response

    def _dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Response:
        path, _, query = raw_path.partition("?")
        fault = self._take_fault(method, raw_path)
        if fault is not None:
            return fault
        request = _Request(method, path, parse_qs(query, keep_blank_values=True), headers, body)
        authorization = headers.get("authorization")
        if authorization is not None:
            token = authorization[7:] if authorization.lower().startswith("bearer ") else ""
            if token not in self.tokens:
                return _error(401, "Invalid credentials in Authorization header")
            request.user, request.role = self.tokens[token]
        for route_method, pattern, handler in self._routes:
            if method == route_method or (method == "HEAD" and route_method == "GET"):
                match = pattern.match(path)
                if match:
                    return handler(request, match)
        return _error(404, f"Not Found: {method} {path}")

    def _take_fault(self, method: str, raw_path: str) -> _Response | None:
        for fault in self._faults:
            if fault.remaining <= 0 or (fault.method is not None and fault.method != method):
                continue
            if fault.path_contains is not None and fault.path_contains not in raw_path:
                continue
            fault.remaining -= 1
            headers = {"Retry-After": fault.retry_after} if fault.status == 429 and fault.retry_after else {}
            return _error(fault.status, f"FakeHub: injected HTTP {fault.status}", headers=headers)
        return None

    def _build_routes(self) -> list[Route]:
        table = [
            ("GET", r"^/api/whoami-v2$", self._whoami),
            ("POST", r"^/api/repos/create$", self._create_repo),
            ("DELETE", r"^/api/repos/delete$", self._delete_repo),
            ("POST", r"^/api/validate-yaml$", self._validate_yaml),
            ("GET", API_REPO + r"(?:/revision/(?P<rev>.+))?$", self._repo_info),
            ("GET", API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", self._tree),
            ("POST", API_REPO + r"/paths-info/(?P<rev>.+)$", self._paths_info),
            ("GET", API_REPO + r"/commits/(?P<rev>.+)$", self._commits),
            ("GET", API_REPO + r"/refs$", self._refs),
            ("GET", API_REPO + r"/auth-check(?P<write>/write)?$", self._auth_check),
            ("POST", API_REPO + r"/preupload/(?P<rev>.+)$", self._preupload),
            ("POST", API_REPO + r"/commit/(?P<rev>.+)$", self._commit),
            ("POST", GIT_REPO + r"\.git/info/lfs/objects/batch$", self._lfs_batch),
            ("POST", GIT_REPO + r"\.git/info/lfs/objects/verify$", self._lfs_verify),
            ("PUT", r"^/_fakehub/lfs-upload/(?P<uid>[0-9a-f]+)(?:/(?P<part>\d+))?$", self._lfs_put),
            ("POST", r"^/_fakehub/lfs-upload/(?P<uid>[0-9a-f]+)$", self._lfs_complete),
            ("GET", GIT_REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", self._resolve),
        ]
        return [(method, re.compile(pattern), handler) for method, pattern, handler in table]

    # --- permissions ---

    def _owns(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or namespace in self.orgs.get(user, []))

    def _can_read(self, repo: HubRepo, user: str | None) -> bool:
        return not repo.private or self._owns(user, repo.namespace) or (user is not None and user == repo.owner)

    def _can_write(self, repo: HubRepo, request: _Request) -> bool:
        user = request.user
        return request.role == "write" and (
            self._owns(user, repo.namespace) or (user is not None and user == repo.owner)
        )

    def _has_gated_access(self, repo: HubRepo, user: str | None) -> bool:
        if not repo.gated:
            return True
        return user is not None and (self._owns(user, repo.namespace) or user in (repo.owner, *repo.gated_users))

    @staticmethod
    def _not_found(request: _Request) -> _Response:
        # The Hub answers 401 to anonymous requests and 404 to authenticated ones, both with RepoNotFound.
        return _error(401 if request.user is None else 404, "Repository not found", "RepoNotFound")

    def _lookup(self, request: _Request, match: re.Match[str], write: bool = False) -> HubRepo | _Response:
        groups = match.groupdict()
        plural = groups.get("type") or groups.get("prefix")
        repo_type = REPO_TYPES[plural] if plural else "model"
        repo_id = f"{unquote(groups['ns'])}/{unquote(groups['name'])}"
        repo = self.repos.get(_repo_key(repo_type, repo_id))
        if repo is None or not self._can_read(repo, request.user):
            return self._not_found(request)
        if write and not self._can_write(repo, request):
            if request.user is None:
                return _error(401, "You must be authenticated to write to this repo")
            return _error(403, f"You don't have the rights to write to {repo_id}: your token cannot write here")
        return repo

    def _revision(self, repo: HubRepo, raw: str) -> str | _Response:
        revision = unquote(raw)
        oid = repo.resolve(revision)
        if oid is None:
            return _error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return oid

    def _is_lfs(self, path: str, size: int, sample: bytes) -> bool:
        if size == 0:
            return False
        return size > self.lfs_threshold or path.lower().endswith(self.lfs_suffixes) or b"\0" in sample

    # --- account and repo management ---

    def _whoami(self, request: _Request, match: re.Match[str]) -> _Response:
        if request.user is None:
            return _error(401, "Invalid credentials in Authorization header")
        user = request.user
        return _json(
            200,
            {
                "type": "user",
                "id": hashlib.md5(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user.title(),
                "email": f"{user}@example.com",
                "emailVerified": True,
                "isPro": False,
                "canPay": False,
                "avatarUrl": f"/avatars/{user}.svg",
                "orgs": [
                    {"type": "org", "name": org, "fullname": org, "roleInOrg": "write"}
                    for org in self.orgs.get(user, [])
                ],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fakehub", "role": request.role}},
            },
        )

    def _create_repo(self, request: _Request, match: re.Match[str]) -> _Response:
        if request.user is None:
            return _error(401, "You must be authenticated to create a repo")
        payload = request.json() or {}
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or request.user
        repo_id = f"{namespace}/{payload.get('name')}"
        url = f"{self.endpoint}/{URL_PREFIXES.get(repo_type, '')}{repo_id}"
        if repo_type not in URL_PREFIXES or not payload.get("name"):
            return _error(400, "Invalid repo type or name")
        if request.role != "write" or not self._owns(request.user, namespace):
            return _error(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
        key = _repo_key(repo_type, repo_id)
        if key in self.repos:
            return _json(
                409,
                {"error": f"You already created this {repo_type} repo", "url": url},
                {"X-Error-Message": f"You already created this {repo_type} repo"},
            )
        repo = HubRepo(repo_id=repo_id, repo_type=repo_type, private=payload.get("visibility") == "private")
        gitattributes = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in self.lfs_suffixes)
        repo.add_commit(
            {".gitattributes": Blob(gitattributes.encode())},
            branch="main",
            parent=None,
            title="initial commit",
            author=request.user,
            operations=[{"key": "file", "path": ".gitattributes"}],
        )
        self.repos[key] = repo
        return _json(200, {"url": url, "name": repo_id, "id": hashlib.md5(key.encode()).hexdigest()[:24]})

    def _delete_repo(self, request: _Request, match: re.Match[str]) -> _Response:
        payload = request.json() or {}
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or request.user
        key = _repo_key(repo_type, f"{namespace}/{payload.get('name')}")
        repo = self.repos.get(key)
        if repo is None or not self._can_read(repo, request.user):
            return self._not_found(request)
        if not self._can_write(repo, request):
            return _error(403, "You don't have the rights to delete this repo")
        del self.repos[key]
        return _Response(200)

    def _validate_yaml(self, request: _Request, match: re.Match[str]) -> _Response:
        return _json(200, {"errors": [], "warnings": []})

    # --- reading ---

    def _repo_info(self, request: _Request, match: re.Match[str]) -> _Response:
        repo = self._lookup(request, match)
        if isinstance(repo, _Response):
            return repo
        oid = self._revision(repo, match["rev"] or "main")
        if isinstance(oid, _Response):
            return oid
        commit = repo.all_commits[oid]
        with_blobs = request.flag("blobs")
        siblings = []
        for path, blob in sorted(commit.tree.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=blob.size, blobId=blob.git_oid)
                if blob.lfs:
                    sibling["lfs"] = {"size": blob.size, "sha256": blob.sha256, "pointerSize": len(blob.pointer)}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(blob.size for blob in commit.tree.values()),
        }
        if repo.repo_type == "model":
            info.update(modelId=repo.repo_id, spaces=[])
        return _json(200, info)

    def _last_commit(self, repo: HubRepo, oid: str, path: str) -> dict[str, str]:
        history = repo.history(oid)
        last = history[-1]
        for commit, older in zip(history, [*history[1:], None], strict=True):
            mine = {p: b.git_oid for p, b in commit.tree.items() if p == path or p.startswith(path + "/")}
            theirs = (
                {}
                if older is None
                else {p: b.git_oid for p, b in older.tree.items() if p == path or p.startswith(path + "/")}
            )
            if mine != theirs:
                last = commit
                break
        return {"id": last.oid, "title": last.title, "date": last.date}

    def _entries(self, repo: HubRepo, oid: str, paths: Iterable[str], expand: bool) -> list[dict[str, Any]]:
        tree = repo.all_commits[oid].tree
        out = []
        for path in paths:
            if path in tree:
                blob = tree[path]
                entry: dict[str, Any] = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
                if blob.lfs:
                    entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
            else:
                children = sorted(f"{p}\0{b.git_oid}" for p, b in tree.items() if p.startswith(path + "/"))
                digest = hashlib.sha1("\n".join(children).encode()).hexdigest()
                entry = {"type": "directory", "oid": digest, "size": 0, "path": path}
            if expand:
                entry["lastCommit"] = self._last_commit(repo, oid, path)
            out.append(entry)
        return out

    def _tree(self, request: _Request, match: re.Match[str]) -> _Response:
        repo = self._lookup(request, match)
        if isinstance(repo, _Response):
            return repo
        oid = self._revision(repo, match["rev"])
        if isinstance(oid, _Response):
            return oid
        base = unquote(match["path"] or "").strip("/")
        prefix = f"{base}/" if base else ""
        tree = repo.all_commits[oid].tree
        recursive = request.flag("recursive")
        paths: set[str] = set()
        for path in tree:
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            paths.update(prefix + "/".join(parts[: i + 1]) for i in range(min(depth, len(parts))))
        if base and not paths:
            return _error(
                404, f"{base} does not exist on {unquote(match['rev'])}", "EntryNotFound", {"X-Repo-Commit": oid}
            )
        ordered = sorted(paths)
        return _json(200, self._entries(repo, oid, ordered, request.flag("expand")))

    def _paths_info(self, request: _Request, match: re.Match[str]) -> _Response:
        repo = self._lookup(request, match)
        if isinstance(repo, _Response):
            return repo
        oid = self._revision(repo, match["rev"])
        if isinstance(oid, _Response):
            return oid
        if "json" in request.headers.get("content-type", ""):
            form = request.json() or {}
            wanted, expand = form.get("paths", []), bool(form.get("expand"))
        else:
            form = parse_qs(request.body.decode(), keep_blank_values=True)
            wanted, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() in ("1", "true")
        tree = repo.all_commits[oid].tree
        existing = [
            p.strip("/") for p in wanted if p.strip("/") in tree or any(k.startswith(p.strip("/") + "/") for k in tree)
        ]
        return _json(200, self._entries(repo, oid, existing, expand))

    def _commits(self, request: _Request, match: re.Match[str]) -> _Response:
        repo = self._lookup(request, match)
        if isinstance(repo, _Response):
            return repo
        oid = self._revision(repo, match["rev"])
        if isinstance(oid, _Response):
            return oid
        formatted = "formatted" in request.query.get("expand[]", [])
        items = []
        for commit in repo.history(oid):
            item: dict[str, Any] = {
                "id": commit.oid,
                "title": commit.title,
                "message": commit.message,
                "authors": [{"user": commit.author, "avatar": None}],
                "date": commit.date,
            }
            if formatted:
                item["formatted"] = {"title": commit.title, "message": commit.message}
            items.append(item)
        return _json(200, items)

    def _refs(self, request: _Request, match: re.Match[str]) -> _Response:
        repo = self._lookup(request, match)
        if isinstance(repo, _Response):
            return repo
        branches = [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": o}
            for n, o in repo.refs.items()
            if not n.startswith("refs/")
        ]
        prs = [{"name": n, "ref": n, "targetCommit": o} for n, o in repo.refs.items() if n.startswith("refs/pr/")]
        return _json(
            200,
            {
                "branches": branches,
                "converts": [],
                "tags": [],
                "pullRequests": prs if request.flag("include_prs") else None,
            },
        )

    def _auth_check(self, request: _Request, match: re.Match[str]) -> _Response:
        repo = self._lookup(request, match, write=bool(match["write"]))
        if isinstance(repo, _Response):
            return repo
        if not self._has_gated_access(repo, request.user):
            return self._gated(request, repo)
        return _json(200, {"ok": True})

    @staticmethod
    def _gated(request: _Request, repo: HubRepo) -> _Response:
        message = (
            f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated "
            "to access it. Please log in."
        )
        return _error(401 if request.user is None else 403, message, "GatedRepo")

    def _resolve(self, request: _Request, match: re.Match[str]) -> _Response:
        repo = self._lookup(request, match)
        if isinstance(repo, _Response):
            return repo
        if not self._has_gated_access(repo, request.user):
            return self._gated(request, repo)
        oid = self._revision(repo, match["rev"])
        if isinstance(oid, _Response):
            return oid
        path = unquote(match["path"])
        blob = repo.all_commits[oid].tree.get(path)
        if blob is None:
            return _error(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": oid})
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": oid,
            "ETag": f'"{blob.git_oid}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.split('/')[-1])};",
        }
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)})
        range_header = request.headers.get("range")
        if not range_header:
            return _Response(200, blob.data, headers)
        found = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", range_header)
        start, end = (found.group(1), found.group(2)) if found else ("", "")
        if start:
            first, last = int(start), min(int(end) if end else blob.size - 1, blob.size - 1)
        elif end:
            first, last = max(blob.size - int(end), 0), blob.size - 1
        else:
            first, last = 1, 0
        if not found or first > last:
            return _Response(416, b"", {"Content-Range": f"bytes */{blob.size}"})
        headers["Content-Range"] = f"bytes {first}-{last}/{blob.size}"
        return _Response(206, blob.data[first : last + 1], headers)

    # --- writing ---

    def _gitignore(self, repo: HubRepo, oid: str, content: str | None) -> list[str]:
        if content is None:
            blob = repo.all_commits[oid].tree.get(".gitignore")
            content = blob.data.decode(errors="replace") if blob else ""
        lines = (line.strip() for line in content.splitlines())
        return [line.strip("/") for line in lines if line and not line.startswith(("#", "!"))]

    @staticmethod
    def _ignored(path: str, patterns: list[str]) -> bool:
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) or path.startswith(p + "/") for p in patterns)

    def _preupload(self, request: _Request, match: re.Match[str]) -> _Response:
        repo = self._lookup(request, match, write=True)
        if isinstance(repo, _Response):
            return repo
        oid = self._revision(repo, match["rev"])
        if isinstance(oid, _Response):
            return oid
        payload = request.json() or {}
        tree = repo.all_commits[oid].tree
        ignore = self._gitignore(repo, oid, payload.get("gitIgnore"))
        files = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample") or "")
            existing = tree.get(path)
            files.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if self._is_lfs(path, size, sample) else "regular",
                    "shouldIgnore": self._ignored(path, ignore),
                    "oid": existing.content_oid if existing is not None else None,
                }
            )
        return _json(200, {"files": files, "commitOid": oid})

    def _lfs_batch(self, request: _Request, match: re.Match[str]) -> _Response:
        lfs = "application/vnd.git-lfs+json"
        repo = self._lookup(request, match, write=True)
        if isinstance(repo, _Response):
            return repo
        payload = request.json() or {}
        if payload.get("operation") != "upload":
            return _error(422, "FakeHub only implements the LFS 'upload' operation")
        ref = (payload.get("ref") or {}).get("name")
        if ref is not None and repo.resolve(ref) is None:
            return _error(404, f"Invalid rev id: {ref}", "RevisionNotFound")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
                objects.append(
                    {
                        "oid": str(oid),
                        "size": size if isinstance(size, int) else 0,
                        "error": {"code": 422, "message": "Invalid oid or size"},
                    }
                )
                continue
            if oid in repo.lfs_objects and len(repo.lfs_objects[oid]) == size:
                objects.append({"oid": oid, "size": size})  # already stored: no actions, nothing to upload
                continue
            upload_id = secrets.token_hex(16)
            self._uploads[upload_id] = {"repo": repo, "oid": oid, "size": size, "parts": {}}
            href = f"{self.endpoint}/_fakehub/lfs-upload/{upload_id}"
            upload: dict[str, Any] = {"href": href}
            chunk = self.multipart_chunk_size
            if chunk is not None and size > chunk:
                upload["header"] = {
                    "chunk_size": str(chunk),
                    **{str(i): f"{href}/{i}" for i in range(1, -(-size // chunk) + 1)},
                }
            verify = {
                "href": f"{self.endpoint}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}.git/info/lfs/objects/verify"
            }
            objects.append(
                {"oid": oid, "size": size, "authenticated": True, "actions": {"upload": upload, "verify": verify}}
            )
        transfer = "multipart" if self.multipart_chunk_size is not None else "basic"
        return _json(200, {"transfer": transfer, "objects": objects, "hash_algo": "sha256"}, content_type=lfs)

    def _store_upload(self, upload: dict[str, Any], data: bytes) -> _Response:
        if len(data) != upload["size"] or hashlib.sha256(data).hexdigest() != upload["oid"]:
            return _error(400, "The uploaded content does not match the announced oid and size")
        upload["repo"].lfs_objects[upload["oid"]] = data
        return _Response(200)

    def _lfs_put(self, request: _Request, match: re.Match[str]) -> _Response:
        upload = self._uploads.get(match["uid"])
        if upload is None:
            return _error(404, "Unknown upload")
        if match["part"] is None:
            return self._store_upload(upload, request.body)
        upload["parts"][int(match["part"])] = request.body
        return _Response(200, b"", {"ETag": f'"{hashlib.md5(request.body).hexdigest()}"'})

    def _lfs_complete(self, request: _Request, match: re.Match[str]) -> _Response:
        upload = self._uploads.get(match["uid"])
        if upload is None:
            return _error(404, "Unknown upload")
        payload = request.json() or {}
        parts = upload["parts"]
        numbers = [int(p["partNumber"]) for p in payload.get("parts", [])]
        for part in payload.get("parts", []):
            number = int(part["partNumber"])
            if number not in parts or part["etag"].strip('"') != hashlib.md5(parts[number]).hexdigest():
                return _error(400, f"Part {number} was not uploaded or its etag does not match")
        if payload.get("oid") != upload["oid"] or numbers != sorted(parts):
            return _error(400, "Completion payload does not match the upload")
        return self._store_upload(upload, b"".join(parts[n] for n in numbers))

    def _lfs_verify(self, request: _Request, match: re.Match[str]) -> _Response:
        repo = self._lookup(request, match, write=True)
        if isinstance(repo, _Response):
            return repo
        payload = request.json() or {}
        data = repo.lfs_objects.get(payload.get("oid", ""))
        if data is None or len(data) != payload.get("size"):
            return _error(404, "LFS object not found")
        return _Response(200)

    def _apply(self, repo: HubRepo, tree: dict[str, Blob], key: str, value: dict[str, Any]) -> _Response | None:
        path = str(value.get("path", "")).strip("/")
        if key == "file":
            content = value.get("content", "")
            try:
                data = (
                    base64.b64decode(content, validate=True) if value.get("encoding") == "base64" else content.encode()
                )
            except (binascii.Error, ValueError):
                return _error(400, f"Invalid base64 content for {path}")
            tree[path] = Blob(data)
        elif key == "lfsFile":
            data = repo.lfs_objects.get(str(value.get("oid")))
            if data is None or ("size" in value and value["size"] != len(data)):
                return _error(
                    422, f"Your push was rejected because an LFS pointer pointed to a file that does not exist ({path})"
                )
            tree[path] = Blob(data, lfs=True)
        elif key == "deletedFile":
            if tree.pop(path, None) is None:
                return _error(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            doomed = [p for p in tree if p.startswith(path + "/")]
            if not doomed:
                return _error(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del tree[p]
        else:
            return _error(400, f"Unknown commit operation: {key}")
        return None

    def _commit(self, request: _Request, match: re.Match[str]) -> _Response:
        repo = self._lookup(request, match, write=True)
        if isinstance(repo, _Response):
            return repo
        revision = unquote(match["rev"])
        if revision not in repo.refs:
            return _error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        try:
            lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        except json.JSONDecodeError:
            return _error(400, "Invalid NDJSON payload")
        if not lines or lines[0].get("key") != "header":
            return _error(400, "The first line of the payload must be the commit header")
        header = lines[0].get("value") or {}
        parent = repo.refs[revision]
        if header.get("parentCommit") and repo.resolve(header["parentCommit"]) != parent:
            return _error(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo.all_commits[parent].tree)
        operations = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            problem = self._apply(repo, tree, str(key), value)
            if problem is not None:
                return problem
            operations.append({"key": str(key), "path": str(value.get("path", ""))})
        pr_url = None
        branch = revision
        if request.flag("create_pr"):
            number, repo.next_pr = repo.next_pr, repo.next_pr + 1
            branch = f"refs/pr/{number}"
            pr_url = f"{self.endpoint}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}/discussions/{number}"
        commit = repo.add_commit(
            tree,
            branch=branch,
            parent=parent,
            title=str(header.get("summary") or ""),
            message=str(header.get("description") or ""),
            author=request.user or "",
            operations=operations,
        )
        url = f"{self.endpoint}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}/commit/{commit.oid}"
        return _json(
            200,
            {"success": True, "commitOid": commit.oid, "commitUrl": url, "hookOutput": "", "pullRequestUrl": pr_url},
        )

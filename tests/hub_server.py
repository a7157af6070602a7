"""A local stand-in for the Hugging Face Hub HTTP API, for tests (standard library only).

The real `huggingface_hub` client (2.4, plain LFS transfer: set `HF_HUB_DISABLE_XET=1`) pushes to and pulls
from it: repos with git-like commits and branches, regular files committed inline (base64) and LFS objects
uploaded through the LFS batch API (basic transfer + verify). Everything uploaded is stored under `root` and
served back from there; the state survives a `stop()` / `start()` on the same root.

Upload rule (answered by the preupload endpoint): a file goes to LFS when its name matches one of
`LFS_PATTERNS` (also written to each new repo's `.gitattributes`), when it is at least `LFS_SIZE_THRESHOLD`
bytes, or when its first 512 bytes contain a NUL byte (binary); otherwise it is committed as a regular file.

Any `Authorization: Bearer <token>` is accepted and means the user `user` (member of `orgs`). Writes without
a token get a 401; reading a private repo without a token gets a 401 with `X-Error-Code: RepoNotFound`.

Endpoints (`{t}` is models/datasets/spaces, `{p}` the "", "datasets/" or "spaces/" URL prefix):
GET /api/whoami-v2, GET /api/agent-harnesses, POST /api/validate-yaml, POST /api/repos/create, DELETE
/api/repos/delete, GET /api/{t}/{id}[/revision/{rev}], GET /api/{t}/{id}/tree/{rev}[/{path}], GET
/api/{t}/{id}/refs, GET /api/{t}/{id}/commits/{rev}, POST /api/{t}/{id}/preupload/{rev}, POST
/api/{t}/{id}/commit/{rev}, POST|DELETE /api/{t}/{id}/branch/{name}, POST /{p}{id}.git/info/lfs/objects/batch
and /verify, PUT /_lfs/{oid} (the upload href), HEAD|GET /{p}{id}/resolve/{rev}/{path} (with Range).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.gz", "*.h5", "*.joblib", "*.msgpack", "*.npy", "*.npz",
    "*.onnx", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.png", "*.jpg", "*.jpeg", "*.pt", "*.pth",
    "*.safetensors", "*.tar", "*.tgz", "*.xz", "*.zip", "*.zst", "*tfevents*",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS).encode()
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def upload_mode(path: str, size: int, sample: bytes) -> str:
    """"lfs" or "regular", by the rule in the module docstring."""
    name = path.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatch(name, pattern) for pattern in LFS_PATTERNS):
        return "lfs"
    if size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
        return "lfs"
    return "regular"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class HubRequest:
    """One served request, as logged by the stand-in (`path` is the raw URL path, without the query)."""

    method: str
    path: str
    status: int
    query: str = ""
    detail: str = ""  # for commits: the operations, e.g. "file:config.json lfsFile:weights.bin"


@dataclass
class _Failure:
    pattern: re.Pattern
    method: str | None
    status: int
    times: int
    message: str


class HubError(Exception):
    """An error answer: HTTP status, message, and the `X-Error-Code` the client dispatches on."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.extra = extra or {}
        self.headers = headers or {}


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    file_range: tuple[int, int] | None = None  # inclusive byte range of `file` to send
    detail: str = ""  # logged with the request


def _json(data: Any, status: int = 200, content_type: str = "application/json") -> _Response:
    return _Response(status, json.dumps(data).encode(), {"Content-Type": content_type})


class HubStandIn:
    """A local Hub HTTP server on 127.0.0.1 storing its state under `root`.

    Args:
        root (`Path`): folder for the stored objects and repo state (created if missing).
        port (`int`, defaults to 0): TCP port; 0 picks a free one.
        user (`str`, defaults to "tester"): the user every token authenticates as.
        orgs (`tuple[str, ...]`): organizations the user may create repos in.
        auto_create_branches (`bool`, defaults to False): if True, a commit to an unknown branch creates it from
            `main`; if False (as the real Hub does) it is refused with `RevisionNotFound`.
    """

    def __init__(self, root: Path, port: int = 0, user: str = "tester", orgs: tuple[str, ...] = ("test-org",),
                 auto_create_branches: bool = False):
        self.root = Path(root)
        self.port = port
        self.user = user
        self.orgs = tuple(orgs)
        self.auto_create_branches = auto_create_branches
        self.requests: list[HubRequest] = []
        self._failures: list[_Failure] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._counter = 0
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "lfs").mkdir(parents=True, exist_ok=True)
        state = self.root / "state.json"
        self._repos: dict[str, dict] = json.loads(state.read_text()) if state.exists() else {}

    # ----------------------------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """The endpoint, e.g. `http://127.0.0.1:8123` (what `HF_ENDPOINT` must be)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HubStandIn":
        """Start serving in a background thread."""
        if self._server is not None:
            return self
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="hub-stand-in",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections (state stays on disk)."""
        if self._server is None:
            return
        self._server.shutdown()
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> "HubStandIn":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget all repos, stored objects, logged requests and pending failures."""
        with self._lock:
            self._repos.clear()
            self.requests.clear()
            self._failures.clear()
            for folder in ("objects", "lfs"):
                for path in (self.root / folder).iterdir():
                    path.unlink()
            self._save()

    # ------------------------------------------------------------------------------------ failure injection
    def fail(self, pattern: str, status: int = 500, *, method: str | None = None, times: int = 1,
             message: str = "Injected failure") -> None:
        """Answer the next `times` requests whose URL path matches regex `pattern` (and `method`) with `status`.

        Note: the client retries 429/5xx answers to its preupload, LFS batch and LFS PUT calls with backoff
        (seconds); its commit call is not retried.
        """
        with self._lock:
            self._failures.append(_Failure(re.compile(pattern), method, status, times, message))

    @property
    def fail_next_commit(self) -> bool:
        """Whether a commit failure (HTTP 500 on the next `POST .../commit/...`) is pending."""
        return any(f.pattern.pattern == r"/commit/" and f.times > 0 for f in self._failures)

    @fail_next_commit.setter
    def fail_next_commit(self, value: bool) -> None:
        with self._lock:
            self._failures = [f for f in self._failures if f.pattern.pattern != r"/commit/"]
            if value:
                self.fail(r"/commit/", 500, method="POST", message="Internal Error - injected commit failure")

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.times > 0 and (failure.method in (None, method)) and failure.pattern.search(path):
                    failure.times -= 1
                    return failure
        return None

    # --------------------------------------------------------------------------------------- test helpers
    def calls(self, method: str | None = None, pattern: str = "") -> list[HubRequest]:
        """Logged requests with this method whose path matches regex `pattern`."""
        regex = re.compile(pattern)
        return [r for r in list(self.requests) if method in (None, r.method) and regex.search(r.path)]

    def repo(self, repo_id: str, repo_type: str = "model") -> dict:
        """The stored state of a repo (branches, commits, private flag); raises `KeyError` if missing."""
        return self._repos[f"{repo_type}/{repo_id}"]

    # ------------------------------------------------------------------------------------------- storage
    def _save(self) -> None:
        state = self.root / "state.json"
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._repos))
        tmp.replace(state)

    def _write_object(self, folder: str, name: str, data: bytes) -> None:
        target = self.root / folder / name
        if not target.exists():
            tmp = target.with_name(f"{name}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)

    def _file_path(self, entry: dict) -> Path:
        return self.root / "lfs" / entry["lfs"] if entry["lfs"] else self.root / "objects" / entry["blob"]

    def _repo_url(self, repo: dict) -> str:
        return f"{self.url}/{URL_PREFIX[repo['type']]}{repo['id']}"

    def _new_commit(self, repo: dict, parent: str | None, files: dict, title: str, message: str) -> str:
        self._counter += 1
        date = _now()
        payload = json.dumps([repo["id"], parent, files, title, message, date, self._counter], sort_keys=True)
        oid = hashlib.sha1(payload.encode()).hexdigest()
        repo["commits"][oid] = {"parent": parent, "files": files, "title": title, "message": message, "date": date}
        return oid

    def _get_repo(self, repo_type: str, repo_id: str, token: str | None) -> dict:
        repo = self._repos.get(f"{repo_type}/{repo_id}")
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if repo["private"] and token is None:
            raise HubError(401, "Invalid username or password.", "RepoNotFound")
        return repo

    def _resolve(self, repo: dict, revision: str) -> str:
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["commits"]:
            return revision
        if re.fullmatch(r"[0-9a-f]{7,39}", revision):
            matches = [oid for oid in repo["commits"] if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    @staticmethod
    def _need_token(token: str | None) -> None:
        if token is None:
            raise HubError(401, "Invalid credentials in Authorization header: this endpoint requires a token.")

    # ------------------------------------------------------------------------------------------ endpoints
    def handle(self, method: str, raw_path: str, query: dict[str, list[str]], headers: Any, body: bytes,
               token: str | None) -> _Response:
        """Route one request to its endpoint."""
        segs = raw_path.split("/")[1:]
        if segs[:2] == ["api", "whoami-v2"] and method == "GET":
            self._need_token(token)
            return _json({"type": "user", "name": self.user, "fullname": "Test User", "isPro": False,
                          "orgs": [{"type": "org", "name": org} for org in self.orgs],
                          "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})
        if segs[:2] == ["api", "agent-harnesses"] and method == "GET":
            return _json({"standardEnvVars": [], "harnesses": {}})
        if segs[:2] == ["api", "validate-yaml"] and method == "POST":
            return _json({"errors": [], "warnings": []})
        if segs[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body or b"{}"), token)
        if segs[:3] == ["api", "repos", "delete"] and method == "DELETE":
            return self._delete_repo(json.loads(body or b"{}"), token)
        if segs[:1] == ["_lfs"] and len(segs) == 2 and method == "PUT":
            return self._lfs_put(segs[1], body)
        if len(segs) >= 4 and segs[0] == "api" and segs[1] in REPO_TYPES:
            repo_type, repo_id, rest = REPO_TYPES[segs[1]], f"{segs[2]}/{segs[3]}", segs[4:]
            return self._api(method, repo_type, repo_id, rest, query, body, token)
        repo_type = REPO_TYPES.get(segs[0]) if segs and segs[0] in ("datasets", "spaces") else "model"
        if repo_type != "model":
            segs = segs[1:]
        if len(segs) >= 6 and segs[1].endswith(".git") and segs[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{segs[0]}/{segs[1][:-4]}"
            if segs[5] == "batch" and method == "POST":
                return self._lfs_batch(repo_type, repo_id, json.loads(body or b"{}"), token)
            if segs[5] == "verify" and method == "POST":
                return self._lfs_verify(json.loads(body or b"{}"))
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            path = "/".join(unquote(s) for s in segs[4:])
            return self._resolve_file(repo_type, f"{segs[0]}/{segs[1]}", unquote(segs[3]), path, headers, token)
        raise HubError(404, f"Not found: {method} {raw_path}")

    def _api(self, method: str, repo_type: str, repo_id: str, rest: list[str], query: dict[str, list[str]],
             body: bytes, token: str | None) -> _Response:
        action = rest[0] if rest else ""
        revision = unquote(rest[1]) if len(rest) >= 2 else "main"
        flag = lambda name: query.get(name, [""])[0].lower() in ("1", "true")  # noqa: E731
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, token)
            if method == "GET" and action in ("", "revision"):
                return self._info(repo, revision, flag("blobs"))
            if method == "GET" and action == "tree":
                path = "/".join(unquote(s) for s in rest[2:])
                return self._tree(repo, revision, path, flag("recursive"))
            if method == "GET" and action == "refs":
                return self._refs(repo)
            if method == "GET" and action == "commits":
                return self._commits(repo, revision)
            self._need_token(token)
            if method == "POST" and action == "preupload":
                return self._preupload(repo, revision, json.loads(body or b"{}"), flag("create_pr"))
            if method == "POST" and action == "commit":
                return self._commit(repo, revision, body, flag("create_pr"))
            if method == "POST" and action == "branch":
                return self._create_branch(repo, revision, json.loads(body or b"{}"))
            if method == "DELETE" and action == "branch":
                if revision not in repo["branches"] or revision == "main":
                    raise HubError(404 if revision != "main" else 400, f"Cannot delete branch {revision}")
                del repo["branches"][revision]
                self._save()
                return _json({})
        raise HubError(404, f"Not found: {method} /api/{repo_type}s/{repo_id}/{'/'.join(rest)}")

    def _create_repo(self, payload: dict, token: str | None) -> _Response:
        self._need_token(token)
        namespace, name = payload.get("organization") or self.user, payload.get("name", "")
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        if namespace not in (self.user, *self.orgs):
            raise HubError(403, f"You don't have the rights to create a {repo_type} under the namespace "
                                f"\"{namespace}\"")
        if not _NAME_RE.match(name) or not _NAME_RE.match(namespace) or ".." in name or "--" in name:
            raise HubError(400, f"Invalid repo name: {namespace}/{name}")
        private = payload.get("visibility") == "private" or payload.get("private") is True
        key = f"{repo_type}/{namespace}/{name}"
        with self._lock:
            if key in self._repos:
                repo = self._repos[key]
                raise HubError(409, f"You already created this {repo_type} repo", extra={"url": self._repo_url(repo)})
            repo = {"type": repo_type, "id": f"{namespace}/{name}", "private": private, "createdAt": _now(),
                    "branches": {}, "commits": {}, "prs": 0}
            self._write_object("objects", git_blob_sha1(GITATTRIBUTES), GITATTRIBUTES)
            files = {".gitattributes": {"size": len(GITATTRIBUTES), "blob": git_blob_sha1(GITATTRIBUTES), "lfs": None}}
            repo["branches"]["main"] = self._new_commit(repo, None, files, "initial commit", "")
            self._repos[key] = repo
            self._save()
        return _json({"url": self._repo_url(repo), "name": repo["id"], "repoId": repo["id"], "id": repo["id"]})

    def _delete_repo(self, payload: dict, token: str | None) -> _Response:
        self._need_token(token)
        key = f"{payload.get('type') or 'model'}/{payload.get('organization') or self.user}/{payload.get('name')}"
        with self._lock:
            if key not in self._repos:
                raise HubError(404, "Repository not found", "RepoNotFound")
            del self._repos[key]
            self._save()
        return _json({})

    def _info(self, repo: dict, revision: str, blobs: bool) -> _Response:
        oid = self._resolve(repo, revision)
        commit = repo["commits"][oid]
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["blob"])
                if entry["lfs"]:
                    sibling["lfs"] = {"size": entry["size"], "sha256": entry["lfs"],
                                      "pointerSize": len(lfs_pointer(entry["lfs"], entry["size"]))}
            siblings.append(sibling)
        namespace = repo["id"].split("/")[0]
        return _json({"_id": hashlib.md5(repo["id"].encode()).hexdigest()[:24], "id": repo["id"],
                      "modelId": repo["id"], "author": namespace, "sha": oid, "lastModified": commit["date"],
                      "createdAt": repo["createdAt"], "private": repo["private"], "gated": False, "disabled": False,
                      "downloads": 0, "likes": 0, "tags": [], "siblings": siblings, "spaces": [],
                      "usedStorage": sum(e["size"] for e in commit["files"].values())})

    def _tree(self, repo: dict, revision: str, folder: str, recursive: bool) -> _Response:
        oid = self._resolve(repo, revision)
        files = repo["commits"][oid]["files"]
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        below = {p[len(prefix):]: e for p, e in files.items() if p.startswith(prefix)}
        if prefix and not below:
            raise HubError(404, f"Entry not found: {folder}", "EntryNotFound", headers={"X-Repo-Commit": oid})
        entries: dict[str, dict] = {}
        for rel, entry in below.items():
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                directory = prefix + "/".join(parts[:depth])
                entries.setdefault(directory, {"type": "directory", "size": 0, "path": directory,
                                               "oid": hashlib.sha1(f"{oid}:{directory}".encode()).hexdigest()})
            if len(parts) == 1 or recursive:
                item: dict[str, Any] = {"type": "file", "oid": entry["blob"], "size": entry["size"],
                                        "path": prefix + rel}
                if entry["lfs"]:
                    item["lfs"] = {"oid": entry["lfs"], "size": entry["size"],
                                   "pointerSize": len(lfs_pointer(entry["lfs"], entry["size"]))}
                entries[prefix + rel] = item
        return _json([entries[path] for path in sorted(entries)])

    def _refs(self, repo: dict) -> _Response:
        def ref(name: str, kind: str) -> dict:
            return {"name": name, "ref": name if name.startswith("refs/") else f"refs/{kind}/{name}",
                    "targetCommit": repo["branches"][name]}

        names = sorted(repo["branches"])
        return _json({"branches": [ref(n, "heads") for n in names if not n.startswith("refs/pr/")],
                      "converts": [], "tags": [],
                      "pullRequests": [ref(n, "pr") for n in names if n.startswith("refs/pr/")]})

    def _commits(self, repo: dict, revision: str) -> _Response:
        oid: str | None = self._resolve(repo, revision)
        history = []
        while oid is not None:
            commit = repo["commits"][oid]
            history.append({"id": oid, "title": commit["title"], "message": commit["message"],
                            "authors": [{"user": self.user}], "date": commit["date"]})
            oid = commit["parent"]
        return _json(history)

    def _preupload(self, repo: dict, revision: str, payload: dict, create_pr: bool) -> _Response:
        oid = self._resolve(repo, revision)
        if create_pr and revision not in repo["branches"]:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        files = repo["commits"][oid]["files"]
        answer = []
        for item in payload.get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            mode = upload_mode(item["path"], int(item["size"]), sample)
            existing = files.get(item["path"])
            remote_oid = None if existing is None else (existing["lfs"] or existing["blob"])
            answer.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": remote_oid})
        return _json({"files": answer, "commitOid": oid})

    def _commit(self, repo: dict, revision: str, body: bytes, create_pr: bool) -> _Response:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit payload must be its header")
        header = lines[0]["value"]
        operations: list[str] = []
        if revision not in repo["branches"]:
            if revision in repo["commits"] or not self.auto_create_branches or create_pr:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            repo["branches"][revision] = repo["branches"]["main"]
        head = repo["branches"][revision]
        parent_commit = header.get("parentCommit")
        if parent_commit and not create_pr and not head.startswith(parent_commit):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo["commits"][parent_commit if create_pr and parent_commit else head]["files"])
        objects: list[tuple[str, bytes]] = []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value.get("path", "")
            operations.append(f"{key}:{path}")
            if key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value[
                    "content"].encode()
                objects.append((git_blob_sha1(data), data))
                files[path] = {"size": len(data), "blob": git_blob_sha1(data), "lfs": None}
            elif key == "lfsFile":
                lfs_oid = value["oid"]
                stored = self.root / "lfs" / lfs_oid
                if not _HEX64.match(lfs_oid) or not stored.exists():
                    raise HubError(400, f"Your push was rejected: LFS object {lfs_oid} for {path} was not uploaded")
                size = stored.stat().st_size
                if value.get("size") not in (None, size):
                    raise HubError(400, f"LFS object {lfs_oid} has size {size}, not {value['size']}")
                files[path] = {"size": size, "blob": git_blob_sha1(lfs_pointer(lfs_oid, size)), "lfs": lfs_oid}
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise HubError(400, f"Unknown commit operation: {key}")
        for name, data in objects:
            self._write_object("objects", name, data)
        if create_pr:
            repo["prs"] += 1
            revision = f"refs/pr/{repo['prs']}"
            repo["branches"][revision] = head
        oid = self._new_commit(repo, repo["branches"][revision], files, header.get("summary", ""),
                               header.get("description", ""))
        repo["branches"][revision] = oid
        self._save()
        answer = {"success": True, "commitOid": oid, "commitUrl": f"{self._repo_url(repo)}/commit/{oid}",
                  "hookOutput": ""}
        if create_pr:
            answer["pullRequestUrl"] = f"{self._repo_url(repo)}/discussions/{repo['prs']}"
        response = _json(answer)
        response.detail = " ".join(operations)
        return response

    def _create_branch(self, repo: dict, branch: str, payload: dict) -> _Response:
        if branch.startswith("refs/") or not re.fullmatch(r"[A-Za-z0-9._/-]+", branch):
            raise HubError(400, f"Invalid reference for a branch: {branch}")
        if branch in repo["branches"]:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo["branches"][branch] = self._resolve(repo, payload.get("startingPoint") or "main")
        self._save()
        return _json({})

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict, token: str | None) -> _Response:
        self._need_token(token)
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, token)
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the 'upload' LFS operation is supported")
        prefix = f"{self.url}/{URL_PREFIX[repo['type']]}{repo['id']}.git/info/lfs/objects"
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid", ""), obj.get("size")
            stored = self.root / "lfs" / oid
            if not _HEX64.match(oid) or not isinstance(size, int):
                objects.append({"oid": str(oid), "size": int(size or 0),
                                "error": {"code": 422, "message": "Invalid object: oid must be a sha256"}})
            elif stored.exists() and stored.stat().st_size == size:
                objects.append({"oid": oid, "size": size})
            else:
                objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": f"{self.url}/_lfs/{oid}?size={size}"},
                    "verify": {"href": f"{prefix}/verify", "header": {"Authorization": f"Bearer {token}"}}}})
        return _json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                     content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str, body: bytes) -> _Response:
        if not _HEX64.match(oid) or hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match its sha256 oid {oid}")
        self._write_object("lfs", oid, body)
        return _Response(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _lfs_verify(self, payload: dict) -> _Response:
        stored = self.root / "lfs" / str(payload.get("oid", ""))
        if not _HEX64.match(str(payload.get("oid", ""))) or not stored.exists():
            raise HubError(404, "LFS object not found")
        if stored.stat().st_size != payload.get("size"):
            raise HubError(422, "LFS object size mismatch")
        return _json({}, content_type="application/vnd.git-lfs+json")

    def _resolve_file(self, repo_type: str, repo_id: str, revision: str, path: str, headers: Any,
                      token: str | None) -> _Response:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, token)
            oid = self._resolve(repo, revision)
            entry = repo["commits"][oid]["files"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": oid})
        size = entry["size"]
        answer = _Response(200, headers={"X-Repo-Commit": oid, "Accept-Ranges": "bytes",
                                         "Content-Type": "application/octet-stream"}, file=self._file_path(entry))
        if entry["lfs"]:
            answer.headers.update({"ETag": f'"{entry["lfs"]}"', "X-Linked-Etag": f'"{entry["lfs"]}"',
                                   "X-Linked-Size": str(size)})
        else:
            answer.headers["ETag"] = f'"{entry["blob"]}"'
        start, end = 0, size - 1
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", headers.get("Range", "") or "")
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start = max(size - int(match.group(2)), 0)
            if start >= size or start > end:
                raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            answer.status = 206
            answer.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        answer.file_range = (start, end)
        return answer


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets `hub` answer it, logs it."""

    protocol_version = "HTTP/1.1"
    hub: HubStandIn
    timeout = 60

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        with self.hub._lock:
            self.hub._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
        auth = self.headers.get("Authorization") or ""
        token = (auth[7:].strip() or None) if auth.lower().startswith("bearer ") else None
        failure = self.hub._take_failure(method, split.path)
        try:
            if failure is not None:
                raise HubError(failure.status, failure.message)
            answer = self.hub.handle(method, split.path, parse_qs(split.query), self.headers, body, token)
        except HubError as err:
            answer = _json({"error": err.message, **err.extra}, err.status)
            answer.headers["X-Error-Message"] = err.message
            answer.headers.update(err.headers)
            if err.code:
                answer.headers["X-Error-Code"] = err.code
        except Exception as err:  # a bug in the stand-in: answer 500 rather than drop the connection
            answer = _json({"error": f"stand-in crashed: {type(err).__name__}: {err}"}, 500)
        self.hub.requests.append(HubRequest(method, split.path, answer.status, split.query, answer.detail))
        self._send(method, answer)

    def _send(self, method: str, answer: _Response) -> None:
        length = len(answer.body)
        if answer.file is not None and answer.file_range is not None:
            length = answer.file_range[1] - answer.file_range[0] + 1
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if method == "HEAD":
            return
        if answer.file is None:
            self.wfile.write(answer.body)
            return
        start, end = answer.file_range or (0, -1)
        with open(answer.file, "rb") as handle:
            handle.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

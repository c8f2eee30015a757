"""A local stand-in for the Hugging Face Hub HTTP API. TEST FIXTURE ONLY: not a Hub implementation.

It implements just what the unmodified ``huggingface_hub`` client (0.36.x and
2.x) calls when a model is pushed with ``create_repo`` + ``create_commit`` and
loaded back with ``from_pretrained``:

* ``POST /api/repos/create``                              create a repository (409 when it exists)
* ``POST /api/{type}s/{ns}/{name}/preupload/{revision}``  every file is uploaded as a "regular" (inline) file
* ``POST /api/{type}s/{ns}/{name}/commit/{revision}``     ndjson commit: header + base64 files + deletions
* ``HEAD|GET /{ns}/{name}/resolve/{revision}/{path}``     file download with ``X-Repo-Commit`` / ``ETag``
* ``GET /api/{type}s/{ns}/{name}[/revision/{rev}]``       repository info (sha, siblings)
* ``GET /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]``    file listing
* ``POST /api/validate-yaml``                             README metadata check (accepts a fenced block)
* ``GET /api/whoami-v2``                                  a fixed test user

No LFS or Xet storage, no authentication, one branch (``main``), everything
in memory. Point a client at it with ``HF_ENDPOINT=<server.url>`` (read by
``huggingface_hub`` at import; ``use_endpoint`` below sets the same value in a
process that already imported it). Requests it does not know get a 404 and are
recorded in ``server.unhandled`` so a test can show what a client asked for.

Example:
    >>> with HubServer() as server:
    ...     print(server.url)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List
from urllib.parse import unquote, urlparse


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Repo:
    def __init__(self, repo_id: str, repo_type: str):
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.files: Dict[str, bytes] = {}
        self.sha = hashlib.sha1(f"init:{repo_id}".encode()).hexdigest()
        self.commits: List[dict] = []


class _Handler(BaseHTTPRequestHandler):
    server_version = "hf-lnorm-test-hub/0.1"
    protocol_version = "HTTP/1.1"

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format, *args):  # keep test output clean
        pass

    @property
    def hub(self) -> "HubServer":
        return self.server.hub  # type: ignore[attr-defined]

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload=None, headers=None, body: bytes = None, head_only=False):
        if body is None:
            body = json.dumps(payload if payload is not None else {}).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head_only=False):
        self._send(status, {"error": message}, headers={"X-Error-Code": code, "X-Error-Message": message}, head_only=head_only)

    def _unhandled(self, head_only=False):
        self.hub.unhandled.append(f"{self.command} {self.path}")
        self._error(404, "EntryNotFound", f"test hub: no handler for {self.command} {urlparse(self.path).path}", head_only)

    def _repo(self, repo_id: str):
        return self.hub.repos.get(repo_id)

    # ------------------------------------------------------------------ verbs

    def do_HEAD(self):
        self._get(head_only=True)

    def do_GET(self):
        self._get(head_only=False)

    def do_POST(self):
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
        body = self._body()
        with self.hub.lock:
            if parts == ["api", "repos", "create"]:
                return self._create_repo(json.loads(body or b"{}"))
            if parts == ["api", "validate-yaml"]:
                return self._validate_yaml(json.loads(body or b"{}"))
            if len(parts) >= 6 and parts[0] == "api" and parts[4] in ("preupload", "commit"):
                repo = self._repo(f"{parts[2]}/{parts[3]}")
                if repo is None:
                    return self._error(404, "RepoNotFound", f"Repository {parts[2]}/{parts[3]} not found")
                if parts[4] == "preupload":
                    return self._preupload(repo, json.loads(body))
                return self._commit(repo, body)
        self._unhandled()

    # ------------------------------------------------------------------ endpoints

    def _create_repo(self, payload: dict):
        name, org = payload.get("name"), payload.get("organization")
        repo_id = f"{org}/{name}" if org else f"{self.hub.user}/{name}"
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:
            return self._send(409, {"error": "You already created this model repo", "url": url})
        self.hub.repos[repo_id] = _Repo(repo_id, payload.get("type") or "model")
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict):
        # The client checks a README's metadata block before committing it; accept any "---" fenced block.
        content = payload.get("content") or ""
        lines = content.splitlines()
        if lines and lines[0].strip() == "---" and "---" not in [line.strip() for line in lines[1:]]:
            return self._send(400, {"errors": [{"message": "unterminated YAML metadata block"}], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    def _preupload(self, repo: _Repo, payload: dict):
        files = []
        for entry in payload.get("files", []):
            existing = repo.files.get(entry["path"])
            files.append(
                {
                    "path": entry["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": _git_blob_sha(existing) if existing is not None else None,
                }
            )
        self._send(200, {"files": files, "commitOid": repo.sha})

    def _commit(self, repo: _Repo, body: bytes):
        header, changed = {}, []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                content = value["content"]
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                repo.files[value["path"]] = data
                changed.append(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                prefix = value["path"].rstrip("/")
                for path in [p for p in repo.files if p == prefix or p.startswith(prefix + "/")]:
                    del repo.files[path]
                changed.append(value["path"])
            else:  # lfsFile / copies: never requested, since preupload answers "regular"
                return self._error(400, "BadRequest", f"test hub: unsupported commit operation {key!r}")
        repo.sha = hashlib.sha1((repo.sha + json.dumps(header) + ",".join(changed)).encode()).hexdigest()
        repo.commits.append({"sha": repo.sha, "summary": header.get("summary"), "files": changed})
        self._send(200, {"commitUrl": f"{self.hub.url}/{repo.repo_id}/commit/{repo.sha}", "commitOid": repo.sha, "pullRequestUrl": None})

    def _get(self, head_only: bool):
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
        with self.hub.lock:
            if parts == ["api", "whoami-v2"]:
                return self._send(200, {"type": "user", "name": self.hub.user, "orgs": [], "auth": {"accessToken": {"role": "write"}}}, head_only=head_only)
            if len(parts) >= 4 and parts[0] == "api" and parts[1] in ("models", "datasets", "spaces"):
                repo = self._repo(f"{parts[2]}/{parts[3]}")
                if repo is None:
                    return self._error(404, "RepoNotFound", f"Repository {parts[2]}/{parts[3]} not found", head_only)
                rest = parts[4:]
                if not rest or rest[0] == "revision":
                    return self._send(200, self._info(repo), head_only=head_only)
                if rest[0] == "tree":
                    prefix = "/".join(rest[2:])
                    listing = [
                        {"type": "file", "path": p, "size": len(d), "oid": _git_blob_sha(d)}
                        for p, d in sorted(repo.files.items())
                        if not prefix or p.startswith(prefix.rstrip("/") + "/")
                    ]
                    return self._send(200, listing, head_only=head_only)
                return self._unhandled(head_only)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head_only)
        self._unhandled(head_only)

    def _info(self, repo: _Repo) -> dict:
        return {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": repo.sha,
            "private": False,
            "disabled": False,
            "gated": False,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(repo.files.items())],
        }

    def _resolve(self, repo_id: str, revision: str, path: str, head_only: bool):
        repo = self._repo(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head_only)
        if revision not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Revision {revision} not found", head_only)
        data = repo.files.get(path)
        if data is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist in {repo_id}", head_only)
        self.hub.downloads.append(path)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": repo.sha,
            "ETag": f'"{_git_blob_sha(data)}"',
        }
        self._send(200, headers=headers, body=data, head_only=head_only)


class HubServer:
    """The test Hub in a background thread. Use as a context manager; ``url`` is the endpoint.

    Attributes:
        repos: ``repo_id -> _Repo`` (files as bytes, current commit sha, commit log).
        downloads: paths served by ``resolve`` (GET and HEAD), in order.
        unhandled: requests no endpoint matched.
    """

    user = "tester"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.repos: Dict[str, _Repo] = {}
        self.downloads: List[str] = []
        self.unhandled: List[str] = []
        self.lock = threading.RLock()
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="test-hub", daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@contextmanager
def use_endpoint(url: str):
    """Point the already-imported ``huggingface_hub`` at ``url``, online: what ``HF_ENDPOINT=url`` does at import.

    Restores the previous values on exit. A fresh process only needs the environment variables
    (``HF_ENDPOINT=url``, ``HF_HUB_OFFLINE=0``).
    """
    import os

    from huggingface_hub import constants

    saved = {name: getattr(constants, name) for name in ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_HUB_OFFLINE")}
    saved_env = {name: os.environ.get(name) for name in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN")}
    constants.ENDPOINT = url
    constants.HUGGINGFACE_CO_URL_TEMPLATE = url + "/{repo_id}/resolve/{revision}/{filename}"
    constants.HF_HUB_OFFLINE = False
    os.environ.update({"HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_test_token_for_local_hub"})
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(constants, name, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

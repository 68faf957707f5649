"""A small Hugging Face Hub on 127.0.0.1 for tests: the subset of the API that huggingface_hub and MONAI use.

Repos live in memory as commits of ``{path: bytes}``; pushes need the server's token, and so does reading a private
repo. The server stops itself after ``max_seconds`` or ``max_requests``, whichever comes first. ``requests`` records
``(method, path)`` of everything it served, so tests can assert on what a client really fetched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, token: str = "hf_test_token", max_seconds: float = 600, max_requests: int = 2000) -> None:
        self.token, self.max_seconds, self.max_requests = token, max_seconds, max_requests
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                hub._dispatch(self, "GET")

            def do_HEAD(self) -> None:
                hub._dispatch(self, "HEAD")

            def do_POST(self) -> None:
                hub._dispatch(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._timer = threading.Timer(max_seconds, self.stop)

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> FakeHub:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()
        threading.Thread(target=self.server.shutdown, daemon=True).start()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.server.server_close()

    # --- helpers for tests -----------------------------------------------------------------------------------
    def file(self, repo: str, revision: str, path: str) -> bytes:
        return self.repos[repo]["commits"][self._resolve(repo, revision)][path]

    def tamper(self, repo: str, revision: str, path: str, content: bytes) -> None:
        """Replace a file's bytes in place (same commit), as a corrupted mirror or cache would serve it."""
        self.repos[repo]["commits"][self._resolve(repo, revision)][path] = content

    # --- request handling ------------------------------------------------------------------------------------
    def _resolve(self, repo: str, revision: str) -> str:
        refs = self.repos[repo]["refs"]
        revision = unquote(revision)
        if revision in refs:
            return refs[revision]
        if revision in self.repos[repo]["commits"]:
            return revision
        raise KeyError(revision)

    def _authorised(self, handler: BaseHTTPRequestHandler) -> bool:
        return handler.headers.get("Authorization", "") == f"Bearer {self.token}"

    def _send(self, handler, status: int, body: bytes | dict | list = b"", headers: dict | None = None, head=False):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        handler.send_response(status)
        for k, v in (headers or {}).items():
            handler.send_header(k, str(v))
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

    def _error(self, handler, status: int, code: str | None, message: str, head: bool = False) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message} if code else {"X-Error-Message": message}
        self._send(handler, status, {"error": message}, headers, head=head)

    def _body(self, handler) -> bytes:
        return handler.rfile.read(int(handler.headers.get("Content-Length", 0) or 0))

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(handler.path)
        path = unquote(url.path)
        with self.lock:
            self.requests.append((method, path))
            if len(self.requests) > self.max_requests:
                self._error(handler, 503, None, "request budget of the test hub is spent")
                self.stop()
                return
        try:
            if path.startswith("/api/"):
                self._api(handler, method, path[len("/api/") :], url.query)
            elif "/resolve/" in path:
                self._resolve_file(handler, method, path)
            else:
                self._error(handler, 404, None, f"no route for {method} {path}")
        except Exception as e:  # a bug here should show in the test, not hang the client
            self._error(handler, 500, None, f"{type(e).__name__}: {e}")

    def _repo_or_error(self, handler, repo: str, head: bool = False) -> dict | None:
        entry = self.repos.get(repo)
        if entry is None or (entry["private"] and not self._authorised(handler)):
            # the real hub answers 401 for private repos without a valid token, and never says they exist
            status = 401 if entry is not None or not self._authorised(handler) else 404
            self._error(handler, status, "RepoNotFound", f"Repository Not Found for url: {repo}", head=head)
            return None
        return entry

    def _api(self, handler, method: str, route: str, query: str) -> None:
        if method == "POST" and route == "repos/create":
            body = json.loads(self._body(handler) or b"{}")
            if not self._authorised(handler):
                return self._error(handler, 401, None, "Invalid credentials in Authorization header")
            name = body["name"] if "/" in body["name"] else f"{body.get('organization') or 'user'}/{body['name']}"
            if name in self.repos:
                return self._error(handler, 409, None, "You already created this model repo")
            private = bool(body.get("private", False)) or body.get("visibility") == "private"
            self.repos[name] = {"private": private, "commits": {}, "refs": {}, "order": []}
            return self._send(handler, 200, {"url": f"{self.url}/{name}", "name": name})
        if method == "POST" and route == "validate-yaml":
            self._body(handler)
            return self._send(handler, 200, {"errors": [], "warnings": []})
        if not route.startswith("models/"):
            return self._error(handler, 404, None, f"no API route {route}")
        rest = route[len("models/") :]
        parts = rest.split("/")
        repo, action, arg = "/".join(parts[:2]), (parts[2] if len(parts) > 2 else ""), "/".join(parts[3:])
        if method == "POST" and not self._authorised(handler):
            self._body(handler)
            return self._error(handler, 401, None, "Invalid credentials in Authorization header")
        entry = self._repo_or_error(handler, repo)
        if entry is None:
            return
        if method == "POST" and action == "preupload":
            files = json.loads(self._body(handler))["files"]
            return self._send(handler, 200, {"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if method == "POST" and action == "commit":
            return self._commit(handler, repo, entry, arg)
        if method == "POST" and action == "tag":
            tag = json.loads(self._body(handler))["tag"]
            if tag in entry["refs"] and tag != "main":
                return self._error(handler, 409, None, f"tag {tag} already exists")
            entry["refs"][tag] = self._resolve(repo, arg or "main")
            return self._send(handler, 200, {})
        if method == "GET" and action == "refs":
            branches = [{"name": "main", "ref": "refs/heads/main", "targetCommit": entry["refs"]["main"]}]
            tags = [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": sha}
                    for t, sha in entry["refs"].items() if t != "main"]
            return self._send(handler, 200, {"branches": branches, "tags": tags, "converts": []})
        if method == "GET" and action in ("revision", "tree"):
            revision = arg.split("/")[0] if action == "tree" else arg
            try:
                sha = self._resolve(repo, revision)
            except KeyError:
                return self._error(handler, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            files = entry["commits"][sha]
            if action == "revision":
                return self._send(handler, 200, {"id": repo, "modelId": repo, "sha": sha, "private": entry["private"],
                                                 "siblings": [{"rfilename": p} for p in sorted(files)]})
            return self._send(handler, 200, [
                {"type": "file", "oid": hashlib.sha1(files[p]).hexdigest(), "size": len(files[p]), "path": p}
                for p in sorted(files)])
        return self._error(handler, 404, None, f"no API route {method} {route}")

    def _commit(self, handler, repo: str, entry: dict, revision: str) -> None:
        lines = [json.loads(line) for line in self._body(handler).decode().splitlines() if line.strip()]
        parent = entry["refs"].get("main")
        files = dict(entry["commits"][parent]) if parent else {}
        for line in lines:
            value = line.get("value", {})
            if line.get("key") == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line.get("key") == "deletedFile":
                files.pop(value["path"], None)
        sha = hashlib.sha1(f"{repo}{len(entry['order'])}{time.time_ns()}".encode()).hexdigest()
        entry["commits"][sha] = files
        entry["order"].append(sha)
        entry["refs"]["main"] = sha
        self._send(handler, 200, {"commitUrl": f"{self.url}/{repo}/commit/{sha}", "commitOid": sha,
                                  "commitMessage": "", "pullRequestUrl": None})

    def _resolve_file(self, handler, method: str, path: str) -> None:
        head = method == "HEAD"
        repo, rest = path.lstrip("/").split("/resolve/", 1)
        revision, _, filename = rest.partition("/")
        entry = self._repo_or_error(handler, repo, head=head)
        if entry is None:
            return
        try:
            sha = self._resolve(repo, revision)
        except KeyError:
            return self._error(handler, 404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
        content = entry["commits"][sha].get(filename)
        if content is None:
            return self._error(handler, 404, "EntryNotFound", f"{filename} does not exist at {revision}", head=head)
        etag = f'"{hashlib.sha256(content).hexdigest()}"'
        self._send(handler, 200, content, {"X-Repo-Commit": sha, "ETag": etag,
                                           "Content-Type": "application/octet-stream"}, head=head)

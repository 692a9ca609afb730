"""Shared pieces of the fake forges: a loopback JSON HTTP server and an in-memory git.

The fakes exist because a GitLab or GitHub server cannot run here; they
speak real HTTP and follow the documented API shapes, so python-gitlab and
PyGithub talk to them exactly as to the real services.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    match: re.Match[str]

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default


#: (status, JSON payload) or (status, JSON payload, extra response headers)
Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]]
Route = tuple[str, re.Pattern[str], Callable[[Request], Reply]]


class JsonServer:
    """A threading HTTP server that routes (method, path regex) to handlers."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self.fail_next: list[int] = []  # status codes to answer the next requests with
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self, method: str) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = server.dispatch(method, split.path, parse_qs(split.query), headers, body)
                status, payload = reply[0], reply[1]
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (reply[2] if len(reply) > 2 else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=lambda: self.httpd.serve_forever(poll_interval=0.05), daemon=True
        )

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, method: str, pattern: str, handler: Callable[[Request], Reply]) -> None:
        self.routes.append((method, re.compile(pattern + r"\Z"), handler))

    def authorized(self, headers: dict[str, str]) -> bool:
        return True

    def dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: Any,
    ) -> Reply:
        with self.lock:
            self.requests.append((method, path))
            if self.fail_next:
                return self.fail_next.pop(0), {"message": "injected failure"}
            if not self.authorized(headers):
                return 401, {"message": "401 Unauthorized"}
            for route_method, pattern, handler in self.routes:
                if route_method != method:
                    continue
                match = pattern.match(path)
                if match:
                    return handler(Request(method, path, query, headers, body, match))
            return 404, {"message": f"404 Not Found: {method} {path}"}

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class MemoryCommit:
    sha: str
    tree: str
    parents: list[str]
    message: str


@dataclass
class MemoryRepo:
    """Just enough git: trees are flat path -> bytes maps, commits point at trees."""

    trees: dict[str, dict[str, bytes]] = field(default_factory=dict)
    commits: dict[str, MemoryCommit] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    counter: int = 0

    def _hash(self, *parts: Any) -> str:
        self.counter += 1
        text = json.dumps([self.counter, *parts], default=str, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()

    def add_blob(self, data: bytes) -> str:
        sha = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.blobs[sha] = data
        return sha

    def add_tree(self, files: dict[str, bytes]) -> str:
        sha = self._hash("tree", sorted((p, hashlib.sha1(c).hexdigest()) for p, c in files.items()))
        self.trees[sha] = dict(files)
        return sha

    def add_commit(self, tree: str, parents: list[str], message: str) -> str:
        sha = self._hash("commit", tree, parents, message)
        self.commits[sha] = MemoryCommit(sha, tree, list(parents), message)
        return sha

    def commit(self, branch: str, files: dict[str, bytes | None], message: str) -> str:
        """Commit changes (None deletes) on ``branch`` (created from nothing if new)."""
        parent = self.branches.get(branch)
        current = dict(self.trees[self.commits[parent].tree]) if parent else {}
        for path, content in files.items():
            if content is None:
                current.pop(path, None)
            else:
                current[path] = content
        sha = self.add_commit(self.add_tree(current), [parent] if parent else [], message)
        self.branches[branch] = sha
        return sha

    def branch(self, name: str, start: str) -> str:
        self.branches[name] = self.resolve(start) or start
        return self.branches[name]

    def resolve(self, ref: str) -> str | None:
        if ref in self.branches:
            return self.branches[ref]
        if ref in self.commits:
            return ref
        return None

    def file_at(self, ref: str, path: str) -> bytes | None:
        sha = self.resolve(ref)
        if sha is None:
            return None
        return self.trees[self.commits[sha].tree].get(path)

    def ancestors(self, sha: str) -> list[str]:
        seen: list[str] = []
        todo = [sha]
        while todo:
            current = todo.pop(0)
            if current in seen:
                continue
            seen.append(current)
            todo.extend(self.commits[current].parents)
        return seen

    def merge_base(self, a: str, b: str) -> str | None:
        mine = set(self.ancestors(a))
        for sha in self.ancestors(b):
            if sha in mine:
                return sha
        return None

    def merge(self, source: str, target: str, message: str) -> str:
        """A merge commit of ``source`` into ``target`` (source's files win)."""
        head = self.branches[source]
        base = self.branches[target]
        files = dict(self.trees[self.commits[base].tree])
        files.update(self.trees[self.commits[head].tree])
        sha = self.add_commit(self.add_tree(files), [base, head], message)
        self.branches[target] = sha
        return sha

"""A stand-in for the HTTP API of ``cvmfs_gateway`` (CernVM-FS 2.12.0), tests only.

It answers as the gateway's source does (``/opt/cvmfs-src/gateway``, files
under ``internal/gateway/``), and as the real gateway was seen to answer:

- routes (``frontend/frontend.go``): ``GET /api/v1``, ``GET /api/v1/repos``,
  ``GET /api/v1/repos/:name``, ``GET /api/v1/leases``, ``DELETE
  /api/v1/leases-by-path/*path`` (admin). Other methods on a known route: 405
  ``Method Not Allowed`` with ``Allow`` (httprouter); unknown paths: 404 ``404
  page not found``; routes the fake does not model (taking and committing
  leases, payloads, gc, notifications) answer 501, a test's mistake.
- every JSON answer is HTTP 200 with ``Content-Type: text/plain;
  charset=utf-8`` (``frontend/util.go`` ``replyJSON`` sets none; Go sniffs
  it) and Go's encoding (maps sorted, structs in field order, no spaces,
  ``<>&`` escaped); ``http.Error`` answers are text with ``X-Content-Type-Options``.
- ``WithAdminAuthz`` (``frontend/authz.go``): ``Authorization`` split on single
  spaces into exactly two tokens, the second standard base64, else
  ``invalid_authorization_header``; an unknown key ``invalid_key``; a key without
  ``admin`` ``no_admin_key``; then the HMAC (``frontend/hmac.go``: lowercase hex
  of HMAC-SHA1 under the secret) of the decoded URL path, else ``invalid_hmac``.
- ``frontend/admin_leases.go``: an empty path is 400 ``missing path argument``;
  ``CancelLeases`` (``backend/lease_service.go``) splits ``REPO/sub`` with
  ``SplitLeasePath`` (``pathutil.go``: ``input has leading slash``, ``missing
  repository name or subpath``) and deletes the leases of REPO whose subpath
  is ``LIKE`` sub ``|| '%'`` (``backend/lease_entity.go``), asked of SQLite as
  the gateway's database does: string prefix, ``_``/``%`` wildcards, ASCII case
  folded. A repository the gateway does not know is ``ok`` (nothing matches).
- ``GET /leases`` (``frontend/leases.go``, ``backend/lease_service.go``):
  ``{"data": {"REPO/sub": {"key_id", "path", "expires", "hostname"}}, "status":
  "ok"}``, leases not yet expired only, ``expires`` as Go's ``Time.String()``
  of a millisecond timestamp (``2026-11-30 20:23:09.574 +0000 UTC``).

The lease table is in memory (:meth:`FakeGateway.add_lease`) or, with
``leases_file``, the ``leases.json`` of the fake cvmfs_server's gateway mode
(``{"REPO/path": {"expires": UNIX_SECONDS, "publisher": DIR}}``), read on each
``GET`` under ``flock(LOCK_SH)`` and rewritten by ``DELETE`` under
``flock(LOCK_EX)`` on the file itself opened ``r+``; its leases carry the key id
``file_key_id`` and the publisher directory as host name.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

API = "/api/v1"
#: route -> (methods the real router has, methods this fake answers)
ROUTES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "": (("GET",), ("GET",)),
    "/repos": (("GET",), ("GET",)),
    "/repos/:name": (("GET", "POST"), ("GET",)),
    "/leases": (("GET", "POST"), ("GET",)),
    "/leases/:token": (("GET", "POST", "DELETE"), ()),
    "/leases-by-path/*path": (("DELETE",), ("DELETE",)),
    "/payloads": (("POST",), ()),
    "/payloads/:token": (("POST",), ()),
    "/notifications/publish": (("POST",), ()),
    "/notifications/subscribe": (("GET",), ()),
    "/gc": (("POST",), ()),
}
WELCOME = "You are in an open field on the west side of a white house with a boarded front door."


@dataclass
class Key:
    secret: str
    admin: bool = False


@dataclass
class FakeLease:
    key_id: str
    hostname: str
    expires: float  # unix seconds


@dataclass
class Answer:
    """A raw answer for the next request (tests of hostile or broken gateways)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: no Content-Length: the body ends when the connection closes
    close_delimited: bool = False


def go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json writes it (the caller orders struct fields)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def go_time(seconds: float) -> str:
    """``time.UnixMilli(ms).String()`` in UTC: ``2026-11-30 20:23:09.574 +0000 UTC``."""
    millis = int(seconds * 1000)
    moment = datetime.fromtimestamp(millis // 1000, UTC)
    fraction = f"{millis % 1000:03d}".rstrip("0")
    return f"{moment:%Y-%m-%d %H:%M:%S}" + (f".{fraction}" if fraction else "") + " +0000 UTC"


def go_hmac(message: str, secret: str) -> bytes:
    """``ComputeHMAC`` (frontend/hmac.go): the lowercase hex digest, as bytes."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha1).hexdigest().encode()


def split_lease_path(lease_path: str) -> tuple[str, str]:
    """``SplitLeasePath`` (pathutil.go): ("REPO", "/sub"), or ValueError with its message."""
    if lease_path.startswith("/"):
        raise ValueError("input has leading slash")
    tokens = lease_path.split("/")
    if len(tokens) < 2:
        raise ValueError("missing repository name or subpath")
    return tokens[0], lease_path.removeprefix(tokens[0])


def like_prefix(path: str, prefix: str) -> bool:
    """``path like prefix || '%'`` in SQLite, the gateway's database."""
    database = sqlite3.connect(":memory:")
    try:
        return bool(database.execute("select ? like ? || '%'", (path, prefix)).fetchone()[0])
    finally:
        database.close()


class FakeGateway:
    """The gateway's API on 127.0.0.1 (a free port), started and stopped by the test."""

    def __init__(
        self,
        repos: dict[str, dict[str, str]] | None = None,
        keys: dict[str, Key] | None = None,
        *,
        leases_file: Path | None = None,
        file_key_id: str = "publisher",
    ) -> None:
        #: repository -> {key id: subpath} (repo.json version 2)
        self.repos = repos if repos is not None else {}
        self.keys = keys if keys is not None else {}
        self.leases_file = leases_file
        self.file_key_id = file_key_id
        self.leases: dict[str, FakeLease] = {}
        #: (method, raw path, headers) of every request, in order
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.answer_next: list[Answer] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- the lease table --------------------------------------------------------

    def add_lease(
        self, path: str, *, key_id: str = "publisher", hostname: str = "vm", ttl: float = 7200
    ) -> None:
        with self.lock:
            self.leases[path] = FakeLease(key_id, hostname, time.time() + ttl)

    def active_leases(self) -> dict[str, FakeLease]:
        now_ms = int(time.time() * 1000)
        with self.lock, self._table() as table:
            return {
                path: lease
                for path, lease in sorted(table.items())
                if int(lease.expires * 1000) >= now_ms
            }

    def cancel(self, repo: str, sub: str) -> None:
        with self.lock, self._table(write=True) as table:
            for path in list(table):
                lease_repo, lease_sub = split_lease_path(path)
                if lease_repo == repo and like_prefix(lease_sub, sub):
                    del table[path]

    @contextmanager
    def _table(self, *, write: bool = False) -> Iterator[dict[str, FakeLease]]:
        if self.leases_file is None:
            yield self.leases
            return
        if not self.leases_file.exists():
            yield {}
            return
        with open(self.leases_file, "r+" if write else "r", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            raw = json.loads(handle.read() or "{}")
            table = {
                path: FakeLease(self.file_key_id, entry["publisher"], float(entry["expires"]))
                for path, entry in raw.items()
            }
            yield table
            if write:
                kept = {path: raw[path] for path in raw if path in table}
                handle.seek(0)
                handle.truncate()
                json.dump(kept, handle)
                handle.flush()

    # --- the server -------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake gateway first"
        return f"http://127.0.0.1:{self._server.server_address[1]}{API}"

    def start(self) -> FakeGateway:
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- answers ---------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, headers: dict[str, str]) -> Answer:
        with self.lock:
            self.requests.append((method, raw_path, headers))
            if self.answer_next:
                return self.answer_next.pop(0)
        path = unquote(urlsplit(raw_path).path)  # Go's URL.Path
        route, param = _route(path)
        if route is None:
            return _text(404, "404 page not found")
        real, modelled = ROUTES[route]
        if method not in real:
            allowed = ", ".join(sorted({*real, "OPTIONS"}))
            return _text(405, "Method Not Allowed", {"Allow": allowed})
        if method not in modelled:
            return _text(501, f"fake_gateway_api: {method} {route} is not modelled")
        if route == "/leases-by-path/*path":
            return self._admin(headers.get("authorization"), path, param)
        return _json(self._read(route, param))

    def _read(self, route: str, name: str) -> dict[str, Any]:
        if route == "":
            return {"welcome": WELCOME}
        if route == "/leases":
            data = {
                path: {
                    "key_id": lease.key_id,
                    "path": path,
                    "expires": go_time(lease.expires),
                    "hostname": lease.hostname,
                }
                for path, lease in self.active_leases().items()
            }
            return {"data": _omit_empty(data), "status": "ok"}
        if route == "/repos":
            return {"data": {name: self._repo(name) for name in sorted(self.repos)}, "status": "ok"}
        if name not in self.repos:
            return {"reason": "invalid_repo", "status": "error"}
        return {"data": self._repo(name), "status": "ok"}

    def _repo(self, name: str) -> dict[str, Any]:
        return {"keys": dict(sorted(self.repos[name].items())), "enabled": True}

    def _admin(self, authorization: str | None, path: str, param: str) -> Answer:
        """``WithAdminAuthz`` then ``MakeAdminLeasesHandler``."""
        tokens = (authorization or "").split(" ")
        try:
            if len(tokens) != 2:
                raise ValueError
            signature = base64.b64decode(tokens[1], validate=True)
        except (ValueError, binascii.Error):
            return _error("invalid_authorization_header")
        key = self.keys.get(tokens[0])
        if key is None:
            return _error("invalid_key")
        if not key.admin:
            return _error("no_admin_key")
        if not hmac.compare_digest(signature, go_hmac(path, key.secret)):
            return _error("invalid_hmac")
        repo_path = param.removeprefix("/")
        if not repo_path:
            return _text(400, "missing path argument")
        try:
            repo, sub = split_lease_path(repo_path)
        except ValueError as exc:
            return _error(str(exc))
        self.cancel(repo, sub)
        return _json({"status": "ok"})


def _omit_empty(data: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """``omitempty`` on every LeaseDTO field."""
    return {path: {k: v for k, v in dto.items() if v} for path, dto in data.items()}


def _route(path: str) -> tuple[str | None, str]:
    """(route, its parameter) of a decoded path, as httprouter matches it."""
    if not path.startswith(API):
        return None, ""
    rest = path[len(API) :]
    if rest in ROUTES and ":" not in rest and "*" not in rest:
        return rest, ""
    if rest.startswith("/leases-by-path/"):
        return "/leases-by-path/*path", rest[len("/leases-by-path") :]
    head, _, name = rest.rpartition("/")
    if name and "/" not in name and f"{head}/:name" in ROUTES:
        return f"{head}/:name", name
    if name and f"{head}/:token" in ROUTES:
        return f"{head}/:token", name
    return None, ""


def _json(value: dict[str, Any]) -> Answer:
    return Answer(200, go_json(value), {"Content-Type": "text/plain; charset=utf-8"})


def _error(reason: str) -> Answer:
    return _json({"reason": reason, "status": "error"})


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    """Go's ``http.Error``."""
    return Answer(
        status,
        (message + "\n").encode(),
        {
            **(headers or {}),
            "Content-Type": "text/plain; charset=utf-8",
            "X-Content-Type-Options": "nosniff",
        },
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that hangs up early (a capped read) is no failure of the fake


def _handler(gateway: FakeGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = gateway.answer(self.command, self.path, headers)
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if answer.close_delimited:
                self.close_connection = True
            elif "Content-Length" not in answer.headers:
                self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = do_DELETE = do_PUT = _serve

    return Handler

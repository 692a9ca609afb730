"""A bearer token server for the test registry (the Docker token flow).

``GET /token?service=S&scope=repository:NAME:pull,push`` with optional basic
auth answers ``{"token", "access_token", "expires_in", "issued_at"}``: an
RS256 JWT whose ``x5c`` header carries the signing certificate, which the
registry trusts through its ``rootcertbundle``. Known users get every action
they ask for; anonymous callers get ``pull`` only when ``anonymous_pull`` is
set (as on Docker Hub), otherwise a token granting nothing; a wrong password
gets 401.

Needs ``PyJWT`` and ``cryptography`` (test extras), imported lazily.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bot.sandbox.certs import KeyPair, make_signing_cert


class TokenServer:
    """Issue registry tokens on ``127.0.0.1`` (port 0); use as a context manager."""

    def __init__(
        self,
        directory: Path,
        *,
        service: str = "wishbot-test-registry",
        issuer: str = "wishbot-test-issuer",
        users: Mapping[str, str] | None = None,
        anonymous_pull: bool = False,
        expires_in: int = 300,
    ):
        self.directory = directory
        self.service = service
        self.issuer = issuer
        self.users = dict(users or {})
        self.anonymous_pull = anonymous_pull
        self.expires_in = expires_in
        self.signer: KeyPair = make_signing_cert(directory)
        self.requests: list[dict[str, Any]] = []  # what was asked (no secrets)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------
    def start(self) -> TokenServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                owner._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="token-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the token server is not running"
        return int(self._server.server_address[1])

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def tokens_issued(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["status"] == 200)

    # --- tokens -----------------------------------------------------------
    def _user(self, header: str | None) -> tuple[str | None, bool]:
        """(user name, credentials ok); (None, True) when anonymous."""
        if not header:
            return None, True
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return None, False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        expected = self.users.get(user)
        ok = expected is not None and secrets.compare_digest(expected, password)
        return user, ok

    def grant(self, user: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        access: list[dict[str, Any]] = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            if user is None:
                actions = [a for a in actions if a == "pull"] if self.anonymous_pull else []
            if actions:
                access.append({"type": kind, "name": name, "actions": actions})
        return access

    def sign(self, subject: str, access: list[dict[str, Any]]) -> str:
        import jwt
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert = x509.load_pem_x509_certificate(self.signer.cert.read_bytes())
        der = cert.public_bytes(serialization.Encoding.DER)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        headers = {"x5c": [base64.b64encode(der).decode()]}
        return jwt.encode(claims, self.signer.key.read_text(), algorithm="RS256", headers=headers)

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(request.path)
        query = urllib.parse.parse_qs(url.query)
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        user, ok = self._user(request.headers.get("Authorization"))
        record: dict[str, Any] = {
            "path": url.path,
            "service": query.get("service", [""])[0],
            "scopes": scopes,
            "user": user,
        }
        body: dict[str, Any]
        if url.path != "/token":
            status, body = 404, {"errors": [{"code": "NOT_FOUND", "message": "no such path"}]}
        elif not ok:
            status, body = 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        else:
            token = self.sign(user or "", self.grant(user, scopes))
            status = 200
            body = {
                "token": token,
                "access_token": token,
                "expires_in": self.expires_in,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        record["status"] = status
        with self._lock:
            self.requests.append(record)
        payload = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

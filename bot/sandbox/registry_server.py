"""A real distribution registry (Debian's ``docker-registry``) on loopback.

::

    with LocalRegistry() as registry:                  # open, plain HTTP
        push_image(registry.url, "demo/hello", "1.0", [layer])
    with LocalRegistry(auth="basic") as registry: ...  # htpasswd (bcrypt)
    with LocalRegistry(auth="token") as registry: ...  # bearer tokens (token_server)
    with LocalRegistry(tls=True) as registry: ...      # HTTPS, trust registry.ca_file

The registry listens on ``127.0.0.1`` port 0; the port is read from its
"listening on" log line. Storage lives in a temporary directory (removed on
stop unless ``directory`` was given), deletes are enabled, and the process is
stopped by its PID. ``notifications`` is distribution's ``notifications:``
block (its endpoints receive the registry's own events).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bot.errors import WishbotError

if TYPE_CHECKING:
    from bot.sandbox.token_server import TokenServer

AuthKind = Literal["none", "basic", "token"]

REGISTRY_BINARY = "docker-registry"
_LISTENING = re.compile(r"listening on (?:\[[^\]]*\]|[0-9.]+):(\d+)")


class SandboxError(WishbotError):
    """The sandbox (test registry, token server) could not start."""


class LocalRegistry:
    """A registry process; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        auth: AuthKind = "none",
        tls: bool = False,
        username: str = "wishbot",
        password: str | None = None,
        anonymous_pull: bool = False,
        token_expires_in: int = 300,
        directory: Path | None = None,
        binary: str = REGISTRY_BINARY,
        startup_timeout: float = 15.0,
        notifications: Mapping[str, object] | None = None,
    ):
        self.auth: AuthKind = auth
        self.tls = tls
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.anonymous_pull = anonymous_pull
        self.token_expires_in = token_expires_in
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.notifications = notifications  # distribution's notifications: block
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="wishbot-registry-"))
        self.ca_file: Path | None = None
        self.token_server: TokenServer | None = None  # for auth="token"
        self.log_file = self.directory / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._port = 0

    def __repr__(self) -> str:
        state = f"{self.host}" if self._process else "stopped"
        return f"LocalRegistry(auth={self.auth!r}, tls={self.tls}, {state}, password=***)"

    # --- properties -------------------------------------------------------
    @property
    def pid(self) -> int:
        if self._process is None:
            raise SandboxError("the local registry is not running")
        return self._process.pid

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of image references."""
        return f"127.0.0.1:{self._port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:PORT``."""
        return f"{self.scheme}://{self.host}"

    @property
    def credentials(self) -> tuple[str, str] | None:
        """(user, password) for the auth flavours, else None."""
        return (self.username, self.password) if self.auth != "none" else None

    @property
    def verify(self) -> str | bool:
        """What ``requests`` needs as ``verify=`` to talk to this registry."""
        return str(self.ca_file) if self.ca_file else True

    # --- lifecycle --------------------------------------------------------
    def _config(self) -> dict[str, object]:
        storage = self.directory / "data"
        storage.mkdir(exist_ok=True)
        http: dict[str, object] = {"addr": "127.0.0.1:0", "secret": secrets.token_hex(16)}
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if self.notifications is not None:
            config["notifications"] = dict(self.notifications)
        if self.tls:
            from bot.sandbox.certs import make_ca, make_server_cert

            ca = make_ca(self.directory)
            server = make_server_cert(self.directory, ca, "registry")
            self.ca_file = ca.cert
            http["tls"] = {"certificate": str(server.cert), "key": str(server.key)}
        if self.auth == "basic":
            htpasswd = self.directory / "htpasswd"
            try:
                line = subprocess.run(
                    ["htpasswd", "-Bbn", self.username, self.password],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
            except (OSError, subprocess.CalledProcessError) as exc:
                raise SandboxError(
                    f"cannot create the htpasswd file: {exc}",
                    hint="install Debian's apache2-utils",
                ) from exc
            htpasswd.write_text(line + "\n")
            config["auth"] = {"htpasswd": {"realm": "wishbot-test", "path": str(htpasswd)}}
        elif self.auth == "token":
            from bot.sandbox.token_server import TokenServer

            tokens = TokenServer(
                self.directory,
                users={self.username: self.password},
                anonymous_pull=self.anonymous_pull,
                expires_in=self.token_expires_in,
            ).start()
            self.token_server = tokens
            config["auth"] = {
                "token": {
                    "realm": tokens.realm,
                    "service": tokens.service,
                    "issuer": tokens.issuer,
                    "rootcertbundle": str(tokens.signer.cert),
                }
            }
        elif self.auth != "none":
            raise SandboxError(f"unknown auth flavour '{self.auth}': use none, basic or token")
        return config

    def start(self) -> LocalRegistry:
        if shutil.which(self.binary) is None:
            raise SandboxError(
                f"'{self.binary}' is not installed", hint="install Debian's docker-registry package"
            )
        config_path = self.directory / "config.yml"
        config_path.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env["OTEL_TRACES_EXPORTER"] = "none"
        with self.log_file.open("wb") as log:
            self._process = subprocess.Popen(
                [self.binary, "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.directory,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_file.read_text(errors="replace"))
            if match:
                self._port = int(match.group(1))
                return self
            if self._process.poll() is not None:
                break
            time.sleep(0.01)
        tail = self.log_file.read_text(errors="replace")[-2000:]
        self.stop()
        raise SandboxError(f"the local registry did not start; its log ends with:\n{tail}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LocalRegistry:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

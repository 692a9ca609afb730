"""Registry credentials and the authentication handshake's pure parts.

Credentials come from (first match wins):

1. environment variables for CI: ``WISHBOT_REGISTRY_<N>_HOST``,
   ``WISHBOT_REGISTRY_<N>_USER`` and ``WISHBOT_REGISTRY_<N>_PASSWORD`` for
   any ``N`` (``1``, ``2``, ``GITLAB`` ...);
2. the file named by ``REGISTRY_AUTH_FILE``, else ``~/.docker/config.json``
   (``auths`` entries with base64 ``auth`` or ``username``/``password``).

Never from the wishlist, and never logged: :class:`Credentials` masks the
password in its ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core.reference import DOCKER_HUB, DOCKER_HUB_ALIASES
from bot.errors import ConfigError
from bot.registry import safejson

_ENV_HOST = re.compile(r"^WISHBOT_REGISTRY_([A-Za-z0-9]+)_HOST$")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


def canonical_host(name: str) -> str:
    """A registry key for credential lookup: no scheme or path, Docker Hub folded."""
    text = name.strip()
    text = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", text)
    text = text.split("/", 1)[0].lower()
    if text in DOCKER_HUB_ALIASES or text == "registry-1.docker.io":
        return DOCKER_HUB
    return text


@dataclass
class CredentialStore:
    """Credentials per registry host (``host[:port]``)."""

    entries: dict[str, Credentials] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"CredentialStore(hosts={sorted(self.entries)})"

    def get(self, registry: str) -> Credentials | None:
        return self.entries.get(canonical_host(registry))

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> CredentialStore:
        env = os.environ if environ is None else environ
        store = cls()
        path_text = env.get("REGISTRY_AUTH_FILE")
        if path_text:
            path = Path(path_text)
            if not path.is_file():
                raise ConfigError(
                    f"REGISTRY_AUTH_FILE names {path_text}, which is not a readable file",
                    hint="point it at a docker/podman auth.json or unset it",
                )
        else:
            home = env.get("HOME") or str(Path.home())
            path = Path(home) / ".docker" / "config.json"
        if path.is_file():
            store.entries.update(_from_auth_file(path))
        store.entries.update(_from_env(env))
        return store


def _from_auth_file(path: Path) -> dict[str, Credentials]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read registry credentials from {path}: {exc.__class__.__name__}",
            hint="fix the JSON (an object with an 'auths' mapping) or set REGISTRY_AUTH_FILE",
        ) from None
    auths = raw.get("auths") if isinstance(raw, dict) else None
    out: dict[str, Credentials] = {}
    if not isinstance(auths, dict):
        return out
    for key, entry in auths.items():
        credentials = _entry_credentials(path, key, entry) if isinstance(entry, dict) else None
        if credentials is not None:
            out[canonical_host(key)] = credentials
    return out


def _entry_credentials(path: Path, key: str, entry: dict[str, Any]) -> Credentials | None:
    """One ``auths`` entry: ``auth`` (base64 of user:password) or username and password."""
    user, password = entry.get("username"), entry.get("password")
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError(
                f"{path}: the 'auth' value for '{key}' is not base64 of user:password",
                hint="log in again or fix the entry",
            ) from None
    if isinstance(user, str) and isinstance(password, str) and user:
        return Credentials(user, password)
    return None


def _from_env(env: Mapping[str, str]) -> dict[str, Credentials]:
    out: dict[str, Credentials] = {}
    for var, host in env.items():
        match = _ENV_HOST.match(var)
        if not match or not host.strip():
            continue
        prefix = f"WISHBOT_REGISTRY_{match.group(1)}_"
        user = env.get(prefix + "USER", "")
        password = env.get(prefix + "PASSWORD", "")
        if not user or not password:
            raise ConfigError(
                f"{var} is set but {prefix}USER or {prefix}PASSWORD is missing",
                hint="set all three variables, or none",
            )
        out[canonical_host(host)] = Credentials(user, password)
    return out


# --- WWW-Authenticate -------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer", "basic"
    params: Mapping[str, str]


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*')
_SCHEME = re.compile(rf"\s*({_TOKEN})(?=\s|$|,)")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` (several challenges, quoted commas, escapes)."""
    challenges: list[Challenge] = []
    pos = 0
    current: tuple[str, dict[str, str]] | None = None
    while pos < len(header):
        if header[pos] in ", \t":
            pos += 1
            continue
        param = _PARAM.match(header, pos)
        if param and current is not None:
            value = param.group(2)
            value = re.sub(r"\\(.)", r"\1", value) if value is not None else param.group(3)
            current[1][param.group(1).lower()] = value
            pos = param.end()
            continue
        scheme = _SCHEME.match(header, pos)
        if not scheme:
            break
        if current is not None:
            challenges.append(Challenge(current[0], current[1]))
        current = (scheme.group(1).lower(), {})
        pos = scheme.end()
    if current is not None:
        challenges.append(Challenge(current[0], current[1]))
    return challenges


# --- tokens -----------------------------------------------------------------


class TokenCache:
    """Bearer tokens per (registry, scope), dropped shortly before they expire."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, registry: str, scope: str) -> str | None:
        with self._lock:
            entry = self._tokens.get((registry, scope))
            if entry is None:
                return None
            token, expiry = entry
            if time.monotonic() >= expiry:
                del self._tokens[(registry, scope)]
                return None
            return token

    def put(self, registry: str, scope: str, token: str, expires_in: float) -> None:
        margin = min(30.0, expires_in / 4)
        with self._lock:
            self._tokens[(registry, scope)] = (token, time.monotonic() + expires_in - margin)


#: a bearer token must fit an HTTP header: visible ASCII only (no space,
#: newline or control character), at most this long
MAX_TOKEN_CHARS = 64 * 2**10
_TOKEN_VALUE = re.compile(r"[!-~]+")
#: token lifetimes are clamped to this (a hostile answer cannot pin a token for ever)
MAX_TOKEN_LIFETIME = 3600.0
DEFAULT_TOKEN_LIFETIME = 60.0


def token_from_answer(body: bytes) -> tuple[str, float]:
    """The token and its lifetime in seconds from a token server's answer.

    Raises :class:`ValueError` whose message completes "the token server's
    answer …" and never contains the token."""
    data = safejson.loads(body)
    if not isinstance(data, dict):
        raise ValueError("is not a JSON object")
    token = data.get("token") or data.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("holds no token")
    if len(token) > MAX_TOKEN_CHARS or not _TOKEN_VALUE.fullmatch(token):
        raise ValueError(
            "holds a token that cannot be sent in an HTTP header "
            "(spaces, line breaks, control characters or too long; it is not shown)"
        )
    return token, _lifetime(data.get("expires_in"))


def _lifetime(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return DEFAULT_TOKEN_LIFETIME
    if isinstance(value, int):
        value = min(value, int(MAX_TOKEN_LIFETIME))
    if not math.isfinite(value) or value <= 0:
        return DEFAULT_TOKEN_LIFETIME
    return min(float(value), MAX_TOKEN_LIFETIME)

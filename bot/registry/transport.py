"""HTTP to registries: sessions, authentication, retries, rate limits, limits.

- one ``requests.Session`` per API host (connection reuse);
- a semaphore per registry (``config.concurrency`` requests at once);
- timeouts on every request; retries with exponential backoff and jitter on
  connection errors and 5xx; 429 waits for ``Retry-After`` when it is at
  most ``config.max_retry_after`` (else :class:`Unavailable` at once);
- authentication: anonymous first, then on 401 the challenge decides: basic
  with stored credentials, or the bearer token flow (tokens cached per
  registry and scope until shortly before they expire);
- redirects are followed here, not by ``requests``: at most
  :data:`MAX_REDIRECTS` hops, each checked by :meth:`Policy.check_redirect`
  (no plain HTTP, no private addresses unless allowed), and credentials
  (``Authorization``, basic auth) never go to another host, so blob
  redirects to object stores and CDNs work without our credentials;
- HTTP proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY`` ...)
  are honoured, except for loopback addresses, which are always direct.

Credentials never appear in log lines or error messages.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import requests

from bot.config import Config
from bot.errors import ConfigError, RegistryError, RegistryRefused, Unauthorized, Unavailable
from bot.registry.auth import Challenge, Credentials, CredentialStore, TokenCache, parse_challenges
from bot.registry.policy import Endpoint, Policy, is_loopback

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_BACKOFF = 30.0
TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)

_CREDENTIALS_HINT = (
    "give credentials with WISHBOT_REGISTRY_<N>_HOST/_USER/_PASSWORD, "
    "REGISTRY_AUTH_FILE or ~/.docker/config.json"
)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _ca_bundle(path: str) -> str:
    """The system CAs plus the operator's extra CA file, as one PEM file."""
    extra = Path(path)
    try:
        extra_pem = extra.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"WISHBOT_CA_BUNDLE names {path}, which cannot be read as a PEM file ({exc.__class__.__name__})"
        ) from None
    import certifi

    combined = Path(certifi.where()).read_text(encoding="ascii") + "\n" + extra_pem
    with tempfile.NamedTemporaryFile(
        "w", prefix="wishbot-ca-", suffix=".pem", delete=False, encoding="ascii"
    ) as handle:
        handle.write(combined)
    return handle.name


class Transport:
    """Authenticated, retrying HTTP to registries (thread safe)."""

    def __init__(
        self,
        config: Config,
        credentials: CredentialStore,
        policy: Policy,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config
        self.credentials = credentials
        self.policy = policy
        self.sleep = sleep
        self.tokens = TokenCache()
        self._sessions: dict[str, requests.Session] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._basic: set[str] = set()
        self._lock = threading.Lock()
        self._requests = 0
        self._bundle_path = _ca_bundle(config.ca_bundle) if config.ca_bundle else None
        self.verify: str | bool = self._bundle_path or True

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()
        if self._bundle_path:
            Path(self._bundle_path).unlink(missing_ok=True)
            self._bundle_path = None

    @property
    def requests_made(self) -> int:
        with self._lock:
            return self._requests

    # --- plumbing ---------------------------------------------------------
    def _session(self, netloc: str) -> requests.Session:
        with self._lock:
            session = self._sessions.get(netloc)
            if session is None:
                session = requests.Session()
                size = max(self.config.concurrency, self.config.workers)
                adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=size)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                session.headers["User-Agent"] = "wishbot"
                # loopback is always direct: no HTTP(S)_PROXY (nor other
                # environment settings) for it; everything else honours them
                session.trust_env = not is_loopback(
                    urllib.parse.urlsplit(f"//{netloc}").hostname or ""
                )
                self._sessions[netloc] = session
            return session

    @contextlib.contextmanager
    def slot(self, registry: str) -> Iterator[None]:
        """Hold one of the registry's ``concurrency`` request slots."""
        with self._lock:
            semaphore = self._slots.get(registry)
            if semaphore is None:
                semaphore = threading.BoundedSemaphore(max(1, self.config.concurrency))
                self._slots[registry] = semaphore
        with semaphore:
            yield

    def _count(self) -> None:
        with self._lock:
            self._requests += 1

    def backoff(self, attempt: int) -> float:
        delay = self.config.backoff * (2**attempt)
        return float(min(MAX_BACKOFF, delay * random.uniform(0.5, 1.5)))

    def raw(
        self,
        who: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        stream: bool = False,
        auth: tuple[str, str] | None = None,
        registry: str = "",
    ) -> requests.Response:
        """One request (and its redirects) with retries on transient failures;
        never raises for 4xx. ``registry`` names the registry in messages
        (default: the URL's host)."""
        registry = registry or urllib.parse.urlsplit(url).netloc
        attempts = self.config.retries + 1
        reason = ""
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._exchange(
                    who,
                    registry,
                    method,
                    url,
                    headers=dict(headers or {}),
                    data=data,
                    params=params,
                    stream=stream,
                    auth=auth,
                )
            except requests.exceptions.SSLError as exc:
                raise Unavailable(
                    f"{who}: TLS verification failed ({_short(exc)})",
                    hint="if the registry uses a private CA, set WISHBOT_CA_BUNDLE to its PEM file",
                ) from None
            except TRANSIENT as exc:
                reason = _short(exc)
                log.debug("%s %s failed (%s), attempt %d", method, _safe(url), reason, attempt + 1)
                if not last:
                    self.sleep(self.backoff(attempt))
                continue
            if response.status_code == 429:
                wait = retry_after(response.headers.get("Retry-After"))
                response.close()
                reason = "rate limited, HTTP 429"
                if wait is not None and wait > self.config.max_retry_after:
                    raise Unavailable(
                        f"{who}: the registry rate-limits us and asks to wait {wait:.0f} s",
                        hint=(
                            "try again later, log in for a higher limit, or configure a mirror; "
                            "nothing was concluded about the image"
                        ),
                    )
                if not last:
                    self.sleep(wait if wait is not None else self.backoff(attempt))
                continue
            if response.status_code in RETRY_STATUSES:
                reason = f"HTTP {response.status_code}"
                response.close()
                if not last:
                    self.sleep(self.backoff(attempt))
                continue
            return response
        raise Unavailable(
            f"{who}: could not check: the registry {registry} is unavailable "
            f"({reason}; {attempts} attempt{'s' * (attempts != 1)})",
            hint="try again later; nothing was concluded about the image",
        )

    def _exchange(
        self,
        who: str,
        registry: str,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        data: bytes | None,
        params: Mapping[str, str] | None,
        stream: bool,
        auth: tuple[str, str] | None,
    ) -> requests.Response:
        """Send one request and follow its redirects by hand, each hop checked
        by the policy; credentials are dropped for good once a hop leaves the
        first server."""
        for hop in range(MAX_REDIRECTS + 1):
            session = self._session(urllib.parse.urlsplit(url).netloc)
            self._count()
            response = session.request(
                method,
                url,
                headers=headers,
                data=data,
                params=params,
                stream=stream,
                auth=auth,
                timeout=self.config.timeout,
                verify=self.verify,
                allow_redirects=False,
            )
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                return response
            status, source = response.status_code, response.url
            response.close()
            if hop == MAX_REDIRECTS:
                raise RegistryRefused(
                    f"{who}: registry {registry} redirects more than {MAX_REDIRECTS} times; "
                    "not followed",
                    hint="the registry is misconfigured or hostile; tell its operators",
                )
            target = urllib.parse.urljoin(source, location.strip())
            try:
                self.policy.check_redirect(registry, source, target)
            except RegistryRefused as exc:
                raise RegistryRefused(f"{who}: {exc.message}", hint=exc.hint) from None
            log.debug("%s: %d redirect to %s", who, status, _safe(target))
            if not _same_server(source, target):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                auth = None
            if status not in (307, 308):
                # like browsers and requests: 301/302/303 continue with GET (HEAD stays HEAD)
                method = "HEAD" if method == "HEAD" else "GET"
                data = None
                headers = {
                    k: v
                    for k, v in headers.items()
                    if k.lower() not in ("content-type", "content-length", "transfer-encoding")
                }
            url, params = target, None
        raise AssertionError("unreachable: the loop returns or raises")

    # --- authenticated requests --------------------------------------------
    def _auth_header(self, endpoint: Endpoint, scope: str) -> dict[str, str]:
        credentials = self.credentials.get(endpoint.registry)
        with self._lock:
            basic = endpoint.netloc in self._basic
        if basic and credentials is not None:
            return {"Authorization": requests.auth._basic_auth_str(*_pair(credentials))}
        token = self.tokens.get(endpoint.netloc, scope)
        if token:
            return {"Authorization": f"Bearer {token}"}
        return {}

    def send(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        *,
        who: str,
        repository: str,
        actions: str = "pull",
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        stream: bool = False,
        limit: bool = True,
    ) -> requests.Response:
        """A request to ``endpoint`` (``path`` relative to it, or a full URL on
        the same host), authenticating on 401. 401/403 after that raise
        :class:`Unauthorized`; other statuses are the caller's to judge."""
        url = path if path.startswith(("http://", "https://")) else endpoint.base_url + path
        scope = f"repository:{repository}:{actions}"
        guard = self.slot(endpoint.registry) if limit else contextlib.nullcontext()
        with guard:
            for attempt in range(2):
                all_headers = {**(headers or {}), **self._auth_header(endpoint, scope)}
                response = self.raw(
                    who,
                    method,
                    url,
                    headers=all_headers,
                    data=data,
                    params=params,
                    stream=stream,
                    registry=endpoint.registry,
                )
                if response.status_code not in (401, 403):
                    return response
                challenge_header = response.headers.get("WWW-Authenticate", "")
                response.close()
                authorised = "Authorization" in all_headers
                if response.status_code == 401 and attempt == 0:
                    self._authenticate(
                        endpoint, parse_challenges(challenge_header), scope, who, authorised
                    )
                    continue
                break
        credentials = self.credentials.get(endpoint.registry)
        if credentials is None:
            raise Unauthorized(
                f"{who}: the registry wants credentials (or the image does not exist)",
                hint=_CREDENTIALS_HINT,
            )
        raise Unauthorized(
            f"{who}: the registry refused access for user '{credentials.username}' "
            "(or the image does not exist)",
            hint="check the user's permissions on this repository and the image name",
        )

    def _authenticate(
        self,
        endpoint: Endpoint,
        challenges: list[Challenge],
        scope: str,
        who: str,
        authorised: bool,
    ) -> None:
        credentials = self.credentials.get(endpoint.registry)
        for challenge in challenges:
            if challenge.scheme == "bearer" and challenge.params.get("realm"):
                self._fetch_token(endpoint, challenge, scope, who, credentials)
                return
        for challenge in challenges:
            if challenge.scheme == "basic":
                if credentials is None:
                    raise Unauthorized(
                        f"{who}: the registry wants a user name and password",
                        hint=_CREDENTIALS_HINT,
                    )
                with self._lock:
                    already = endpoint.netloc in self._basic
                    self._basic.add(endpoint.netloc)
                if already and authorised:
                    raise Unauthorized(
                        f"{who}: the registry refused the password of user '{credentials.username}'",
                        hint="check the credentials given for this registry",
                    )
                return
        raise Unauthorized(
            f"{who}: the registry refused the request and offers no usable authentication",
            hint=_CREDENTIALS_HINT,
        )

    def _fetch_token(
        self,
        endpoint: Endpoint,
        challenge: Challenge,
        scope: str,
        who: str,
        credentials: Credentials | None,
    ) -> None:
        realm = challenge.params["realm"]
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise Unauthorized(f"{who}: the registry's token realm '{realm}' is not a URL")
        if parts.scheme == "http" and endpoint.base_url.startswith("https://"):
            raise Unauthorized(
                f"{who}: the registry sends us to a plain-http token server ({parts.netloc})",
                hint="tokens and passwords are only sent over HTTPS to HTTPS registries",
            )
        registry_host = urllib.parse.urlsplit(endpoint.base_url).hostname or ""
        self.policy.check_address(parts.netloc, also_allowed=(registry_host, endpoint.registry))
        params = {"scope": challenge.params.get("scope") or scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        response = self.raw(
            f"{who} (token server {parts.netloc})",
            "GET",
            realm,
            params=params,
            auth=_pair(credentials) if credentials else None,
            registry=endpoint.registry,
        )
        with response:
            if response.status_code in (401, 403):
                if credentials is None:
                    raise Unauthorized(
                        f"{who}: the token server wants credentials", hint=_CREDENTIALS_HINT
                    )
                raise Unauthorized(
                    f"{who}: the token server refused the credentials of user '{credentials.username}'",
                    hint="check the password or token given for this registry",
                )
            if response.status_code != 200:
                raise RegistryError(
                    f"{who}: the token server answered HTTP {response.status_code}",
                    hint="try again later",
                )
            try:
                body: Any = response.json()
            except ValueError:
                body = None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{who}: the token server's answer holds no token")
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        lifetime = (
            float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 60.0
        )
        self.tokens.put(endpoint.netloc, scope, token, lifetime)


def _pair(credentials: Credentials) -> tuple[str, str]:
    return credentials.username, credentials.password


#: what people should read instead of urllib3's nested exception text
_PLAIN_REASONS = (
    ("Connection refused", "connection refused"),
    ("Name or service not known", "host name not found"),
    ("Temporary failure in name resolution", "host name lookup failed"),
    ("Failed to resolve", "host name not found"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network unreachable"),
    ("Connection reset", "connection reset"),
    ("timed out", "timed out"),
    ("IncompleteRead", "the answer was cut off"),
    ("RemoteDisconnected", "the server closed the connection"),
)


def _short(exc: BaseException) -> str:
    """A short, plain reason for a transport failure (for messages people read)."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    for needle, plain in _PLAIN_REASONS:
        if needle in text or needle in exc.__class__.__name__:
            return plain
    return f"{exc.__class__.__name__}: {text[:160]}" if text else exc.__class__.__name__


def _safe(url: str) -> str:
    """A URL without its query (which may carry upload state) for logs."""
    return url.split("?", 1)[0]


def _same_server(source: str, target: str) -> bool:
    """Whether credentials for ``source`` may go to ``target``: same host and
    port, and no step down from HTTPS to HTTP (an upgrade of the same host on
    the default ports is fine, as in ``requests``)."""
    src, dst = urllib.parse.urlsplit(source), urllib.parse.urlsplit(target)
    if (src.hostname or "").lower() != (dst.hostname or "").lower():
        return False
    if src.scheme == "https" and dst.scheme != "https":
        return False
    defaults = {"http": 80, "https": 443}
    if src.scheme == dst.scheme:
        return (src.port or defaults.get(src.scheme)) == (dst.port or defaults.get(dst.scheme))
    return src.port in (None, 80) and dst.port in (None, 443)

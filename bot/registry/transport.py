"""HTTP to registries: sessions, authentication, retries, rate limits, limits.

- one ``requests.Session`` per API host (connection reuse);
- a semaphore per registry (``config.concurrency`` requests at once);
- timeouts on every operation and a total deadline on every request
  (``config.request_deadline``, enforced on the socket by
  :mod:`bot.registry.deadline`); bodies read with a size cap while they
  stream (never whole, then checked); retries with exponential backoff and
  jitter on connection errors and 5xx; 429 waits for ``Retry-After`` when it
  is at most ``config.max_retry_after`` and the time left (else
  :class:`Unavailable` at once);
- whatever a hostile answer makes the HTTP stack raise (bad ``Location``,
  undecodable content ...) is a typed :class:`~bot.errors.RegistryError`;
- authentication: anonymous first, then on 401 the challenge decides: basic
  with stored credentials, or the bearer token flow (tokens cached per
  registry and scope until shortly before they expire);
- redirects are followed here, not by ``requests``: at most
  :data:`MAX_REDIRECTS` hops, each checked by :meth:`Policy.check_redirect`
  (no plain HTTP, no private addresses unless allowed), and credentials
  (``Authorization``, basic auth) never go to another host, so blob
  redirects to object stores and CDNs work without our credentials;
  credentials only go to the endpoint's own scheme, host and port (a 401
  from a redirect target never gets them; token realms obey
  :meth:`Policy.check_realm`);
- HTTP proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY`` ...)
  are honoured, except for loopback addresses, which are always direct.

Credentials never appear in log lines or error messages.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import logging
import math
import random
import re
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import requests
import urllib3

from bot.config import Config
from bot.errors import (
    ConfigError,
    RegistryError,
    RegistryRefused,
    Unauthorized,
    Unavailable,
    Unsupported,
)
from bot.registry.auth import (
    Challenge,
    Credentials,
    CredentialStore,
    TokenCache,
    parse_challenges,
    token_from_answer,
)
from bot.registry.deadline import Deadline, WatchedAdapter
from bot.registry.policy import Endpoint, Policy, is_loopback, origin, same_origin

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
#: what a hostile or broken answer can make requests, urllib3 or http.client
#: raise besides the transient failures above (bad Location, bad header
#: values, undecodable content ...): a typed problem, never a traceback
HOSTILE = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ValueError,
    UnicodeError,
)
#: bodies of error answers (4xx, 5xx) are read up to this size, the rest dropped
MAX_ERROR_BYTES = 64 * 2**10
#: other small answers (token server, uploads) are refused beyond this size
MAX_SMALL_BYTES = 1 * 2**20
CHUNK = 1 << 16

_CREDENTIALS_HINT = (
    "give credentials with WISHBOT_REGISTRY_<N>_HOST/_USER/_PASSWORD, "
    "REGISTRY_AUTH_FILE or ~/.docker/config.json"
)


_SECONDS = re.compile(r"[0-9]{1,9}")


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP
    date); ``math.inf`` for absurdly many digits; None when unusable (negative,
    garbage, a date that cannot be represented): then the usual backoff."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    if value.isascii() and value.isdigit():
        return math.inf
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


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
                adapter = WatchedAdapter(pool_connections=4, pool_maxsize=size)
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

    def deadline(self, seconds: float | None = None) -> Deadline:
        """A total deadline (default ``config.request_deadline``) for this
        thread's requests inside ``with``."""
        return Deadline(self.config.request_deadline if seconds is None else seconds)

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
        max_bytes: int = MAX_SMALL_BYTES,
        setting: str = "",
    ) -> requests.Response:
        """One request (and its redirects) with retries on transient failures,
        all within ``config.request_deadline``; never raises for 4xx.

        Unless ``stream``, the body is read here, at most ``max_bytes`` of it
        (error bodies: :data:`MAX_ERROR_BYTES`), and ``response.content``
        holds it; ``setting`` names the configuration that sets ``max_bytes``.
        ``registry`` names the registry in messages (default: the URL's host)."""
        registry = registry or urllib.parse.urlsplit(url).netloc
        with self.deadline() as deadline:
            try:
                return self._attempts(
                    who,
                    registry,
                    deadline,
                    method,
                    url,
                    headers=dict(headers or {}),
                    data=data,
                    params=params,
                    stream=stream,
                    auth=auth,
                    limit=(max_bytes, setting),
                )
            except HOSTILE as exc:
                if deadline.expired:
                    raise _late(who, deadline) from None
                log.debug("%s: unusable answer", who, exc_info=True)
                if isinstance(exc, TRANSIENT):
                    raise Unavailable(
                        f"{who}: could not check: the registry {registry} failed ({_short(exc)})",
                        hint="try again later; nothing was concluded about the image",
                    ) from None
                raise Unsupported(
                    f"{who}: the registry {registry} sent an answer that cannot be used "
                    f"({exc.__class__.__name__})",
                    hint="the registry is misconfigured or hostile; tell its operators",
                ) from None

    def _attempts(
        self,
        who: str,
        registry: str,
        deadline: Deadline,
        method: str,
        url: str,
        *,
        limit: tuple[int, str],
        **request: Any,
    ) -> requests.Response:
        attempts = self.config.retries + 1
        reason = ""
        for attempt in range(attempts):
            if deadline.expired:
                raise _late(who, deadline)
            response, reason, wait = self._attempt(
                who, registry, deadline, method, url, limit=limit, attempt=attempt, **request
            )
            if response is not None:
                return response
            if attempt < attempts - 1:
                self._pause(wait if wait is not None else self.backoff(attempt), who, deadline)
        raise Unavailable(
            f"{who}: could not check: the registry {registry} is unavailable "
            f"({reason}; {attempts} attempt{'s' * (attempts != 1)})",
            hint="try again later; nothing was concluded about the image",
        )

    def _attempt(
        self,
        who: str,
        registry: str,
        deadline: Deadline,
        method: str,
        url: str,
        *,
        limit: tuple[int, str],
        attempt: int,
        **request: Any,
    ) -> tuple[requests.Response | None, str, float | None]:
        """One attempt: (the answer to use, or None and why to try again and how long
        the registry asks to wait; None: back off)."""
        try:
            response = self._exchange(who, registry, deadline, method, url, **request)
            if response.status_code not in RETRY_STATUSES | {429} and not request["stream"]:
                _load(response, *limit, who=who)
        except requests.exceptions.SSLError as exc:
            raise _tls_failure(exc, who, deadline) from None
        except (
            *TRANSIENT,
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.TimeoutError,
        ) as exc:
            if deadline.expired:
                raise _late(who, deadline) from None
            reason = _short(exc)
            log.debug("%s %s failed (%s), attempt %d", method, _safe(url), reason, attempt + 1)
            return None, reason, None
        reason, wait = self._retry(response, who, deadline)
        return (None if reason else response), reason, wait

    def _retry(
        self, response: requests.Response, who: str, deadline: Deadline
    ) -> tuple[str, float | None]:
        """Why to try ``response``'s request again and how long the registry asks to
        wait (None: back off); ``("", None)`` for an answer to use."""
        if response.status_code == 429:
            response.close()
            return "rate limited, HTTP 429", self._rate_limit_wait(response, who, deadline)
        if response.status_code in RETRY_STATUSES:
            response.close()
            return f"HTTP {response.status_code}", None
        return "", None

    def _rate_limit_wait(
        self, response: requests.Response, who: str, deadline: Deadline
    ) -> float | None:
        """The wait a 429 asks for; :class:`Unavailable` at once when it is
        longer than ``max_retry_after`` or than the request has left."""
        wait = retry_after(response.headers.get("Retry-After"))
        if wait is None:
            return None
        if wait > self.config.max_retry_after or wait > deadline.remaining():
            asked = "an unbounded time" if math.isinf(wait) else f"{wait:.0f} s"
            raise Unavailable(
                f"{who}: the registry rate-limits us and asks to wait {asked}",
                hint=(
                    "try again later, log in for a higher limit, or configure a mirror; "
                    "nothing was concluded about the image"
                ),
            )
        return wait

    def _pause(self, seconds: float, who: str, deadline: Deadline) -> None:
        """Sleep before a retry, unless that would pass the deadline."""
        if seconds >= deadline.remaining():
            raise _late(who, deadline)
        self.sleep(seconds)

    def _exchange(
        self,
        who: str,
        registry: str,
        deadline: Deadline,
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
        first server. The body is left unread (``stream``)."""
        for hop in range(MAX_REDIRECTS + 1):
            response = self._request_once(
                who,
                registry,
                deadline,
                method,
                url,
                headers=headers,
                data=data,
                params=params,
                auth=auth,
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
            target = self._redirect_target(who, registry, source, location)
            log.debug("%s: %d redirect to %s", who, status, _safe(target))
            if not _same_server(source, target):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                auth = None
            if status not in (307, 308):
                # like browsers and requests: 301/302/303 continue with GET (HEAD stays HEAD)
                method, data, headers = _without_body(method, headers)
            url, params = target, None
        raise AssertionError("unreachable: the loop returns or raises")

    def _request_once(
        self,
        who: str,
        registry: str,
        deadline: Deadline,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        data: bytes | None,
        params: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
    ) -> requests.Response:
        """One request, no redirect followed, body left unread; a bad URL is the registry's."""
        session = self._session(urllib.parse.urlsplit(url).netloc)
        self._count()
        wait = max(0.001, min(self.config.timeout, deadline.remaining()))
        try:
            return session.request(
                method,
                url,
                headers=headers,
                data=data,
                params=params,
                stream=True,
                auth=auth,
                timeout=wait,
                verify=self.verify,
                allow_redirects=False,
            )
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema):
            raise _bad_location(who, registry) from None
        except ValueError as exc:
            if isinstance(exc, requests.exceptions.RequestException):
                raise
            # requests parses a redirect's Location even when not following it
            raise _bad_location(who, registry) from None

    def _redirect_target(self, who: str, registry: str, source: str, location: str) -> str:
        """The absolute URL a ``Location`` names, checked by the policy."""
        try:
            target = urllib.parse.urljoin(source, location.strip())
        except ValueError:
            target = location
        try:
            self.policy.check_redirect(registry, source, target)
        except RegistryRefused as exc:
            raise RegistryRefused(f"{who}: {exc.message}", hint=exc.hint) from None
        return target

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
        max_bytes: int = MAX_SMALL_BYTES,
        setting: str = "",
    ) -> requests.Response:
        """A request to ``endpoint`` (``path`` relative to it, or a full URL on
        the same scheme, host and port), authenticating on 401. 401/403 after
        that raise :class:`Unauthorized`; other statuses are the caller's to
        judge. ``max_bytes`` and ``setting``: see :meth:`raw`.

        Credentials only ever go to the endpoint's own origin: a full URL
        elsewhere is refused, and a 401 from a server a redirect led to never
        decides where they go."""
        url = _own_url(endpoint, path, who)
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
                    max_bytes=max_bytes,
                    setting=setting,
                )
                if response.status_code not in (401, 403):
                    return response
                challenge_header = response.headers.get("WWW-Authenticate", "")
                response.close()
                _refuse_elsewhere(response, endpoint, who)
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
        try:
            self.policy.check_realm(endpoint, realm)
        except RegistryRefused as exc:
            raise Unauthorized(f"{who}: {exc.message}", hint=exc.hint) from None
        server = origin(realm)
        params = {"scope": challenge.params.get("scope") or scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        response = self.raw(
            f"{who} (token server {server})",
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
            body = response.content
        try:
            token, lifetime = token_from_answer(body)
        except ValueError as exc:
            raise RegistryError(
                f"{who}: the token server's answer {exc}",
                hint="the token server is misconfigured or hostile; tell the registry's operators",
            ) from None
        self.tokens.put(endpoint.netloc, scope, token, lifetime)


def _bad_location(who: str, registry: str) -> RegistryRefused:
    return RegistryRefused(
        f"{who}: registry {registry} redirects to a Location that is not a valid URL; not followed",
        hint="the registry is misconfigured or hostile; tell its operators",
    )


def _own_url(endpoint: Endpoint, path: str, who: str) -> str:
    """``path`` on ``endpoint``; a full URL must be on its scheme, host and port."""
    url = path if path.startswith(("http://", "https://")) else endpoint.base_url + path
    if not same_origin(url, endpoint.base_url):
        raise RegistryRefused(
            f"{who}: registry {endpoint.registry} sends us on to {origin(url)}, "
            f"which is not {origin(endpoint.base_url)}; not followed",
            hint="credentials and requests for a registry only go to its own scheme, host and port",
        )
    return url


def _refuse_elsewhere(response: requests.Response, endpoint: Endpoint, who: str) -> None:
    """A 401/403 from where a redirect led: the registry's credentials never go there."""
    if not same_origin(response.url, endpoint.base_url):
        raise Unauthorized(
            f"{who}: {origin(response.url)}, where registry {endpoint.registry} "
            f"redirected us, answers HTTP {response.status_code}; the registry's "
            "credentials are not sent there",
            hint="tell the registry's operators: what they redirect to must "
            "serve the request without the registry's credentials",
        )


def _without_body(method: str, headers: dict[str, str]) -> tuple[str, None, dict[str, str]]:
    """A 301/302/303 hop: GET (HEAD stays HEAD), no body, no body headers."""
    kept = {
        k: v
        for k, v in headers.items()
        if k.lower() not in ("content-type", "content-length", "transfer-encoding")
    }
    return ("HEAD" if method == "HEAD" else "GET"), None, kept


def _tls_failure(exc: requests.exceptions.SSLError, who: str, deadline: Deadline) -> Unavailable:
    if deadline.expired:
        return _late(who, deadline)
    return Unavailable(
        f"{who}: TLS verification failed ({_short(exc)})",
        hint="if the registry uses a private CA, set WISHBOT_CA_BUNDLE to its PEM file",
    )


def _late(who: str, deadline: Deadline) -> Unavailable:
    return Unavailable(
        f"{who}: could not check: the registry did not finish answering within "
        f"{deadline.seconds:g} s",
        hint=(
            "the registry is stalling or very slow; try again later "
            "(WISHBOT_REQUEST_DEADLINE and WISHBOT_MIN_BLOB_THROUGHPUT set the limits)"
        ),
    )


def _declared_length(response: requests.Response) -> int | None:
    text = response.headers.get("Content-Length", "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None


def _load(response: requests.Response, limit: int, setting: str, *, who: str) -> None:
    """Read the body of a streamed ``response`` into ``response.content``,
    never more than ``limit`` bytes (error answers: :data:`MAX_ERROR_BYTES`,
    the rest dropped). Memory: at most twice the limit plus one chunk."""
    error = response.status_code >= 300
    cap = min(limit, MAX_ERROR_BYTES) if error else limit
    declared = _declared_length(response)
    if not error and declared is not None and declared > cap:
        response.close()
        raise _too_large(who, cap, setting)
    body = bytearray()
    for chunk in response.raw.stream(CHUNK, decode_content=True):
        if len(body) + len(chunk) > cap:
            response.close()
            if not error:
                raise _too_large(who, cap, setting)
            body += chunk[: cap - len(body)]
            break
        body += chunk
    response._content = bytes(body)
    setattr(response, "_content_consumed", True)  # noqa: B010 (not in the stubs)


def _too_large(who: str, cap: int, setting: str) -> Unsupported:
    change = (
        f"if the registry is trusted and the answer genuine, raise WISHBOT_{setting.upper()}"
        if setting
        else "the registry is misconfigured or hostile; tell its operators"
    )
    return Unsupported(
        f"{who}: the registry's answer is larger than {cap} bytes; not read further",
        hint=change,
    )


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

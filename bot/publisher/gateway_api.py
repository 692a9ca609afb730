"""The CernVM-FS repository gateway's HTTP API, from the operator's side.

Several publishers of one repository each publish under a *lease* on a
subpath, taken from the gateway (``cvmfs_gateway``). A publisher that dies
keeps its lease until ``max_lease_time`` (default 7200 s) is over; an
administrator may cancel it sooner. This adapter lists the leases and cancels
them, as the gateway of CernVM-FS 2.12.0 defines it (its sources, under
``gateway/internal/gateway/``):

- ``frontend/frontend.go``: ``GET /api/v1/leases`` needs no authorization;
  ``DELETE /api/v1/leases-by-path/*path`` goes through ``WithAdminAuthz``.
- ``frontend/leases.go`` (``handleGetLeases``) and ``backend/lease_service.go``
  (``GetLeases``, ``LeaseDTO``): ``{"status": "ok", "data": {"REPO/path":
  {"key_id", "path", "expires", "hostname"}}}``, active leases only, each
  field omitted when empty; ``expires`` is Go's ``time.Time.String()``
  (``2026-11-30 20:23:09.574 +0000 UTC``, milliseconds, the gateway's time zone).
- ``frontend/admin_leases.go`` and ``backend/lease_service.go``
  (``CancelLeases``), ``backend/lease_entity.go``
  (``DeleteAllLeasesByRepositoryAndPathPrefix``): every lease of the repository
  whose subpath is ``LIKE`` the given one followed by ``%`` goes. That is an
  SQLite ``LIKE``: a *string* prefix (``/a`` also cancels ``/ab``), ``_`` and
  ``%`` are wildcards and ASCII letters match either case
  (:func:`cancelled_by` asks SQLite itself, so what we preview is what it does).
- ``frontend/authz.go`` (``WithAdminAuthz``, ``parseHeader``) and
  ``frontend/hmac.go`` (``ComputeHMAC``): ``Authorization: KEYID BASE64``,
  BASE64 the standard base64 of the *lowercase hex* HMAC-SHA1 of the request's
  URL path (decoded, as Go's ``URL.Path``) under the key's secret; the key
  must be declared ``"admin": true`` (``backend/access.go``, ``KeySpec``).
- ``frontend/util.go`` (``replyJSON``): every answer of those handlers is HTTP
  200, refusals included (``{"status": "error", "reason": "invalid_hmac"}``,
  ``invalid_key``, ``no_admin_key``, ``invalid_authorization_header``), with
  ``Content-Type: text/plain`` (Go sniffs it): the JSON says what happened.
- ``keys.go`` (``loadKeyFromReader``): a key file's first line is
  ``plain_text KEYID SECRET``.

Every read is bounded (time, 1 MiB), redirects are never followed (the
admin key goes to the configured gateway only) and the secret is never put
in a message or a log line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests

from bot.config import Config
from bot.core.text import cut, escape_terminal
from bot.errors import ConfigError, PublisherError, UsageError
from bot.registry import safejson

_log = logging.getLogger(__name__)

#: the largest answer read from the gateway (a lease is ~150 bytes of JSON)
MAX_ANSWER_BYTES = 2**20
#: the largest key file read
MAX_KEY_FILE_BYTES = 64 * 2**10
DEFAULT_TIMEOUT = 30.0
_CHUNK = 64 * 2**10
#: ``/etc/cvmfs``: repositories.d/REPO/server.conf names a gateway publisher's upstream
CVMFS_ETC = Path("/etc/cvmfs")
KEY_VARIABLE = "WISHBOT_GATEWAY_ADMIN_KEY"
KEY_FILE_VARIABLE = "WISHBOT_GATEWAY_ADMIN_KEY_FILE"
_KEY_HINT = (
    f"set {KEY_VARIABLE}=KEYID:SECRET or {KEY_FILE_VARIABLE}=FILE (a file whose first line "
    "is 'plain_text KEYID SECRET'); the key must be declared with \"admin\": true in the "
    "gateway's repo.json"
)

# --- values -----------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """One lease the gateway holds: ``path`` is ``REPO/sub/path`` as the gateway names it."""

    path: str
    key_id: str
    hostname: str
    expires: datetime

    @property
    def repository(self) -> str:
        return self.path.split("/", 1)[0]


@dataclass(frozen=True)
class AdminKey:
    """A gateway key: its id and secret (the secret never shows in a repr)."""

    key_id: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        for what, value in (("key id", self.key_id), ("secret", self.secret)):
            if not value or any(ch.isspace() for ch in value):
                raise ConfigError(
                    f"the gateway admin key's {what} is empty or holds white space",
                    hint=_KEY_HINT,
                )

    def authorization(self, message: str) -> str:
        """``KEYID BASE64(hex(HMAC-SHA1(message, secret)))`` (frontend/hmac.go, authz.go)."""
        digest = hmac.new(self.secret.encode(), message.encode(), hashlib.sha1).hexdigest()
        return f"{self.key_id} {base64.b64encode(digest.encode()).decode()}"


# --- pure parsers ------------------------------------------------------------------

_GO_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))? ([+-])(\d{2})(\d{2})"
    r"(?: [A-Za-z0-9+-]{1,16})?(?: m=[+-]\d+\.\d+)?$"
)


def parse_go_time(text: str) -> datetime:
    """Go's ``time.Time.String()`` (``2026-11-30 20:23:09.574 +0000 UTC``) as an aware
    datetime (sub-microsecond digits dropped); ValueError when it is not one."""
    match = _GO_TIME.match(text)
    if not match:
        raise ValueError(text)
    day, clock, fraction, sign, hours, minutes = match.groups()
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    zone = timezone(-offset if sign == "-" else offset)
    moment = datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=zone)
    micro = int((fraction or "0").ljust(6, "0")[:6])
    return moment.replace(microsecond=micro)


def parse_leases(answer: Any, where: str) -> list[Lease]:
    """The ``data`` of ``GET /leases`` as leases, sorted by path; a PublisherError
    naming ``where`` and what is wrong when the answer is not that shape."""
    if not isinstance(answer, dict) or answer.get("status") != "ok":
        raise _bad_answer(where, _status_text(answer))
    data = answer.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _bad_answer(where, "has a 'data' that is not an object")
    return sorted((_lease(key, value, where) for key, value in data.items()), key=_by_path)


def _by_path(lease: Lease) -> str:
    return lease.path


def _lease(key: str, value: Any, where: str) -> Lease:
    if not isinstance(value, dict):
        raise _bad_answer(where, f"has a lease {_show(key)} that is not an object")
    texts = {name: value.get(name, "") for name in ("key_id", "path", "hostname", "expires")}
    for name, text in texts.items():
        if not isinstance(text, str):
            raise _bad_answer(where, f"has a lease {_show(key)} whose {name} is not a string")
    try:
        expires = parse_go_time(texts["expires"])
    except ValueError:
        raise _bad_answer(
            where, f"has a lease {_show(key)} whose expiry {_show(texts['expires'])} is not a time"
        ) from None
    return Lease(texts["path"] or key, texts["key_id"], texts["hostname"], expires)


def _status_text(answer: Any) -> str:
    if not isinstance(answer, dict):
        return "is not a JSON object"
    reason = answer.get("reason")
    if isinstance(reason, str):
        return f"says {answer.get('status')!r}: {_show(reason)}"
    return f"has no status 'ok' (status: {_show(answer.get('status'))})"


def _show(text: object) -> str:
    """Untrusted text from the gateway, on one line and short."""
    return repr(cut(escape_terminal(text), 120))


def _bad_answer(where: str, what: str) -> PublisherError:
    return PublisherError(
        f"{where}: the gateway's answer {what}",
        hint="is the URL the gateway's API (http://HOST:4929/api/v1)? set WISHBOT_GATEWAY_URL",
    )


def gateway_url(server_conf: str) -> str | None:
    """The gateway URL of a publisher's ``server.conf``: the third field of
    ``CVMFS_UPSTREAM_STORAGE=gw,TMPDIR,URL`` (cvmfs_server_util.sh ``make_upstream``,
    ``get_upstream_config``: ``cut -d, -f3-``); None when the upstream is not a gateway.
    The last assignment wins, as when the shell sources the file."""
    upstream = None
    for raw in server_conf.splitlines():
        line = raw.strip()
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, value = line.partition("=")
        if sep and name == "CVMFS_UPSTREAM_STORAGE":
            upstream = _unquote(value.strip())
    if upstream is None:
        return None
    parts = upstream.split(",", 2)
    if len(parts) < 3 or parts[0] != "gw" or not parts[2].strip():
        return None
    return parts[2].strip()


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_key_file(text: str, where: str) -> AdminKey:
    """A gateway key file: first line ``plain_text KEYID SECRET`` (keys.go
    ``loadKeyFromReader``), or a key spec as repo.json writes one
    (``{"type": "plain_text", "id": …, "secret": …}``, access.go ``KeySpec``)."""
    if text.lstrip().startswith("{"):
        return _json_key(text, where)
    lines = text.splitlines()
    tokens = lines[0].split() if lines else []
    if len(tokens) != 3 or tokens[0] != "plain_text":
        raise ConfigError(
            f"{where}: the first line is not 'plain_text KEYID SECRET' "
            f"({len(tokens)} fields{'' if not tokens else ', type ' + _show(tokens[0])})",
            hint=_KEY_HINT,
        )
    return AdminKey(tokens[1], tokens[2])


def _json_key(text: str, where: str) -> AdminKey:
    try:
        spec = safejson.loads(text.encode())
    except safejson.BadJson as exc:
        raise ConfigError(f"{where}: the key file {exc}", hint=_KEY_HINT) from None
    if (
        not isinstance(spec, dict)
        or spec.get("type") != "plain_text"
        or not isinstance(spec.get("id"), str)
        or not isinstance(spec.get("secret"), str)
    ):
        raise ConfigError(
            f'{where}: the key spec is not {{"type": "plain_text", "id": …, "secret": …}}',
            hint=_KEY_HINT,
        )
    return AdminKey(spec["id"], spec["secret"])


def lease_path(repo: str, path: str) -> str:
    """``PATH`` of the command line as the gateway names it: ``REPO/sub/path``.

    ``PATH`` is relative to the repository (``.flat/ab/…``), may start with
    ``/`` or ``REPO/``; ``/``, ``REPO`` or ``REPO/`` alone mean the whole
    repository (``REPO/``). A trailing ``/`` is dropped; ``.``, ``..`` and empty
    components are refused.
    """
    text = path.strip()
    if not text:
        raise UsageError("the lease path is empty", hint="name a path such as .flat/ab/…")
    rest = text.lstrip("/")
    if rest == repo or rest.startswith(repo + "/"):
        rest = rest[len(repo) :].lstrip("/")
    rest = rest.rstrip("/")
    parts = rest.split("/") if rest else []
    if any(part in ("", ".", "..") for part in parts) or escape_terminal(rest) != rest:
        raise UsageError(
            f"the lease path {_show(path)} is not a plain path inside the repository",
            hint="write it as the gateway lists it (wishbot lease list), e.g. .flat/ab/…",
        )
    return f"{repo}/{rest}"


def cancelled_by(prefix: str, leases: list[Lease]) -> list[Lease]:
    """The leases ``DELETE /leases-by-path/PREFIX`` cancels: same repository, subpath
    ``LIKE`` PREFIX's subpath followed by ``%`` (lease_entity.go), decided by SQLite as
    the gateway's own database does."""
    repo, _, sub = prefix.partition("/")
    sub = "/" + sub
    database = sqlite3.connect(":memory:")
    try:
        return [
            lease
            for lease in leases
            if lease.repository == repo
            and database.execute(
                "select ? like ? || '%'", ("/" + lease.path.partition("/")[2], sub)
            ).fetchone()[0]
        ]
    finally:
        database.close()


def is_inside(lease: Lease, prefix: str) -> bool:
    """Whether ``lease`` is ``prefix`` or below it, component by component (what people
    mean; the gateway's string prefix and wildcards may cancel more)."""
    base = prefix.rstrip("/")
    return lease.path.rstrip("/") == base or lease.path.startswith(base + "/")


# --- where the gateway is, and the key --------------------------------------------


def check_url(url: str, where: str) -> str:
    """An ``http(s)://HOST[:PORT]/PATH`` URL without credentials, query or fragment,
    without its trailing ``/``."""
    split = urllib.parse.urlsplit(url.strip())
    if (
        split.scheme not in ("http", "https")
        or not split.hostname
        or split.username
        or split.query
        or split.fragment
    ):
        raise ConfigError(
            f"{where}: the gateway URL {_show(url)} is not http(s)://HOST:PORT/api/v1",
            hint="set WISHBOT_GATEWAY_URL, e.g. http://gateway.example.org:4929/api/v1",
        )
    return url.strip().rstrip("/")


def gateway_url_for(repo: str, config: Config, etc: Path = CVMFS_ETC) -> str:
    """The gateway URL: the ``gateway_url`` setting, else the repository's server.conf."""
    if config.gateway_url:
        return check_url(config.gateway_url, "WISHBOT_GATEWAY_URL")
    conf = etc / "repositories.d" / repo / "server.conf"
    try:
        text = conf.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        found = f"cannot read {conf}: {exc.strerror}"
    else:
        url = gateway_url(text)
        if url:
            return check_url(url, str(conf))
        found = f"{conf} names no gateway (no CVMFS_UPSTREAM_STORAGE=gw,…,URL)"
    raise ConfigError(
        f"no gateway URL for {repo}: {found}",
        hint="set WISHBOT_GATEWAY_URL to the gateway's API, e.g. "
        "http://gateway.example.org:4929/api/v1 (on the gateway host: http://localhost:4929/api/v1)",
    )


def admin_key(environ: Mapping[str, str] | None = None) -> AdminKey | None:
    """The admin key from ``WISHBOT_GATEWAY_ADMIN_KEY`` (``KEYID:SECRET``) or
    ``WISHBOT_GATEWAY_ADMIN_KEY_FILE`` (a key file); None when neither is set."""
    env = os.environ if environ is None else environ
    pair, path = env.get(KEY_VARIABLE, ""), env.get(KEY_FILE_VARIABLE, "")
    if pair and path:
        raise ConfigError(f"both {KEY_VARIABLE} and {KEY_FILE_VARIABLE} are set", hint="set one")
    if path:
        return _read_key_file(Path(path))
    if not pair:
        return None
    key_id, colon, secret = pair.partition(":")
    if "/" in key_id:
        raise ConfigError(
            f"{KEY_VARIABLE} looks like a file name",
            hint=f"name a key file with {KEY_FILE_VARIABLE}; {KEY_VARIABLE} is KEYID:SECRET",
        )
    if not colon:
        raise ConfigError(f"{KEY_VARIABLE} is not KEYID:SECRET", hint=_KEY_HINT)
    return AdminKey(key_id, secret)


def _read_key_file(path: Path) -> AdminKey:
    where = f"{KEY_FILE_VARIABLE} {path}"
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror}", hint=_KEY_HINT) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_KEY_FILE_BYTES} bytes", hint=_KEY_HINT)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _log.warning("%s can be read by other users: chmod 600 it", path)
    return parse_key_file(data.decode("utf-8", errors="replace"), str(path))


# --- the client ---------------------------------------------------------------------

#: what each refusal of WithAdminAuthz (frontend/authz.go) means for the operator
_REFUSALS = {
    "invalid_authorization_header": (
        "the gateway could not read the Authorization header",
        "check the key id (no spaces) in " + KEY_VARIABLE,
    ),
    "invalid_key": (
        "the gateway does not know the key {key}",
        'declare it in the gateway\'s repo.json with "admin": true (then restart '
        "cvmfs-gateway), or name a key it has",
    ),
    "no_admin_key": (
        "the key {key} is not an administration key",
        'add "admin": true to its entry in the gateway\'s repo.json and restart cvmfs-gateway',
    ),
    "invalid_hmac": (
        "the gateway refused the signature: the secret of key {key} is not the one it has",
        "check the secret in " + KEY_VARIABLE + " or the key file against the gateway's repo.json",
    ),
}


class GatewayAdmin:
    """The gateway at ``url`` (``http://HOST:4929/api/v1``): list leases; with an admin
    key, cancel them."""

    def __init__(
        self,
        url: str,
        key_id: str | None = None,
        secret: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.url = check_url(url, "the gateway")
        self._key = AdminKey(key_id, secret) if key_id is not None and secret is not None else None
        self.timeout = timeout
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"GatewayAdmin({self.url!r}, key_id={self.key_id!r})"

    @property
    def key_id(self) -> str | None:
        return self._key.key_id if self._key else None

    def leases(self) -> list[Lease]:
        """Every active lease the gateway holds (all repositories), sorted by path."""
        url = self.url + "/leases"
        return parse_leases(self._json("GET", url, {}), url)

    def drop(self, repo_path: str) -> None:
        """Cancel every lease :func:`cancelled_by` ``repo_path`` names (``REPO/sub/path``)."""
        if self._key is None:
            raise ConfigError("no gateway admin key to cancel leases with", hint=_KEY_HINT)
        split = urllib.parse.urlsplit(self.url)
        signed = urllib.parse.unquote(split.path) + "/leases-by-path/" + repo_path
        url = urllib.parse.urlunsplit(
            (split.scheme, split.netloc, urllib.parse.quote(signed, safe="/:@!$&'()*+,;=~"), "", "")
        )
        headers = {"Authorization": self._key.authorization(signed)}
        answer = self._json("DELETE", url, headers)
        if isinstance(answer, dict) and answer.get("status") == "ok":
            return
        raise self._refusal(answer, repo_path)

    def _refusal(self, answer: Any, repo_path: str) -> PublisherError:
        reason = answer.get("reason") if isinstance(answer, dict) else None
        where = f"{self.url}: cancelling the leases under {repo_path}"
        if isinstance(reason, str) and reason in _REFUSALS:
            what, hint = _REFUSALS[reason]
            return PublisherError(
                f"{where}: {what.format(key=_show(self.key_id))} ({reason})",
                hint=hint,
                retryable=False,
            )
        if isinstance(reason, str):
            return PublisherError(f"{where}: the gateway says {_show(reason)}")
        return _bad_answer(where, _status_text(answer))

    def _json(self, method: str, url: str, headers: dict[str, str]) -> Any:
        status, body = self._exchange(method, url, headers)
        if status != 200:
            first = body.decode("utf-8", errors="replace").strip().splitlines()
            raise PublisherError(
                f"{url}: the gateway answered HTTP {status}"
                + (f": {_show(first[0])}" if first else ""),
                hint="a 404 or 405 means the URL is not the gateway's API "
                "(http://HOST:4929/api/v1): check WISHBOT_GATEWAY_URL"
                if status in (404, 405)
                else "see the gateway's log (journalctl -u cvmfs-gateway)",
            )
        try:
            return safejson.loads(body)
        except safejson.BadJson as exc:
            raise _bad_answer(url, str(exc)) from None

    def _exchange(self, method: str, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """One request, no redirects followed: (status, body of at most ``max_bytes``)."""
        deadline = time.monotonic() + 2 * self.timeout
        try:
            with requests.Session() as session:
                # no proxies, no ~/.netrc (it would replace the Authorization header)
                session.trust_env = False
                response = session.request(
                    method,
                    url,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                    stream=True,
                )
                with response:
                    if response.is_redirect or 300 <= response.status_code < 400:
                        raise _redirected(url, response)
                    return response.status_code, self._body(response, url, deadline)
        except requests.RequestException as exc:
            raise PublisherError(
                f"{url}: the gateway did not answer ({_reason(exc)})",
                hint="check that cvmfs_gateway runs there (systemctl status cvmfs-gateway) "
                "and WISHBOT_GATEWAY_URL",
            ) from None

    def _body(self, response: requests.Response, url: str, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _too_large(url, self.max_bytes)
        body = bytearray()
        for chunk in response.iter_content(_CHUNK):
            body += chunk
            if len(body) > self.max_bytes:
                raise _too_large(url, self.max_bytes)
            if time.monotonic() > deadline:
                raise PublisherError(
                    f"{url}: the gateway's answer took longer than {2 * self.timeout:g} s"
                )
        return bytes(body)


def _redirected(url: str, response: requests.Response) -> PublisherError:
    target = response.headers.get("Location", "")
    return PublisherError(
        f"{url}: the gateway answered HTTP {response.status_code}, a redirect to "
        f"{_show(target)}; not followed (the admin key goes to the configured URL only)",
        hint="set WISHBOT_GATEWAY_URL to the gateway's own address",
        retryable=False,
    )


def _too_large(url: str, cap: int) -> PublisherError:
    return PublisherError(
        f"{url}: the gateway's answer is larger than {cap} bytes; not read further",
        hint="is WISHBOT_GATEWAY_URL the gateway's API (http://HOST:4929/api/v1)?",
    )


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError) and "refused" in str(exc):
        return "connection refused"
    return exc.__class__.__name__


def open_gateway(
    repo: str, config: Config, environ: Mapping[str, str] | None = None
) -> GatewayAdmin:
    """The gateway of ``repo`` (:func:`gateway_url_for`) with the admin key, if one is set."""
    key = admin_key(environ)
    url = gateway_url_for(repo, config)
    return GatewayAdmin(
        url,
        key.key_id if key else None,
        key.secret if key else None,
        timeout=config.timeout,
    )

"""Configuration: one place, a TOML file named by ``WISHBOT_CONFIG``,
overridden by ``WISHBOT_*`` environment variables.

Every setting is a field of :class:`Config`; its environment variable is
``WISHBOT_`` + the field name in upper case. Lists are comma-separated in the
environment; ``mirrors`` is ``registry=url,registry=url``. Secrets (tokens,
passwords, the webhook secret) are *not* settings: they are read from the
environment by the adapter that needs them, and never logged.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bot.errors import ConfigError


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Config:
    # registries
    insecure_registries: tuple[
        str, ...
    ] = ()  # host:port allowed over plain HTTP and on private addresses
    private_registries: tuple[
        str, ...
    ] = ()  # host[:port] allowed on private addresses (over HTTPS)
    mirrors: Mapping[str, str] = field(default_factory=dict)  # registry -> mirror base URL
    ca_bundle: str = ""  # extra CA certificates (PEM file) for registries
    concurrency: int = 8  # parallel requests per registry
    workers: int = 16  # references resolved at once
    timeout: float = 30.0  # seconds, connect and read
    retries: int = 4  # attempts after the first on 5xx / connection errors / 429
    backoff: float = 0.5  # first retry delay (seconds), doubled each time, with jitter
    max_retry_after: float = 120.0  # longest Retry-After we are willing to wait
    request_deadline: float = 300.0  # seconds for one registry request in total (retries included)
    min_blob_throughput: int = (
        256 * 2**10
    )  # bytes/s a layer download must average (plus the deadline)
    max_manifest_bytes: int = 4 * 2**20  # largest manifest or index read
    max_config_bytes: int = 8 * 2**20  # largest image config read
    max_tag_page_bytes: int = 8 * 2**20  # largest page of a tag list read
    max_tags: int = 100_000  # tags read from one repository (wildcards)
    max_wildcard_tags: int = 100  # concrete tags one wildcard may expand to
    registry_cache_dir: str = ""  # manifests/configs by digest (default: STATE_DIR/registry-cache)
    registry_cache_bytes: int = 256 * 2**20  # size bound of that cache
    platforms: tuple[str, ...] = ("linux/amd64",)
    # publisher
    publisher: str = ""  # default --publisher TARGET
    grace_days: int = 30
    max_deletions: int = 100  # per gc run
    thin: bool = True
    podman_store: bool = False  # also write the podman additional image store (podmanStore/)
    max_layer_bytes: int = 64 * 2**30  # unpacked bytes per layer before refusing (tar bomb)
    max_layer_entries: int = 2_000_000
    gateway_url: str = ""  # cvmfs gateway API (default: the repository's server.conf)
    # forges and the bot
    forge: str = ""  # gitlab | github | local
    forge_url: str = ""  # e.g. https://gitlab.example.org
    github_write_interval: float = 1.0  # seconds between writes to GitHub (rate limits); 0 = none
    bot_login: str = ""  # the account the bot comments as when the token cannot say (GitHub Apps)
    # least permission for /wishbot plan|retry and the dashboard boxes:
    # write|maintain|admin (GitHub) = developer|maintainer|owner (GitLab)
    command_permission: str = "write"
    dashboard: bool = False  # keep the dashboard issue current after each publication
    watch_commands: bool = False  # watch: read comment commands and dashboard boxes each poll
    repositories: tuple[str, ...] = ()  # allow-listed wishlist repositories (owner/name)
    wishlist_path: str = "wishlist.yaml"
    catalog_branch: str = ""  # default: the default branch
    catalog_dir: str = ""  # where CATALOG.md and catalog.json go in the wishlist repository
    catalog_url: str = ""  # comments link here (default: CATALOG.md on the forge)
    docs_url: str = ""  # comments link here for "how wishbot works" (your requesters' guide)
    plan_drafts: bool = True
    state_dir: str = ""  # durable queue and run records (serve/watch)
    listen: str = "127.0.0.1:8080"
    poll_interval: float = 60.0
    reapply_interval: float = 3600.0  # serve/watch: re-publish (tags move upstream) + gc; 0 = never
    # the webhook server's limits (serve); see docs/operating.md
    webhook_max_connections: int = 32  # connections served at once; more get 503
    webhook_request_timeout: float = 10.0  # seconds per connection, in total
    webhook_max_body: int = 4 * 2**20  # bytes of one delivery
    webhook_body_budget: int = 32 * 2**20  # bytes of deliveries held in memory at once
    webhook_replay_window: float = 7 * 24 * 3600.0  # seconds a delivery id / body is remembered
    max_deliveries: int = 100_000  # remembered deliveries (ids and body digests)
    job_retention_days: float = 30.0  # days finished jobs stay in the queue
    max_finished_jobs: int = 10_000  # finished jobs kept in the queue
    job_lease: float = 120.0  # seconds a claimed job is leased; renewed while it runs
    job_deadline: float = 3600.0  # seconds a job may run before it is stopped and retried
    log_format: str = "text"  # serve's logs: text or json
    verify_interval: float = 86400.0  # maintenance: deep verify at most this often; 0 = never
    verify_batch: int = (
        200  # maintenance: layers compared with their tar per deep verify, in turn; 0 = all
    )
    # registry events (serve, /hooks/registry/<format>); see docs/operating.md
    registry_events: tuple[str, ...] = ()  # allow-listed registry/repository globs; () = off
    registry_event_debounce: float = 2.0  # seconds a refresh waits for more events
    registry_event_max_tags: int = 1000  # tags one refresh collects; beyond: every wish
    registry_event_note: bool = False  # a note on the request that added a path it republishes

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = env.get("WISHBOT_CONFIG")
        if path:
            try:
                raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
            values.update(_from_toml(raw, path))
        values.update(_from_env(env))
        for message in unknown_variables(env):
            if message not in _warned:
                _warned.add(message)
                _log.warning(message)
        config = replace(cls(), **values)
        check(config)
        return config


_FIELDS = {f.name: f for f in fields(Config)}
_log = logging.getLogger(__name__)
_warned: set[str] = set()

#: ``WISHBOT_*`` variables that are not settings: each is read where it is used
OTHER_VARIABLES = (
    "WISHBOT_CONFIG",  # the TOML file
    "WISHBOT_CVMFS_ROOT",  # where cvmfs: repositories are mounted
    "WISHBOT_LOCK_DIR",  # the cvmfs backend's lock and transaction marker
    "WISHBOT_GATEWAY_ADMIN_KEY",  # secret: KEYID:SECRET of a gateway admin key
    "WISHBOT_GATEWAY_ADMIN_KEY_FILE",  # the file holding it (plain_text KEYID SECRET)
    "WISHBOT_FORGE_TOKEN",  # secret: the forge token
    "WISHBOT_WEBHOOK_SECRET",  # secret: the webhook's shared secret
    "WISHBOT_REGISTRY_EVENT_TOKEN",  # secret: what registries send with their events
    "WISHBOT_TEST_CRASH_AT",  # tests: crash the publisher at a named point
    "WISHBOT_UPDATE_GOLDEN",  # tests: rewrite the golden files
)
#: credential families: ``WISHBOT_REGISTRY_<N>_HOST`` / ``_USER`` / ``_PASSWORD``
_REGISTRY_FAMILY = re.compile(r"^WISHBOT_REGISTRY_([A-Za-z0-9]+)_(HOST|USER|PASSWORD)$")
_REGISTRY_PREFIX = re.compile(r"^WISHBOT_REGISTRY_([A-Za-z0-9]+)_")

#: (lowest, highest) allowed for each number
_RANGES: dict[str, tuple[float, float]] = {
    "concurrency": (1, 256),
    "workers": (1, 1024),
    "retries": (0, 20),
    "backoff": (0, 600),
    "max_retry_after": (0, 86_400),
    "grace_days": (0, 3_650),
    "max_deletions": (0, 10_000_000),
    "max_layer_bytes": (1, 2**50),
    "max_layer_entries": (1, 2**32),
    "github_write_interval": (0, 3_600),
    "reapply_interval": (0, 30 * 86_400),
}
#: numbers that must be above zero (zero would mean "never wait" where waiting is needed)
_POSITIVE: dict[str, float] = {"timeout": 3_600, "poll_interval": 86_400}
_FORGES = ("", "gitlab", "github", "local")
_COMMAND_PERMISSIONS = ("write", "maintain", "admin", "developer", "maintainer", "owner")


def variable(name: str) -> str:
    return f"WISHBOT_{name.upper()}"


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """A warning for each ``WISHBOT_*`` variable wishbot does not read, with the likely name."""
    known = [variable(name) for name in _FIELDS] + list(OTHER_VARIABLES)
    out = []
    for name in sorted(env):
        if not name.startswith("WISHBOT_") or name in known or _REGISTRY_FAMILY.match(name):
            continue
        candidates = list(known)
        family = _REGISTRY_PREFIX.match(name)
        if family:
            candidates += [
                f"WISHBOT_REGISTRY_{family[1]}_{k}" for k in ("HOST", "USER", "PASSWORD")
            ]
        # compare what follows WISHBOT_: the shared prefix would make anything look close
        close = _closest(name[8:], [c[8:] for c in candidates])
        hint = f"did you mean WISHBOT_{close}?" if close else "see docs/operating.md"
        out.append(f"{name} is not a wishbot setting and is ignored ({hint})")
    return out


def _closest(name: str, candidates: list[str]) -> str | None:
    """The candidate ``name`` was most likely meant to be, if any is close."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def check(config: Config) -> None:
    """Every setting in its range: a :class:`ConfigError` naming the first that is not."""
    for name, (low, high) in _RANGES.items():
        _in_range(name, getattr(config, name), low, high, low_open=False)
    for name, high in _POSITIVE.items():
        _in_range(name, getattr(config, name), 0, high, low_open=True)
    _check_words(config)


def _check_words(config: Config) -> None:
    if config.forge not in _FORGES:
        _bad("forge", config.forge, "gitlab, github or local")
    if config.command_permission.strip().lower() not in _COMMAND_PERMISSIONS:
        _bad("command_permission", config.command_permission, ", ".join(_COMMAND_PERMISSIONS))
    if config.publisher and not config.publisher.startswith(("local:", "cvmfs:")):
        _bad("publisher", config.publisher, "local:DIR or cvmfs:REPO")
    host, colon, port = config.listen.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65_535:
        _bad("listen", config.listen, "HOST:PORT, e.g. 127.0.0.1:8080")
    _check_lists(config)


def _check_lists(config: Config) -> None:
    for registry, url in config.mirrors.items():
        if not url.startswith(("https://", "http://")):
            _bad("mirrors", f"{registry}={url}", "registry=https://mirror.example.org")
    if config.gateway_url and not config.gateway_url.startswith(("https://", "http://")):
        _bad("gateway_url", config.gateway_url, "http(s)://HOST:PORT/api/v1")
    for platform in config.platforms:
        parts = platform.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            _bad("platforms", platform, "os/architecture[/variant], e.g. linux/amd64")


def _in_range(name: str, value: float, low: float, high: float, *, low_open: bool) -> None:
    too_low = value <= low if low_open else value < low
    if math.isfinite(value) and not too_low and value <= high:
        return
    lowest = f"above {low:g}" if low_open else f"at least {low:g}"
    _bad(name, value, f"a number {lowest} and at most {high:g}")


def _bad(name: str, value: object, expected: str) -> None:
    raise ConfigError(
        f"setting '{name}' ({variable(name)}) is {value!r}; expected {expected}",
        hint="see the configuration reference in docs/operating.md",
    )


def _coerce(name: str, value: Any, origin: str) -> Any:
    default = getattr(Config(), name)
    try:
        return _converter(default)(value)
    except ValueError:
        kind = type(default).__name__ if not isinstance(default, Mapping) else "mapping"
        raise ConfigError(
            f"{origin}: '{name}' has a bad value {value!r} (expected {kind})",
            hint="see the configuration reference in docs/operating.md",
        ) from None


def _converter(default: object) -> Any:
    """The function that turns a TOML value or an environment string into a setting."""
    if isinstance(default, bool):
        return _to_bool
    if isinstance(default, int):
        return _to_int
    if isinstance(default, float):
        return _to_float
    if isinstance(default, tuple):
        return _to_tuple
    if isinstance(default, Mapping):
        return _to_mapping
    return _to_str


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower() if isinstance(value, str) else None
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(value)
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(value)
    return float(value)


def _to_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return _split(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(value)


def _to_mapping(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        pairs = [item.split("=", 1) for item in _split(value)]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(value)
        return {k.strip(): v.strip() for k, v in pairs}
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return dict(value)
    raise ValueError(value)


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(value)


def _from_toml(raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            close = _closest(name, list(_FIELDS))
            hint = f"did you mean '{close}'?" if close else "see docs/operating.md"
            raise ConfigError(f"{path}: unknown setting '{key}'", hint=hint)
        out[name] = _coerce(name, value, path)
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELDS:
        var = f"WISHBOT_{name.upper()}"
        if var in env:
            out[name] = _coerce(name, env[var], var)
    return out

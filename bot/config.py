"""Configuration: one place, a TOML file named by ``WISHBOT_CONFIG``,
overridden by ``WISHBOT_*`` environment variables.

Every setting is a field of :class:`Config`; its environment variable is
``WISHBOT_`` + the field name in upper case. Lists are comma-separated in the
environment; ``mirrors`` is ``registry=url,registry=url``. Secrets (tokens,
passwords, the webhook secret) are *not* settings: they are read from the
environment by the adapter that needs them, and never logged.
"""

from __future__ import annotations

import os
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
    # forges and the bot
    forge: str = ""  # gitlab | github | local
    forge_url: str = ""  # e.g. https://gitlab.example.org
    github_write_interval: float = 1.0  # seconds between writes to GitHub (rate limits); 0 = none
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
    # registry events (serve, /hooks/registry/<format>); see docs/operating.md
    registry_events: tuple[str, ...] = ()  # allow-listed registry/repository globs; () = off
    registry_event_debounce: float = 2.0  # seconds a refresh waits for more events
    registry_event_max_tags: int = 1000  # tags one refresh collects; beyond: every wish

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
        return replace(cls(), **values)


_FIELDS = {f.name: f for f in fields(Config)}


def _coerce(name: str, value: Any, origin: str) -> Any:
    default = getattr(Config(), name)
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            if isinstance(value, bool):
                return value
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                return _split(value)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ValueError(value)
        if isinstance(default, Mapping):
            if isinstance(value, str):
                pairs = [item.split("=", 1) for item in _split(value)]
                if any(len(pair) != 2 for pair in pairs):
                    raise ValueError(value)
                return {k.strip(): v.strip() for k, v in pairs}
            if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
                return dict(value)
            raise ValueError(value)
        if isinstance(value, str):
            return value
        raise ValueError(value)
    except ValueError:
        kind = type(default).__name__ if not isinstance(default, Mapping) else "mapping"
        raise ConfigError(
            f"{origin}: '{name}' has a bad value {value!r} (expected {kind})",
            hint="see the configuration reference in docs/operating.md",
        ) from None


def _from_toml(raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            raise ConfigError(f"{path}: unknown setting '{key}'", hint="see docs/operating.md")
        out[name] = _coerce(name, value, path)
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELDS:
        var = f"WISHBOT_{name.upper()}"
        if var in env:
            out[name] = _coerce(name, env[var], var)
    return out

"""Build the configured forge adapter; tokens come from the environment only."""

from __future__ import annotations

import os
from collections.abc import Mapping

from bot.config import Config
from bot.errors import ConfigError
from bot.forge.base import Forge
from bot.forge.events_model import ForgeKindSpec
from bot.forge.kinds import spec_of


def forge_token(kind: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The token for ``kind`` from ``GITLAB_TOKEN``/``GITHUB_TOKEN`` or ``WISHBOT_FORGE_TOKEN``."""
    env = os.environ if environ is None else environ
    spec = spec_of(kind)
    for name in spec.token_variables if spec is not None else ():
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def make_forge(
    config: Config,
    repository: str | None = None,
    *,
    kind: str | None = None,
    url: str | None = None,
    environ: Mapping[str, str] | None = None,
    pipeline: tuple[str, int] | None = None,
) -> Forge:
    """The forge for ``repository`` (``owner/name``; a path for ``local``).

    ``kind`` and ``url`` override ``config.forge`` and ``config.forge_url``
    (the CI runtime knows them from the CI variables), and so ``pipeline``:
    ``(sha, id)`` of the GitLab pipeline the job runs in.
    """
    kind = _kind(kind or config.forge)
    url = url or config.forge_url
    name = repository or _first_repository(config)
    if kind == "local":
        return _local(repository or url or name)
    if not name:
        raise ConfigError(
            "no repository given",
            hint="set repositories in the configuration (owner/name) or pass --repository",
        )
    return _spec(kind).make(config, name, url or "", forge_token(kind, environ), pipeline)


def _spec(kind: str) -> ForgeKindSpec:
    spec = spec_of(kind)
    if spec is None:
        raise ConfigError(
            f"unknown forge {kind!r}" if kind else "no forge configured",
            hint="set forge (WISHBOT_FORGE) to gitlab, github or local",
        )
    return spec


def _kind(kind: str | None) -> str:
    return (kind or "").strip().lower()


def _first_repository(config: Config) -> str:
    return config.repositories[0] if config.repositories else ""


def _local(path: str) -> Forge:
    from bot.forge.local import LocalForge

    if not path:
        raise ConfigError("the local forge needs a repository path", hint="set forge_url")
    return LocalForge(path.removeprefix("file://"))

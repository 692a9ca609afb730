"""Build the configured forge adapter; tokens come from the environment only."""

from __future__ import annotations

import os
from collections.abc import Mapping

from bot.config import Config
from bot.errors import ConfigError
from bot.forge.base import TOKEN_VARIABLES, Forge


def forge_token(kind: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The token for ``kind`` from ``GITLAB_TOKEN``/``GITHUB_TOKEN`` or ``WISHBOT_FORGE_TOKEN``."""
    env = os.environ if environ is None else environ
    for name in TOKEN_VARIABLES.get(kind, ()):
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
    kind = (kind or config.forge or "").strip().lower()
    url = url or config.forge_url
    name = repository or (config.repositories[0] if config.repositories else "")
    if kind == "local":
        from bot.forge.local import LocalForge

        path = repository or url or name
        if not path:
            raise ConfigError("the local forge needs a repository path", hint="set forge_url")
        return LocalForge(path.removeprefix("file://"))
    if not name:
        raise ConfigError(
            "no repository given",
            hint="set repositories in the configuration (owner/name) or pass --repository",
        )
    token = forge_token(kind, environ)
    if kind == "gitlab":
        from bot.forge.gitlab import GitLabForge

        if not url:
            raise ConfigError("forge_url is not set", hint="e.g. https://gitlab.example.org")
        return GitLabForge(url, name, token, timeout=config.timeout, pipeline=pipeline)
    if kind == "github":
        from bot.forge.github import API_URL, GitHubForge

        interval = config.github_write_interval if config.github_write_interval > 0 else None
        return GitHubForge(
            url or API_URL,
            name,
            token,
            timeout=config.timeout,
            write_interval=interval,
            max_rate_limit_wait=config.max_retry_after,
            bot_login=config.bot_login,
        )
    raise ConfigError(
        f"unknown forge {kind!r}" if kind else "no forge configured",
        hint="set forge (WISHBOT_FORGE) to gitlab, github or local",
    )

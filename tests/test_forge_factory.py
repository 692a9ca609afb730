"""Choosing the forge adapter from the configuration; tokens from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from forge_sites import GitLabSite, LocalSite

from bot.config import Config
from bot.errors import ConfigError, ForgeError
from bot.forge.factory import forge_token, make_forge
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.forge.local import LocalForge


def test_tokens_come_from_the_forge_variable_first() -> None:
    env = {"GITLAB_TOKEN": "gl", "GITHUB_TOKEN": "gh", "WISHBOT_FORGE_TOKEN": "generic"}
    assert forge_token("gitlab", env) == "gl"
    assert forge_token("github", env) == "gh"
    assert forge_token("github", {"WISHBOT_FORGE_TOKEN": "generic"}) == "generic"
    assert forge_token("gitlab", {"GITLAB_TOKEN": "  "}) is None


def test_make_forge_kinds(tmp_path: Path) -> None:
    env = {"GITHUB_TOKEN": "ghp_do_not_print_me"}
    github = make_forge(Config(forge="github", repositories=("octo/w",)), environ=env)
    assert isinstance(github, GitHubForge) and github.repository == "octo/w"
    assert "ghp_do_not_print_me" not in repr(github)
    gitlab = make_forge(
        Config(forge="gitlab", forge_url="https://gitlab.example.org"), "g/w", environ={}
    )
    assert isinstance(gitlab, GitLabForge)
    site = LocalSite(tmp_path / "repo")
    local = make_forge(Config(forge="local", forge_url=str(site.path)))
    assert isinstance(local, LocalForge) and local.default_branch()[0] == "main"


def test_make_forge_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no forge configured"):
        make_forge(Config(), "a/b")
    with pytest.raises(ConfigError, match="unknown forge 'gitea'"):
        make_forge(Config(forge="gitea"), "a/b")
    with pytest.raises(ConfigError, match="forge_url"):
        make_forge(Config(forge="gitlab"), "a/b")
    with pytest.raises(ConfigError, match="no repository"):
        make_forge(Config(forge="github"))
    with pytest.raises(ForgeError, match="not a git repository"):
        make_forge(Config(forge="local"), str(tmp_path))


def test_the_configured_token_reaches_gitlab() -> None:
    site = GitLabSite()
    try:
        config = Config(forge="gitlab", forge_url=site.fake.url)
        forge = make_forge(config, site.fake.project, environ={"GITLAB_TOKEN": site.fake.token})
        assert forge.default_branch()[0] == "main"
    finally:
        site.fake.stop()

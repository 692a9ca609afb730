"""Where the comments and statuses link: the CI job, the catalog, the docs (pure)."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest
from plan_samples import NOW, REPO

from bot.config import Config
from bot.core.comment import CommentLinks, render_markdown, safe_url
from bot.core.model import CurrentState
from bot.core.plan import make_plan
from bot.forge.base import MergeRequest
from bot.runtime.ci import job_url
from bot.runtime.workflow import comment_links, repository_url


def request(web_url: str) -> MergeRequest:
    return MergeRequest(
        "1", "7", "t", "feature", "main", "a" * 40, "b" * 40, False, False, "open", web_url, "me"
    )


def forge(kind: str) -> MagicMock:
    mock = MagicMock()
    mock.kind = kind
    return mock


def test_job_url_from_gitlab_and_github_variables() -> None:
    assert (
        job_url({"CI_JOB_URL": "https://gl.example/g/p/-/jobs/9"})
        == "https://gl.example/g/p/-/jobs/9"
    )
    github = {
        "GITHUB_SERVER_URL": "https://github.com/",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_RUN_ID": "12",
    }
    assert job_url(github) == "https://github.com/o/r/actions/runs/12"
    assert job_url({**github, "GITHUB_RUN_ID": "x"}) == ""
    assert job_url({}) == ""


@pytest.mark.parametrize(
    ("kind", "web_url", "catalog"),
    [
        (
            "gitlab",
            "https://gl.example/g/p/-/merge_requests/7",
            "https://gl.example/g/p/-/blob/main/cat/CATALOG.md",
        ),
        (
            "github",
            "https://github.com/o/r/pull/7",
            "https://github.com/o/r/blob/main/cat/CATALOG.md",
        ),
        ("local", "/srv/repo#feature", ""),
    ],
)
def test_catalog_link_is_catalog_md_on_the_forge(kind: str, web_url: str, catalog: str) -> None:
    config = Config(catalog_dir="cat")
    links = comment_links(forge(kind), config, request(web_url), "c" * 40, "")
    assert links.catalog_url == catalog
    assert links.commit == "c" * 40


def test_settings_win_and_odd_urls_are_dropped() -> None:
    config = Config(catalog_url="https://pages.example/catalog/", docs_url="https://docs.example/")
    links = comment_links(
        forge("gitlab"), config, request("https://gl.example/g/p/-/merge_requests/7"), "", ""
    )
    assert links.catalog_url == "https://pages.example/catalog/"
    assert repository_url(forge("gitlab"), None) == ""
    assert safe_url("javascript:alert(1)") == "" and safe_url("https://x/a b") == ""
    assert safe_url("https://x/a)b") == ""  # would close the Markdown link
    text = render_markdown(
        make_plan([], [], CurrentState(REPO), NOW, cvmfs_repo=REPO),
        links=CommentLinks(job_url="javascript:alert(1)", docs_url=links.docs_url),
    )
    assert "javascript" not in text and "[how wishbot works](https://docs.example/)" in text

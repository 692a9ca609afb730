"""The optional note (``registry_event_note``): a refresh that re-points a path
because its tag moved says so on the merge request whose merge last added or
changed that path — found through the commit's merge requests on the GitLab
and GitHub fakes — and only when the operator turned it on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from forge_sites import CHANGED, GitHubSite, GitLabSite, Site
from merge_site import CVMFS_REPO, merge_site
from registry_events_site import wait_for

from bot.config import Config
from bot.runtime import wish_requests
from bot.runtime.actions import Refresh
from bot.runtime.journal import Journal
from bot.runtime.pipeline_api import Publication
from bot.runtime.registry_refresh import run_refresh
from bot.runtime.workflow import on_push

PATH = "/cvmfs/unpacked.example.org/registry.example.org/team/app:1"
OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64


def _catalog(digest: str, path: str = PATH) -> dict[str, bytes]:
    image = {"path": path.split("/", 3)[3], "cvmfs_path": path, "manifest_digest": digest}
    return {"catalog.json": json.dumps({"images": [image]}).encode()}


class Pipeline:
    """Publishes ``PATH`` on a merge and re-points it on a refresh."""

    def __init__(self, digest: str = NEW) -> None:
        self.digest = digest

    def review(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not reviewed here")

    def publish(self, wishlist: bytes, path: str, commit: str) -> Publication:
        return Publication(
            ok=True, description="1 published", published=(PATH,), catalog=_catalog(OLD)
        )

    def collect(self) -> str:
        raise AssertionError("no gc here")

    def refresh(self, wishlist: bytes, path: str, commit: str, images: Any) -> Publication:
        catalog = _catalog(self.digest)
        return Publication(ok=True, description="1 published", published=(PATH,), catalog=catalog)


@pytest.fixture(params=["gitlab", "github"])
def site(request: Any) -> Iterator[Site]:
    made: GitLabSite | GitHubSite = GitLabSite() if request.param == "gitlab" else GitHubSite()
    yield made
    made.fake.stop()


def _config(tmp_path: Path, note: bool) -> Config:
    return Config(state_dir=str(tmp_path / "state"), registry_event_note=note)


def _merge_and_refresh(site: Site, config: Config, tmp_path: Path) -> str:
    site.branch("add-app", {"wishlist.yaml": CHANGED})
    number = site.open("add-app")
    merged = site.merge(number)
    journal = Journal(tmp_path / "journal.sqlite")
    pipeline = Pipeline()
    assert on_push(site.forge, pipeline, "main", merged, config, journal).action == "published"
    action = Refresh("gitlab", "x", ("registry.example.org/team/app:1",), 0.0)
    assert run_refresh(action, site.forge, pipeline, config, journal).ok
    return number


def test_a_moved_tag_is_noted_on_the_request_that_added_it(site: Site, tmp_path: Path) -> None:
    config = _config(tmp_path, note=True)
    number = _merge_and_refresh(site, config, tmp_path)
    assert wish_requests.recorded(config) == {PATH: number}
    notes = [b for b in site.comment_bodies(number) if b.startswith("republished")]
    assert notes == [f"republished `{PATH}`: tag moved to `{NEW}`\n"]


def test_no_note_and_no_record_by_default(site: Site, tmp_path: Path) -> None:
    config = _config(tmp_path, note=False)
    number = _merge_and_refresh(site, config, tmp_path)
    assert not (tmp_path / "state" / wish_requests.FILE).exists()
    assert not [b for b in site.comment_bodies(number) if b.startswith("republished")]


def test_the_note_escapes_what_the_registry_named(tmp_path: Path) -> None:
    text = wish_requests.note_text("/cvmfs/r/x/`@admin`<b>:1", NEW)
    assert "``/cvmfs/r/x/`@admin`<b>:1``" in text
    assert wish_requests.moved_to({"catalog.json": b"not json"}) == {}
    hostile = {"images": [{"cvmfs_path": PATH, "manifest_digest": "@everyone"}]}
    assert wish_requests.moved_to({"catalog.json": json.dumps(hostile).encode()}) == {}


def test_end_to_end_a_merge_then_a_push_notes_the_request(tmp_path: Path) -> None:
    """The real pipeline and registry: a merge published through GitLab's push
    webhook, then a new build of the wished tag pushed (the registry's own
    notification): the note names the new digest on that merge request."""
    settings = {"registry_events": ("127.0.0.1:*/merged/*",), "registry_event_note": True}
    settings["registry_event_debounce"] = 0.2
    with merge_site(tmp_path, **settings) as site:
        first = site.push("app", "1", "0")
        number, sha = site.merge("add-app", "app:1")
        assert site.deliver_push(sha) == 202
        wait_for(lambda: site.published("app", "1") == first.manifest_digest, timeout=60)
        wait_for(lambda: wish_requests.recorded(site.server.config), timeout=30)
        moved = site.push("app", "1", "1")
        wait_for(lambda: site.published("app", "1") == moved.manifest_digest, timeout=60)
        path = f"/cvmfs/{CVMFS_REPO}/{site.registry.host}/merged/app:1"

        def noted() -> list[str]:
            notes = site.fake.mrs[number].notes
            return [n["body"] for n in notes if n["body"].startswith("republished")]

        wait_for(noted, timeout=30)
        assert noted() == [wish_requests.note_text(path, moved.manifest_digest)]

"""The poller on a real git repository, and the runtime commands' refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from forge_sites import CHANGED, LocalSite, RecordingPipeline, git

from bot.cli import main
from bot.config import Config
from bot.runtime.journal import Journal
from bot.runtime.watcher import Watcher
from bot.runtime.workflow import PLAN, PUBLISH


def test_watch_reviews_moved_heads_and_publishes_once(tmp_path: Path) -> None:
    site = LocalSite(tmp_path / "repo")
    head = site.branch("feature", {"wishlist.yaml": CHANGED})
    pipeline = RecordingPipeline()
    state = tmp_path / "state" / "watch.json"
    state.parent.mkdir()
    config = Config(catalog_dir="catalog")
    watcher = Watcher(site.forge, pipeline, config, Journal(), state)

    first = [o.action for o in watcher.poll_once()]
    assert first == ["reviewed", "published"]
    assert site.forge.statuses(head)[PLAN][0] == "success"
    main_head = site.head("main")
    assert site.forge.read_file("catalog/CATALOG.md", main_head) == b"# Catalog\n"

    # nothing moved (the bot's own catalog commit included): nothing to do
    assert watcher.poll_once() == []
    # a restarted watcher remembers what it saw
    assert Watcher(site.forge, pipeline, config, Journal(), state).poll_once() == []

    git(site.path, "checkout", "-q", "feature")
    (site.path / "wishlist.yaml").write_bytes(CHANGED + b"  - docker.io/library/busybox:1\n")
    git(site.path, "commit", "-q", "-am", "more")
    git(site.path, "checkout", "-q", "--detach")
    assert [o.action for o in watcher.poll_once()] == ["reviewed"]
    assert len(pipeline.reviews) == 2

    merge = site.merge("feature")
    outcomes = watcher.poll_once()
    assert [o.action for o in outcomes] == ["published"]
    assert site.forge.statuses(merge)[PUBLISH][0] == "success"
    assert pipeline.publications[-1][1] == merge


def test_serve_refuses_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("WISHBOT_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("WISHBOT_STATE_DIR", str(tmp_path))
    assert main(["serve"]) == 2
    assert "WISHBOT_WEBHOOK_SECRET" in capsys.readouterr().err


def test_ci_refuses_outside_ci(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("GITLAB_CI", "CI_PIPELINE_SOURCE", "GITHUB_ACTIONS", "GITHUB_EVENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert main(["ci"]) == 2
    assert "not running in GitLab CI or GitHub Actions" in capsys.readouterr().err

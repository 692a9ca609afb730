"""Scheduled maintenance: periodic re-publication (tags move upstream) and gc,
through the workflow, the poller and the webhook server's queue."""

from __future__ import annotations

from pathlib import Path

from forge_sites import LocalSite, RecordingPipeline

from bot.config import Config
from bot.runtime.journal import Journal
from bot.runtime.queue import Queue
from bot.runtime.server import MAINTAIN, WebhookServer, run_job
from bot.runtime.watcher import Watcher
from bot.runtime.workflow import PUBLISH, on_schedule

CONFIG = Config(catalog_dir="catalog")


def test_schedule_republishes_quietly_then_collects(tmp_path: Path) -> None:
    site = LocalSite(tmp_path / "repo")
    head = site.head("main")
    pipeline = RecordingPipeline()
    outcome = on_schedule(site.forge, pipeline, CONFIG)
    assert outcome.action == "maintained" and outcome.ok
    assert pipeline.publications == [(site.forge.read_file("wishlist.yaml", head), head)]
    assert pipeline.collections == 1
    assert "gc:" in outcome.detail
    # the changed catalog is committed, but no status and no comment: nothing to tell
    assert site.forge.read_file("catalog/CATALOG.md", site.head("main")) == b"# Catalog\n"
    assert site.forge.statuses(head) == {}
    # a second round with nothing changed makes no commit at all
    before = site.head("main")
    assert on_schedule(site.forge, pipeline, CONFIG).catalog_commit == before
    assert site.head("main") == before


def test_a_failed_republication_shows_as_a_status_and_is_retried(tmp_path: Path) -> None:
    site = LocalSite(tmp_path / "repo")
    pipeline = RecordingPipeline(publish_ok=False)
    journal = Journal()
    outcome = on_schedule(site.forge, pipeline, CONFIG, journal)
    assert outcome.action == "failed" and outcome.retry and not outcome.ok
    state, description = site.forge.statuses(site.head("main"))[PUBLISH]
    assert state == "failure" and "periodic re-publication" in description
    assert pipeline.collections == 1
    assert journal.unfinished() == []


def test_watcher_maintains_once_per_interval(tmp_path: Path) -> None:
    site = LocalSite(tmp_path / "repo")
    pipeline = RecordingPipeline()
    now = [1000.0]
    state = tmp_path / "watch.json"
    config = Config(catalog_dir="catalog", reapply_interval=600)
    watcher = Watcher(site.forge, pipeline, config, Journal(), state, clock=lambda: now[0])
    assert [o.action for o in watcher.poll_once()] == ["published"]  # the clock starts
    assert pipeline.collections == 0
    now[0] += 599
    assert watcher.poll_once() == []
    now[0] += 2
    assert [o.action for o in watcher.poll_once()] == ["maintained"]
    assert pipeline.collections == 1
    # remembered across restarts
    again = Watcher(site.forge, pipeline, config, Journal(), state, clock=lambda: now[0])
    assert again.poll_once() == []
    assert (
        Watcher(
            site.forge, pipeline, Config(reapply_interval=0), Journal(), state, clock=lambda: 1e12
        ).poll_once()
        == []
    )


def test_server_queues_maintenance_once_and_runs_it_on_the_publish_worker(
    tmp_path: Path,
) -> None:
    site = LocalSite(tmp_path / "repo")
    pipeline = RecordingPipeline()
    config = Config(
        forge="local", repositories=("team/wishlist",), catalog_dir="catalog", listen="127.0.0.1:0"
    )
    queue = Queue(tmp_path / "queue.sqlite")
    journal = Journal(tmp_path / "journal.sqlite")
    server = WebhookServer(
        config,
        secret="s3cret",
        queue=queue,
        journal=journal,
        pipeline=pipeline,
        forge_for=lambda kind, repository: site.forge,
    )
    server.schedule_maintenance()
    server.schedule_maintenance()  # coalesced with the one still waiting
    assert queue.counts().get("queued") == 1
    job = queue.claim((MAINTAIN,))
    assert job is not None and job.payload == {"forge": "local", "repository": "team/wishlist"}
    outcome = run_job(
        job, config=config, pipeline=pipeline, journal=journal, forge_for=server.forge_for
    )
    assert outcome.action == "maintained"
    assert pipeline.collections == 1 and len(pipeline.publications) == 1

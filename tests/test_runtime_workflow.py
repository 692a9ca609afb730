"""The workflow (review, publish, recover) on real forges' adapters with a small
in-test Pipeline (the Pipeline is wishbot's own interface)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_github import FakeGitHub
from forge_sites import CHANGED, WISHLIST, LocalSite, RecordingPipeline, git

from bot.config import Config
from bot.errors import ForgeError, RegistryError
from bot.forge.github import GitHubForge
from bot.runtime.journal import Journal
from bot.runtime.pipeline_api import PLAN_MARKER, PUBLISH_MARKER, Review
from bot.runtime.workflow import PLAN, PUBLISH, VALIDATE, on_merge_request, on_push, recover

CONFIG = Config(catalog_dir="catalog")


@pytest.fixture
def local(tmp_path: Path) -> LocalSite:
    return LocalSite(tmp_path / "repo")


@pytest.fixture
def github() -> Iterator[tuple[FakeGitHub, GitHubForge]]:
    fake = FakeGitHub()
    fake.start()
    fake.repo.commit("main", {"wishlist.yaml": WISHLIST}, "initial")
    yield fake, GitHubForge(fake.api_url, fake.full_name, fake.token, write_interval=None)
    fake.stop()


def test_review_reads_base_and_head_and_upserts_one_comment(local: LocalSite) -> None:
    head = local.branch("feature", {"wishlist.yaml": CHANGED})
    pipeline = RecordingPipeline()
    journal = Journal()
    for _ in range(3):
        mr = local.forge.merge_request("feature")
        outcome = on_merge_request(local.forge, pipeline, mr, CONFIG, journal)
        assert outcome.action == "reviewed" and outcome.ok
    assert pipeline.reviews[0] == (WISHLIST, CHANGED, True)
    comments = local.comment_bodies("feature")
    assert len(comments) == 1 and "review number 3" in comments[0]
    assert local.forge.statuses(head)[VALIDATE] == ("success", "1 image, valid")
    assert local.forge.statuses(head)[PLAN] == ("success", "1 image to add")
    assert journal.unfinished() == []


def test_invalid_review_fails_statuses(local: LocalSite) -> None:
    head = local.branch("feature", {"wishlist.yaml": CHANGED})
    outcome = on_merge_request(
        local.forge, RecordingPipeline(valid=False), local.forge.merge_request("feature"), CONFIG
    )
    assert not outcome.ok
    assert local.forge.statuses(head)[VALIDATE][0] == "failure"
    assert local.forge.statuses(head)[PLAN][0] == "failure"


def test_statuses_end_final_when_the_pipeline_raises(local: LocalSite) -> None:
    head = local.branch("feature", {"wishlist.yaml": CHANGED})
    journal = Journal()
    pipeline = RecordingPipeline(fail=RuntimeError("boom <script>alert(1)</script>"))
    outcome = on_merge_request(
        local.forge, pipeline, local.forge.merge_request("feature"), CONFIG, journal
    )
    assert outcome.action == "failed" and not outcome.ok
    statuses = local.forge.statuses(head)
    assert statuses[VALIDATE][0] == "error" and statuses[PLAN][0] == "error"
    (comment,) = local.comment_bodies("feature")
    assert PLAN_MARKER in comment and "boom" in comment
    assert "<script>" not in comment and "&lt;script&gt;" in comment
    assert journal.unfinished() == []


def test_missing_wishlist_at_head_fails_review(local: LocalSite) -> None:
    local.branch("feature", {"other.txt": b"x"})
    git(local.path, "checkout", "-q", "feature")
    git(local.path, "rm", "-q", "wishlist.yaml")
    git(local.path, "commit", "-q", "-m", "delete")
    git(local.path, "checkout", "-q", "--detach")
    pipeline = RecordingPipeline()
    outcome = on_merge_request(local.forge, pipeline, local.forge.merge_request("feature"), CONFIG)
    assert not outcome.ok and pipeline.reviews == []
    head = local.head("feature")
    assert local.forge.statuses(head)[VALIDATE][0] == "failure"


def test_drafts_are_skipped_when_configured(local: LocalSite) -> None:
    local.branch("wip", {"wishlist.yaml": CHANGED})
    number = local.open("wip", draft=True)
    pipeline = RecordingPipeline()
    mr = local.forge.merge_request(number)
    skipped = on_merge_request(local.forge, pipeline, mr, Config(plan_drafts=False))
    assert skipped.action == "skipped" and pipeline.reviews == []
    assert on_merge_request(local.forge, pipeline, mr, Config()).action == "reviewed"


def test_forks_are_reviewed_untrusted_and_never_published(
    github: tuple[FakeGitHub, GitHubForge],
) -> None:
    fake, forge = github
    fake.repo.branch("evil", "main")
    fork_head = fake.repo.commit("evil", {"wishlist.yaml": CHANGED}, "evil change")
    pull = fake.open_pull("evil", fork=True)
    pipeline = RecordingPipeline()
    on_merge_request(forge, pipeline, forge.merge_request(str(pull.number)), CONFIG)
    assert pipeline.reviews == [(WISHLIST, CHANGED, False)]
    assert fake.status_of(fork_head, PLAN)["state"] == "success"  # type: ignore[index]
    # a push event naming the fork's branch (or its sha) publishes nothing
    assert on_push(forge, pipeline, "evil", fork_head, CONFIG).action == "skipped"
    assert pipeline.publications == []


def test_push_to_default_branch_publishes_commits_catalog_and_comments(
    github: tuple[FakeGitHub, GitHubForge],
) -> None:
    fake, forge = github
    fake.repo.branch("feature", "main")
    fake.repo.commit("feature", {"wishlist.yaml": CHANGED}, "add alpine")
    pull = fake.open_pull("feature")
    merge_sha = fake.merge(pull.number)
    pipeline = RecordingPipeline()
    outcome = on_push(forge, pipeline, "main", merge_sha, CONFIG)
    assert outcome.action == "published" and outcome.ok
    assert pipeline.publications == [(CHANGED, merge_sha)]
    assert fake.status_of(merge_sha, PUBLISH)["state"] == "success"  # type: ignore[index]
    head = fake.repo.branches["main"]
    assert head == outcome.catalog_commit != merge_sha
    assert fake.repo.file_at(head, "catalog/CATALOG.md") == b"# Catalog\n"
    assert "[skip ci]" in fake.repo.commits[head].message
    (comment,) = [c["body"] for c in pull.comments]
    assert PUBLISH_MARKER in comment and "alpine:3.19" in comment
    # publishing again changes nothing: no new catalog commit, still one comment
    on_push(forge, pipeline, "main", head, CONFIG)
    assert fake.repo.branches["main"] == head and len(pull.comments) == 1


def test_push_to_other_branch_publishes_nothing(local: LocalSite) -> None:
    head = local.branch("feature", {"wishlist.yaml": CHANGED})
    pipeline = RecordingPipeline()
    outcome = on_push(local.forge, pipeline, "feature", head, CONFIG)
    assert outcome.action == "skipped" and pipeline.publications == []
    assert PUBLISH not in local.forge.statuses(head)


def test_stale_push_publishes_the_current_default_head(local: LocalSite) -> None:
    old = local.head("main")
    local.branch("feature", {"wishlist.yaml": CHANGED})
    new = local.merge("feature")
    pipeline = RecordingPipeline()
    outcome = on_push(local.forge, pipeline, "main", old, CONFIG)
    assert pipeline.publications == [(CHANGED, new)]
    assert outcome.sha == new
    merged = local.forge.merge_request("feature")
    assert any(PUBLISH_MARKER in c.body for c in local.forge.comments(merged))


def test_publish_failures_end_final_and_ask_for_retry(local: LocalSite) -> None:
    local.branch("feature", {"wishlist.yaml": CHANGED})
    merge_sha = local.merge("feature")
    journal = Journal()
    failed = on_push(
        local.forge, RecordingPipeline(publish_ok=False), "main", merge_sha, CONFIG, journal
    )
    assert failed.retry and not failed.ok
    assert local.forge.statuses(merge_sha)[PUBLISH] == ("failure", "registry down")
    raised = on_push(
        local.forge,
        RecordingPipeline(fail=RegistryError("registry.example.org: HTTP 503")),
        "main",
        merge_sha,
        CONFIG,
        journal,
        retried=True,
    )
    assert raised.retry and "503" in raised.detail
    assert local.forge.statuses(merge_sha)[PUBLISH][0] == "failure"
    bodies = [c.body for c in local.forge.comments(local.forge.merge_request("feature"))]
    assert len(bodies) == 1 and "will retry" in bodies[0]
    assert journal.unfinished() == []


def test_forge_errors_propagate_after_failing_statuses(local: LocalSite) -> None:
    """A forge that breaks mid-run: the status is failed, the error reaches the caller."""
    head = local.branch("feature", {"wishlist.yaml": CHANGED})
    mr = local.forge.merge_request("feature")
    journal = Journal()

    class Breaking(RecordingPipeline):
        def review(
            self,
            base: bytes | None,
            head: bytes,
            path: str,
            *,
            trusted: bool,
            catalog: bytes | None = None,
        ) -> Review:
            raise ForgeError("GitLab went away")

    with pytest.raises(ForgeError):
        on_merge_request(local.forge, Breaking(), mr, CONFIG, journal)
    assert local.forge.statuses(head)[PLAN][0] == "error"
    assert journal.unfinished() == []


def test_recover_fails_statuses_left_running(local: LocalSite, tmp_path: Path) -> None:
    head = local.branch("feature", {"wishlist.yaml": CHANGED})
    path = tmp_path / "state" / "journal.sqlite"
    crashed = Journal(path)
    # what a run that was killed after setting its statuses leaves behind
    crashed.record(local.forge.repository, head, PLAN, "pending", "waiting", "feature")
    local.forge.set_status(head, PLAN, "pending", "waiting")
    crashed.record(local.forge.repository, head, PUBLISH, "running", "publishing", "main")
    local.forge.set_status(head, PUBLISH, "running", "publishing")
    restarted = Journal(path)
    assert len(restarted.unfinished(local.forge.repository)) == 2
    assert recover(local.forge, restarted) == 2
    assert local.forge.statuses(head)[PLAN][0] == "error"
    assert local.forge.statuses(head)[PUBLISH][0] == "error"
    assert restarted.unfinished() == []
    assert recover(local.forge, restarted) == 0


def test_a_final_status_the_forge_refused_stays_in_the_journal(
    github: tuple[FakeGitHub, GitHubForge],
) -> None:
    """The forge fails while the run ends: recover() later finishes the job."""
    fake, forge = github
    fake.repo.branch("feature", "main")
    head = fake.repo.commit("feature", {"wishlist.yaml": CHANGED}, "change")
    pull = fake.open_pull("feature")
    journal = Journal()

    class ForgeDies(RecordingPipeline):
        def review(
            self,
            base: bytes | None,
            head: bytes,
            path: str,
            *,
            trusted: bool,
            catalog: bytes | None = None,
        ) -> Review:
            fake.fail_next.extend(
                [502] * 200
            )  # every following request fails (PyGithub retries 10x)
            return super().review(base, head, path, trusted=trusted)

    with pytest.raises(ForgeError):
        on_merge_request(forge, ForgeDies(), forge.merge_request(str(pull.number)), CONFIG, journal)
    assert fake.status_of(head, PLAN)["state"] == "pending"  # type: ignore[index]
    assert {r.context for r in journal.unfinished()} == {PLAN, VALIDATE}
    fake.fail_next.clear()
    assert recover(forge, journal) == 2
    assert fake.status_of(head, PLAN)["state"] == "error"  # type: ignore[index]
    assert journal.unfinished() == []

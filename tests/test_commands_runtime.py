"""Comment commands and the dashboard on both forges, through the fakes (which answer
as the GitLab and GitHub documentation says), starting from the recorded payload
shapes: parse the delivery, handle it, run the work it asks for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from command_payloads import (
    github_comment,
    github_issue_edit,
    gitlab_issue_edit,
    gitlab_note,
)
from forge_sites import CHANGED, GitHubSite, GitLabSite, RecordingPipeline
from test_runtime_webhooks import (  # the server fixtures and helpers
    SECRET,
    forges,
    github_headers,
    make_server,
    open_github_pull,
    post,
    wait_for,
)
from webhook_payloads import github_push

from bot.config import Config
from bot.core import dashboard
from bot.core.commands import CommentEvent
from bot.errors import LockedError
from bot.runtime.command_events import DashboardEdit, parse_command_delivery
from bot.runtime.commands import handle, refresh_dashboard, run_now
from bot.runtime.journal import Journal
from bot.runtime.pipeline_api import PLAN_MARKER
from bot.runtime.watcher import Watcher
from bot.runtime.workflow import PUBLISH, Outcome, on_merge_request, on_push

__all__ = ["forges", "make_server"]  # fixtures used by name
RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "forge-recordings"
CONFIG = Config(command_permission="write")

Site = GitLabSite | GitHubSite


@pytest.fixture(params=["gitlab", "github"])
def site(request: Any) -> Iterator[Site]:
    found: Site = GitLabSite() if request.param == "gitlab" else GitHubSite()
    yield found
    found.fake.stop()


def comment(site: Site, number: str, body: str, who: str, action: str = "") -> Any:
    """A person comments on the request; the delivery the forge sends about it."""
    if isinstance(site, GitLabSite):
        note = site.fake.human_note(int(number), body, username=who)
        payload = gitlab_note(site.fake.project, int(number), note["id"], body, who,
                              note["author"]["id"], action or "create")  # fmt: skip
        return parse_command_delivery({"X-Gitlab-Event": "Note Hook"}, json.dumps(payload).encode())
    made = site.fake.human_comment(int(number), body, login=who)
    payload = github_comment(site.fake.full_name, int(number), made["id"], body, who,
                             action or "created")  # fmt: skip
    return parse_command_delivery({"X-GitHub-Event": "issue_comment"}, json.dumps(payload).encode())


def reactions(site: Site, number: str) -> list[str]:
    if isinstance(site, GitLabSite):
        return list(site.fake.mrs[int(number)].notes[-1].get("award_emoji", []))
    return list(site.fake.pulls[int(number)].comments[-1].get("reactions", []))


def open_request(site: Site) -> str:
    site.branch("feature", {"wishlist.yaml": CHANGED})
    return site.open("feature")


def test_a_permitted_plan_re_plans_and_edits_the_one_comment(site: Site) -> None:
    number = open_request(site)
    pipeline, journal = RecordingPipeline(), Journal()
    on_merge_request(site.forge, pipeline, site.forge.merge_request(number), CONFIG, journal)
    event = comment(site, number, "/wishbot plan", "dev")
    assert isinstance(event, CommentEvent) and event.created
    handled = handle(site.forge, event, CONFIG, journal)
    assert handled.verdict == "run"
    assert reactions(site, number) == (["thumbsup"] if isinstance(site, GitLabSite) else ["+1"])
    for work in handled.work:
        run_now(site.forge, pipeline, CONFIG, journal, work)
    assert len(pipeline.reviews) == 2
    plans = [b for b in site.comment_bodies(number) if b.startswith(PLAN_MARKER)]
    assert len(plans) == 1 and "review number 2" in plans[0]


def test_an_outsider_is_refused_politely(site: Site) -> None:
    number = open_request(site)
    event = comment(site, number, "/wishbot plan", "mallory")
    handled = handle(site.forge, event, CONFIG, Journal())
    assert handled.verdict == "refuse" and handled.work == ()
    reply = site.comment_bodies(number)[-1]
    assert reply.startswith("Sorry `mallory`") and "write access" in reply
    assert "\n" not in reply


def test_help_and_unknown_commands_are_answered(site: Site) -> None:
    number = open_request(site)
    handled = handle(site.forge, comment(site, number, "/WishBot  frobnicate", "mallory"), CONFIG)
    assert handled.verdict == "help"
    reply = site.comment_bodies(number)[-1]
    assert "`frobnicate`" in reply and "/wishbot retry" in reply


def test_retry_re_runs_a_failed_publication(site: Site) -> None:
    number = open_request(site)
    merged = site.merge(number)
    pipeline, journal = RecordingPipeline(publish_ok=False), Journal()
    on_push(site.forge, pipeline, "main", merged, CONFIG, journal)
    assert site.status(merged, PUBLISH) in ("failed", "failure")
    handled = handle(site.forge, comment(site, number, "/wishbot retry", "dev"), CONFIG, journal)
    assert handled.verdict == "run" and [w.kind for w in handled.work] == ["publish"]
    assert site.status(merged, PUBLISH) == "pending"  # waiting in the queue, not failed
    pipeline.publish_ok = True
    run_now(site.forge, pipeline, CONFIG, journal, handled.work[0])
    assert len(pipeline.publications) == 2
    assert site.status(merged, PUBLISH) == "success"
    # published: nothing to retry, and the bot says so
    head = site.head("main")  # the bot's catalog commit, after the published merge
    journal.record(site.forge.repository, head, PUBLISH, "success", "published", "main")
    again = handle(site.forge, comment(site, number, "/wishbot retry", "dev"), CONFIG, journal)
    assert again.verdict == "nothing" and "nothing to retry" in site.comment_bodies(number)[-1]


def test_the_bots_own_comments_never_trigger(site: Site) -> None:
    number = open_request(site)
    bot = site.forge.bot_user() or ""
    before = site.comment_bodies(number)
    handled = handle(site.forge, comment(site, number, "/wishbot plan", bot), CONFIG)
    assert handled.verdict == "ignore" and "own" in handled.reason
    assert len(site.comment_bodies(number)) == len(before) + 1  # only the comment itself


def test_an_edited_comment_never_triggers(site: Site) -> None:
    number = open_request(site)
    action = "update" if isinstance(site, GitLabSite) else "edited"
    event = comment(site, number, "/wishbot plan", "dev", action)
    assert isinstance(event, CommentEvent) and not event.created
    assert handle(site.forge, event, CONFIG).verdict == "ignore"
    assert reactions(site, number) == []


def test_a_repeated_delivery_is_handled_once(site: Site) -> None:
    number = open_request(site)
    event = comment(site, number, "/wishbot plan", "dev")
    assert handle(site.forge, event, CONFIG).verdict == "run"
    assert handle(site.forge, event, CONFIG, seen=True).verdict == "ignore"


def dashboard_edit(site: Site, issue: str, before: str, after: str, who: str) -> Any:
    if isinstance(site, GitLabSite):
        site.fake.human_issue_edit(int(issue), after)
        payload = gitlab_issue_edit(site.fake.project, int(issue), before, after, who,
                                    site.fake.users.setdefault(who, 99))  # fmt: skip
        return parse_command_delivery(
            {"X-Gitlab-Event": "Issue Hook"}, json.dumps(payload).encode()
        )
    site.fake.human_issue_edit(int(issue), after)
    payload = github_issue_edit(site.fake.full_name, int(issue), before, after, who)
    return parse_command_delivery({"X-GitHub-Event": "issues"}, json.dumps(payload).encode())


STATE = dashboard.DashboardState(
    failing=(dashboard.FailingWish("docker.io/library/alpine:3.19", "registry 503", "2026-11-30"),),
)


def test_ticking_a_dashboard_box_retries_that_wish(site: Site) -> None:
    open_request(site)
    body = dashboard.render(STATE, site.forge.limits.issue_chars)
    issue = site.forge.upsert_issue(dashboard.MARKER, dashboard.TITLE, body)
    ticked = body.replace("- [ ] retry `docker.io", "- [x] retry `docker.io")
    event = dashboard_edit(site, issue, body, ticked, "dev")
    assert isinstance(event, DashboardEdit)
    handled = handle(site.forge, event, CONFIG)
    assert handled.verdict == "run" and [w.kind for w in handled.work] == ["publish"]
    # the box is unticked again, ready for next time
    bot = site.forge.bot_user() or ""
    assert [i.body for i in site.forge.open_issues(bot)] == [body]
    # the bot's own edit (the unticking) is no action
    own = dashboard_edit(site, issue, ticked, body, bot)
    assert handle(site.forge, own, CONFIG).verdict == "ignore"


def test_ticking_re_plan_reviews_every_open_request_and_outsiders_are_refused(site: Site) -> None:
    number = open_request(site)
    body = dashboard.render(STATE, site.forge.limits.issue_chars)
    issue = site.forge.upsert_issue(dashboard.MARKER, dashboard.TITLE, body)
    ticked = body.replace("- [ ] re-plan everything", "- [x] re-plan everything")
    refused = handle(site.forge, dashboard_edit(site, issue, body, ticked, "mallory"), CONFIG)
    assert refused.verdict == "refuse" and refused.work == ()
    handled = handle(site.forge, dashboard_edit(site, issue, body, ticked, "dev"), CONFIG)
    assert [(w.kind, w.payload["number"]) for w in handled.work] == [("review", number)]


def test_a_publication_behind_another_is_pending_never_failed(site: Site) -> None:
    number = open_request(site)
    merged = site.merge(number)
    pipeline = RecordingPipeline(fail=LockedError("publisher local:/x is in use (pid 123)"))
    outcome = on_push(site.forge, pipeline, "main", merged, CONFIG, Journal())
    assert outcome.retry and outcome.ok and outcome.action == "waiting"
    found = site.fake.status_of(merged, PUBLISH)
    assert found is not None
    if isinstance(site, GitHubSite):  # pending
        assert (found["state"], found["description"][:20]) == ("pending", "queued behind anothe")
    else:  # GitLab cannot go back from running to pending (400): it stays running, not failed
        assert found["status"] == "running"


# --- the recorded payloads parse as the transcribed shapes do ---------------------


@pytest.mark.skipif(not RECORDINGS.exists(), reason="forge recordings not available")
def test_recorded_payloads() -> None:
    note = json.loads((RECORDINGS / "gitlab-docs" / "note_merge_request.json").read_text())
    note["object_attributes"]["note"] = "/wishbot plan"
    event = parse_command_delivery({"X-Gitlab-Event": "Note Hook"}, json.dumps(note).encode())
    assert isinstance(event, CommentEvent)
    assert (event.number, event.comment_id, event.author, event.author_id, event.created) == (
        "1", "1244", "root", "1", True,
    )  # fmt: skip
    created = json.loads(
        (RECORDINGS / "github-octokit" / "issue_comment__created.payload.json").read_text()
    )
    # the recorded comment is on an issue: not a command on a pull request
    raw = json.dumps(created).encode()
    assert parse_command_delivery({"X-GitHub-Event": "issue_comment"}, raw) is None
    created["issue"]["pull_request"] = {"url": "https://api.github.com/repos/x/y/pulls/1"}
    raw = json.dumps(created).encode()
    event = parse_command_delivery({"X-GitHub-Event": "issue_comment"}, raw)
    assert isinstance(event, CommentEvent) and event.created
    assert (event.repository, event.number, event.author) == (
        "Codertocat/Hello-World", "1", "Codertocat",
    )  # fmt: skip
    edited = json.loads(
        (RECORDINGS / "github-octokit" / "issue_comment__edited.payload.json").read_text()
    )
    edited["issue"]["pull_request"] = {"url": "x"}
    event = parse_command_delivery({"X-GitHub-Event": "issue_comment"}, json.dumps(edited).encode())
    assert isinstance(event, CommentEvent) and not event.created


# --- serve: a delivery becomes a command job, its work is queued and done -----------


def test_serve_runs_a_command_once_per_comment(make_server: Any, forges: Any) -> None:
    fake = forges.github
    number, _ = open_github_pull(forges)
    server = make_server()
    made = fake.human_comment(number, "/wishbot plan", login="dev")
    payload = github_comment(fake.full_name, number, made["id"], "/wishbot plan", "dev")
    body = json.dumps(payload).encode()
    status, answer = post(server, github_headers("issue_comment", body, "d-1"), None, raw=body)
    assert (status, answer) == (202, {"status": "queued"})
    wait_for(lambda: server.queue.counts().get("done", 0) == 2)  # the command, the review
    assert any(c["body"].startswith(PLAN_MARKER) for c in fake.pulls[number].comments)
    assert made["reactions"] == ["+1"]
    # the same comment again (a redelivery under a new id): a duplicate, no second job
    status, answer = post(server, github_headers("issue_comment", body, "d-2"), None, raw=body)
    assert (status, answer) == (200, {"status": "duplicate"})
    # an ordinary comment queues nothing
    chat = github_comment(fake.full_name, number, 1, "looks good", "dev")
    raw = json.dumps(chat).encode()
    status, answer = post(server, github_headers("issue_comment", raw, "d-3"), None, raw=raw)
    assert (status, answer["status"]) == (202, "ignored")


def test_serve_refuses_a_gitlab_outsider(make_server: Any, forges: Any) -> None:
    fake = forges.gitlab
    fake.repo.branch("add-alpine", "main")
    fake.repo.commit("add-alpine", {"wishlist.yaml": CHANGED}, "add alpine")
    iid = fake.open_mr("add-alpine").iid
    server = make_server()
    note = fake.human_note(iid, "/wishbot retry", username="mallory")
    payload = gitlab_note(fake.project, iid, note["id"], "/wishbot retry", "mallory",
                          note["author"]["id"])  # fmt: skip
    headers = {"X-Gitlab-Event": "Note Hook", "X-Gitlab-Token": SECRET}
    status, answer = post(server, headers, payload)
    assert (status, answer) == (202, {"status": "queued"})
    wait_for(lambda: server.queue.counts().get("done", 0) == 1)
    assert fake.mrs[iid].notes[-1]["body"].startswith("Sorry")
    assert note["award_emoji"] == ["confused"]


# --- watch: new comments and ticked boxes, found by polling ---------------------------


def test_watch_runs_only_comments_newer_than_its_first_look(site: Site, tmp_path: Path) -> None:
    number = open_request(site)
    site.human_comment(number, "/wishbot plan")  # before the bot looked: never run
    pipeline, config = RecordingPipeline(), Config(watch_commands=True)
    watcher = Watcher(site.forge, pipeline, config, Journal(), tmp_path / "watch.json")
    watcher.poll_once()
    assert len(pipeline.reviews) == 1 and reactions(site, number) == []
    watcher.poll_once()
    assert len(pipeline.reviews) == 1
    comment(site, number, "/wishbot plan", "dev")
    watcher.poll_once()
    assert len(pipeline.reviews) == 2 and len(reactions(site, number)) == 1
    watcher.poll_once()  # seen: not again
    assert len(pipeline.reviews) == 2
    # a ticked dashboard box, found on the next poll
    body = dashboard.render(STATE, site.forge.limits.issue_chars)
    issue = site.forge.upsert_issue(dashboard.MARKER, dashboard.TITLE, body)
    watcher.poll_once()
    site.fake.human_issue_edit(int(issue), body.replace("- [ ] re-plan", "- [x] re-plan"))
    watcher.poll_once()
    assert len(pipeline.reviews) == 3
    assert [i.body for i in site.forge.open_issues(site.forge.bot_user() or "")] == [body]


def test_the_dashboard_after_publications_keeps_since_dates(site: Site) -> None:
    config = Config(dashboard=True)
    failed = Outcome(
        "failed",
        "2 images not published: /cvmfs/x/a:1: registry 503; /cvmfs/x/b:2: timeout",
        "a" * 40,
    )
    number = refresh_dashboard(site.forge, config, failed, now="2026-11-30")
    again = Outcome("failed", "1 image not published: /cvmfs/x/a:1: registry 503", "b" * 40)
    assert refresh_dashboard(site.forge, config, again, now="2026-12-01") == number
    body = next(i.body for i in site.forge.open_issues(site.forge.bot_user() or ""))
    assert body.startswith(dashboard.MARKER)
    assert "- [ ] retry `/cvmfs/x/a:1`: registry 503 (since 2026-11-30)" in body
    assert "b:2" not in body and "`bbbbbbbbbbbb`" in body
    refresh_dashboard(site.forge, config, Outcome("published", "1 image published", "c" * 40),
                      now="2026-12-02", queue={"queued": 2, "done": 0})  # fmt: skip
    body = next(i.body for i in site.forge.open_issues(site.forge.bot_user() or ""))
    assert "Nothing failing." in body and "- 2 queued" in body


def test_serve_a_publication_queued_behind_another_is_pending(
    make_server: Any, forges: Any
) -> None:
    fake = forges.github
    first = fake.repo.commit("main", {"wishlist.yaml": CHANGED}, "merge one")
    server = make_server(workers=False)
    push = github_push("main", first)
    raw = json.dumps(push).encode()
    assert post(server, github_headers("push", raw, "p-1"), None, raw=raw)[0] == 202
    running = server.queue.claim(("publish",))  # the publish worker took it
    assert running is not None
    second = fake.repo.commit("main", {"wishlist.yaml": CHANGED + b"# more\n"}, "merge two")
    raw = json.dumps(github_push("main", second)).encode()
    assert post(server, github_headers("push", raw, "p-2"), None, raw=raw)[0] == 202
    job = server.queue.claim(("command",))
    assert job is not None
    server.run(job)
    found = fake.status_of(second, PUBLISH)
    assert found is not None and found["state"] == "pending"
    assert found["description"] == f"queued behind the publish of {first[:12]}"
    assert fake.status_of(first, PUBLISH) is None  # the running one says nothing false

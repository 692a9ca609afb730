"""What the forges really send and answer drives wishbot: GitHub's and GitLab's
published webhook payloads through the event parser, and PyGithub's recorded
exchanges with api.github.com (one per endpoint wishbot uses) through the
GitHub adapter, served from loopback exactly as recorded.

The recordings live in ``../shared/data/forge-recordings/`` (each folder's
``SOURCE`` names its origin); without them these tests are skipped.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_github import FakeGitHub
from fake_gitlab import FakeGitLab
from fake_http import JsonServer, Reply, Request
from forge_sites import CHANGED, WISHLIST, RecordingPipeline

from bot.config import Config
from bot.forge.base import Forge
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.runtime.events import Ignored, MergeRequestEvent, PushEvent, parse_event
from bot.runtime.journal import Journal
from bot.runtime.queue import Queue
from bot.runtime.server import WebhookServer

#: ../shared beside the checkout (as CI lays it out)
RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "forge-recordings"
pytestmark = pytest.mark.skipif(
    not (RECORDINGS / "pygithub-replay" / "selected.json").exists(),
    reason="forge recordings not available",
)


def payload(folder: str, name: str) -> dict[str, Any]:
    return dict(json.loads((RECORDINGS / folder / name).read_text(encoding="utf-8")))


def github(kind: str, body: dict[str, Any]) -> Any:
    return parse_event({"X-GitHub-Event": kind}, json.dumps(body).encode())


def gitlab(kind: str, body: dict[str, Any]) -> Any:
    return parse_event({"X-Gitlab-Event": kind}, json.dumps(body).encode())


# --- webhook payloads ----------------------------------------------------------

REVIEWED = ["opened", "reopened", "synchronize", "ready_for_review"]
NOT_REVIEWED = ["assigned", "labeled", "locked", "review_requested", "converted_to_draft"]


@pytest.mark.parametrize("action", REVIEWED)
def test_github_pull_request_payloads_that_ask_for_a_review(action: str) -> None:
    body = payload("github-octokit", f"pull_request__{action}.payload.json")
    event = github("pull_request", body)
    assert isinstance(event, MergeRequestEvent), event
    assert event.number == str(body["pull_request"]["number"])
    assert event.head_sha == body["pull_request"]["head"]["sha"]
    assert event.repository == body["repository"]["full_name"]


@pytest.mark.parametrize("action", NOT_REVIEWED)
def test_github_pull_request_payloads_that_need_no_work(action: str) -> None:
    body = payload("github-octokit", f"pull_request__{action}.payload.json")
    assert isinstance(github("pull_request", body), Ignored)


def test_github_retargeted_pull_request_is_reviewed_again() -> None:
    """``edited`` with ``changes.base`` (REST webhook docs, pull_request edited:
    ``changes.base.ref.from``, ``changes.base.sha.from``); a title edit is not."""
    body = payload("github-octokit", "pull_request__opened.payload.json")
    body["action"] = "edited"
    body["changes"] = {"title": {"from": "old"}}
    assert isinstance(github("pull_request", body), Ignored)
    body["changes"] = {"base": {"ref": {"from": "old-base"}, "sha": {"from": "0" * 40}}}
    event = github("pull_request", body)
    assert isinstance(event, MergeRequestEvent) and event.action == "edited"


def test_github_closed_and_push_payloads() -> None:
    closed = payload("github-octokit", "pull_request__closed.payload.json")
    event = github("pull_request", closed)
    if closed["pull_request"].get("merged"):
        assert isinstance(event, PushEvent | Ignored)
    else:
        assert isinstance(event, Ignored)
    push = payload("github-octokit", "push__payload.json")
    pushed = github("push", push)
    assert isinstance(pushed, PushEvent | Ignored)
    if isinstance(pushed, PushEvent):
        assert pushed.sha == push["after"] and pushed.branch == push["ref"].split("/", 2)[2]
    assert isinstance(github("ping", payload("github-octokit", "ping__payload.json")), Ignored)
    for name in (
        "issue_comment__created.payload.json",
        "pull_request_review__submitted.payload.json",
    ):
        kind = name.split("__")[0]
        assert isinstance(github(kind, payload("github-octokit", name)), Ignored)


@pytest.mark.parametrize("folder", ["gitlab-docs", "gitlab-go"])
def test_gitlab_documented_and_recorded_payloads(folder: str) -> None:
    mr = payload(folder, "merge_request.json")
    event = gitlab("Merge Request Hook", mr)
    attrs = mr["object_attributes"]
    if isinstance(event, MergeRequestEvent):
        assert event.number == str(attrs["iid"])
        assert event.repository == mr["project"]["path_with_namespace"]
    push = payload(folder, "push.json")
    pushed = gitlab("Push Hook", push)
    assert isinstance(pushed, PushEvent)
    assert (
        pushed.sha == push["after"] and pushed.repository == push["project"]["path_with_namespace"]
    )
    assert isinstance(gitlab("Tag Push Hook", payload(folder, "tag_push.json")), Ignored)
    assert isinstance(gitlab("Note Hook", payload(folder, "note_merge_request.json")), Ignored)


def test_gitlab_retargeted_merge_request_is_reviewed_again() -> None:
    """``update`` with ``changes.target_branch`` (docs: webhook_events.md, Merge
    request events: ``changes`` lists what changed, ``previous``/``current``)."""
    body = payload("gitlab-docs", "merge_request.json")
    body["object_attributes"]["action"] = "update"
    body["object_attributes"].pop("oldrev", None)
    body["changes"] = {"title": {"previous": "a", "current": "b"}}
    assert isinstance(gitlab("Merge Request Hook", body), Ignored)
    body["changes"] = {"target_branch": {"previous": "main", "current": "release"}}
    event = gitlab("Merge Request Hook", body)
    assert isinstance(event, MergeRequestEvent) and event.action == "update"


# --- PyGithub's recorded answers through the GitHub adapter --------------------


class RecordedGitHub(JsonServer):
    """Answers each endpoint with its recorded real answer (api.github.com URLs
    pointed at this server, which PyGithub then follows)."""

    def __init__(self) -> None:
        super().__init__()
        selected = RECORDINGS / "pygithub-replay" / "selected.json"
        self.recorded: dict[str, Any] = json.loads(selected.read_text(encoding="utf-8"))
        self.used: list[str] = []
        r = r"/repos/[^/]+/[^/]+"
        routes = [
            ("GET", r"/user", "user"),
            ("GET", r, "repo"),
            ("GET", r + r"/pulls/\d+", "pull"),
            ("GET", r + r"/pulls", "pulls_list"),
            ("GET", r + r"/compare/.+", "compare"),
            ("GET", r + r"/issues/\d+", "issue"),
            ("GET", r + r"/issues/\d+/comments", "issue_comments"),
            ("POST", r + r"/issues/\d+/comments", "create_comment"),
            ("GET", r + r"/issues/comments/\d+", "get_comment"),
            ("PATCH", r + r"/issues/comments/\d+", "edit_comment"),
            ("GET", r + r"/commits/\w+", "commit"),
            ("GET", r + r"/commits/\w+/pulls", "commit_pulls"),
            ("POST", r + r"/statuses/\w+", "create_status"),
            ("GET", r + r"/branches/.+", "branch"),
            ("GET", r + r"/contents/.+", "contents"),
            ("GET", r + r"/git/refs?/heads/.+", "get_ref"),
            ("PATCH", r + r"/git/refs/heads/.+", "edit_ref"),
            ("GET", r + r"/git/commits/\w+", "git_commit"),
            ("POST", r + r"/git/blobs", "create_blob"),
            ("POST", r + r"/git/trees", "create_tree"),
            ("POST", r + r"/git/commits", "create_git_commit"),
        ]
        for method, pattern, name in routes:
            self.route(method, pattern, self._answer(name))

    def _answer(self, name: str) -> Any:
        def handler(request: Request) -> Reply:
            self.used.append(name)
            return int(self.recorded[name]["status"]), self.body(name)

        return handler

    def body(self, name: str) -> Any:
        text = json.dumps(self.recorded[name]["body"])
        return json.loads(text.replace("https://api.github.com", self.base))


@pytest.fixture
def recorded() -> Iterator[tuple[RecordedGitHub, GitHubForge]]:
    server = RecordedGitHub()
    server.start()
    forge = GitHubForge(server.base, "PyGithub/PyGithub", "ghp_replay", write_interval=None)
    yield server, forge
    server.stop()


def test_recorded_pull_request_and_comments(recorded: tuple[RecordedGitHub, GitHubForge]) -> None:
    server, forge = recorded
    pull, compare = server.body("pull"), server.body("compare")
    mr = forge.merge_request(str(pull["number"]))
    assert mr.number == str(pull["number"]) and mr.head_sha == pull["head"]["sha"]
    assert mr.base_sha == compare["merge_base_commit"]["sha"]
    assert mr.author == pull["user"]["login"] and mr.title == pull["title"]
    assert mr.from_fork == (pull["head"]["repo"]["full_name"] != pull["base"]["repo"]["full_name"])
    assert mr.state == ("merged" if pull["merged_at"] else pull["state"].replace("open", "open"))
    comments = forge.comments(mr)
    recorded_comments = server.body("issue_comments")
    assert [(c.id, c.author) for c in comments] == [
        (str(c["id"]), c["user"]["login"]) for c in recorded_comments
    ]
    assert forge.add_comment(mr, "hello") == str(server.body("create_comment")["id"])
    forge.edit_comment(mr, comments[0].id, "edited")
    assert forge.bot_user() == server.body("user")["login"]
    forge.set_status(mr.head_sha, "wishbot/plan", "success", "1 image to add")
    assert {"pull", "compare", "issue_comments", "create_comment", "edit_comment"} <= set(
        server.used
    )
    assert "create_status" in server.used


def test_recorded_files_branch_and_commit(recorded: tuple[RecordedGitHub, GitHubForge]) -> None:
    server, forge = recorded
    contents = server.body("contents")
    data = forge.read_file(contents["path"], "topic")
    assert data == base64.b64decode(contents["content"])
    name, sha = forge.default_branch()
    assert (name, sha) == (
        server.body("repo")["default_branch"],
        server.body("branch")["commit"]["sha"],
    )
    new = forge.commit_files("topic", {"catalog.json": b"{}\n"}, "wishbot: catalog")
    assert new == server.body("create_git_commit")["sha"]
    assert server.used[-4:] == ["create_blob", "create_tree", "create_git_commit", "edit_ref"]


def test_recorded_answers_and_the_fake_agree_on_the_fields_wishbot_reads() -> None:
    """The fake GitHub answers with (at least) the fields the real answers carry
    that the adapter reads, so passing against the fake means something."""
    recorded = json.loads((RECORDINGS / "pygithub-replay" / "selected.json").read_text())
    fake = FakeGitHub()
    fake.repo.commit("main", {"wishlist.yaml": b"version: 1\n"}, "initial")
    fake.repo.branch("feature", "main")
    fake.repo.commit("feature", {"wishlist.yaml": b"version: 1\ninput: []\n"}, "change")
    pull = fake._pull_json(fake.open_pull("feature"))
    real = copy.deepcopy(recorded["pull"]["body"])
    for key in ("number", "title", "state", "draft", "merged_at", "merge_commit_sha", "html_url"):
        assert key in real and key in pull, key
    for side in ("head", "base"):
        for key in ("ref", "sha", "repo"):
            assert key in real[side] and key in pull[side], (side, key)
    real_contents = recorded["contents"]["body"]
    for key in ("type", "encoding", "size", "content", "sha", "path"):
        assert key in real_contents, key


# --- recorded deliveries through the webhook server ------------------------------


def test_recorded_deliveries_drive_the_webhook_server(tmp_path: Path) -> None:
    """GitHub's and GitLab's own example deliveries, byte for byte, signed as the
    forges sign them: each queues a review that comments on the fake forge."""
    github_body = (RECORDINGS / "github-octokit" / "pull_request__opened.payload.json").read_bytes()
    gitlab_body = (RECORDINGS / "gitlab-docs" / "merge_request.json").read_bytes()
    gh_repo = json.loads(github_body)["repository"]["full_name"]
    gl_repo = json.loads(gitlab_body)["project"]["path_with_namespace"]
    gh, gl = FakeGitHub(gh_repo), FakeGitLab(gl_repo)
    for fake in (gh, gl):
        fake.start()
        fake.repo.commit("main", {"wishlist.yaml": WISHLIST}, "initial")
        fake.repo.branch("feature", "main")
        fake.repo.commit("feature", {"wishlist.yaml": CHANGED}, "change")
    gh.open_pull("feature")
    gh.open_pull("feature")  # the recorded delivery names pull request #2
    gl.open_mr("feature")  # and merge request !1

    def forge_for(kind: str, repository: str) -> Forge:
        if kind == "github":
            return GitHubForge(gh.api_url, repository, gh.token, write_interval=None)
        return GitLabForge(gl.url, repository, gl.token)

    secret = "recorded-secret"
    server = WebhookServer(
        Config(listen="127.0.0.1:0", repositories=(gh_repo, gl_repo)),
        secret=secret,
        queue=Queue(tmp_path / "queue.sqlite"),
        journal=Journal(tmp_path / "journal.sqlite"),
        pipeline=RecordingPipeline(),
        forge_for=forge_for,
        poll=0.05,
        backoff=0.1,
    )
    server.start(workers=True)
    try:
        host, port = server.address
        signature = "sha256=" + hmac.new(secret.encode(), github_body, hashlib.sha256).hexdigest()
        deliveries = [
            (github_body, {"X-GitHub-Event": "pull_request", "X-Hub-Signature-256": signature}),
            (gitlab_body, {"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": secret}),
        ]
        for body, headers in deliveries:
            request = urllib.request.Request(
                f"http://{host}:{port}/webhook",
                data=body,
                headers={"Content-Type": "application/json", **headers},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert answer.status == 202
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (gh.pulls[2].comments and gl.mrs[1].notes):
            time.sleep(0.05)
        assert [c["body"].split("\n")[0] for c in gh.pulls[2].comments] == ["<!-- wishbot:plan -->"]
        assert [n["body"].split("\n")[0] for n in gl.mrs[1].notes] == ["<!-- wishbot:plan -->"]
    finally:
        server.stop()
        gh.stop()
        gl.stop()

"""The forges' unkind answers, reproduced by the fakes and handled by wishbot:
files over GitHub's 1 MB contents limit, merge requests from GitLab forks,
GitLab's status transitions, protected default branches, secondary rate
limits, and a catalog branch of the bot's own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fake_gitlab import FORK_ID, PROJECT_ID
from forge_sites import CHANGED, GitHubSite, GitLabSite, RecordingPipeline

from bot.config import Config
from bot.errors import ForgeError
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.runtime.journal import Journal
from bot.runtime.pipeline_api import PLAN_MARKER, PUBLISH_MARKER
from bot.runtime.watcher import Watcher
from bot.runtime.workflow import PLAN, PUBLISH, VALIDATE, on_merge_request, on_push

CONFIG = Config(catalog_dir="catalog")


def big_catalog(size: int = 2 * 1024 * 1024) -> bytes:
    """A catalog.json of about ``size`` bytes (≈ 2,000 images)."""
    path = "/cvmfs/unpacked.example.org/registry.hub.docker.com/library/x:1"
    one = len(json.dumps({"path": path, "digest": "sha256:" + "0" * 64}, indent=1)) + 2
    images = [{"path": path, "digest": f"sha256:{n:064x}"} for n in range(size // one + 1)]
    return json.dumps({"images": images}, indent=1).encode()


@pytest.fixture
def gitlab() -> Iterator[GitLabSite]:
    site = GitLabSite()
    yield site
    site.fake.stop()


@pytest.fixture
def github() -> Iterator[GitHubSite]:
    site = GitHubSite()
    yield site
    site.fake.stop()


# --- large files ---------------------------------------------------------------


def test_github_contents_api_answers_no_content_over_one_megabyte(github: GitHubSite) -> None:
    github.fake.repo.commit("main", {"catalog.json": b"x" * (1024 * 1024 + 1)}, "big")
    answer = requests.get(
        f"{github.fake.repo_url}/contents/catalog.json",
        headers={"Authorization": f"token {github.fake.token}"},
        timeout=10,
    ).json()
    assert (answer["encoding"], answer["content"]) == ("none", "")


@pytest.mark.parametrize("kind", ["gitlab", "github"])
def test_a_two_megabyte_catalog_round_trips(kind: str, request: Any) -> None:
    site = request.getfixturevalue(kind)
    catalog = big_catalog()
    assert len(catalog) > 2 * 1024 * 1024
    sha = site.forge.commit_files("main", {"catalog/catalog.json": catalog}, "catalog")
    assert site.forge.read_file("catalog/catalog.json", sha) == catalog
    # unchanged bytes: no new commit (the comparison reads the big file back too)
    assert site.forge.commit_files("main", {"catalog/catalog.json": catalog}, "again") == sha
    changed = catalog.replace(b"library/x:1", b"library/y:2", 1)
    assert site.forge.commit_files("main", {"catalog/catalog.json": changed}, "m") != sha
    assert site.forge.read_file("catalog/catalog.json", "main") == changed


# --- GitLab: statuses --------------------------------------------------------


def test_gitlab_status_transitions_as_gitlab_answers(gitlab: GitLabSite) -> None:
    """pending twice: 400 'Cannot transition status via :enqueue from :pending'
    (harmless to the adapter); a finished state twice: 201, a new job each time."""
    head = gitlab.branch("feature", {"wishlist.yaml": CHANGED})
    url = f"{gitlab.fake.url}/api/v4/projects/{PROJECT_ID}/statuses/{head}"
    headers = {"PRIVATE-TOKEN": gitlab.fake.token}

    def post(state: str) -> requests.Response:
        body = {"state": state, "name": "wishbot/plan", "ref": "feature"}
        return requests.post(url, json=body, headers=headers, timeout=10)

    assert post("pending").status_code == 201
    again = post("pending")
    assert again.status_code == 400
    assert again.json()["message"] == "Cannot transition status via :enqueue from :pending"
    assert post("success").status_code == 201
    assert post("success").status_code == 201
    assert [s["status"] for s in gitlab.fake.statuses[head]] == ["success", "success"]
    # the adapter takes the pending repeat as what it is: already pending
    gitlab.forge.set_status(head, "wishbot/validate", "pending", "v", ref="feature")
    gitlab.forge.set_status(head, "wishbot/validate", "pending", "v", ref="feature")
    assert gitlab.status(head, "wishbot/validate") == "pending"


def test_gitlab_parent_refuses_a_status_on_a_fork_commit_without_pipeline(
    gitlab: GitLabSite,
) -> None:
    head = gitlab.branch("evil", {"wishlist.yaml": CHANGED})
    gitlab.fake.open_mr("evil", fork=True)
    answer = requests.post(
        f"{gitlab.fake.url}/api/v4/projects/{PROJECT_ID}/statuses/{head}",
        json={"state": "pending", "name": "wishbot/plan"},
        headers={"PRIVATE-TOKEN": gitlab.fake.token},
        timeout=10,
    )
    assert answer.status_code == 404
    assert answer.json()["message"] == "404 References for commit Not Found"


def review_fork(site: GitLabSite) -> tuple[str, Any]:
    """Review a fork's merge request twice: one comment, statuses where they may go."""
    forge = site.forge
    head = site.branch("evil", {"wishlist.yaml": CHANGED})
    iid = site.fake.open_mr("evil", fork=True).iid
    pipeline = RecordingPipeline()
    outcome = on_merge_request(forge, pipeline, forge.merge_request(str(iid)), CONFIG)
    assert outcome.ok, outcome
    assert pipeline.reviews[0][2] is False  # untrusted
    notes = site.comment_bodies(str(iid))
    assert len(notes) == 1 and notes[0].startswith(PLAN_MARKER)
    # once more (a new review of the same head): still one comment
    on_merge_request(forge, pipeline, forge.merge_request(str(iid)), CONFIG)
    assert len(site.comment_bodies(str(iid))) == 1
    return head, site.fake.statuses.get(head, [])


def test_gitlab_fork_merge_request_statuses_go_to_the_fork(gitlab: GitLabSite) -> None:
    """serve/watch: no pipeline in the parent; the statuses go to the fork's
    branch (gitlab-org/gitlab#374133), where the merge request shows them."""
    gitlab.fake.fork_role = "developer"
    _, statuses = review_fork(gitlab)
    assert {(s["name"], s["status"]) for s in statuses} == {
        (VALIDATE, "success"),
        (PLAN, "success"),
    }
    assert {(s["project_id"], s["ref"]) for s in statuses} == {(FORK_ID, "evil")}


def test_gitlab_fork_merge_request_in_a_parent_pipeline(gitlab: GitLabSite) -> None:
    """wishbot ci in a merge-request pipeline run in the parent project: the
    statuses join that pipeline (ref refs/merge-requests/<iid>/head)."""
    head = gitlab.branch("evil-ci", {"wishlist.yaml": CHANGED})
    pipeline_id = gitlab.fake.run_pipeline(head, "refs/merge-requests/1/head")
    forge = GitLabForge(
        gitlab.fake.url, gitlab.fake.project, gitlab.fake.token, pipeline=(head, pipeline_id)
    )
    gitlab.fake.repo.branches.pop("evil-ci")
    gitlab.fake.repo.branches["evil"] = head
    iid = gitlab.fake.open_mr("evil", fork=True).iid
    outcome = on_merge_request(forge, RecordingPipeline(), forge.merge_request(str(iid)), CONFIG)
    assert outcome.ok
    statuses = gitlab.fake.statuses[head]
    assert {(s["project_id"], s["pipeline_id"], s["status"]) for s in statuses} == {
        (PROJECT_ID, pipeline_id, "success")
    }
    assert len(gitlab.comment_bodies(str(iid))) == 1


def test_gitlab_fork_merge_request_with_the_mr_head_pipeline(gitlab: GitLabSite) -> None:
    """serve/watch, when the merge request's head pipeline runs in the parent
    (GET merge request: head_pipeline): the statuses join it."""
    head = gitlab.branch("evil", {"wishlist.yaml": CHANGED})
    iid = gitlab.fake.open_mr("evil", fork=True).iid
    pipeline_id = gitlab.fake.run_parent_mr_pipeline(iid)
    on_merge_request(
        gitlab.forge, RecordingPipeline(), gitlab.forge.merge_request(str(iid)), CONFIG
    )
    assert {s["pipeline_id"] for s in gitlab.fake.statuses[head]} == {pipeline_id}
    assert len(gitlab.comment_bodies(str(iid))) == 1


def test_gitlab_fork_the_bot_cannot_write_to_still_gets_its_comment(gitlab: GitLabSite) -> None:
    _, statuses = review_fork(gitlab)
    assert statuses == []  # logged: the fork refused; the review itself went on


# --- protected default branches -------------------------------------------------


def merged(site: Any) -> tuple[str, str]:
    site.branch("feature", {"wishlist.yaml": CHANGED})
    number = site.open("feature")
    return number, site.merge(number)


@pytest.mark.parametrize("kind", ["gitlab", "github"])
def test_a_protected_default_branch_leaves_the_publish_status_honest(
    kind: str, request: Any
) -> None:
    site = request.getfixturevalue(kind)
    if kind == "gitlab":
        site.fake.role = "developer"  # GitLab: only Maintainers push to the default branch
    else:
        site.fake.protected["main"] = [VALIDATE]  # "Require status checks to pass"
    number, merge_sha = merged(site)
    outcome = on_push(site.forge, RecordingPipeline(), "main", merge_sha, CONFIG)
    assert outcome.action == "published" and not outcome.ok and not outcome.retry
    assert site.head("main") == merge_sha  # nothing committed
    status = site.fake.status_of(merge_sha, PUBLISH)
    assert status["status" if kind == "gitlab" else "state"] in ("failed", "failure")
    assert status["description"].startswith("images published, catalog not committed")
    (note,) = site.comment_bodies(number)
    assert note.startswith(PUBLISH_MARKER) and "catalog\\_branch" in note
    assert ("HTTP 403" if kind == "gitlab" else "HTTP 422") in note


@pytest.mark.parametrize("kind", ["gitlab", "github"])
def test_the_catalog_branch_works_with_a_protected_default_branch(kind: str, request: Any) -> None:
    site = request.getfixturevalue(kind)
    if kind == "gitlab":
        site.fake.role = "developer"
    else:
        site.fake.protected["main"] = [VALIDATE]
    config = Config(catalog_dir="catalog", catalog_branch="wishbot-catalog")
    _, merge_sha = merged(site)
    outcome = on_push(site.forge, RecordingPipeline(), "main", merge_sha, config)
    assert outcome.ok and outcome.catalog_commit
    assert site.head("main") == merge_sha
    assert site.head("wishbot-catalog") == outcome.catalog_commit
    assert site.forge.read_file("catalog/catalog.json", "wishbot-catalog") == b'{"images": 1}\n'
    # a later review plans against the catalog on that branch
    site.branch("next", {"wishlist.yaml": CHANGED + b"  - docker.io/library/b:1\n"})
    pipeline = RecordingPipeline()
    mr = site.forge.merge_request(site.open("next"))

    seen: list[bytes | None] = []
    original = pipeline.review

    def review(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("catalog"))
        return original(*args, **kwargs)

    pipeline.review = review  # type: ignore[method-assign]
    on_merge_request(site.forge, pipeline, mr, config)
    assert seen == [b'{"images": 1}\n']


# --- rate limits ------------------------------------------------------------------


def test_github_secondary_rate_limit_is_waited_out(github: GitHubSite) -> None:
    """403 with Retry-After: PyGithub's own retry policy waits, then goes on."""
    github.fake.secondary_limit_next = [1]
    started = time.monotonic()
    assert github.forge.default_branch()[0] == "main"
    assert time.monotonic() - started >= 1.0
    assert github.fake.secondary_limit_next == []


def test_github_rate_limit_waits_are_bounded(github: GitHubSite) -> None:
    """A Retry-After of 100 s is waited for at most max_rate_limit_wait (here 1 s)."""
    forge = GitHubForge(
        github.fake.api_url,
        github.fake.full_name,
        github.fake.token,
        write_interval=None,
        max_rate_limit_wait=1,
    )
    github.fake.secondary_limit_next = [100]
    started = time.monotonic()
    assert forge.default_branch()[0] == "main"
    assert 1.0 <= time.monotonic() - started < 10


def test_github_forge_error_names_the_protected_branch_hint(github: GitHubSite) -> None:
    github.fake.protected["main"] = []
    with pytest.raises(ForgeError, match="through a pull request") as info:
        github.forge.commit_files("main", {"catalog.json": b"{}"}, "m")
    assert "catalog_branch" in str(info.value.hint)


# --- retargeting --------------------------------------------------------------------


def test_watch_reviews_a_retargeted_request_again(github: GitHubSite, tmp_path: Any) -> None:
    github.fake.repo.branch("release", "main")
    github.branch("feature", {"wishlist.yaml": CHANGED})
    number = github.open("feature")
    pipeline = RecordingPipeline()
    watcher = Watcher(github.forge, pipeline, CONFIG, Journal(), tmp_path / "watch.json")
    assert "reviewed" in [o.action for o in watcher.poll_once()]
    assert watcher.poll_once() == []
    github.fake.pulls[int(number)].base_branch = "release"  # same head, new base
    assert [o.action for o in watcher.poll_once()] == ["reviewed"]
    assert len(pipeline.reviews) == 2


# --- wishbot ci with the Actions token on a fork's pull request ------------------------


def run_ci(env: dict[str, str], cwd: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "ci"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ci_pull_request_target_from_a_fork_with_the_actions_token(
    github: GitHubSite, tmp_path: Any
) -> None:
    """As the template runs it: pull_request_target, the Actions token (no /user),
    WISHBOT_BOT_LOGIN=github-actions[bot]; two runs, one comment; a comment by
    another account quoting the marker at its start is left alone."""
    fake = github.fake
    fake.bot_login = None
    fake.token_login = "github-actions[bot]"
    base = (
        b"version: 1\nuser: t\ncvmfs_repo: 'unpacked.example.org'\n"
        b"output_format: 'r.example.org/$(image)'\ninput: []\n"
    )
    fake.repo.commit("main", {"wishlist.yaml": base}, "a valid wishlist")
    fake.repo.branch("evil", "main")
    head = fake.repo.commit("evil", {"wishlist.yaml": base.replace(b"user: t", b"user: u")}, "x")
    pull = fake.open_pull("evil", fork=True)
    fake.human_comment(pull.number, f"{PLAN_MARKER}\nquoted by someone", "another-bot[bot]")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "opened", "pull_request": {"number": pull.number}}))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request_target",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REPOSITORY": fake.full_name,
        "GITHUB_API_URL": fake.api_url,
        "GITHUB_TOKEN": fake.token,
        "WISHBOT_FORGE": "github",
        "WISHBOT_BOT_LOGIN": "github-actions[bot]",
        "WISHBOT_GITHUB_WRITE_INTERVAL": "0",
    }
    for _ in range(2):
        done = run_ci(env, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert fake.token not in done.stdout + done.stderr
    bodies = [(c["author"], c["body"].split("\n")[0]) for c in pull.comments]
    assert bodies == [
        ("another-bot[bot]", PLAN_MARKER),
        ("github-actions[bot]", PLAN_MARKER),
    ]
    assert pull.comments[0]["body"].endswith("quoted by someone")
    assert fake.status_of(head, PLAN)["state"] == "success"  # type: ignore[index]
    # without the setting the job stops with what to set, never a guess
    env.pop("WISHBOT_BOT_LOGIN")
    done = run_ci(env, tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "WISHBOT_BOT_LOGIN" in done.stderr
    assert len(pull.comments) == 2


def test_gitlab_watch_finds_the_parent_pipeline_of_a_fork_request(
    gitlab: GitLabSite, tmp_path: Any
) -> None:
    """The merge-request list has no head_pipeline: the poller still joins it."""
    head = gitlab.branch("evil", {"wishlist.yaml": CHANGED})
    iid = gitlab.fake.open_mr("evil", fork=True).iid
    pipeline_id = gitlab.fake.run_parent_mr_pipeline(iid)
    watcher = Watcher(gitlab.forge, RecordingPipeline(), CONFIG, Journal(), tmp_path / "w.json")
    assert "reviewed" in [o.action for o in watcher.poll_once()]
    assert {s["pipeline_id"] for s in gitlab.fake.statuses[head]} == {pipeline_id}

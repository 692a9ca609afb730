"""Webhook payloads (shaped like the forges' documented examples) to neutral events,
and the CI variables to a CI job."""

from __future__ import annotations

import json
from typing import Any

import pytest
from webhook_payloads import HEAD, OLD, ZERO, github_pull, github_push, gitlab_mr, gitlab_push

from bot.errors import UsageError
from bot.runtime.ci import ci_job
from bot.runtime.events import Ignored, MergeRequestEvent, PushEvent, parse_event


def parse(kind: str, payload: dict[str, Any]) -> object:
    header = "X-Gitlab-Event" if kind[0].isupper() else "X-GitHub-Event"
    return parse_event({header: kind}, json.dumps(payload).encode())


def test_gitlab_merge_request_actions() -> None:
    assert parse("Merge Request Hook", gitlab_mr("open")) == MergeRequestEvent(
        "gitlab", "group/wishlist", "7", "open", HEAD
    )
    assert isinstance(parse("Merge Request Hook", gitlab_mr("reopen")), MergeRequestEvent)
    updated = parse("Merge Request Hook", gitlab_mr("update", oldrev=OLD))
    assert isinstance(updated, MergeRequestEvent) and updated.action == "update"
    assert isinstance(parse("Merge Request Hook", gitlab_mr("update")), Ignored)
    ready = gitlab_mr("update")
    ready["changes"] = {"draft": {"previous": True, "current": False}}
    assert isinstance(parse("Merge Request Hook", ready), MergeRequestEvent)
    assert isinstance(parse("Merge Request Hook", gitlab_mr("approved")), Ignored)
    assert isinstance(parse("Merge Request Hook", gitlab_mr("close")), Ignored)
    merged = parse("Merge Request Hook", gitlab_mr("merge", merge_commit_sha=HEAD))
    assert merged == PushEvent("gitlab", "group/wishlist", "main", HEAD)


def test_gitlab_push() -> None:
    assert parse("Push Hook", gitlab_push("main", HEAD)) == PushEvent(
        "gitlab", "group/wishlist", "main", HEAD
    )
    assert isinstance(parse("Push Hook", gitlab_push("main", ZERO)), Ignored)
    skip = parse("Push Hook", gitlab_push("main", HEAD, "catalog [skip ci]"))
    assert isinstance(skip, Ignored) and "skip" in skip.reason
    tag = gitlab_push("main", HEAD)
    tag["ref"] = "refs/tags/v1"
    assert isinstance(parse("Push Hook", tag), Ignored)
    assert isinstance(parse("Pipeline Hook", gitlab_push("main", HEAD)), Ignored)


def test_github_pull_request_and_push() -> None:
    for action in ("opened", "synchronize", "reopened"):
        event = parse("pull_request", github_pull(action))
        assert event == MergeRequestEvent("github", "octo/wishlist", "12", action, HEAD)
    assert isinstance(parse("pull_request", github_pull("edited")), Ignored)
    assert isinstance(parse("pull_request", github_pull("labeled")), Ignored)
    assert isinstance(parse("pull_request", github_pull("closed")), Ignored)
    assert parse("pull_request", github_pull("closed", merged=True)) == PushEvent(
        "github", "octo/wishlist", "main", HEAD
    )
    assert parse("push", github_push("main", HEAD)) == PushEvent(
        "github", "octo/wishlist", "main", HEAD
    )
    assert isinstance(parse("push", github_push("main", ZERO, deleted=True)), Ignored)
    assert isinstance(parse("push", github_push("main", HEAD, message="[skip ci] cat")), Ignored)
    assert isinstance(parse("issues", github_push("main", HEAD)), Ignored)


def test_malformed_payloads_are_ignored_not_crashes() -> None:
    assert isinstance(parse_event({"X-GitHub-Event": "push"}, b"not json"), Ignored)
    assert isinstance(parse_event({"X-GitHub-Event": "push"}, b"[1, 2]"), Ignored)
    assert isinstance(parse_event({"X-GitHub-Event": "push"}, b'{"ref": "x"}'), Ignored)
    assert isinstance(parse_event({"X-Gitlab-Event": "Push Hook"}, b'{"project": 3}'), Ignored)
    assert isinstance(parse_event({}, b"{}"), Ignored)


def test_ci_job_gitlab() -> None:
    base = {
        "GITLAB_CI": "true",
        "CI_SERVER_URL": "https://gitlab.example.org",
        "CI_PROJECT_PATH": "group/wishlist",
        "CI_DEFAULT_BRANCH": "main",
        "CI_COMMIT_SHA": HEAD,
    }
    mr = ci_job({**base, "CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "7"})
    assert (mr.forge, mr.step, mr.number, mr.repository) == (
        "gitlab",
        "review",
        "7",
        "group/wishlist",
    )
    assert mr.pipeline is None  # no CI_PIPELINE_ID: GitLab picks the pipeline
    push = ci_job(
        {**base, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main", "CI_PIPELINE_ID": "91"}
    )
    assert (push.step, push.branch, push.sha) == ("push", "main", HEAD)
    assert push.pipeline == (HEAD, 91)
    other = ci_job({**base, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "feature"})
    assert other.step == "none"
    scheduled = ci_job({**base, "CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_BRANCH": "main"})
    assert scheduled.step == "maintain"
    with pytest.raises(UsageError, match="CI_MERGE_REQUEST_IID"):
        ci_job({**base, "CI_PIPELINE_SOURCE": "merge_request_event"})


def test_ci_job_gitlab_fork_merge_request() -> None:
    """The merge request is in CI_MERGE_REQUEST_PROJECT_PATH (the parent), also when
    the pipeline runs in the fork (CI_PROJECT_PATH): then its pipeline is not used."""
    fork_run = {
        "GITLAB_CI": "true",
        "CI_SERVER_URL": "https://gitlab.example.org",
        "CI_PROJECT_PATH": "mallory/wishlist",
        "CI_MERGE_REQUEST_PROJECT_PATH": "group/wishlist",
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_MERGE_REQUEST_IID": "7",
        "CI_COMMIT_SHA": HEAD,
        "CI_PIPELINE_ID": "93",
    }
    job = ci_job(fork_run)
    assert (job.repository, job.number, job.pipeline) == ("group/wishlist", "7", None)
    parent_run = ci_job({**fork_run, "CI_PROJECT_PATH": "group/wishlist"})
    assert (parent_run.repository, parent_run.pipeline) == ("group/wishlist", (HEAD, 93))


def test_ci_job_github() -> None:
    base = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "octo/wishlist",
        "GITHUB_API_URL": "https://api.github.com",
        "GITHUB_SHA": HEAD,
    }
    pr = ci_job({**base, "GITHUB_EVENT_NAME": "pull_request"}, json.dumps(github_pull("opened")))
    assert (pr.forge, pr.step, pr.number) == ("github", "review", "12")
    push = ci_job({**base, "GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/heads/main"})
    assert (push.step, push.branch, push.sha) == ("push", "main", HEAD)
    tag = ci_job({**base, "GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/tags/v1"})
    assert tag.step == "none"
    assert ci_job({**base, "GITHUB_EVENT_NAME": "schedule"}).step == "maintain"
    assert ci_job({**base, "GITHUB_EVENT_NAME": "workflow_dispatch"}).step == "none"
    with pytest.raises(UsageError):
        ci_job({**base, "GITHUB_EVENT_NAME": "pull_request"}, "{}")
    with pytest.raises(UsageError, match="not running in"):
        ci_job({})


def test_ci_job_github_edited_is_reviewed_only_when_retargeted() -> None:
    """pull_request_target ``edited``: a new base is reviewed, a new title is not."""
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "octo/wishlist",
        "GITHUB_EVENT_NAME": "pull_request_target",
    }
    retarget = {**github_pull("edited"), "changes": {"base": {"ref": {"from": "old"}}}}
    assert ci_job(env, json.dumps(retarget)).step == "review"
    title = {**github_pull("edited"), "changes": {"title": {"from": "old"}}}
    assert ci_job(env, json.dumps(title)).step == "none"

"""Webhook payloads (GitLab, GitHub) turned into neutral events.

Only what the bot acts on becomes an event; everything else is
:class:`Ignored` with a reason. Payloads are untrusted: they only say *which*
merge request or branch to look at; the workflow reads the facts (head sha,
fork or not, default branch) back from the forge's API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class MergeRequestEvent:
    """A merge request was opened, reopened or got new commits."""

    forge: str
    repository: str
    number: str
    action: str
    head_sha: str

    @property
    def key(self) -> str:
        return f"mr:{self.repository}:{self.number}:{self.head_sha}"


@dataclass(frozen=True)
class PushEvent:
    """A branch moved to ``sha``."""

    forge: str
    repository: str
    branch: str
    sha: str

    @property
    def key(self) -> str:
        return f"push:{self.repository}:{self.branch}:{self.sha}"


@dataclass(frozen=True)
class Ignored:
    reason: str


Event = MergeRequestEvent | PushEvent


def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value, looked up case-insensitively ('' when absent)."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return ""


def parse_event(headers: Mapping[str, str], body: bytes) -> Event | Ignored:
    """The neutral event of one (already authenticated) webhook delivery."""
    gitlab_kind = header(headers, "X-Gitlab-Event")
    github_kind = header(headers, "X-GitHub-Event")
    if not gitlab_kind and not github_kind:
        return Ignored("not a GitLab or GitHub webhook")
    try:
        payload = json.loads(body)
    except ValueError:
        return Ignored("the body is not JSON")
    if not isinstance(payload, dict):
        return Ignored("the body is not a JSON object")
    try:
        if gitlab_kind:
            return _gitlab(gitlab_kind, payload)
        return _github(github_kind, payload)
    except (KeyError, TypeError, AttributeError) as exc:
        return Ignored(f"malformed payload (missing {exc})")


def _branch(ref: str) -> str | None:
    return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None


def _gitlab(kind: str, payload: dict[str, Any]) -> Event | Ignored:
    project = str(payload["project"]["path_with_namespace"])
    if kind == "Merge Request Hook":
        attrs = payload["object_attributes"]
        action = str(attrs.get("action", ""))
        number = str(attrs["iid"])
        head = str((attrs.get("last_commit") or {}).get("id", ""))
        if action in ("open", "reopen"):
            return MergeRequestEvent("gitlab", project, number, action, head)
        if action == "update":
            changes = payload.get("changes") or {}
            ready = "draft" in changes or "work_in_progress" in changes
            # a new target branch (changes.target_branch) changes the diff: review again
            retarget = "target_branch" in changes
            if not attrs.get("oldrev") and not ready and not retarget:
                return Ignored("merge request update without new commits")
            return MergeRequestEvent("gitlab", project, number, action, head)
        if action == "merge":
            target = str(attrs.get("target_branch", ""))
            merged = str(attrs.get("merge_commit_sha") or "")
            if target and merged:
                return PushEvent("gitlab", project, target, merged)
            return Ignored("merged; the push to the target branch publishes")
        return Ignored(f"merge request action {action or 'none'!r} needs no work")
    if kind == "Push Hook":
        branch = _branch(str(payload.get("ref", "")))
        after = str(payload.get("after", ""))
        if branch is None:
            return Ignored("not a branch push")
        if after == ZERO_SHA or not after:
            return Ignored("branch deleted")
        for commit in payload.get("commits") or []:
            if commit.get("id") == after and "[skip ci]" in str(commit.get("message", "")):
                return Ignored("commit asks to skip CI")
        return PushEvent("gitlab", project, branch, after)
    return Ignored(f"GitLab event {kind!r} needs no work")


def _github(kind: str, payload: dict[str, Any]) -> Event | Ignored:
    repository = str(payload["repository"]["full_name"])
    if kind == "pull_request":
        action = str(payload.get("action", ""))
        pr = payload["pull_request"]
        number = str(pr.get("number", payload.get("number")))
        head = str(pr["head"]["sha"])
        if action in ("opened", "reopened", "synchronize", "ready_for_review"):
            return MergeRequestEvent("github", repository, number, action, head)
        if action == "edited" and "base" in (payload.get("changes") or {}):
            # retargeted: the base branch changed (changes.base.ref.from), so does the diff
            return MergeRequestEvent("github", repository, number, action, head)
        if action == "closed" and pr.get("merged"):
            merged = str(pr.get("merge_commit_sha") or "")
            target = str(pr["base"]["ref"])
            if merged:
                return PushEvent("github", repository, target, merged)
            return Ignored("merged; the push to the target branch publishes")
        return Ignored(f"pull request action {action or 'none'!r} needs no work")
    if kind == "push":
        branch = _branch(str(payload.get("ref", "")))
        after = str(payload.get("after", ""))
        if branch is None:
            return Ignored("not a branch push")
        if payload.get("deleted") or after == ZERO_SHA or not after:
            return Ignored("branch deleted")
        head_commit = payload.get("head_commit") or {}
        if "[skip ci]" in str(head_commit.get("message", "")):
            return Ignored("commit asks to skip CI")
        return PushEvent("github", repository, branch, after)
    if kind == "ping":
        return Ignored("ping")
    return Ignored(f"GitHub event {kind!r} needs no work")

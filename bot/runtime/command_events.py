"""Webhook payloads for comment commands and the dashboard, as neutral events.

Self-contained on purpose (the forge packages will own their payload parsing;
this module moves there whole): a GitLab note on a merge request (``Note
Hook``, ``object_kind: note``, ``noteable_type: MergeRequest``), a GitHub
``issue_comment`` on a pull request, and an edit of an issue's body (GitLab
``Issue Hook`` with ``changes.description``, GitHub ``issues`` ``edited``
with ``changes.body.from``) that may be the dashboard.

Only a *new* comment can be a command: GitLab notes carry ``action``
(``create`` / ``update``, docs "Webhook events", Comment events), GitHub
``issue_comment`` has ``created`` / ``edited`` / ``deleted``. An edit is
parsed (``created=False``) so the rules can say why it is not run.
Payloads are untrusted beyond *which* comment or issue: the handler reads
permissions and issue bodies back from the forge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.core.commands import CommentEvent

#: the most of a comment body kept from a payload (a command is its short first line)
MAX_BODY = 4096


@dataclass(frozen=True)
class DashboardEdit:
    """An issue's body was edited by ``editor``: maybe a box ticked on the dashboard."""

    forge: str
    repository: str
    number: str
    before: str
    editor: str
    editor_id: str

    @property
    def key(self) -> str:
        return f"dashboard:{self.repository}:{self.number}"


@dataclass(frozen=True)
class WaitingPublication:
    """A publication was queued while ``behind`` runs: its status says so (``pending``)."""

    forge: str
    repository: str
    branch: str
    sha: str
    behind: str

    @property
    def key(self) -> str:
        return f"waiting:{self.repository}:{self.branch}:{self.sha}"


CommandDelivery = CommentEvent | DashboardEdit | WaitingPublication


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), "")


def parse_command_delivery(headers: Mapping[str, str], body: bytes) -> CommandDelivery | None:
    """The comment or issue edit of one (authenticated) delivery; None for anything else."""
    gitlab_kind = _header(headers, "X-Gitlab-Event")
    github_kind = _header(headers, "X-GitHub-Event")
    if gitlab_kind not in ("Note Hook", "Issue Hook") and github_kind not in (
        "issue_comment",
        "issues",
    ):
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    try:
        if gitlab_kind == "Note Hook":
            return _gitlab_note(payload)
        if gitlab_kind == "Issue Hook":
            return _gitlab_issue(payload)
        if github_kind == "issue_comment":
            return _github_comment(payload)
        return _github_issue(payload)
    except (KeyError, TypeError, AttributeError, ValueError):
        return None


def _gitlab_note(payload: dict[str, Any]) -> CommentEvent | None:
    attrs = payload["object_attributes"]
    if attrs.get("noteable_type") != "MergeRequest" or attrs.get("system"):
        return None
    action = attrs.get("action")
    # older GitLab sends no action: a note never updated is a new one
    created = action == "create" or (
        action is None and attrs.get("created_at") == attrs.get("updated_at")
    )
    user = payload.get("user") or {}
    return CommentEvent(
        forge="gitlab",
        repository=str(payload["project"]["path_with_namespace"]),
        number=str(payload["merge_request"]["iid"]),
        comment_id=str(int(attrs["id"])),
        author=str(user.get("username", "")),
        author_id=str(user.get("id", attrs.get("author_id", ""))),
        body=str(attrs.get("note", ""))[:MAX_BODY],
        created=created,
    )


def _gitlab_issue(payload: dict[str, Any]) -> DashboardEdit | None:
    attrs = payload["object_attributes"]
    description = (payload.get("changes") or {}).get("description")
    if attrs.get("action") != "update" or not isinstance(description, dict):
        return None
    user = payload.get("user") or {}
    return DashboardEdit(
        forge="gitlab",
        repository=str(payload["project"]["path_with_namespace"]),
        number=str(int(attrs["iid"])),
        before=str(description.get("previous") or ""),
        editor=str(user.get("username", "")),
        editor_id=str(user.get("id", "")),
    )


def _github_comment(payload: dict[str, Any]) -> CommentEvent | None:
    issue = payload["issue"]
    if "pull_request" not in issue:
        return None  # a comment on an issue, not on a pull request
    action = payload.get("action")
    if action not in ("created", "edited"):
        return None
    comment = payload["comment"]
    user = comment.get("user") or {}
    return CommentEvent(
        forge="github",
        repository=str(payload["repository"]["full_name"]),
        number=str(int(issue["number"])),
        comment_id=str(int(comment["id"])),
        author=str(user.get("login", "")),
        author_id=str(user.get("id", "")),
        body=str(comment.get("body") or "")[:MAX_BODY],
        created=action == "created",
    )


def _github_issue(payload: dict[str, Any]) -> DashboardEdit | None:
    body = (payload.get("changes") or {}).get("body")
    if payload.get("action") != "edited" or not isinstance(body, dict):
        return None
    issue = payload["issue"]
    if "pull_request" in issue:
        return None
    sender = payload.get("sender") or {}
    return DashboardEdit(
        forge="github",
        repository=str(payload["repository"]["full_name"]),
        number=str(int(issue["number"])),
        before=str(body.get("from") or ""),
        editor=str(sender.get("login", "")),
        editor_id=str(sender.get("id", "")),
    )


def to_payload(event: CommandDelivery) -> dict[str, Any]:
    """The event as a queue job's payload (JSON)."""
    if isinstance(event, CommentEvent):
        return {"event": "comment", **event.__dict__}
    if isinstance(event, WaitingPublication):
        return {"event": "waiting", **event.__dict__}
    return {"event": "dashboard", **event.__dict__}


def from_payload(payload: Mapping[str, Any]) -> CommandDelivery:
    """The event back from a queue job's payload."""
    fields = {k: v for k, v in payload.items() if k != "event"}
    if payload.get("event") == "comment":
        return CommentEvent(**fields)
    if payload.get("event") == "waiting":
        return WaitingPublication(**fields)
    return DashboardEdit(**fields)

"""Webhook payloads for comment commands and dashboard edits, in the recorded shapes.

The shapes are those of ``../shared/data/forge-recordings/``: GitLab's
``gitlab-docs/note_merge_request.json`` (docs "Webhook events", Comment
events) and GitHub's ``github-octokit/issue_comment__created.payload.json``
(octokit/webhooks payload examples), trimmed to the fields a handler may read
(``tests/test_commands_runtime.py`` checks the recorded files parse the same
way). A GitHub comment on a pull request carries ``issue.pull_request`` (REST
"Issue comments": "every pull request is an issue"); the GitLab Issue Hook
and GitHub ``issues`` ``edited`` shapes follow the same docs pages ("Issue
events": ``changes.description.previous/current``; ``issues`` event:
``changes.body.from``).
"""

from __future__ import annotations

from typing import Any


def gitlab_note(
    project: str, iid: int, note_id: int, body: str, user: str, user_id: int, action: str = "create"
) -> dict[str, Any]:
    return {
        "object_kind": "note",
        "event_type": "note",
        "user": {"id": user_id, "name": user, "username": user},
        "project_id": 42,
        "project": {"id": 42, "path_with_namespace": project},
        "object_attributes": {
            "id": note_id,
            "note": body,
            "noteable_type": "MergeRequest",
            "author_id": user_id,
            "created_at": "2026-11-30 10:00:00 UTC",
            "updated_at": "2026-11-30 10:00:00 UTC",
            "system": False,
            "action": action,
        },
        "merge_request": {"id": 1000 + iid, "iid": iid, "state": "opened"},
    }


def github_comment(
    repository: str, number: int, comment_id: int, body: str, login: str, action: str = "created"
) -> dict[str, Any]:
    owner = repository.split("/")[0]
    payload: dict[str, Any] = {
        "action": action,
        "issue": {
            "number": number,
            "pull_request": {"url": f"https://api.github.com/repos/{repository}/pulls/{number}"},
            "user": {"login": "alice"},
        },
        "comment": {"id": comment_id, "body": body, "user": {"login": login, "id": 4242}},
        "repository": {"full_name": repository, "owner": {"login": owner}},
        "sender": {"login": login, "id": 4242},
    }
    if action == "edited":
        payload["changes"] = {"body": {"from": "before"}}
    return payload


def gitlab_issue_edit(
    project: str, iid: int, previous: str, current: str, user: str, user_id: int
) -> dict[str, Any]:
    return {
        "object_kind": "issue",
        "event_type": "issue",
        "user": {"id": user_id, "name": user, "username": user},
        "project": {"id": 42, "path_with_namespace": project},
        "object_attributes": {"iid": iid, "action": "update", "description": current},
        "changes": {"description": {"previous": previous, "current": current}},
    }


def github_issue_edit(
    repository: str, number: int, before: str, after: str, login: str
) -> dict[str, Any]:
    return {
        "action": "edited",
        "issue": {"number": number, "body": after, "user": {"login": "wishbot[bot]"}},
        "changes": {"body": {"from": before}},
        "repository": {"full_name": repository},
        "sender": {"login": login, "id": 4242},
    }

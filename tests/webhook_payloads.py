"""Webhook payloads shaped like the forges' documented examples (trimmed)."""

from __future__ import annotations

from typing import Any

HEAD = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
OLD = "1f8a3f7b0fa3b1ac4cfd8e5e6a6c2b5d4e3f2a10"
ZERO = "0" * 40


def gitlab_mr(action: str, *, oldrev: str | None = None, **extra: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "id": 99,
        "iid": 7,
        "title": "Add alpine",
        "state": "opened" if action not in ("merge", "close") else action + "d",
        "action": action,
        "source_branch": "add-alpine",
        "target_branch": "main",
        "source_project_id": 14,
        "target_project_id": 14,
        "merge_commit_sha": None,
        "last_commit": {"id": HEAD, "message": "Add alpine", "author": {"name": "Alice"}},
        "url": "https://gitlab.example.org/group/wishlist/-/merge_requests/7",
        **extra,
    }
    if oldrev:
        attrs["oldrev"] = oldrev
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"id": 1, "username": "alice"},
        "project": {"id": 14, "path_with_namespace": "group/wishlist", "default_branch": "main"},
        "object_attributes": attrs,
        "changes": {},
    }


def gitlab_push(branch: str, after: str, message: str = "Merge branch 'x'") -> dict[str, Any]:
    return {
        "object_kind": "push",
        "event_name": "push",
        "before": OLD,
        "after": after,
        "ref": f"refs/heads/{branch}",
        "checkout_sha": after,
        "project": {"id": 14, "path_with_namespace": "group/wishlist"},
        "commits": [{"id": after, "message": message}],
        "total_commits_count": 1,
    }


def github_pull(action: str, *, merged: bool = False) -> dict[str, Any]:
    return {
        "action": action,
        "number": 12,
        "pull_request": {
            "number": 12,
            "state": "closed" if action == "closed" else "open",
            "merged": merged,
            "merge_commit_sha": HEAD if merged else None,
            "head": {"ref": "add-alpine", "sha": HEAD, "repo": {"full_name": "octo/wishlist"}},
            "base": {"ref": "main", "sha": OLD, "repo": {"full_name": "octo/wishlist"}},
        },
        "repository": {"full_name": "octo/wishlist", "default_branch": "main"},
        "sender": {"login": "alice"},
    }


def github_push(
    branch: str, after: str, *, deleted: bool = False, message: str = "x"
) -> dict[str, Any]:
    return {
        "ref": f"refs/heads/{branch}",
        "before": OLD,
        "after": after,
        "deleted": deleted,
        "head_commit": None if deleted else {"id": after, "message": message},
        "repository": {"full_name": "octo/wishlist", "default_branch": "main"},
    }

"""GitHub as a source of work: webhooks, GitHub Actions variables, its token.

Webhooks are signed: ``X-Hub-Signature-256`` is ``sha256=`` and the HMAC-SHA256
of the body under the shared secret; the event is named in
``X-GitHub-Event`` and each delivery has an ``X-GitHub-Delivery`` id. The API
adapter is :mod:`bot.forge.github`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bot.core.commands import CommentEvent
from bot.errors import UsageError
from bot.forge.events_model import (
    MAX_BODY,
    ZERO_SHA,
    CiJob,
    CommandEvent,
    DashboardEdit,
    Event,
    ForgeKindSpec,
    Ignored,
    MergeRequestEvent,
    PushEvent,
    branch_of,
    header,
    need,
)

if TYPE_CHECKING:
    from bot.config import Config
    from bot.forge.base import Forge

KIND = "github"
TOKEN_VARIABLES = ("GITHUB_TOKEN", "WISHBOT_FORGE_TOKEN")
_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")
REVIEWED = ("opened", "reopened", "synchronize", "ready_for_review")


def claims(headers: Mapping[str, str]) -> bool:
    return bool(header(headers, "X-Hub-Signature-256"))


def may_be_authentic(headers: Mapping[str, str], secret: str) -> bool:
    """The signature must at least look like one; :func:`verify` decides after the body."""
    signature = header(headers, "X-Hub-Signature-256").strip()
    return bool(secret) and _SIGNATURE.fullmatch(signature) is not None


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    signature = header(headers, "X-Hub-Signature-256")
    if not (signature and secret):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature.strip().encode(), expected.encode())


def delivery_id(headers: Mapping[str, str]) -> str | None:
    return header(headers, "X-GitHub-Delivery") or None


def event_name(headers: Mapping[str, str]) -> str:
    return header(headers, "X-GitHub-Event")


def parse_event(headers: Mapping[str, str], payload: dict[str, Any]) -> Event | Ignored:
    """The neutral event of one authenticated GitHub delivery's JSON object."""
    kind = event_name(headers)
    repository = str(payload["repository"]["full_name"])
    if kind == "ping":
        return Ignored("ping")
    parser = _PARSERS.get(kind)
    if parser is None:
        return Ignored(f"GitHub event {kind!r} needs no work")
    return parser(repository, payload)


def _pull_request(repository: str, payload: dict[str, Any]) -> Event | Ignored:
    action = str(payload.get("action", ""))
    pr = payload["pull_request"]
    number = str(pr.get("number", payload.get("number")))
    head = str(pr["head"]["sha"])
    # retargeted: the base branch changed (changes.base.ref.from), so does the diff
    retargeted = action == "edited" and "base" in (payload.get("changes") or {})
    if action in REVIEWED or retargeted:
        return MergeRequestEvent(KIND, repository, number, action, head)
    if action == "closed" and pr.get("merged"):
        merged = str(pr.get("merge_commit_sha") or "")
        target = str(pr["base"]["ref"])
        if merged:
            return PushEvent(KIND, repository, target, merged)
        return Ignored("merged; the push to the target branch publishes")
    return Ignored(f"pull request action {action or 'none'!r} needs no work")


def _push(repository: str, payload: dict[str, Any]) -> Event | Ignored:
    branch = branch_of(str(payload.get("ref", "")))
    after = str(payload.get("after", ""))
    if branch is None:
        return Ignored("not a branch push")
    if payload.get("deleted") or after == ZERO_SHA or not after:
        return Ignored("branch deleted")
    head_commit = payload.get("head_commit") or {}
    if "[skip ci]" in str(head_commit.get("message", "")):
        return Ignored("commit asks to skip CI")
    return PushEvent(KIND, repository, branch, after)


_PARSERS: dict[str, Callable[[str, dict[str, Any]], Event | Ignored]] = {
    "pull_request": _pull_request,
    "push": _push,
}


# --- GitHub Actions ----------------------------------------------------------------


def job_url(env: Mapping[str, str]) -> str:
    """The workflow run's page ('' if unknown)."""
    server, repository, run = (
        env.get("GITHUB_SERVER_URL", ""),
        env.get("GITHUB_REPOSITORY", ""),
        env.get("GITHUB_RUN_ID", ""),
    )
    if server and repository and run.isdigit():
        return f"{server.rstrip('/')}/{repository}/actions/runs/{run}"
    return ""


def ci_job(env: Mapping[str, str], event_text: str | None = None) -> CiJob | None:
    """The job GitHub Actions variables describe (None: not GitHub Actions)."""
    if not (env.get("GITHUB_ACTIONS") or env.get("GITHUB_EVENT_NAME")):
        return None
    name = env.get("GITHUB_EVENT_NAME", "")
    url = env.get("GITHUB_API_URL", "") or "https://api.github.com"
    repository = need(env, "GITHUB_REPOSITORY")
    if name in ("pull_request", "pull_request_target"):
        return _pull_request_job(url, repository, event_text)
    if name == "push":
        ref = need(env, "GITHUB_REF")
        branch = branch_of(ref)
        if branch is None:
            return CiJob(KIND, url, repository, "none", reason=f"{ref} is not a branch")
        return CiJob(KIND, url, repository, "push", branch=branch, sha=need(env, "GITHUB_SHA"))
    if name == "schedule":
        return CiJob(KIND, url, repository, "maintain", reason="scheduled workflow")
    return CiJob(KIND, url, repository, "none", reason=f"event {name!r} needs no work")


def _pull_request_job(url: str, repository: str, event_text: str | None) -> CiJob:
    if event_text is None:
        raise UsageError("GITHUB_EVENT_PATH is not set or cannot be read")
    try:
        event = json.loads(event_text)
        number = str(event["pull_request"]["number"])
    except (ValueError, KeyError, TypeError):
        raise UsageError("the GitHub event file has no pull_request.number") from None
    if event.get("action") == "edited" and "base" not in (event.get("changes") or {}):
        return CiJob(KIND, url, repository, "none", reason="edited, not retargeted")
    return CiJob(KIND, url, repository, "review", number=number)


def make(
    config: Config, repository: str, url: str, token: str | None, pipeline: tuple[str, int] | None
) -> Forge:
    from bot.forge.github import API_URL, GitHubForge

    interval = config.github_write_interval if config.github_write_interval > 0 else None
    return GitHubForge(
        url or API_URL,
        repository,
        token,
        timeout=config.timeout,
        write_interval=interval,
        max_rate_limit_wait=config.max_retry_after,
        bot_login=config.bot_login,
    )


# --- comments and issue edits (comment commands, the dashboard) --------------------


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


def parse_command(event: str, payload: dict[str, Any]) -> CommandEvent | None:
    """A comment on a pull request (``issue_comment``) or an issue's edited body
    (``issues``), else None."""
    if event == "issue_comment":
        return _github_comment(payload)
    if event == "issues":
        return _github_issue(payload)
    return None


SPEC = ForgeKindSpec(
    kind=KIND,
    claims=claims,
    may_be_authentic=may_be_authentic,
    verify=verify,
    delivery_id=delivery_id,
    event_name=event_name,
    parse_event=parse_event,
    parse_command=parse_command,
    ci_job=ci_job,
    job_url=job_url,
    token_variables=TOKEN_VARIABLES,
    make=make,
    request_paths=("/pull/",),
    blob_path="/blob/",
)

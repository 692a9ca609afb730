"""GitLab as a source of work: webhooks, GitLab CI variables, its token.

Webhooks authenticate with a shared secret token sent in ``X-Gitlab-Token``
(compared in constant time) and name their event in ``X-Gitlab-Event``; each
delivery has an ``X-Gitlab-Event-UUID``. The API adapter is
:mod:`bot.forge.gitlab`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bot.core.commands import CommentEvent
from bot.errors import ConfigError
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

KIND = "gitlab"
TOKEN_VARIABLES = ("GITLAB_TOKEN", "WISHBOT_FORGE_TOKEN")


def claims(headers: Mapping[str, str]) -> bool:
    return bool(header(headers, "X-Gitlab-Token"))


def may_be_authentic(headers: Mapping[str, str], secret: str) -> bool:
    """The token must be the secret: the headers alone prove it."""
    token = header(headers, "X-Gitlab-Token")
    return bool(token and secret) and hmac.compare_digest(token.encode(), secret.encode())


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    return may_be_authentic(headers, secret)


def delivery_id(headers: Mapping[str, str]) -> str | None:
    return header(headers, "X-Gitlab-Event-UUID") or None


def event_name(headers: Mapping[str, str]) -> str:
    return header(headers, "X-Gitlab-Event")


def parse_event(headers: Mapping[str, str], payload: dict[str, Any]) -> Event | Ignored:
    """The neutral event of one authenticated GitLab delivery's JSON object."""
    kind = event_name(headers)
    project = str(payload["project"]["path_with_namespace"])
    parser = _PARSERS.get(kind)
    if parser is None:
        return Ignored(f"GitLab event {kind!r} needs no work")
    return parser(project, payload)


def _merge_request(project: str, payload: dict[str, Any]) -> Event | Ignored:
    attrs = payload["object_attributes"]
    action = str(attrs.get("action", ""))
    number = str(attrs["iid"])
    head = str((attrs.get("last_commit") or {}).get("id", ""))
    if action in ("open", "reopen"):
        return MergeRequestEvent(KIND, project, number, action, head)
    if action == "update":
        if not _needs_review(attrs, payload.get("changes") or {}):
            return Ignored("merge request update without new commits")
        return MergeRequestEvent(KIND, project, number, action, head)
    if action == "merge":
        return _merged(project, attrs)
    return Ignored(f"merge request action {action or 'none'!r} needs no work")


def _needs_review(attrs: Mapping[str, Any], changes: Mapping[str, Any]) -> bool:
    """An update with new commits, out of draft, or retargeted (a new target branch,
    ``changes.target_branch``, changes the diff): review again."""
    ready = "draft" in changes or "work_in_progress" in changes
    return bool(attrs.get("oldrev")) or ready or "target_branch" in changes


def _merged(project: str, attrs: Mapping[str, Any]) -> Event | Ignored:
    target = str(attrs.get("target_branch", ""))
    merged = str(attrs.get("merge_commit_sha") or "")
    if target and merged:
        return PushEvent(KIND, project, target, merged)
    return Ignored("merged; the push to the target branch publishes")


def _push(project: str, payload: dict[str, Any]) -> Event | Ignored:
    branch = branch_of(str(payload.get("ref", "")))
    after = str(payload.get("after", ""))
    if branch is None:
        return Ignored("not a branch push")
    if after == ZERO_SHA or not after:
        return Ignored("branch deleted")
    for commit in payload.get("commits") or []:
        if commit.get("id") == after and "[skip ci]" in str(commit.get("message", "")):
            return Ignored("commit asks to skip CI")
    return PushEvent(KIND, project, branch, after)


_PARSERS: dict[str, Callable[[str, dict[str, Any]], Event | Ignored]] = {
    "Merge Request Hook": _merge_request,
    "Push Hook": _push,
}


# --- GitLab CI ---------------------------------------------------------------------


def job_url(env: Mapping[str, str]) -> str:
    return env.get("CI_JOB_URL", "")


def _pipeline(env: Mapping[str, str]) -> tuple[str, int] | None:
    sha, pipeline = env.get("CI_COMMIT_SHA", ""), env.get("CI_PIPELINE_ID", "")
    return (sha, int(pipeline)) if sha and pipeline.isdigit() else None


def ci_job(env: Mapping[str, str], event_text: str | None = None) -> CiJob | None:
    """The job GitLab CI variables describe (None: not GitLab CI)."""
    if not (env.get("GITLAB_CI") or env.get("CI_PIPELINE_SOURCE")):
        return None
    source = env.get("CI_PIPELINE_SOURCE", "")
    url = need(env, "CI_SERVER_URL")
    project = need(env, "CI_PROJECT_PATH")
    if source == "merge_request_event":
        return _merge_request_job(env, url, project)
    if source == "schedule":
        return CiJob(KIND, url, project, "maintain", reason="scheduled pipeline")
    branch = env.get("CI_COMMIT_BRANCH", "")
    if not branch:
        return CiJob(KIND, url, project, "none", reason="not a branch pipeline")
    if branch != env.get("CI_DEFAULT_BRANCH", ""):
        return CiJob(KIND, url, project, "none", reason=f"{branch} is not the default branch")
    sha = need(env, "CI_COMMIT_SHA")
    return CiJob(KIND, url, project, "push", branch=branch, sha=sha, pipeline=_pipeline(env))


def _merge_request_job(env: Mapping[str, str], url: str, project: str) -> CiJob:
    number = need(env, "CI_MERGE_REQUEST_IID")
    # the merge request lives in the target project; a fork's request may run its
    # pipeline in the fork (CI_PROJECT_PATH), whose pipeline the parent cannot use
    target = env.get("CI_MERGE_REQUEST_PROJECT_PATH", "") or project
    pipeline = _pipeline(env) if target == project else None
    return CiJob(KIND, url, target, "review", number=number, pipeline=pipeline)


def make(
    config: Config, repository: str, url: str, token: str | None, pipeline: tuple[str, int] | None
) -> Forge:
    from bot.forge.gitlab import GitLabForge

    if not url:
        raise ConfigError("forge_url is not set", hint="e.g. https://gitlab.example.org")
    return GitLabForge(url, repository, token, timeout=config.timeout, pipeline=pipeline)


# --- comments and issue edits (comment commands, the dashboard) --------------------


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


def parse_command(event: str, payload: dict[str, Any]) -> CommandEvent | None:
    """A note on a merge request (``Note Hook``) or an issue's edited description
    (``Issue Hook``), else None."""
    if event == "Note Hook":
        return _gitlab_note(payload)
    if event == "Issue Hook":
        return _gitlab_issue(payload)
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
    request_paths=("/-/merge_requests/", "/merge_requests/"),
    blob_path="/-/blob/",
)

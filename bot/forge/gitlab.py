"""GitLab (v4 REST API, through python-gitlab)."""

from __future__ import annotations

import base64
import itertools
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gitlab
import gitlab.exceptions
import requests

from bot.core.commands import Permission, gitlab_permission
from bot.errors import ForgeError
from bot.forge.base import (
    BranchRefused,
    Comment,
    Forge,
    Issue,
    Limits,
    MergeRequest,
    MergeRequestState,
    Reaction,
    StatusState,
    commit_message,
    cut,
)

_STATES: dict[StatusState, str] = {
    "pending": "pending",
    "running": "running",
    "success": "success",
    "failure": "failed",
    "error": "failed",
}
_MR_STATES: dict[str, MergeRequestState] = {
    "opened": "open",
    "locked": "open",
    "merged": "merged",
    "closed": "closed",
}

#: award emoji names (docs "Emoji reactions API") for the neutral reactions
_EMOJI: dict[Reaction, str] = {
    "+1": "thumbsup",
    "-1": "thumbsdown",
    "eyes": "eyes",
    "confused": "confused",
}
#: open issues read when looking for the dashboard
MAX_ISSUES = 500

log = logging.getLogger(__name__)


def _harmless_repeat(exc: gitlab.exceptions.GitlabError) -> bool:
    """GitLab answers 400 "Cannot transition status via :enqueue from :pending" (or
    ":run from :running") when a status is repeated while still open; the status
    already is what we asked for. (A 409 is a concurrent update: not harmless.)"""
    return exc.response_code == 400 and "Cannot transition status" in str(exc.error_message)


@dataclass(frozen=True)
class _ForkHead:
    """Where the statuses of a fork merge request's head go.

    GitLab sets a status only on a pipeline of the project it is posted to; the
    fork's commit is in no branch of the parent, so without a pipeline the parent
    answers 404 "References for commit Not Found" (gitlab-org/gitlab#374133).
    With a pipeline of the parent project (a merge-request pipeline run there,
    ``head_pipeline``) the status joins it; else it goes to the fork's branch.
    """

    source_project_id: int
    source_branch: str
    parent_pipeline_id: int | None


class _Gitlab(gitlab.Gitlab):
    """python-gitlab retrying a transient error twice, not ten times: its ten
    retries sleep 102 s in all (with the forge down, whatever the timeout); the
    queue retries the job later instead."""

    def http_request(self, verb: str, path: str, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("max_retries", 2)
        return super().http_request(verb, path, **kwargs)


class GitLabForge(Forge):
    """One GitLab project, e.g. ``GitLabForge("https://gitlab.example.org", "group/wishlist", token)``."""

    kind = "gitlab"
    # issue descriptions: 1 megabyte (docs "Issuable-like Rails models utilities",
    # "Important text fields")
    limits = Limits(
        comment_chars=100_000, description_chars=255, context_chars=255, issue_chars=1_048_576
    )

    def __init__(
        self,
        url: str,
        project: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        pipeline: tuple[str, int] | None = None,
    ):
        """``pipeline`` is ``(sha, pipeline id)`` of the CI job we run in: statuses on
        that sha are attached to that pipeline (GitLab may otherwise pick another)."""
        self._url = url.rstrip("/")
        self._project_path = project
        self._pipeline = pipeline
        self._gl = _Gitlab(
            self._url,
            private_token=token or None,
            timeout=timeout,
            retry_transient_errors=True,
            keep_base_url=True,
        )
        self._project_obj: Any = None
        self._user: str | None = None
        self._fork_heads: dict[str, _ForkHead] = {}

    def __repr__(self) -> str:
        return f"GitLabForge({self._url!r}, {self._project_path!r})"

    @property
    def repository(self) -> str:
        return self._project_path

    # --- plumbing -----------------------------------------------------------

    @contextmanager
    def _call(self, what: str, *, writing_branch: bool = False) -> Iterator[None]:
        """GitLab's errors as ForgeError; with ``writing_branch`` a 403 (a protected
        branch, or a role that may not push) is a :class:`BranchRefused`."""
        try:
            yield
        except gitlab.exceptions.GitlabError as exc:
            code = f"HTTP {exc.response_code}: " if exc.response_code else ""
            error = BranchRefused if writing_branch and exc.response_code == 403 else ForgeError
            raise error(
                f"GitLab {self._project_path}: {what} failed: {code}{cut(str(exc.error_message), 300)}",
                hint=_hint(exc.response_code, str(exc.error_message)),
                retryable=_retryable(exc.response_code),
            ) from None
        except requests.RequestException as exc:
            raise ForgeError(
                f"GitLab {self._project_path}: {what} failed: {type(exc).__name__}",
                hint="check forge_url and the network; the run can be retried",
            ) from None

    @property
    def _project(self) -> Any:
        if self._project_obj is None:
            with self._call("reading the project"):
                self._project_obj = self._gl.projects.get(self._project_path)
        return self._project_obj

    def _merge_request(self, data: Mapping[str, Any]) -> MergeRequest:
        diff_refs = data.get("diff_refs") or {}
        head = str(data.get("sha") or diff_refs.get("head_sha") or "")
        base = str(diff_refs.get("base_sha") or "") or self._merge_base(data, head)
        author = data.get("author") or {}
        from_fork = _from_fork(data)
        if from_fork and head:
            self._fork_heads[head] = _fork_head(data, head)
        return MergeRequest(
            id=str(data.get("id", "")),
            number=str(data["iid"]),
            title=str(data.get("title", "")),
            source_branch=str(data.get("source_branch", "")),
            target_branch=str(data.get("target_branch", "")),
            head_sha=head,
            base_sha=base,
            from_fork=from_fork,
            draft=bool(data.get("draft", data.get("work_in_progress", False))),
            state=_MR_STATES.get(str(data.get("state")), "closed"),
            web_url=str(data.get("web_url", "")),
            author=str(author.get("username", "")),
        )

    def _merge_base(self, data: Mapping[str, Any], head: str) -> str:
        """The merge base of a request whose answer names none (asked of GitLab)."""
        if not head:
            return ""
        with self._call(f"finding the merge base of !{data.get('iid')}"):
            found = self._project.repository_merge_base([str(data["target_branch"]), head])
        return str(found.get("id", "")) if isinstance(found, dict) else ""

    # --- the Forge interface ---------------------------------------------------

    def read_file(self, path: str, ref: str) -> bytes | None:
        with self._call(f"reading {path} at {ref}"):
            try:
                found = self._project.files.get(file_path=path, ref=ref)
            except gitlab.exceptions.GitlabGetError as exc:
                if exc.response_code == 404:
                    return None
                raise
            return bytes(found.decode())

    def merge_request(self, number: str) -> MergeRequest:
        with self._call(f"reading merge request !{number}"):
            mr = self._project.mergerequests.get(int(number))
        return self._merge_request(mr.attributes)

    def open_merge_requests(self) -> list[MergeRequest]:
        with self._call("listing open merge requests"):
            found = list(self._project.mergerequests.list(state="opened", iterator=True))
        # the list has no head_pipeline: read a fork's request whole, so its statuses
        # can join a pipeline of this project when there is one
        return [
            self.merge_request(str(mr.attributes["iid"]))
            if _from_fork(mr.attributes)
            else self._merge_request(mr.attributes)
            for mr in found
        ]

    def merge_request_for_commit(self, sha: str) -> MergeRequest | None:
        with self._call(f"finding the merge request of {sha[:12]}"):
            commit = self._project.commits.get(sha, lazy=True)
            found = list(commit.merge_requests(get_all=True))
        merged = [mr for mr in found if isinstance(mr, dict) and mr.get("state") == "merged"]
        for mr in merged:
            if sha in (mr.get("merge_commit_sha"), mr.get("squash_commit_sha"), mr.get("sha")):
                return self._merge_request(mr)
        return self._merge_request(merged[0]) if merged else None

    def default_branch(self) -> tuple[str, str]:
        name = str(self._project.default_branch)
        with self._call(f"reading branch {name}"):
            branch = self._project.branches.get(name)
        return name, str(branch.commit["id"])

    def bot_user(self) -> str | None:
        if self._user is None:
            with self._call("finding the token's user"):
                self._gl.auth()
            user = self._gl.user
            self._user = str(user.username) if user is not None else ""
        return self._user or None

    def comments(self, mr: MergeRequest) -> list[Comment]:
        with self._call(f"reading the notes of !{mr.number}"):
            notes = self._project.mergerequests.get(int(mr.number), lazy=True).notes.list(
                iterator=True, sort="asc", order_by="created_at"
            )
            return [
                Comment(
                    str(n.id),
                    str(n.body),
                    str((n.attributes.get("author") or {}).get("username", "")),
                    str((n.attributes.get("author") or {}).get("id", "")),
                )
                for n in notes
                if not n.attributes.get("system")
            ]

    def add_comment(self, mr: MergeRequest, body: str) -> str:
        with self._call(f"commenting on !{mr.number}"):
            note = self._project.mergerequests.get(int(mr.number), lazy=True).notes.create(
                {"body": body}
            )
        return str(note.id)

    def edit_comment(self, mr: MergeRequest, comment_id: str, body: str) -> None:
        with self._call(f"editing note {comment_id} on !{mr.number}"):
            notes = self._project.mergerequests.get(int(mr.number), lazy=True).notes
            notes.update(int(comment_id), {"body": body})

    def permission(self, user: str, user_id: str = "") -> Permission:
        """GET /projects/:id/members/all/:user_id (docs "Group and project members API":
        inherited and invited members too); 404 for a non-member: 'none'."""
        with self._call(f"reading the access level of {user or user_id}"):
            if not user_id:
                found = list(self._gl.users.list(username=user, iterator=True))
                if not found:
                    return "none"
                user_id = str(found[0].id)
            try:
                member = self._project.members_all.get(int(user_id))
            except gitlab.exceptions.GitlabGetError as exc:
                if exc.response_code == 404:
                    return "none"
                raise
        if str(member.attributes.get("state", "active")) != "active":
            return "none"
        return gitlab_permission(int(member.attributes.get("access_level", 0)))

    def react(self, mr: MergeRequest, comment_id: str, reaction: Reaction) -> None:
        """POST .../merge_requests/:iid/notes/:note_id/award_emoji (docs "Emoji reactions
        API"); an emoji already awarded is refused ("has already been taken"): harmless."""
        note = self._project.mergerequests.get(int(mr.number), lazy=True).notes.get(
            int(comment_id), lazy=True
        )
        try:
            note.awardemojis.create({"name": _EMOJI[reaction]})
        except gitlab.exceptions.GitlabCreateError as exc:
            if "already been taken" in str(exc.error_message):
                return
            with self._call(f"reacting to note {comment_id} on !{mr.number}"):
                raise

    def open_issues(self, author: str) -> list[Issue]:
        with self._call("listing issues"):
            found = self._project.issues.list(
                state="opened",
                author_username=author,
                order_by="created_at",
                sort="asc",
                iterator=True,
            )
            return [
                Issue(
                    str(i.iid),
                    str(i.title),
                    str(i.attributes.get("description") or ""),
                    str((i.attributes.get("author") or {}).get("username", "")),
                )
                for i in itertools.islice(found, MAX_ISSUES)
            ]

    def create_issue(self, title: str, body: str) -> str:
        with self._call("opening an issue"):
            issue = self._project.issues.create({"title": title, "description": body})
        return str(issue.iid)

    def edit_issue(self, number: str, body: str) -> None:
        with self._call(f"editing issue #{number}"):
            self._project.issues.update(int(number), {"description": body})

    def set_status(
        self,
        sha: str,
        context: str,
        state: StatusState,
        description: str,
        *,
        ref: str | None = None,
        target_url: str | None = None,
    ) -> None:
        data: dict[str, Any] = {
            "state": _STATES[state],
            "name": cut(context, self.limits.context_chars),
            "description": cut(description, self.limits.description_chars),
        }
        if target_url:
            data["target_url"] = target_url
        what = f"setting status {context} on {sha[:12]}"
        fork = self._fork_heads.get(sha)
        if self._pipeline is not None and self._pipeline[0] == sha:
            data["pipeline_id"] = self._pipeline[1]
        elif fork is not None and fork.parent_pipeline_id is not None:
            data["pipeline_id"] = fork.parent_pipeline_id
        elif fork is not None:
            self._fork_status(fork, sha, data, what)
            return
        if ref and "pipeline_id" not in data:
            data["ref"] = ref
        self._post_status(self._project, sha, data, what)

    def _post_status(self, project: Any, sha: str, data: dict[str, Any], what: str) -> None:
        try:
            project.commits.get(sha, lazy=True).statuses.create(data)
        except gitlab.exceptions.GitlabError as exc:
            if _harmless_repeat(exc):
                return
            with self._call(what):
                raise
        except requests.RequestException:
            with self._call(what):
                raise

    def _fork_status(self, fork: _ForkHead, sha: str, data: dict[str, Any], what: str) -> None:
        """A status on the fork's branch (the merge request shows the fork's
        pipelines). A bot that may not write to the fork sets none: logged, and
        the review goes on (its comment is on the parent project)."""
        data = {**data, "ref": fork.source_branch}
        fork_project = self._gl.projects.get(fork.source_project_id, lazy=True)
        try:
            fork_project.commits.get(sha, lazy=True).statuses.create(data)
        except gitlab.exceptions.GitlabError as exc:
            if _harmless_repeat(exc):
                return
            if exc.response_code in (401, 403, 404):
                log.warning(
                    "%s: no status on the fork's commit %s: HTTP %s (the token may not write "
                    "to the fork; run fork merge-request pipelines in the parent project to "
                    "get statuses)",
                    self._project_path,
                    sha[:12],
                    exc.response_code,
                )
                return
            with self._call(f"{what} (in the fork)"):
                raise
        except requests.RequestException:
            with self._call(f"{what} (in the fork)"):
                raise

    def _ensure_branch(self, branch: str) -> None:
        """Create ``branch`` from the default branch's head when it does not exist yet
        (a catalog branch the bot owns)."""
        try:
            self._project.branches.get(branch)
            return
        except gitlab.exceptions.GitlabGetError as exc:
            if exc.response_code != 404:
                with self._call(f"reading branch {branch}"):
                    raise
        with self._call(f"creating branch {branch}", writing_branch=True):
            self._project.branches.create(
                {"branch": branch, "ref": str(self._project.default_branch)}
            )

    def commit_files(self, branch: str, files: Mapping[str, bytes], message: str) -> str:
        self._ensure_branch(branch)
        actions: list[dict[str, str]] = []
        for path, content in sorted(files.items()):
            current = self.read_file(path, branch)
            if current == content:
                continue
            actions.append(
                {
                    "action": "create" if current is None else "update",
                    "file_path": path,
                    "content": base64.b64encode(content).decode("ascii"),
                    "encoding": "base64",
                }
            )
        if not actions:
            with self._call(f"reading branch {branch}"):
                return str(self._project.branches.get(branch).commit["id"])
        with self._call(f"committing {len(actions)} file(s) to {branch}", writing_branch=True):
            commit = self._project.commits.create(
                {"branch": branch, "commit_message": commit_message(message), "actions": actions}
            )
        return str(commit.id)


def _retryable(code: int | None) -> bool:
    """A refusal (401, 403, 404, 422) will not go away; 5xx, 429, 409 and no answer may."""
    return code is None or code >= 500 or code in (408, 409, 429)


def _from_fork(data: Mapping[str, Any]) -> bool:
    return data.get("source_project_id") != data.get("target_project_id")


def _fork_head(data: Mapping[str, Any], head: str) -> _ForkHead:
    pipeline = data.get("head_pipeline") or {}
    parent = None
    if pipeline.get("project_id") == data.get("target_project_id") and pipeline.get("sha") == head:
        parent = int(pipeline["id"])
    return _ForkHead(int(data["source_project_id"]), str(data.get("source_branch", "")), parent)


def _hint(code: int | None, message: str = "") -> str:
    if code == 403 and "not allowed to push" in message:
        return (
            "the branch is protected: let the bot commit to a branch of its own "
            "(catalog_branch, e.g. wishbot-catalog), see docs/operating.md"
        )
    if code in (401, 403):
        return "check the token in GITLAB_TOKEN or WISHBOT_FORGE_TOKEN and its scopes (api)"
    if code == 404:
        return "check the project path and that the token can see it"
    if code is not None and code >= 500:
        return "GitLab had a problem; the run can be retried"
    return "see the GitLab API documentation for this request"

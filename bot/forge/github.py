"""GitHub (REST API v3, through PyGithub)."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import requests
from github import Auth, Github, GithubException, GithubRetry, InputGitTreeElement
from github.PullRequest import PullRequest

from bot.core.commands import Permission, github_permission
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
    "running": "pending",
    "success": "success",
    "failure": "failure",
    "error": "error",
}

API_URL = "https://api.github.com"
ACTIONS_BOT = "github-actions[bot]"
#: the contents API serves files up to 1 MB; above, "encoding": "none" and no content
#: (docs: REST "Get repository content", "Notes" on file sizes) -- read the git blob
CONTENTS_LIMIT = 1024 * 1024
#: open issues read when looking for the dashboard (one page, oldest first)
MAX_ISSUES = 100


class GitHubForge(Forge):
    """One GitHub repository, e.g. ``GitHubForge(API_URL, "owner/wishlist", token)``.

    ``write_interval`` is the pause between writes PyGithub keeps to respect
    GitHub's secondary rate limits (its default is one second). Rate limits
    are PyGithub's own retry policy (``GithubRetry``: a 403 or 429 with
    ``Retry-After`` is waited out, a secondary limit without it waits a
    minute), bounded: no single wait longer than ``max_rate_limit_wait``.

    ``bot_login`` is the account the bot comments as, when ``/user`` cannot
    say (a GitHub App or the Actions token: ``<app-slug>[bot]``,
    ``github-actions[bot]``); it is never guessed.
    """

    kind = "github"
    # GitHub rejects bodies over 65,536 characters; keep a margin
    limits = Limits(comment_chars=60_000, description_chars=140, context_chars=255)

    def __init__(
        self,
        api_url: str,
        repository: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        write_interval: float | None = 1.0,
        max_rate_limit_wait: float = 120.0,
        bot_login: str = "",
    ):
        self._api_url = (api_url or API_URL).rstrip("/")
        self._name = repository
        wait = max(float(max_rate_limit_wait), 1.0)
        self._gh = Github(
            base_url=self._api_url,
            auth=Auth.Token(token) if token else None,
            timeout=int(timeout),
            seconds_between_requests=None,
            seconds_between_writes=write_interval,
            retry=GithubRetry(
                secondary_rate_wait=min(60.0, wait),
                max_rate_limit_wait=wait,
                retry_after_max=int(wait),
            ),
        )
        self._repo_obj: Any = None
        self._user: str | None = bot_login.strip() or None

    def __repr__(self) -> str:
        return f"GitHubForge({self._api_url!r}, {self._name!r})"

    @property
    def repository(self) -> str:
        return self._name

    # --- plumbing -----------------------------------------------------------

    @contextmanager
    def _call(self, what: str, *, writing_branch: bool = False) -> Iterator[None]:
        """GitHub's errors as ForgeError; with ``writing_branch`` a 403 or 422 (protected
        branch, required checks, no contents permission) is a :class:`BranchRefused`."""
        try:
            yield
        except GithubException as exc:
            message = ""
            if isinstance(exc.data, dict):
                message = str(exc.data.get("message", ""))
            refused = exc.status in (403, 422) and "rate limit" not in message.lower()
            error = BranchRefused if writing_branch and refused else ForgeError
            raise error(
                f"GitHub {self._name}: {what} failed: HTTP {exc.status}: {cut(message, 300)}",
                hint=_hint(exc.status, message),
                retryable=exc.status >= 500
                or exc.status in (408, 409, 429)
                or "rate limit" in message.lower(),
            ) from None
        except requests.RequestException as exc:
            raise ForgeError(
                f"GitHub {self._name}: {what} failed: {type(exc).__name__}",
                hint="check forge_url and the network; the run can be retried",
            ) from None

    @property
    def _repo(self) -> Any:
        if self._repo_obj is None:
            with self._call("reading the repository"):
                self._repo_obj = self._gh.get_repo(self._name)
        return self._repo_obj

    def _merge_request(self, pr: PullRequest) -> MergeRequest:
        head_repo = pr.head.repo
        base_repo = pr.base.repo
        from_fork = head_repo is None or head_repo.full_name != base_repo.full_name
        with self._call(f"finding the merge base of #{pr.number}"):
            comparison = self._repo.compare(pr.base.ref, pr.head.sha)
            base_sha = str(comparison.merge_base_commit.sha)
        state: MergeRequestState = "open"
        if pr.state != "open":
            state = "merged" if pr.merged_at is not None else "closed"
        return MergeRequest(
            id=str(pr.id),
            number=str(pr.number),
            title=pr.title or "",
            source_branch=pr.head.ref,
            target_branch=pr.base.ref,
            head_sha=pr.head.sha,
            base_sha=base_sha,
            from_fork=from_fork,
            draft=bool(pr.draft),
            state=state,
            web_url=pr.html_url or "",
            author=pr.user.login if pr.user else "",
        )

    def _pull(self, number: str) -> Any:
        with self._call(f"reading pull request #{number}"):
            return self._repo.get_pull(int(number))

    # --- the Forge interface ---------------------------------------------------

    def read_file(self, path: str, ref: str) -> bytes | None:
        with self._call(f"reading {path} at {ref}"):
            try:
                found = self._repo.get_contents(path, ref=ref)
            except GithubException as exc:
                if exc.status == 404:
                    return None
                raise
            if isinstance(found, list):
                return None
            if found.encoding == "none" or found.size > CONTENTS_LIMIT:
                # too big for the contents API: the same bytes as a git blob (up to 100 MB)
                blob = self._repo.get_git_blob(found.sha)
                return base64.b64decode(blob.content)
            return bytes(found.decoded_content)

    def merge_request(self, number: str) -> MergeRequest:
        return self._merge_request(self._pull(number))

    def open_merge_requests(self) -> list[MergeRequest]:
        with self._call("listing open pull requests"):
            pulls = list(self._repo.get_pulls(state="open"))
        return [self._merge_request(pr) for pr in pulls]

    def merge_request_for_commit(self, sha: str) -> MergeRequest | None:
        with self._call(f"finding the pull request of {sha[:12]}"):
            pulls = list(self._repo.get_commit(sha).get_pulls())
        merged = [pr for pr in pulls if pr.merged_at is not None]
        for pr in merged:
            if pr.merge_commit_sha == sha:
                return self._merge_request(pr)
        return self._merge_request(merged[0]) if merged else None

    def default_branch(self) -> tuple[str, str]:
        name = str(self._repo.default_branch)
        with self._call(f"reading branch {name}"):
            branch = self._repo.get_branch(name)
            return name, str(branch.commit.sha)

    def bot_user(self) -> str | None:
        """The configured ``bot_login``, else the token's user from ``/user``.

        App and Actions tokens cannot read ``/user`` (403): then the identity
        is unknown and None is returned -- never a guess.
        """
        if self._user is None:
            try:
                self._user = str(self._gh.get_user().login)
            except GithubException as exc:
                if exc.status != 403:  # 403: an App or Actions token; anything else is wrong
                    with self._call("finding the token's user"):
                        raise
                return None
            except requests.RequestException:
                with self._call("finding the token's user"):
                    raise
        return self._user

    def comments(self, mr: MergeRequest) -> list[Comment]:
        with self._call(f"reading the comments of #{mr.number}"):
            issue = self._repo.get_issue(int(mr.number))
            return [
                Comment(str(c.id), c.body or "", c.user.login if c.user else "")
                for c in issue.get_comments()
            ]

    def add_comment(self, mr: MergeRequest, body: str) -> str:
        with self._call(f"commenting on #{mr.number}"):
            comment = self._repo.get_issue(int(mr.number)).create_comment(body)
        return str(comment.id)

    def edit_comment(self, mr: MergeRequest, comment_id: str, body: str) -> None:
        with self._call(f"editing comment {comment_id} on #{mr.number}"):
            self._repo.get_issue(int(mr.number)).get_comment(int(comment_id)).edit(body)

    def permission(self, user: str, user_id: str = "") -> Permission:
        """GET /repos/{owner}/{repo}/collaborators/{username}/permission (REST
        "Collaborators", Get repository permissions for a user): ``permission`` is
        admin/write/read/none, ``role_name`` also tells maintain and triage; 404
        (no such user): 'none'."""
        repo = self._repo
        with self._call(f"reading the permission of {user}"):
            try:
                _, data = self._gh.requester.requestJsonAndCheck(
                    "GET", f"{repo.url}/collaborators/{quote(user, safe='')}/permission"
                )
            except GithubException as exc:
                if exc.status == 404:
                    return "none"
                raise
        data = data if isinstance(data, dict) else {}
        return github_permission(str(data.get("permission", "")), str(data.get("role_name", "")))

    def react(self, mr: MergeRequest, comment_id: str, reaction: Reaction) -> None:
        """POST /repos/{owner}/{repo}/issues/comments/{comment_id}/reactions (REST
        "Reactions"): 201 created, 200 when the reaction already exists."""
        repo = self._repo
        with self._call(f"reacting to comment {comment_id} on #{mr.number}"):
            self._gh.requester.requestJsonAndCheck(
                "POST",
                f"{repo.url}/issues/comments/{int(comment_id)}/reactions",
                input={"content": reaction},
            )

    def open_issues(self, author: str) -> list[Issue]:
        """GET /repos/{owner}/{repo}/issues?creator=... (REST "Issues", List repository
        issues: pull requests are listed too, with a ``pull_request`` key; left out)."""
        repo = self._repo
        with self._call("listing issues"):
            _, data = self._gh.requester.requestJsonAndCheck(
                "GET",
                f"{repo.url}/issues",
                parameters={
                    "state": "open",
                    "creator": author,
                    "sort": "created",
                    "direction": "asc",
                    "per_page": MAX_ISSUES,
                },
            )
        found = data if isinstance(data, list) else []
        return [
            Issue(
                str(i.get("number", "")),
                str(i.get("title") or ""),
                str(i.get("body") or ""),
                str((i.get("user") or {}).get("login", "")),
            )
            for i in found
            if isinstance(i, dict) and "pull_request" not in i
        ]

    def create_issue(self, title: str, body: str) -> str:
        with self._call("opening an issue"):
            return str(self._repo.create_issue(title=title, body=body).number)

    def edit_issue(self, number: str, body: str) -> None:
        repo = self._repo
        with self._call(f"editing issue #{number}"):
            self._gh.requester.requestJsonAndCheck(
                "PATCH", f"{repo.url}/issues/{int(number)}", input={"body": body}
            )

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
        with self._call(f"setting status {context} on {sha[:12]}"):
            commit = self._repo.get_commit(sha)
            if target_url:
                commit.create_status(
                    _STATES[state],
                    target_url=target_url,
                    description=cut(description, self.limits.description_chars),
                    context=cut(context, self.limits.context_chars),
                )
            else:
                commit.create_status(
                    _STATES[state],
                    description=cut(description, self.limits.description_chars),
                    context=cut(context, self.limits.context_chars),
                )

    def _branch_ref(self, branch: str) -> Any:
        """The branch's git ref; a missing branch is created from the default branch's
        head (a catalog branch the bot owns)."""
        repo = self._repo
        try:
            return repo.get_git_ref(f"heads/{branch}")
        except GithubException as exc:
            if exc.status != 404:
                raise
        _, head = self.default_branch()
        return repo.create_git_ref(f"refs/heads/{branch}", head)

    def commit_files(self, branch: str, files: Mapping[str, bytes], message: str) -> str:
        repo = self._repo
        with self._call(f"committing to {branch}", writing_branch=True):
            ref = self._branch_ref(branch)
            head = str(ref.object.sha)
            changed = {
                path: content
                for path, content in sorted(files.items())
                if self.read_file(path, head) != content
            }
            if not changed:
                return head
            parent = repo.get_git_commit(head)
            elements = []
            for path, content in changed.items():
                blob = repo.create_git_blob(base64.b64encode(content).decode("ascii"), "base64")
                elements.append(InputGitTreeElement(path, "100644", "blob", sha=blob.sha))
            tree = repo.create_git_tree(elements, base_tree=parent.tree)
            commit = repo.create_git_commit(commit_message(message), tree, [parent])
            # the documented path (REST "Git references", Update a reference:
            # PATCH .../git/refs/{ref}), not the ref's url, which echoes how it was read
            self._gh.requester.requestJsonAndCheck(
                "PATCH",
                f"{repo.url}/git/refs/heads/{quote(branch)}",
                input={"sha": commit.sha, "force": False},
            )
            return str(commit.sha)


PROTECTED_WORDS = ("protected branch", "required status check", "through a pull request")


def _hint(status: int, message: str = "") -> str:
    if status in (403, 422) and any(w in message.lower() for w in PROTECTED_WORDS):
        return (
            "a protected branch refuses direct commits: let the bot commit to a branch of "
            "its own (catalog_branch, e.g. wishbot-catalog), see docs/operating.md"
        )
    if status in (401, 403):
        return "check the token in GITHUB_TOKEN or WISHBOT_FORGE_TOKEN and its permissions"
    if status == 404:
        return "check the repository name and that the token can see it"
    if status >= 500:
        return "GitHub had a problem; the run can be retried"
    return "see the GitHub REST API documentation for this request"

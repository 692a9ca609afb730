"""The forge interface and its neutral models.

A *forge* is where the wishlist repository lives: GitLab, GitHub, or a plain
git repository on disk. Every adapter turns its vendor's payloads into the
frozen models here; nothing vendor-specific travels past the adapter.

Pure helpers that every adapter shares (status vocabulary, cutting text to a
forge's limits, finding the bot's comment by its hidden marker) live here too.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

# one escaper and one cut for everything rendered (re-exported for the adapters)
from bot.core.commands import Permission
from bot.core.text import cut as cut
from bot.core.text import escape_markdown as escape_markdown
from bot.errors import ForgeError


class BranchRefused(ForgeError):
    """The forge refused a commit to a branch (protected, or the token may not push)."""


MergeRequestState = Literal["open", "merged", "closed"]
StatusState = Literal["pending", "running", "success", "failure", "error"]
STATUS_STATES: tuple[StatusState, ...] = ("pending", "running", "success", "failure", "error")
FINAL_STATES: frozenset[str] = frozenset({"success", "failure", "error"})


@dataclass(frozen=True)
class MergeRequest:
    """A merge request (GitLab) or pull request (GitHub) or branch (local git).

    ``number`` is what people type (GitLab iid, GitHub number, local branch);
    ``base_sha`` is the merge base of the head with the target branch.
    """

    id: str
    number: str
    title: str
    source_branch: str
    target_branch: str
    head_sha: str
    base_sha: str
    from_fork: bool
    draft: bool
    state: MergeRequestState
    web_url: str
    author: str


@dataclass(frozen=True)
class Comment:
    """One comment on a merge request; ``author`` is the user name ('' if unknown),
    ``author_id`` the forge's numeric user id where it has one (GitLab asks by id)."""

    id: str
    body: str
    author: str = ""
    author_id: str = ""


@dataclass(frozen=True)
class Issue:
    """One open issue of the wishlist repository (the dashboard is one)."""

    number: str
    title: str
    body: str
    author: str


#: reactions the bot leaves on a command (GitHub's names; GitLab's emoji in its adapter)
Reaction = Literal["+1", "-1", "eyes", "confused"]


@dataclass(frozen=True)
class Limits:
    """What a forge accepts; text beyond these is cut before sending."""

    comment_chars: int
    description_chars: int
    context_chars: int
    issue_chars: int = 65_536  # an issue's body (GitHub's limit; GitLab's is larger)


class Forge(abc.ABC):
    """One wishlist repository on one forge."""

    #: "gitlab", "github" or "local"
    kind: str = ""
    limits: Limits = Limits(comment_chars=60_000, description_chars=140, context_chars=255)

    @property
    @abc.abstractmethod
    def repository(self) -> str:
        """The repository's name (``owner/name``, or a path for local git)."""

    @abc.abstractmethod
    def read_file(self, path: str, ref: str) -> bytes | None:
        """The file's bytes at ``ref`` (a commit sha or branch), or None if absent."""

    @abc.abstractmethod
    def merge_request(self, number: str) -> MergeRequest:
        """One merge request, fresh from the forge."""

    @abc.abstractmethod
    def open_merge_requests(self) -> list[MergeRequest]:
        """Every open merge request against this repository."""

    @abc.abstractmethod
    def merge_request_for_commit(self, sha: str) -> MergeRequest | None:
        """The merged request that produced ``sha`` on its target branch, if any."""

    @abc.abstractmethod
    def default_branch(self) -> tuple[str, str]:
        """The default branch's name and its head commit sha."""

    @abc.abstractmethod
    def comments(self, mr: MergeRequest) -> list[Comment]:
        """The merge request's comments, oldest first."""

    @abc.abstractmethod
    def add_comment(self, mr: MergeRequest, body: str) -> str:
        """Post a new comment; returns its id."""

    @abc.abstractmethod
    def edit_comment(self, mr: MergeRequest, comment_id: str, body: str) -> None:
        """Replace the body of one of the bot's comments."""

    @abc.abstractmethod
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
        """Set a commit status; repeating the same state is harmless."""

    @abc.abstractmethod
    def commit_files(self, branch: str, files: Mapping[str, bytes], message: str) -> str:
        """Commit ``files`` (path -> bytes) on ``branch`` as ONE commit; returns the new
        head sha, or the current head when every file already has these bytes."""

    def bot_user(self) -> str | None:
        """The user name the bot comments as, when the forge can tell (else None)."""
        return None

    # --- comment commands and the dashboard (adapters that support them override) ---

    def permission(self, user: str, user_id: str = "") -> Permission:
        """``user``'s permission on the repository on the neutral ladder
        (:mod:`bot.core.commands`); 'none' for a stranger."""
        raise self._unsupported("reading a user's permission")

    def react(self, mr: MergeRequest, comment_id: str, reaction: Reaction) -> None:
        """Leave a reaction on a comment of the merge request (repeating it is harmless)."""
        raise self._unsupported("reacting to a comment")

    def open_issues(self, author: str) -> list[Issue]:
        """The repository's open issues written by ``author`` (oldest first, bounded)."""
        raise self._unsupported("listing issues")

    def create_issue(self, title: str, body: str) -> str:
        """Open an issue; returns its number."""
        raise self._unsupported("opening an issue")

    def edit_issue(self, number: str, body: str) -> None:
        """Replace the body of one of the bot's issues."""
        raise self._unsupported("editing an issue")

    def _unsupported(self, what: str) -> ForgeError:
        return ForgeError(f"{self.kind} {self.repository}: {what} is not supported here")

    def upsert_issue(self, marker: str, title: str, body: str) -> str:
        """Edit the bot's issue whose body starts with ``marker``, or open it: one per marker.

        As :meth:`upsert_comment`: only the bot's own issues are candidates.
        The body is cut to the forge's issue size limit.
        """
        if not body.startswith(marker):
            body = f"{marker}\n{body}"
        body = fit_comment(body, self.limits.issue_chars)
        author = self.bot_user()
        if not author:
            raise ForgeError(f"{self.kind} {self.repository}: cannot tell the bot's account")
        issues = self.open_issues(author)
        existing = find_marked(
            [Comment(i.number, i.body, i.author) for i in issues], marker, author
        )
        if existing is None:
            return self.create_issue(title, body)
        if existing.body != body:
            self.edit_issue(existing.id, body)
        return existing.id

    def upsert_comment(self, mr: MergeRequest, marker: str, body: str) -> str:
        """Edit the bot's comment carrying ``marker`` or create it: one comment per marker.

        Only comments the bot itself wrote that *start* with the marker are
        candidates, so a user who pastes or quotes the marker cannot capture
        the bot's comment. The bot's account must be known (never guessed):
        when the forge cannot tell, this is a :class:`ForgeError`. The marker
        is put first in the body when it is not.
        """
        if not body.startswith(marker):
            body = f"{marker}\n{body}"
        body = fit_comment(body, self.limits.comment_chars)
        author = self.bot_user()
        if not author:
            raise ForgeError(
                f"{self.kind} {self.repository}: cannot tell which account the bot comments as",
                hint="set bot_login (WISHBOT_BOT_LOGIN): github-actions[bot] for the Actions "
                "token, <app-slug>[bot] for a GitHub App, the bot user's name otherwise",
            )
        existing = find_marked(self.comments(mr), marker, author)
        if existing is None:
            return self.add_comment(mr, body)
        if existing.body != body:
            self.edit_comment(mr, existing.id, body)
        return existing.id


# --- pure helpers shared by the adapters -------------------------------------


def find_marked(comments: Iterable[Comment], marker: str, author: str) -> Comment | None:
    """The first comment written by ``author`` whose body starts with ``marker``."""
    for comment in comments:
        if comment.body.startswith(marker) and comment.author == author:
            return comment
    return None


def fit_comment(body: str, limit: int) -> str:
    """Cut a Markdown comment to ``limit`` characters without leaving a code
    fence or ``<details>`` block open, and say that something was left out."""
    if len(body) <= limit:
        return body
    note = "\n\n_(comment cut: {n} characters left out; see the catalog or the job log)_\n"
    room = max(limit - len(note) - 64, 0)
    head = body[:room]
    cut_at = head.rfind("\n")
    if cut_at > room // 2:
        head = head[:cut_at]
    closing = ""
    if head.count("```") % 2 == 1:
        closing += "\n```"
    open_details = head.count("<details") - head.count("</details>")
    closing += "\n</details>" * max(open_details, 0)
    return head + closing + note.format(n=len(body) - len(head))


def commit_message(message: str) -> str:
    """Commit messages for the bot's own commits always carry ``[skip ci]``."""
    return message if "[skip ci]" in message else f"{message} [skip ci]"

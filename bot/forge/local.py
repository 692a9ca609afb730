"""A plain git repository as a forge (GitPython), for the demo, tests and small sites.

- a *merge request* is a branch other than the default branch, reviewed
  against the default branch; its number is the branch name;
- comments and commit statuses are kept in the repository itself as git
  notes (``refs/notes/wishbot-comments``, ``refs/notes/wishbot-statuses``),
  so they travel with ``git push/fetch`` of those refs and can be printed
  with :meth:`LocalForge.report`;
- :meth:`LocalForge.merge` makes a real merge commit on the default branch
  (what pressing "merge" does on a forge) and records which branch it merged.

Branch updates are made with plumbing (``commit-tree``/``update-ref``); when
the updated branch is the one checked out in a non-bare repository, its
index and working tree are moved along (``read-tree -m -u``, which refuses
to overwrite local changes: those files then show as modified).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import git
from git.db import IStream

from bot.core.commands import Permission
from bot.errors import ForgeError
from bot.forge.base import (
    STATUS_STATES,
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

log = logging.getLogger(__name__)

COMMENTS_REF = "wishbot-comments"
STATUSES_REF = "wishbot-statuses"
MERGES_REF = "wishbot-merges"
ISSUES_REF = "wishbot-issues"
REACTIONS_REF = "wishbot-reactions"
BOT_USER = "wishbot"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "wishbot",
    "GIT_AUTHOR_EMAIL": "wishbot@localhost",
    "GIT_COMMITTER_NAME": "wishbot",
    "GIT_COMMITTER_EMAIL": "wishbot@localhost",
}


class LocalForge(Forge):
    """A git repository on disk; ``default`` names the default branch (else HEAD's)."""

    kind = "local"
    limits = Limits(comment_chars=100_000, description_chars=255, context_chars=255)

    def __init__(self, path: str | os.PathLike[str], *, default: str | None = None):
        self._path = Path(path)
        try:
            self._repo = git.Repo(self._path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise ForgeError(
                f"{self._path}: not a git repository",
                hint="point forge_url (or --repository) at a git repository",
            ) from None
        self._repo.git.update_environment(**_IDENTITY)
        self._default = default
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"LocalForge({str(self._path)!r})"

    @property
    def repository(self) -> str:
        return str(self._path)

    # --- plumbing -----------------------------------------------------------

    @contextmanager
    def _call(self, what: str) -> Iterator[None]:
        try:
            yield
        except (git.GitCommandError, git.BadName, ValueError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise ForgeError(f"{self._path}: {what} failed: {cut(str(detail), 300)}") from None

    def _rev(self, ref: str) -> str:
        with self._call(f"resolving {ref}"):
            return str(self._repo.rev_parse(f"{ref}^{{commit}}").hexsha)

    def _branch_head(self, branch: str) -> str | None:
        try:
            return str(self._repo.rev_parse(f"refs/heads/{branch}^{{commit}}").hexsha)
        except (git.BadName, ValueError):
            return None

    def _store_blob(self, data: bytes) -> str:
        stream = self._repo.odb.store(IStream("blob", len(data), BytesIO(data)))
        return str(stream.hexsha.decode("ascii"))

    def _key(self, branch: str) -> str:
        """A stable object that stands for the merge request of ``branch``."""
        return self._store_blob(f"wishbot merge request: {branch}\n".encode())

    def _read_note(self, notes_ref: str, obj: str) -> Any:
        try:
            text = self._repo.git.notes(f"--ref={notes_ref}", "show", obj)
        except git.GitCommandError:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None

    def _write_note(self, notes_ref: str, obj: str, value: Any) -> None:
        blob = self._store_blob(json.dumps(value, indent=1, sort_keys=True).encode())
        with self._call(f"writing a note in refs/notes/{notes_ref}"):
            self._repo.git.notes(f"--ref={notes_ref}", "add", "-f", "-C", blob, obj)

    def _follow(self, branch: str, old: str, new: str) -> None:
        """Move a checked-out ``branch``'s index and working tree from ``old`` to ``new``."""
        if self._repo.bare:
            return
        try:
            checked_out = self._repo.git.symbolic_ref("-q", "HEAD")
        except git.GitCommandError:
            return
        if checked_out != f"refs/heads/{branch}":
            return
        try:
            self._repo.git.read_tree("-m", "-u", old, new)
        except git.GitCommandError as exc:
            log.warning("%s: the working tree was not updated: %s", self._path, exc.stderr)

    def _is_ancestor(self, older: str, newer: str) -> bool:
        return bool(self._repo.is_ancestor(self._repo.commit(older), self._repo.commit(newer)))

    # --- the Forge interface ---------------------------------------------------

    def read_file(self, path: str, ref: str) -> bytes | None:
        if not _is_sha(ref) and self._branch_head(ref) is None:
            try:
                self._repo.rev_parse(f"{ref}^{{commit}}")
            except (git.BadName, ValueError):
                return None  # like the forges' 404: no such branch, no such file
        commit = self._repo.commit(self._rev(ref))
        try:
            blob = commit.tree / path
        except KeyError:
            return None
        if blob.type != "blob":
            return None
        return bytes(blob.data_stream.read())

    def default_branch(self) -> tuple[str, str]:
        name = self._default
        if not name:
            try:
                name = str(self._repo.git.symbolic_ref("--short", "HEAD"))
            except git.GitCommandError:
                name = "main"
        head = self._branch_head(name)
        if head is None:
            raise ForgeError(f"{self._path}: the default branch {name} does not exist")
        return name, head

    def merge_request(self, number: str) -> MergeRequest:
        branch = number
        default, default_head = self.default_branch()
        head = self._branch_head(branch)
        if head is None or branch == default:
            raise ForgeError(
                f"{self._path}: no merge request {branch!r}",
                hint="a merge request of the local forge is a branch other than the default one",
            )
        with self._call(f"finding the merge base of {branch}"):
            bases = self._repo.merge_base(default_head, head)
        state: MergeRequestState = "open"
        merged = self._read_note(MERGES_REF, self._key(branch))
        if isinstance(merged, dict) and merged.get("head") == head:
            state = "merged"
        return MergeRequest(
            id=branch,
            number=branch,
            title=str(self._repo.commit(head).summary),
            source_branch=branch,
            target_branch=default,
            head_sha=head,
            base_sha=str(bases[0].hexsha) if bases else "",
            from_fork=False,
            draft=branch.startswith(("draft/", "wip/")),
            state=state,
            web_url=f"file://{self._path}#{branch}",
            author=str(self._repo.commit(head).author.name),
        )

    def open_merge_requests(self) -> list[MergeRequest]:
        default, default_head = self.default_branch()
        found = []
        for head in self._repo.heads:
            if head.name == default or self._is_ancestor(head.commit.hexsha, default_head):
                continue
            found.append(self.merge_request(head.name))
        return found

    def merge_request_for_commit(self, sha: str) -> MergeRequest | None:
        record = self._read_note(MERGES_REF, sha)
        if not isinstance(record, dict) or "branch" not in record:
            return None
        branch = str(record["branch"])
        if self._branch_head(branch) is None:
            return None
        return self.merge_request(branch)

    def bot_user(self) -> str | None:
        return BOT_USER

    def comments(self, mr: MergeRequest) -> list[Comment]:
        stored = self._read_note(COMMENTS_REF, self._key(mr.source_branch)) or []
        return [Comment(str(c["id"]), str(c["body"]), str(c.get("author", ""))) for c in stored]

    def add_comment_as(self, mr: MergeRequest, author: str, body: str) -> str:
        """Post a comment as someone else (what people do on a real forge)."""
        with self._lock:
            key = self._key(mr.source_branch)
            stored = self._read_note(COMMENTS_REF, key) or []
            comment_id = str(len(stored) + 1)
            stored.append({"id": comment_id, "body": body, "author": author})
            self._write_note(COMMENTS_REF, key, stored)
            return comment_id

    def add_comment(self, mr: MergeRequest, body: str) -> str:
        return self.add_comment_as(mr, BOT_USER, body)

    def edit_comment(self, mr: MergeRequest, comment_id: str, body: str) -> None:
        with self._lock:
            key = self._key(mr.source_branch)
            stored = self._read_note(COMMENTS_REF, key) or []
            for comment in stored:
                if str(comment["id"]) == comment_id and comment.get("author") == BOT_USER:
                    comment["body"] = body
                    self._write_note(COMMENTS_REF, key, stored)
                    return
            raise ForgeError(f"{self._path}: no comment {comment_id} on {mr.source_branch}")

    def permission(self, user: str, user_id: str = "") -> Permission:
        """Whoever can write to a local repository's notes can push: everyone is admin."""
        return "admin"

    def react(self, mr: MergeRequest, comment_id: str, reaction: Reaction) -> None:
        with self._lock:
            key = self._key(mr.source_branch)
            stored = self._read_note(REACTIONS_REF, key) or {}
            names = set(stored.get(comment_id, [])) | {reaction}
            stored[comment_id] = sorted(names)
            self._write_note(REACTIONS_REF, key, stored)

    def reactions(self, mr: MergeRequest, comment_id: str) -> list[str]:
        stored = self._read_note(REACTIONS_REF, self._key(mr.source_branch)) or {}
        return list(stored.get(comment_id, []))

    def _issues_key(self) -> str:
        return self._store_blob(b"wishbot issues\n")

    def open_issues(self, author: str) -> list[Issue]:
        stored = self._read_note(ISSUES_REF, self._issues_key()) or []
        return [
            Issue(str(i["number"]), str(i["title"]), str(i["body"]), str(i["author"]))
            for i in stored
            if i.get("author") == author
        ]

    def create_issue(self, title: str, body: str) -> str:
        with self._lock:
            stored = self._read_note(ISSUES_REF, self._issues_key()) or []
            number = str(len(stored) + 1)
            stored.append({"number": number, "title": title, "body": body, "author": BOT_USER})
            self._write_note(ISSUES_REF, self._issues_key(), stored)
            return number

    def edit_issue(self, number: str, body: str) -> None:
        with self._lock:
            stored = self._read_note(ISSUES_REF, self._issues_key()) or []
            for issue in stored:
                if issue["number"] == number and issue["author"] == BOT_USER:
                    issue["body"] = body
                    self._write_note(ISSUES_REF, self._issues_key(), stored)
                    return
            raise ForgeError(f"{self._path}: no issue #{number} of the bot")

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
        if state not in STATUS_STATES:
            raise ForgeError(f"unknown status state {state!r}")
        with self._lock:
            sha = self._rev(sha)
            stored = self._read_note(STATUSES_REF, sha) or {}
            stored[cut(context, self.limits.context_chars)] = {
                "state": state,
                "description": cut(description, self.limits.description_chars),
                "ref": ref or "",
                "target_url": target_url or "",
            }
            self._write_note(STATUSES_REF, sha, stored)

    def commit_files(self, branch: str, files: Mapping[str, bytes], message: str) -> str:
        with self._lock:
            head = self._branch_head(branch)
            if head is None:  # a branch of the bot's own (the catalog's): start it
                head = self.default_branch()[1]
                with self._call(f"creating branch {branch}"):
                    self._repo.git.update_ref(f"refs/heads/{branch}", head, "")
            changed = {p: c for p, c in sorted(files.items()) if self.read_file(p, head) != c}
            if not changed:
                return head
            with tempfile.TemporaryDirectory(prefix="wishbot-index-") as tmp:
                env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), **_IDENTITY}
                with self._call(f"committing to {branch}"):
                    self._repo.git.execute(["git", "read-tree", head], env=env)
                    for path, content in changed.items():
                        blob = self._store_blob(content)
                        self._repo.git.execute(
                            [
                                "git",
                                "update-index",
                                "--add",
                                "--cacheinfo",
                                f"100644,{blob},{path}",
                            ],
                            env=env,
                        )
                    tree = self._repo.git.execute(["git", "write-tree"], env=env)
                    new = self._repo.git.commit_tree(
                        tree, "-p", head, "-m", commit_message(message)
                    )
                    self._repo.git.update_ref(f"refs/heads/{branch}", new, head)
            self._follow(branch, head, new)
            return str(new)

    # --- local-only helpers ------------------------------------------------------

    def statuses(self, sha: str) -> dict[str, tuple[str, str]]:
        """The statuses of ``sha`` as ``context -> (state, description)``."""
        stored = self._read_note(STATUSES_REF, self._rev(sha)) or {}
        return {k: (str(v["state"]), str(v["description"])) for k, v in stored.items()}

    def merge(self, branch: str, message: str | None = None) -> str:
        """Merge ``branch`` into the default branch with a real merge commit."""
        with self._lock:
            default, default_head = self.default_branch()
            head = self._branch_head(branch)
            if head is None:
                raise ForgeError(f"{self._path}: branch {branch} does not exist")
            try:
                tree = self._repo.git.merge_tree("--write-tree", default_head, head).split()[0]
            except git.GitCommandError:
                raise ForgeError(
                    f"{self._path}: {branch} does not merge cleanly into {default}",
                    hint="rebase the branch on the default branch",
                ) from None
            text = message or f"Merge branch '{branch}' into {default}"
            with self._call(f"merging {branch}"):
                new = self._repo.git.commit_tree(tree, "-p", default_head, "-p", head, "-m", text)
                self._repo.git.update_ref(f"refs/heads/{default}", new, default_head)
            self._follow(default, default_head, new)
            record = {"branch": branch, "head": head}
            self._write_note(MERGES_REF, new, record)
            self._write_note(MERGES_REF, self._key(branch), record)
            return str(new)

    def report(self, mr: MergeRequest) -> str:
        """The merge request's statuses and comments, as text for a terminal."""
        lines = [f"merge request {mr.number} ({mr.state}) {mr.head_sha[:12]}: {mr.title}"]
        for context, (state, description) in sorted(self.statuses(mr.head_sha).items()):
            lines.append(f"  status {context}: {state} — {description}")
        for comment in self.comments(mr):
            lines.append(f"  comment {comment.id} by {comment.author}:")
            lines.extend(f"    {line}" for line in comment.body.splitlines())
        return "\n".join(lines)


def _is_sha(ref: str) -> bool:
    return len(ref) == 40 and all(c in "0123456789abcdef" for c in ref)

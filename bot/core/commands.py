"""Comment commands (``/wishbot plan``, ``/wishbot retry``, ``/wishbot help``): the rules.

Everything that decides whether a comment on a merge request is a command and
whether it runs lives here, pure: parsing the comment, who may run what (a
neutral permission ladder both forges map onto), which comments are never
commands (the bot's own, edited ones, repeats) and the one-line replies.

The permission ladder follows GitHub's repository roles (``read`` < ``triage``
< ``write`` < ``maintain`` < ``admin``); GitLab's access levels map onto it
(Guest 10 and Reporter 20 read, Developer 30 write, Maintainer 40 maintain,
Owner 50 admin; https://docs.gitlab.com/api/members/#roles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.core.text import code_span, cut

PREFIX = "/wishbot"
CommandName = Literal["plan", "retry", "help"]
COMMANDS: tuple[CommandName, ...] = ("plan", "retry", "help")
#: commands that do work and so need the configured permission
WORKING_COMMANDS: frozenset[str] = frozenset({"plan", "retry"})

Permission = Literal["none", "read", "triage", "write", "maintain", "admin"]
PERMISSIONS: tuple[Permission, ...] = ("none", "read", "triage", "write", "maintain", "admin")
#: the permissions an operator may require for commands (config ``command_permission``)
REQUIRABLE: tuple[Permission, ...] = ("write", "maintain", "admin")
#: GitLab's words for the same rungs, accepted in the configuration
GITLAB_ROLES: dict[str, Permission] = {
    "developer": "write",
    "maintainer": "maintain",
    "owner": "admin",
}
#: the longest comment body looked at (a command is one short first line)
MAX_FIRST_LINE = 200


@dataclass(frozen=True)
class Command:
    """A parsed command; ``unknown`` is the word typed when it was not a known command."""

    name: CommandName
    unknown: str = ""


@dataclass(frozen=True)
class CommentEvent:
    """A comment on a merge request, as far as commands care (neutral, from either forge).

    ``created`` is False for edits (GitHub ``edited``, GitLab ``update``):
    an edited comment is never run, so nobody can turn an old comment into
    a command after the fact.
    """

    forge: str
    repository: str
    number: str
    comment_id: str
    author: str
    author_id: str
    body: str
    created: bool = True

    @property
    def key(self) -> str:
        return f"command:{self.repository}:{self.number}:{self.comment_id}"


Verdict = Literal["ignore", "help", "refuse", "run"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    command: Command | None
    reason: str


def parse_command(body: str) -> Command | None:
    """The command on the comment's first line, or None when it is not a command.

    ``/wishbot`` must start the first line (case-insensitive, surrounding
    blanks ignored); a missing or unknown subcommand is answered with help.
    """
    first = body.lstrip().split("\n", 1)[0][:MAX_FIRST_LINE].strip().lower()
    words = first.split()
    if not words or words[0] != PREFIX:
        return None
    if len(words) == 1:
        return Command("help")
    word = words[1]
    for name in COMMANDS:
        if word == name:
            return Command(name)
    return Command("help", unknown=word)


def required_permission(setting: str) -> Permission:
    """The configured minimum permission (GitHub words or GitLab role names)."""
    word = setting.strip().lower()
    word = GITLAB_ROLES.get(word, word)
    for permission in REQUIRABLE:
        if word == permission:
            return permission
    raise ValueError(
        f"command_permission {setting!r}: expected one of "
        + ", ".join([*REQUIRABLE, *GITLAB_ROLES])
    )


def allows(have: Permission, need: Permission) -> bool:
    """Whether ``have`` is at least ``need`` on the ladder."""
    return PERMISSIONS.index(have) >= PERMISSIONS.index(need)


def gitlab_permission(access_level: int) -> Permission:
    """GitLab's access level (``members/all/:user_id``) on the neutral ladder."""
    ladder: tuple[tuple[int, Permission], ...] = (
        (50, "admin"),
        (40, "maintain"),
        (30, "write"),
        (10, "read"),
    )
    for level, permission in ladder:
        if access_level >= level:
            return permission
    return "none"


def github_permission(permission: str, role_name: str = "") -> Permission:
    """GitHub's ``permission`` / ``role_name`` (collaborators/{user}/permission) on the ladder.

    The legacy ``permission`` field says only admin/write/read/none; ``role_name``
    tells ``maintain`` and ``triage`` apart, so it wins when it is one of ours.
    """
    for word in (role_name, permission):
        for known in PERMISSIONS:
            if word == known:
                return known
    return "none"


def screen(event: CommentEvent, bot_user: str | None, seen: bool) -> tuple[Command | None, str]:
    """The command to answer, or None and why the comment is not one (no reply at all)."""
    if bot_user and event.author.lower() == bot_user.lower():
        return None, "the bot's own comment"
    if not event.created:
        return None, "an edited comment is never run"
    if seen:
        return None, "already handled (repeated delivery)"
    command = parse_command(event.body)
    if command is None:
        return None, "not a command"
    return command, ""


def decide(command: Command, have: Permission, need: Permission) -> Decision:
    """Run, refuse or answer with help."""
    if command.name not in WORKING_COMMANDS:
        return Decision("help", command, "help asked" if not command.unknown else "unknown command")
    if not allows(have, need):
        return Decision("refuse", command, f"needs {need}, has {have}")
    return Decision("run", command, "permitted")


def help_text(need: Permission, unknown: str = "") -> str:
    """The help reply (a few lines; the unknown word escaped)."""
    head = ""
    if unknown:
        head = f"I do not know the command {code_span(cut(unknown, 40))}.\n\n"
    return (
        f"{head}wishbot commands (the first line of a comment; plan and retry need {need} "
        "access or more):\n\n"
        "- `/wishbot plan`: check the wishlist again and update the plan comment\n"
        "- `/wishbot retry`: retry the failed publication (merged request or default branch)\n"
        "- `/wishbot help`: this list\n"
    )


def refusal_text(command: Command, author: str, need: Permission) -> str:
    """The polite one-line refusal."""
    return (
        f"Sorry {code_span(cut(author, 60))}, `/wishbot {command.name}` needs {need} access "
        "to this repository; ask a maintainer to run it."
    )

"""The work the bot does, as values: review, publish, maintain, refresh.

Every runtime (``serve``, ``ci``, ``watch``) turns what it learns (a webhook,
CI variables, a poll, a timer, a registry event) into one of these
:data:`Action` values and hands it to :func:`bot.runtime.dispatch.dispatch`.
The queue stores them: :func:`encode` and :func:`decode` are the one place an
action becomes a queue row (kind, key, JSON payload) and back. A new kind of
work is one dataclass here, one line in :data:`KINDS` and one handler in the
dispatcher's router.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.errors import WishbotError
from bot.forge.base import MergeRequest
from bot.runtime.events import Event, MergeRequestEvent


@dataclass(frozen=True)
class Review:
    """Validate and plan merge request ``number``: statuses and the one comment.

    ``merge_request`` is a snapshot the caller already read (the poller); it
    is never stored, and without it the dispatcher reads the request."""

    forge: str
    repository: str
    number: str
    merge_request: MergeRequest | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"review:{self.repository}:{self.number}"


@dataclass(frozen=True)
class Publish:
    """Publish ``branch`` (only the default branch publishes), pushed at ``sha``."""

    forge: str
    repository: str
    branch: str
    sha: str

    @property
    def key(self) -> str:
        return f"publish:{self.repository}:{self.branch}"


@dataclass(frozen=True)
class Maintain:
    """Periodic maintenance: gc, then re-publish the default branch."""

    forge: str
    repository: str

    @property
    def key(self) -> str:
        return f"maintain:{self.repository}"


@dataclass(frozen=True)
class Refresh:
    """Re-publish the wishes registry events may concern (``images``; every wish
    when ``overflow``); ``received`` is when the first of those events arrived."""

    forge: str
    repository: str
    images: tuple[str, ...] = ()
    received: float | None = None
    overflow: bool = False

    @property
    def key(self) -> str:
        return f"refresh:{self.repository}"


Action = Review | Publish | Maintain | Refresh

#: the queue's job kind of each action type
KINDS: dict[type[Action], str] = {
    Review: "review",
    Publish: "publish",
    Maintain: "maintain",
    Refresh: "refresh",
}
REVIEW, PUBLISH, MAINTAIN, REFRESH = (KINDS[t] for t in (Review, Publish, Maintain, Refresh))


def kind_of(action: Action) -> str:
    return KINDS[type(action)]


def encode(action: Action) -> tuple[str, str, dict[str, Any]]:
    """The queue row of ``action``: its kind, its coalescing key and its JSON payload."""
    payload: dict[str, Any] = {"forge": action.forge, "repository": action.repository}
    if isinstance(action, Review):
        payload["number"] = action.number
    elif isinstance(action, Publish):
        payload.update(branch=action.branch, sha=action.sha)
    elif isinstance(action, Refresh):
        payload.update(images=sorted(action.images), received=action.received)
        if action.overflow:
            payload["overflow"] = True
    return kind_of(action), action.key, payload


def decode(kind: str, payload: Mapping[str, Any]) -> Action:
    """The action a queue row holds (a :class:`WishbotError` for an unknown kind)."""
    forge, repository = str(payload["forge"]), str(payload["repository"])
    if kind == REVIEW:
        return Review(forge, repository, str(payload["number"]))
    if kind == PUBLISH:
        return Publish(forge, repository, str(payload["branch"]), str(payload["sha"]))
    if kind == MAINTAIN:
        return Maintain(forge, repository)
    if kind == REFRESH:
        return _refresh(forge, repository, payload)
    raise WishbotError(f"unknown job kind {kind!r}")


def _refresh(forge: str, repository: str, payload: Mapping[str, Any]) -> Refresh:
    received = payload.get("received")
    return Refresh(
        forge,
        repository,
        tuple(str(i) for i in payload.get("images") or ()),
        float(received) if isinstance(received, (int, float)) else None,
        bool(payload.get("overflow")),
    )


def action_of(event: Event) -> Review | Publish:
    """What a forge event asks for: a merge request is reviewed, a push published."""
    if isinstance(event, MergeRequestEvent):
        return Review(event.forge, event.repository, event.number)
    return Publish(event.forge, event.repository, event.branch, event.sha)

"""The work the bot does, as values: review, publish, maintain, refresh, command.

Every runtime (``serve``, ``ci``, ``watch``) turns what it learns (a webhook,
CI variables, a poll, a timer, a registry event) into one of these
:data:`Action` values and hands it to :func:`bot.runtime.dispatch.dispatch`.
The queue stores them: :func:`encode` and :func:`decode` are the one place an
action becomes a queue row (kind, key, JSON payload) and back; each action
says which worker lane runs it (``lane``: the one publisher worker, or the
parallel forge workers). A new kind of work (a comment command) is one
dataclass here, one entry in :data:`ACTION_TYPES` and one handler in the
dispatcher's router.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bot.errors import WishbotError
from bot.forge.base import MergeRequest
from bot.runtime.command_events import CommandDelivery, from_payload, to_payload
from bot.runtime.events import Event, MergeRequestEvent

PUBLISHER = "publisher"  # one worker: publications never overlap
FORGE = "forge"  # several workers in parallel: reads the forge and registries only


@dataclass(frozen=True)
class Review:
    """Validate and plan merge request ``number``: statuses and the one comment.

    ``merge_request`` is a snapshot the caller already read (the poller); it
    is never stored, and without it the dispatcher reads the request."""

    kind: ClassVar[str] = "review"
    lane: ClassVar[str] = FORGE

    forge: str
    repository: str
    number: str
    merge_request: MergeRequest | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"review:{self.repository}:{self.number}"

    def fields(self) -> dict[str, Any]:
        return {"number": self.number}

    @classmethod
    def from_fields(cls, forge: str, repository: str, payload: Mapping[str, Any]) -> Review:
        return cls(forge, repository, str(payload["number"]))


@dataclass(frozen=True)
class Publish:
    """Publish ``branch`` (only the default branch publishes), pushed at ``sha``."""

    kind: ClassVar[str] = "publish"
    lane: ClassVar[str] = PUBLISHER

    forge: str
    repository: str
    branch: str
    sha: str

    @property
    def key(self) -> str:
        return f"publish:{self.repository}:{self.branch}"

    def fields(self) -> dict[str, Any]:
        return {"branch": self.branch, "sha": self.sha}

    @classmethod
    def from_fields(cls, forge: str, repository: str, payload: Mapping[str, Any]) -> Publish:
        return cls(forge, repository, str(payload["branch"]), str(payload["sha"]))


@dataclass(frozen=True)
class Maintain:
    """Periodic maintenance: gc, then re-publish the default branch."""

    kind: ClassVar[str] = "maintain"
    lane: ClassVar[str] = PUBLISHER

    forge: str
    repository: str

    @property
    def key(self) -> str:
        return f"maintain:{self.repository}"

    def fields(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_fields(cls, forge: str, repository: str, payload: Mapping[str, Any]) -> Maintain:
        return cls(forge, repository)


@dataclass(frozen=True)
class Refresh:
    """Re-publish the wishes registry events may concern (``images``; every wish
    when ``overflow``); ``received`` is when the first of those events arrived.
    Waiting refreshes of one repository merge their ``images`` in the queue."""

    kind: ClassVar[str] = "refresh"
    lane: ClassVar[str] = PUBLISHER

    forge: str
    repository: str
    images: tuple[str, ...] = ()
    received: float | None = None
    overflow: bool = False

    @property
    def key(self) -> str:
        return f"refresh:{self.repository}"

    def fields(self) -> dict[str, Any]:
        found: dict[str, Any] = {"images": sorted(self.images), "received": self.received}
        if self.overflow:
            found["overflow"] = True
        return found

    @classmethod
    def from_fields(cls, forge: str, repository: str, payload: Mapping[str, Any]) -> Refresh:
        received = payload.get("received")
        return cls(
            forge,
            repository,
            tuple(str(i) for i in payload.get("images") or ()),
            float(received) if isinstance(received, (int, float)) else None,
            bool(payload.get("overflow")),
        )


@dataclass(frozen=True)
class Command:
    """A comment command, a dashboard edit or a "queued behind" notice
    (:mod:`bot.runtime.commands`): one job per comment, edit or waiting push."""

    kind: ClassVar[str] = "command"
    lane: ClassVar[str] = FORGE

    forge: str
    repository: str
    delivery: CommandDelivery

    @property
    def key(self) -> str:
        return self.delivery.key

    def fields(self) -> dict[str, Any]:
        return to_payload(self.delivery)

    @classmethod
    def from_fields(cls, forge: str, repository: str, payload: Mapping[str, Any]) -> Command:
        return cls(forge, repository, from_payload(payload))


Action = Review | Publish | Maintain | Refresh | Command

#: every action type by its queue kind: a new kind of work is one class and one entry
ACTION_TYPES: dict[str, type[Action]] = {
    t.kind: t for t in (Review, Publish, Maintain, Refresh, Command)
}
REVIEW, PUBLISH, MAINTAIN, REFRESH, COMMAND = (
    t.kind for t in (Review, Publish, Maintain, Refresh, Command)
)


def kinds_in(lane: str) -> tuple[str, ...]:
    """The queue kinds one worker lane (:data:`PUBLISHER` or :data:`FORGE`) claims."""
    return tuple(kind for kind, t in ACTION_TYPES.items() if t.lane == lane)


def encode(action: Action) -> tuple[str, str, dict[str, Any]]:
    """The queue row of ``action``: its kind, its coalescing key and its JSON payload."""
    payload: dict[str, Any] = {"forge": action.forge, "repository": action.repository}
    payload.update(action.fields())
    return action.kind, action.key, payload


def decode(kind: str, payload: Mapping[str, Any]) -> Action:
    """The action a queue row holds (a :class:`WishbotError` for an unknown kind)."""
    action_type = ACTION_TYPES.get(kind)
    if action_type is None:
        raise WishbotError(f"unknown job kind {kind!r}")
    return action_type.from_fields(str(payload["forge"]), str(payload["repository"]), payload)


def action_of(event: Event) -> Review | Publish:
    """What a forge event asks for: a merge request is reviewed, a push published."""
    if isinstance(event, MergeRequestEvent):
        return Review(event.forge, event.repository, event.number)
    return Publish(event.forge, event.repository, event.branch, event.sha)

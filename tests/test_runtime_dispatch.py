"""One action type and one dispatcher: actions round-trip through the queue, and
every action type has a handler and a worker lane."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import WishbotError
from bot.runtime.actions import (
    ACTION_TYPES,
    FORGE,
    PUBLISHER,
    Action,
    Maintain,
    Publish,
    Refresh,
    Review,
    decode,
    encode,
    kinds_in,
)
from bot.runtime.dispatch import ROUTES
from bot.runtime.queue import Queue

ACTIONS: list[Action] = [
    Review("gitlab", "group/wishlist", "7"),
    Publish("github", "octo/wishlist", "main", "a" * 40),
    Maintain("local", "team/wishlist"),
    Refresh("github", "octo/wishlist", ("ghcr.io/o/a:1", "docker.io/b:2"), 1700000000.5),
    Refresh("github", "octo/wishlist", (), 1.0, overflow=True),
]


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: type(a).__name__)
def test_an_action_round_trips_through_the_queue(tmp_path: Path, action: Action) -> None:
    queue = Queue(tmp_path / "queue.db")
    kind, key, payload = encode(action)
    assert queue.put(kind, key, payload) == "queued"
    job = queue.claim((kind,))
    assert job is not None
    back = decode(job.kind, job.payload)
    if isinstance(action, Refresh):  # the queue keeps the images sorted
        action = Refresh(
            action.forge,
            action.repository,
            tuple(sorted(action.images)),
            action.received,
            action.overflow,
        )
    assert back == action


def test_the_payloads_are_the_ones_queued_before_actions() -> None:
    """Jobs queued by an older wishbot still decode: same kinds, keys and payloads."""
    assert encode(Review("github", "o/r", "3")) == (
        "review",
        "review:o/r:3",
        {"forge": "github", "repository": "o/r", "number": "3"},
    )
    assert encode(Publish("gitlab", "g/p", "main", "abc")) == (
        "publish",
        "publish:g/p:main",
        {"forge": "gitlab", "repository": "g/p", "branch": "main", "sha": "abc"},
    )
    assert encode(Maintain("local", "t/w"))[2] == {"forge": "local", "repository": "t/w"}


def test_every_action_type_has_a_handler_and_a_lane() -> None:
    assert set(ROUTES) == set(ACTION_TYPES.values())
    assert set(kinds_in(PUBLISHER)) | set(kinds_in(FORGE)) == set(ACTION_TYPES)
    # everything that writes the tree runs on the one publisher worker; a review
    # and a comment command only read, answer and queue work
    assert kinds_in(FORGE) == ("review", "command")
    assert kinds_in(PUBLISHER) == ("publish", "maintain", "refresh")


def test_an_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(WishbotError, match="unknown job kind 'convert'"):
        decode("convert", {"forge": "github", "repository": "o/r"})

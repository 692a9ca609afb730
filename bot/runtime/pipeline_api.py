"""What the bot's workflow needs from the rest of wishbot.

The runtimes (CI job, webhook server, poller) talk to forges and call a
:class:`Pipeline` for the real work: review a merge request's wishlist
(validation + plan against the base) and publish a merged wishlist. The
real implementation is built by ``bot.runtime.pipeline.make_pipeline``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from bot.core.comment import PLAN_MARKER, PUBLISH_MARKER
from bot.core.plan import Plan

__all__ = ["PLAN_MARKER", "PUBLISH_MARKER", "Pipeline", "Publication", "Review"]


@dataclass(frozen=True)
class Review:
    """The result of validating and planning a merge request's wishlist."""

    valid: bool
    validate_description: str
    planned: bool
    plan_description: str
    comment: str  # Markdown, including PLAN_MARKER
    #: the plan behind the comment: the workflow renders it again with its links when given
    plan: Plan | None = None
    title: str = ""


@dataclass(frozen=True)
class Publication:
    """The result of publishing a merged wishlist."""

    ok: bool
    description: str
    published: tuple[str, ...] = ()  # /cvmfs/... paths
    catalog: Mapping[str, bytes] = field(default_factory=dict)  # file name -> bytes
    failure: str | None = None


class Pipeline(Protocol):
    def review(
        self,
        base: bytes | None,
        head: bytes,
        path: str,
        *,
        trusted: bool,
        catalog: bytes | None = None,
    ) -> Review:
        """Validate and plan ``head`` against ``base`` (None: the file is new).

        ``trusted`` is False for merge requests from forks: use no secrets.
        ``catalog`` is the ``catalog.json`` committed on the target branch, the
        current state of the publisher when the pipeline cannot read it directly.
        """
        ...

    def publish(self, wishlist: bytes, path: str, commit: str) -> Publication:
        """Convert and publish the merged wishlist at ``commit``."""
        ...

    def collect(self) -> str:
        """Garbage-collect the publisher (grace period over); a one-line summary."""
        ...

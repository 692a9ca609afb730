"""The plan: what converging the publisher to the wishlist would do.

:func:`make_plan` is a pure function of (wishes, resolutions, current state,
now): no network, no disk, no clock. ``wishbot plan`` renders a Plan, and
``wishbot apply`` executes the same Plan, so what the merge-request comment
promised is what gets published.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.core.model import Problem, PublishedImage, ResolvedImage, Wish
from bot.core.reference import ImageReference

ImageAction = Literal["add", "update", "unchanged", "remove", "error"]
LayerAction = Literal["ingest", "shared", "schedule"]


@dataclass(frozen=True)
class ImageChange:
    """One published path and what happens to it."""

    action: ImageAction
    path: str  # layout path "<registry>/<repository>:<tag>" (see bot.core.layout)
    reference: ImageReference
    wish: Wish | None = None
    new: ResolvedImage | None = None  # add / update / unchanged
    old: PublishedImage | None = None  # update / remove / unchanged
    new_layers: tuple[str, ...] = ()  # digests this image brings that are not yet published
    download_bytes: int = 0  # compressed bytes of new_layers (counted once per plan)
    problem: Problem | None = None  # error
    eligible: datetime | None = None  # remove/update: when the old image may be deleted


@dataclass(frozen=True)
class LayerChange:
    action: LayerAction
    digest: str
    compressed_size: int
    unpacked_size: int | None = None  # known for published layers only
    users: int = 0  # images that refer to it after the change
    eligible: datetime | None = None  # schedule: when it may be deleted


@dataclass(frozen=True)
class Plan:
    cvmfs_repo: str
    now: datetime
    grace_days: int
    images: tuple[ImageChange, ...] = ()
    layers: tuple[LayerChange, ...] = ()
    problems: tuple[Problem, ...] = ()
    base: bool = False  # True: the plan covers only what a change (OLD -> NEW) does

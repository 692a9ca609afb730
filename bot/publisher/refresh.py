"""Re-publish some wishes only: what a registry event may concern.

The same plan and apply as every publication (:func:`bot.core.plan.make_plan`
in its "change" view, :func:`bot.publisher.apply.apply_plan`), restricted to
``wishes``: their tags are resolved again from the registry, an image that
really changed is published in its own transaction, and the moved tag's old
image is scheduled for removal with its grace period, exactly as the hourly
re-publication does. Nothing else of the wishlist is looked at.

A hint never removes anything: a wish whose re-resolution would remove a
published image (a tag deleted upstream) is left out of the run altogether,
for the periodic re-publication to decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.config import Config
from bot.core.model import CurrentState, Resolution, Wish, Wishlist
from bot.core.plan import Plan, WishIndex, make_plan
from bot.publisher.apply import ApplyReport, apply_plan
from bot.publisher.backend import Publisher
from bot.publisher.converge import honour_ignore_errors
from bot.publisher.state import read_state


def refresh(
    wishlist: Wishlist,
    wishes: Sequence[Wish],
    publisher: Publisher,
    client: Any,
    *,
    config: Config,
    now: datetime,
) -> tuple[Plan, ApplyReport, list[Wish]]:
    """Resolve ``wishes`` again and publish what changed; returns the plan, the
    report, and the wishes left out because they would remove something."""
    resolutions = client.resolve_all(wishes)
    with publisher.lock():
        publisher.recover()
        current = read_state(publisher.root, wishlist.cvmfs_repo)
        plan = _plan(wishlist, resolutions, current, now, config)
        kept = _removing(plan, wishes)
        if kept:
            keys = {wish.key for wish in kept}
            resolutions = [r for r in resolutions if r.wish.key not in keys]
            plan = _plan(wishlist, resolutions, current, now, config)
        report = apply_plan(
            plan, publisher, client, config=config, output_format=wishlist.output_format
        )
    return plan, honour_ignore_errors(report, wishlist), kept


def _plan(
    wishlist: Wishlist,
    resolutions: Sequence[Resolution],
    current: CurrentState,
    now: datetime,
    config: Config,
) -> Plan:
    return make_plan(
        wishlist.wishes,
        resolutions,
        current,
        now,
        grace_days=config.grace_days,
        cvmfs_repo=wishlist.cvmfs_repo,
        removed=[],
    )


def _removing(plan: Plan, wishes: Sequence[Wish]) -> list[Wish]:
    """The wishes that cover an image the plan would remove."""
    gone = [change.old for change in plan.images if change.action == "remove" and change.old]
    if not gone:
        return []
    return [wish for wish in wishes if any(WishIndex([wish]).covers(image) for image in gone)]

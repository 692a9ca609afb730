"""The life of a published path and image: retiring, grace period, schedule.

Everything that decides *when* something published may go lives here, as
pure functions of the current state and a date (no disk, no clock):

* a path is **retiring** when a wish was removed from the wishlist: it keeps
  serving the same image, and its image entry in the remove schedule names
  that very path, until gc deletes both after the grace period;
* an old image (a moved tag, a retiring path) or a layer nobody uses waits in
  the **remove schedule** for ``grace_days`` from the date it was scheduled;
* a plan that uses a scheduled image or layer again takes it **off the
  schedule**.

:mod:`bot.core.plan` decides with these rules, :mod:`bot.core.catalog` shows
them; the publisher's ``retiring`` and ``gc`` apply them to the tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from bot.core.layout import MULTIARCH
from bot.core.model import CurrentState, PublishedImage, ScheduledRemoval

#: (public path, image id): a path serving an image
RetiringKey = tuple[str, str]


def public_path(path: str) -> str:
    """The public path of a published tree: ``.multiarch/<arch>/<path>`` -> ``<path>``.

    The publisher may report a multi-platform image under its public path
    (with the platform telling them apart) or under its ``.multiarch`` twin;
    the plan keys both the same way: (public path, platform).
    """
    prefix = f"{MULTIARCH}/"
    if path.startswith(prefix):
        parts = path.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return path


def serving_key(path: str, image_id: str) -> RetiringKey:
    """The key of "``path`` serves ``image_id``", whichever twin of the path is named."""
    return (public_path(path), image_id)


def grace_end(scheduled: datetime, grace_days: int) -> datetime:
    """When something scheduled on ``scheduled`` may be deleted."""
    return scheduled + timedelta(days=grace_days)


def deletion_date(removal: ScheduledRemoval, grace_days: int) -> datetime:
    """When gc may delete what a schedule entry names."""
    return grace_end(removal.scheduled, grace_days)


def retiring(current: CurrentState) -> dict[RetiringKey, datetime]:
    """Retiring paths: ``(public path, image id)`` -> the date its removal was scheduled.

    A wish removed from the wishlist leaves its public path serving the same
    image until gc deletes both after the grace period (jobs queued with the
    path keep working). Such a path is published *and* has an image entry in
    the remove schedule naming that very path; an entry whose path now serves
    another image (a moved tag) is an old image waiting, not a retiring path.
    """
    scheduled: dict[RetiringKey, datetime] = {}
    for removal in current.schedule:
        if removal.kind != "image" or not removal.path:
            continue
        key = serving_key(removal.path, removal.id)
        if key not in scheduled or removal.scheduled < scheduled[key]:
            scheduled[key] = removal.scheduled
    served = {serving_key(image.path, image.image_id) for image in current.images}
    return {key: when for key, when in scheduled.items() if key in served}


def is_retiring(image: PublishedImage, retiring_paths: Mapping[RetiringKey, datetime]) -> bool:
    """Does ``image``'s path retire (serve it until gc deletes both)?"""
    return serving_key(image.path, image.image_id) in retiring_paths


def serving(removal: ScheduledRemoval, paths: Mapping[RetiringKey, datetime]) -> bool:
    """Does this entry's path still serve its image (a retiring path)?"""
    if removal.kind != "image" or not removal.path:
        return False
    return serving_key(removal.path, removal.id) in paths


def retires_at(
    image: PublishedImage, paths: Mapping[RetiringKey, datetime], grace_days: int
) -> datetime | None:
    """When gc deletes ``image``'s path (removed from the wishlist), or None while wished."""
    since = paths.get(serving_key(image.path, image.image_id))
    return grace_end(since, grace_days) if since is not None else None


def taken_off_schedule(
    schedule: Iterable[ScheduledRemoval],
    staying_images: Iterable[str],
    staying_layers: Iterable[str],
    still_retiring: Iterable[RetiringKey],
) -> tuple[str, ...]:
    """Scheduled image ids and layer digests a change uses again (sorted, distinct).

    An image entry of a path that keeps retiring stays on the schedule: the
    path goes at gc, whoever else uses the image.
    """
    images, layers, retiring_keys = set(staying_images), set(staying_layers), set(still_retiring)

    def used_again(removal: ScheduledRemoval) -> bool:
        if removal.kind == "layer":
            return removal.id in layers
        return (
            removal.kind == "image"
            and removal.id in images
            and serving_key(removal.path or "", removal.id) not in retiring_keys
        )

    return tuple(sorted({removal.id for removal in schedule if used_again(removal)}))

"""The plan: what converging the publisher to the wishlist would do.

:func:`make_plan` is a pure function of (wishes, resolutions, current state,
now): no network, no disk, no clock. ``wishbot plan`` renders a Plan, and
``wishbot apply`` executes the same Plan, so what the merge-request comment
promised is what gets published.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from bot.core.layout import MULTIARCH, image_path, multiarch_path
from bot.core.model import (
    CurrentState,
    Platform,
    Problem,
    PublishedImage,
    PublishedLayer,
    Resolution,
    ResolvedImage,
    Wish,
    Wishlist,
)
from bot.core.recipe import apply_ignore_errors
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
    #: remove: when gc deletes the path; it serves the old image until then (retiring)
    retires: datetime | None = None

    @property
    def platform(self) -> Platform | None:
        """The platform of this row (None for an "error" row about a whole wish)."""
        if self.new is not None:
            return self.new.platform
        if self.old is not None:
            return self.old.platform
        return None

    @property
    def multiarch(self) -> bool:
        return self.new is not None and self.new.multiarch

    @property
    def published_path(self) -> str:
        """Where the image's tree lives: ``path`` or its ``.multiarch/<arch>/`` twin.

        :attr:`path` is always the public path (``<registry>/<repository>:<tag>``);
        for an image of a multi-platform wish the public path is a variant
        symlink and each platform lives under :func:`bot.core.layout.multiarch_path`.
        """
        platform = self.platform
        if self.multiarch and platform is not None:
            return multiarch_path(platform, self.path)
        return self.path

    @property
    def scheduled(self) -> bool:
        """True when the old image goes to the remove schedule (its id is used nowhere else)."""
        return self.eligible is not None


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
    #: image ids and layer digests waiting in the remove schedule that the plan uses again:
    #: executing the plan must take them off the schedule
    unscheduled: tuple[str, ...] = ()

    # --- totals (always equal to the sum of the rows) ---------------------
    def _count(self, action: ImageAction) -> int:
        return sum(1 for change in self.images if change.action == action)

    @property
    def images_added(self) -> int:
        return self._count("add")

    @property
    def images_updated(self) -> int:
        return self._count("update")

    @property
    def images_removed(self) -> int:
        return self._count("remove")

    @property
    def images_unchanged(self) -> int:
        return self._count("unchanged")

    @property
    def images_failed(self) -> int:
        return self._count("error")

    @property
    def images_scheduled(self) -> int:
        """Distinct old images (by id) that go to the remove schedule."""
        return len({c.old.image_id for c in self.images if c.scheduled and c.old is not None})

    @property
    def layers_to_ingest(self) -> int:
        return sum(1 for layer in self.layers if layer.action == "ingest")

    @property
    def download_bytes(self) -> int:
        return sum(layer.compressed_size for layer in self.layers if layer.action == "ingest")

    @property
    def layers_scheduled(self) -> int:
        return sum(1 for layer in self.layers if layer.action == "schedule")

    @property
    def bytes_scheduled(self) -> int:
        return sum(layer.compressed_size for layer in self.layers if layer.action == "schedule")

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")

    @property
    def has_errors(self) -> bool:
        """Errors that block (an error row whose problem ``ignoreErrors`` made a warning does not)."""
        return bool(self.errors) or any(
            c.action == "error" and (c.problem is None or c.problem.severity == "error")
            for c in self.images
        )

    @property
    def has_changes(self) -> bool:
        return any(c.action in ("add", "update", "remove") for c in self.images)


# --- making the plan --------------------------------------------------------

_ACTION_ORDER = {"error": 0, "add": 1, "update": 2, "remove": 3, "unchanged": 4}
_LAYER_ORDER = {"ingest": 0, "shared": 1, "schedule": 2}

ImageKey = tuple[str, Platform]


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


def wish_covers(wish: Wish, image: PublishedImage) -> bool:
    """Does ``wish`` ask for the published ``image``? (same image name, tag matches the glob).

    A wish with a concrete tag covers that tag only; a wildcard tag covers
    every tag it matches; a digest-only wish covers its ``@digest`` path.
    """
    wanted = wish.reference.normalized()
    have = image.reference.normalized()
    if (wanted.registry, wanted.repository) != (have.registry, have.repository):
        return False
    if wanted.tag is None:
        return public_path(image.path) == image_path(wanted)
    if have.tag is None:
        return False
    return wanted.matches_tag(have.tag)


class WishIndex:
    """Wishes by image name, to ask "does any of them cover this image?" in O(wishes per name)."""

    def __init__(self, wishes: Iterable[Wish]) -> None:
        self._by_name: dict[tuple[str, str], list[Wish]] = {}
        for wish in wishes:
            ref = wish.reference.normalized()
            self._by_name.setdefault((ref.registry, ref.repository), []).append(wish)

    def covers(self, image: PublishedImage) -> bool:
        ref = image.reference.normalized()
        candidates = self._by_name.get((ref.registry, ref.repository), ())
        return any(wish_covers(wish, image) for wish in candidates)


def retiring(current: CurrentState) -> dict[tuple[str, str], datetime]:
    """Retiring paths: ``(public path, image id)`` -> the date its removal was scheduled.

    A wish removed from the wishlist leaves its public path serving the same
    image until gc deletes both after the grace period (jobs queued with the
    path keep working). Such a path is published *and* has an image entry in
    the remove schedule naming that very path; an entry whose path now serves
    another image (a moved tag) is an old image waiting, not a retiring path.
    """
    scheduled: dict[tuple[str, str], datetime] = {}
    for removal in current.schedule:
        if removal.kind != "image" or not removal.path:
            continue
        key = (public_path(removal.path), removal.id)
        if key not in scheduled or removal.scheduled < scheduled[key]:
            scheduled[key] = removal.scheduled
    served = {(public_path(image.path), image.image_id) for image in current.images}
    return {key: when for key, when in scheduled.items() if key in served}


def is_retiring(image: PublishedImage, retiring_paths: Mapping[tuple[str, str], datetime]) -> bool:
    return (public_path(image.path), image.image_id) in retiring_paths


def _unresolved_problem(wish: Wish) -> Problem:
    return Problem(
        severity="error",
        message=f"'{wish.reference}' was not resolved against its registry",
        location=wish.location,
        code="unresolved",
        hint="nothing is removed for this wish until it resolves; run the plan again",
        image=str(wish.reference),
    )


def _same_image(old: PublishedImage, new: ResolvedImage) -> bool:
    return old.image_id == new.image_id or old.manifest_digest == new.manifest_digest


def _unique(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    seen: list[Problem] = []
    for problem in problems:
        if problem not in seen:
            seen.append(problem)
    return tuple(seen)


def make_plan(
    wishes: Sequence[Wish],
    resolutions: Sequence[Resolution],
    current: CurrentState,
    now: datetime,
    *,
    grace_days: int = 30,
    cvmfs_repo: str,
    removed: Sequence[Wish] | None = None,
    problems: Sequence[Problem] = (),
) -> Plan:
    """What converging ``current`` to the wishes would do. Pure: no I/O, no clock.

    Two views:

    * ``removed is None`` (what ``apply`` would do now): ``wishes`` is the whole
      wishlist and ``resolutions`` should cover all of it. Every published
      image no wish wants is removed; a wish without a complete resolution
      yields an "error" row and protects every published image it covers.
    * ``removed`` given (a merge request, ``--base``): ``wishes`` is still the
      whole NEW wishlist, ``resolutions`` cover only the new and changed
      wishes, and ``removed`` are the wishes the change deletes. Images of
      unchanged wishes are not listed; images covered by a removed wish are
      removed unless some wish of the new wishlist still covers them.

    Rows are keyed by (public path, platform); see :attr:`ImageChange.published_path`
    for where a multi-platform image's tree lives. A removed path keeps serving
    its image until gc deletes it at ``now + grace_days`` (see :func:`retiring`);
    such a *retiring* path gets no row again, and a wish that asks for it again
    keeps it ("unchanged", its schedule entry goes to :attr:`Plan.unscheduled`),
    or re-points it if the tag moved ("update", the old image waits from now).
    The old image of a moved tag whose id no image that stays uses is scheduled
    for deletion at ``now + grace_days``.
    Fail closed: an image covered by a wish that did not resolve is never
    updated, removed or scheduled.
    """
    base = removed is not None
    eligible_at = now + timedelta(days=grace_days)

    complete = [r for r in resolutions if r.complete]
    incomplete = [r for r in resolutions if not r.complete]
    complete_keys = {r.wish.key for r in complete}
    resolved_keys = {r.wish.key for r in resolutions}

    # Wishes that cannot vouch for their images right now protect them.
    unresolved_rows: list[tuple[Wish, Problem]] = [
        (r.wish, r.problem) for r in incomplete if r.problem is not None
    ]
    protectors: list[Wish] = [r.wish for r in incomplete]
    seen_unresolved: set[object] = set()
    for wish in wishes:
        if wish.key in complete_keys or wish.key in seen_unresolved:
            continue
        seen_unresolved.add(wish.key)
        protectors.append(wish)
        if not base and wish.key not in resolved_keys:
            unresolved_rows.append((wish, _unresolved_problem(wish)))

    # Removals wait for every wish that could still want the image; updates and
    # listing as kept follow the wishes that failed (a fresh resolution of the
    # very path by another wish is knowledge, not a guess).
    protected = WishIndex(protectors).covers
    failing = WishIndex(wish for wish, _problem in unresolved_rows).covers

    current_by_key: dict[ImageKey, PublishedImage] = {}
    for image in current.images:
        current_by_key.setdefault((public_path(image.path), image.platform), image)

    desired: dict[ImageKey, ResolvedImage] = {}
    for resolution in complete:
        for new in resolution.images:
            desired.setdefault((image_path(new.reference), new.platform), new)
    for resolution in incomplete:
        # Partial results of a failed wish may add new paths, never touch old ones.
        for new in resolution.images:
            key = (image_path(new.reference), new.platform)
            if key not in current_by_key:
                desired.setdefault(key, new)

    retiring_paths = retiring(current)
    rows: list[ImageChange] = []
    for (path, _platform), new in desired.items():
        old = current_by_key.get((path, new.platform))
        if old is None:
            rows.append(ImageChange("add", path, new.reference, wish=new.wish, new=new))
        elif _same_image(old, new):
            rows.append(
                ImageChange("unchanged", path, new.reference, wish=new.wish, new=new, old=old)
            )
        elif failing(old):
            rows.append(ImageChange("unchanged", path, old.reference, wish=new.wish, old=old))
        else:
            rows.append(ImageChange("update", path, new.reference, wish=new.wish, new=new, old=old))

    removal_scope: WishIndex | None = None
    if base:
        removal_scope = WishIndex([*(r.wish for r in complete), *(removed or ())])
    for key, old in current_by_key.items():
        if key in desired:
            continue
        if is_retiring(old, retiring_paths):
            continue  # already scheduled: it keeps serving until gc deletes it
        if protected(old):
            # Fail closed: listed as kept when its wish is in view, never removed.
            if not base or failing(old):
                rows.append(ImageChange("unchanged", key[0], old.reference, old=old))
            continue
        if removal_scope is not None and not removal_scope.covers(old):
            continue
        rows.append(ImageChange("remove", key[0], old.reference, old=old))

    for wish, problem in unresolved_rows:
        rows.append(
            ImageChange(
                "error", image_path(wish.reference), wish.reference, wish=wish, problem=problem
            )
        )

    # --- who stays: images (and their layers) after the change -------------
    leaving = {id(c.old) for c in rows if c.action in ("update", "remove") and c.old is not None}
    # a retiring path nobody wants again goes at gc: its image is not staying
    revived_keys = {(c.path, c.old.image_id) for c in rows if c.old is not None}
    still_retiring = {
        (public_path(image.path), image.image_id)
        for image in current_by_key.values()
        if is_retiring(image, retiring_paths)
    } - revived_keys
    leaving |= {
        id(image)
        for image in current.images
        if (public_path(image.path), image.image_id) in still_retiring
    }
    staying_ids: set[str] = set()
    staying_layers: dict[str, set[str]] = {}
    for image in current.images:
        if id(image) in leaving:
            continue
        staying_ids.add(image.image_id)
        for digest in image.layers:
            staying_layers.setdefault(digest, set()).add(image.image_id)
    for change in rows:
        if change.action in ("add", "update", "unchanged") and change.new is not None:
            staying_ids.add(change.new.image_id)
            for layer in change.new.layers:
                staying_layers.setdefault(layer.digest, set()).add(change.new.image_id)

    rows.sort(key=_row_key)
    already_scheduled = {s.id for s in current.schedule}
    layers: dict[str, LayerChange] = {}
    final_rows: list[ImageChange] = []
    for change in rows:
        old = change.old
        if change.action == "remove":
            change = replace(change, retires=eligible_at)  # it serves until then
        if change.action in ("update", "remove") and old and old.image_id not in staying_ids:
            # a retiring path wished again with a moved tag is a move like any other:
            # it served the old image until now, so the old image's grace starts now
            change = replace(change, eligible=eligible_at)
        if change.action in ("add", "update") and change.new is not None:
            brought: list[str] = []
            download = 0
            for layer in change.new.layers:
                if layer.digest in layers:
                    continue
                published = current.layers.get(layer.digest)
                users = len(staying_layers.get(layer.digest, ()))
                if published is None:
                    layers[layer.digest] = LayerChange(
                        "ingest", layer.digest, layer.size, None, users=users
                    )
                    brought.append(layer.digest)
                    download += layer.size
                else:
                    layers[layer.digest] = _published_change("shared", published, users)
            change = replace(change, new_layers=tuple(brought), download_bytes=download)
        final_rows.append(change)

    for change in final_rows:
        if not change.scheduled or change.old is None:
            continue
        for digest in change.old.layers:
            if digest in layers or digest in staying_layers or digest in already_scheduled:
                continue
            published = current.layers.get(digest) or PublishedLayer(digest, None, 0, 0)
            layers[digest] = replace(
                _published_change("schedule", published, 0), eligible=eligible_at
            )

    unscheduled = sorted(
        {
            s.id
            for s in current.schedule
            if (
                s.kind == "image"
                and s.id in staying_ids
                and (public_path(s.path or ""), s.id) not in still_retiring
            )
            or (s.kind == "layer" and s.id in staying_layers)
        }
    )
    all_problems = _unique(
        [
            *problems,
            *(r.problem for r in resolutions if r.problem is not None),
            *(problem for _wish, problem in unresolved_rows),
        ]
    )
    return Plan(
        cvmfs_repo=cvmfs_repo,
        now=now,
        grace_days=grace_days,
        images=tuple(final_rows),
        layers=tuple(sorted(layers.values(), key=lambda c: (_LAYER_ORDER[c.action], c.digest))),
        problems=all_problems,
        base=base,
        unscheduled=tuple(unscheduled),
    )


def _published_change(action: LayerAction, layer: PublishedLayer, users: int) -> LayerChange:
    return LayerChange(
        action, layer.digest, layer.compressed_size, layer.unpacked_size, users=users
    )


def _row_key(change: ImageChange) -> tuple[str, str, int]:
    platform = change.platform
    return (change.path, str(platform) if platform else "", _ACTION_ORDER[change.action])


def ignoring_errors(plan: Plan, wishlist: Wishlist) -> Plan:
    """The plan as people see it: errors ``ignoreErrors`` covers are warnings.

    Only the problems change (the comment, the statuses and the exit code then
    agree with ``validate``); the rows stay as planned, so a wish with an
    ignored error still protects its published images (fail closed).
    """
    if not wishlist.ignore_errors:
        return plan
    relaxed = dict(zip(plan.problems, apply_ignore_errors(plan.problems, wishlist), strict=True))
    images = tuple(
        replace(c, problem=relaxed.get(c.problem, c.problem)) if c.problem is not None else c
        for c in plan.images
    )
    return replace(plan, problems=tuple(relaxed[p] for p in plan.problems), images=images)

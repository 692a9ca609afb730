"""The plan: what converging the publisher to the wishlist would do.

:func:`make_plan` is a pure function of (wishes, resolutions, current state,
now): no network, no disk, no clock. ``wishbot plan`` renders a Plan, and
``wishbot apply`` executes the same Plan, so what the merge-request comment
promised is what gets published.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from bot.core.layout import image_path, multiarch_path
from bot.core.lifecycle import (
    RetiringKey,
    grace_end,
    is_retiring,
    public_path,
    retiring,
    serving_key,
    taken_off_schedule,
)
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

    The phases, each a small pure function below: where each wish stands
    (:func:`_stand`), what is published and what is wished (:func:`_desired`),
    image actions (:func:`_wished_row`, :func:`_unwished_row`, error rows),
    who stays (:func:`_staying`), dates and layer actions
    (:func:`_layer_actions`), what leaves the schedule
    (:func:`bot.core.lifecycle.taken_off_schedule`) and the problems. The rules
    of retiring and grace live in :mod:`bot.core.lifecycle`.
    """
    base = removed is not None
    standing = _stand(wishes, resolutions, base=base)
    current_by_key = _current_by_key(current)
    desired = _desired(standing, current_by_key)
    scope = _Scope(
        protected=WishIndex(standing.protectors).covers,
        failing=WishIndex(wish for wish, _problem in standing.unresolved).covers,
        retiring_paths=retiring(current),
        removal_scope=(
            WishIndex([*(r.wish for r in standing.complete), *(removed or ())]) if base else None
        ),
        base=base,
    )
    rows = [
        *_wished_rows(desired, current_by_key, scope),
        *_unwished_rows(desired, current_by_key, scope),
        *_error_rows(standing.unresolved),
    ]
    rows.sort(key=_row_key)
    staying = _staying(rows, current, current_by_key, scope.retiring_paths)
    eligible_at = grace_end(now, grace_days)
    final_rows, layers = _layer_actions(rows, current, staying, eligible_at)
    return Plan(
        cvmfs_repo=cvmfs_repo,
        now=now,
        grace_days=grace_days,
        images=tuple(final_rows),
        layers=tuple(sorted(layers.values(), key=lambda c: (_LAYER_ORDER[c.action], c.digest))),
        problems=_all_problems(problems, resolutions, standing),
        base=base,
        unscheduled=taken_off_schedule(
            current.schedule, staying.images, staying.layers, staying.still_retiring
        ),
    )


# --- phase 1: where each wish stands ------------------------------------------


@dataclass(frozen=True)
class _Standing:
    """The wishes sorted by what their resolution can vouch for."""

    complete: list[Resolution]
    incomplete: list[Resolution]
    #: wishes that cannot vouch for their images right now: they protect them
    protectors: list[Wish]
    #: wishes that failed, with why: an "error" row each
    unresolved: list[tuple[Wish, Problem]]


def _stand(wishes: Sequence[Wish], resolutions: Sequence[Resolution], *, base: bool) -> _Standing:
    complete = [r for r in resolutions if r.complete]
    incomplete = [r for r in resolutions if not r.complete]
    unvouched = _distinct_unvouched(wishes, {r.wish.key for r in complete})
    unresolved = [(r.wish, r.problem) for r in incomplete if r.problem is not None]
    if not base:
        unresolved += _never_resolved(unvouched, resolutions)
    return _Standing(complete, incomplete, [*(r.wish for r in incomplete), *unvouched], unresolved)


def _never_resolved(
    wishes: Iterable[Wish], resolutions: Sequence[Resolution]
) -> list[tuple[Wish, Problem]]:
    """The wishes nobody tried to resolve, each with its "unresolved" problem."""
    resolved_keys = {r.wish.key for r in resolutions}
    return [(wish, _unresolved_problem(wish)) for wish in wishes if wish.key not in resolved_keys]


def _distinct_unvouched(wishes: Iterable[Wish], complete_keys: set[object]) -> list[Wish]:
    """The wishes (once each) without a complete resolution."""
    seen: set[object] = set()
    out: list[Wish] = []
    for wish in wishes:
        if wish.key not in complete_keys and wish.key not in seen:
            seen.add(wish.key)
            out.append(wish)
    return out


# --- phase 2: what is published, what is wished --------------------------------


def _current_by_key(current: CurrentState) -> dict[ImageKey, PublishedImage]:
    by_key: dict[ImageKey, PublishedImage] = {}
    for image in current.images:
        by_key.setdefault((public_path(image.path), image.platform), image)
    return by_key


def _desired(
    standing: _Standing, current_by_key: Mapping[ImageKey, PublishedImage]
) -> dict[ImageKey, ResolvedImage]:
    desired: dict[ImageKey, ResolvedImage] = {}
    for resolution in standing.complete:
        for new in resolution.images:
            desired.setdefault((image_path(new.reference), new.platform), new)
    for resolution in standing.incomplete:
        # Partial results of a failed wish may add new paths, never touch old ones.
        for new in resolution.images:
            key = (image_path(new.reference), new.platform)
            if key not in current_by_key:
                desired.setdefault(key, new)
    return desired


# --- phase 3: image actions -----------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """What the image actions follow.

    Removals wait for every wish that could still want the image
    (``protected``); updates and listing as kept follow the wishes that
    failed (``failing``: a fresh resolution of the very path by another wish
    is knowledge, not a guess). In a merge-request view only images covered by
    ``removal_scope`` (the new, changed and removed wishes) may be removed.
    """

    protected: Callable[[PublishedImage], bool]
    failing: Callable[[PublishedImage], bool]
    retiring_paths: Mapping[RetiringKey, datetime]
    removal_scope: WishIndex | None
    base: bool


def _wished_rows(
    desired: Mapping[ImageKey, ResolvedImage],
    current_by_key: Mapping[ImageKey, PublishedImage],
    scope: _Scope,
) -> list[ImageChange]:
    return [
        _wished_row(path, new, current_by_key.get((path, new.platform)), scope)
        for (path, _platform), new in desired.items()
    ]


def _wished_row(
    path: str, new: ResolvedImage, old: PublishedImage | None, scope: _Scope
) -> ImageChange:
    if old is None:
        return ImageChange("add", path, new.reference, wish=new.wish, new=new)
    if _same_image(old, new):
        return ImageChange("unchanged", path, new.reference, wish=new.wish, new=new, old=old)
    if scope.failing(old):
        return ImageChange("unchanged", path, old.reference, wish=new.wish, old=old)
    return ImageChange("update", path, new.reference, wish=new.wish, new=new, old=old)


def _unwished_rows(
    desired: Mapping[ImageKey, ResolvedImage],
    current_by_key: Mapping[ImageKey, PublishedImage],
    scope: _Scope,
) -> list[ImageChange]:
    rows = (
        _unwished_row(path, old, scope)
        for (path, platform), old in current_by_key.items()
        if (path, platform) not in desired
    )
    return [row for row in rows if row is not None]


def _unwished_row(path: str, old: PublishedImage, scope: _Scope) -> ImageChange | None:
    """A published image no wish asks for: removed, kept (fail closed) or not listed."""
    if is_retiring(old, scope.retiring_paths):
        return None  # already scheduled: it keeps serving until gc deletes it
    if scope.protected(old):
        # Fail closed: listed as kept when its wish is in view, never removed.
        if not scope.base or scope.failing(old):
            return ImageChange("unchanged", path, old.reference, old=old)
        return None
    if scope.removal_scope is not None and not scope.removal_scope.covers(old):
        return None
    return ImageChange("remove", path, old.reference, old=old)


def _error_rows(unresolved: Iterable[tuple[Wish, Problem]]) -> list[ImageChange]:
    return [
        ImageChange("error", image_path(wish.reference), wish.reference, wish=wish, problem=problem)
        for wish, problem in unresolved
    ]


# --- phase 4: who stays: images (and their layers) after the change --------------


@dataclass(frozen=True)
class _Staying:
    images: set[str]  # image ids
    layers: dict[str, set[str]]  # layer digest -> ids of the images that use it
    #: retiring paths nobody wants again: they go at gc, their image is not staying
    still_retiring: set[RetiringKey]


def _staying(
    rows: Sequence[ImageChange],
    current: CurrentState,
    current_by_key: Mapping[ImageKey, PublishedImage],
    retiring_paths: Mapping[RetiringKey, datetime],
) -> _Staying:
    still_retiring = _still_retiring(rows, current_by_key, retiring_paths)
    leaving = _leaving(rows, current, still_retiring)
    staying = _Staying(set(), {}, still_retiring)
    for image in current.images:
        if id(image) not in leaving:
            _stays(staying, image.image_id, image.layers)
    for change in rows:
        if change.action in ("add", "update", "unchanged") and change.new is not None:
            _stays(staying, change.new.image_id, (layer.digest for layer in change.new.layers))
    return staying


def _still_retiring(
    rows: Sequence[ImageChange],
    current_by_key: Mapping[ImageKey, PublishedImage],
    retiring_paths: Mapping[RetiringKey, datetime],
) -> set[RetiringKey]:
    """Retiring paths no row wants again: they go at gc."""
    revived = {(c.path, c.old.image_id) for c in rows if c.old is not None}
    retiring_now = {
        serving_key(image.path, image.image_id)
        for image in current_by_key.values()
        if is_retiring(image, retiring_paths)
    }
    return retiring_now - revived


def _leaving(
    rows: Sequence[ImageChange], current: CurrentState, still_retiring: set[RetiringKey]
) -> set[int]:
    """The published images (by object id) that do not stay: replaced, removed, retiring."""
    leaving = {id(c.old) for c in rows if c.action in ("update", "remove") and c.old is not None}
    leaving |= {
        id(image)
        for image in current.images
        if serving_key(image.path, image.image_id) in still_retiring
    }
    return leaving


def _stays(staying: _Staying, image_id: str, digests: Iterable[str]) -> None:
    staying.images.add(image_id)
    for digest in digests:
        staying.layers.setdefault(digest, set()).add(image_id)


# --- phase 5: schedule dates and layer actions -----------------------------------


def _layer_actions(
    rows: Sequence[ImageChange],
    current: CurrentState,
    staying: _Staying,
    eligible_at: datetime,
) -> tuple[list[ImageChange], dict[str, LayerChange]]:
    """The rows with their dates and new layers, and what happens to each layer."""
    layers: dict[str, LayerChange] = {}
    final_rows = [
        _bring_layers(_dated(change, staying, eligible_at), current, staying, layers)
        for change in rows
    ]
    _schedule_layers(final_rows, current, staying, layers, eligible_at)
    return final_rows, layers


def _schedule_layers(
    rows: Sequence[ImageChange],
    current: CurrentState,
    staying: _Staying,
    layers: dict[str, LayerChange],
    eligible_at: datetime,
) -> None:
    """The layers of a scheduled old image that nothing staying uses wait as long as it."""
    already_scheduled = {s.id for s in current.schedule}
    for change in rows:
        if not change.scheduled or change.old is None:
            continue
        for digest in change.old.layers:
            if digest in layers or digest in staying.layers or digest in already_scheduled:
                continue
            published = current.layers.get(digest) or PublishedLayer(digest, None, 0, 0)
            layers[digest] = replace(
                _published_change("schedule", published, 0), eligible=eligible_at
            )


def _dated(change: ImageChange, staying: _Staying, eligible_at: datetime) -> ImageChange:
    """A removed path serves until ``eligible_at``; an old image nobody keeps waits as long."""
    old = change.old
    if change.action == "remove":
        change = replace(change, retires=eligible_at)  # it serves until then
    if change.action in ("update", "remove") and old and old.image_id not in staying.images:
        # a retiring path wished again with a moved tag is a move like any other:
        # it served the old image until now, so the old image's grace starts now
        change = replace(change, eligible=eligible_at)
    return change


def _bring_layers(
    change: ImageChange,
    current: CurrentState,
    staying: _Staying,
    layers: dict[str, LayerChange],
) -> ImageChange:
    """An added or updated image's layers: ingested once per plan, or shared."""
    if change.action not in ("add", "update") or change.new is None:
        return change
    brought: list[str] = []
    download = 0
    for layer in change.new.layers:
        if layer.digest in layers:
            continue
        published = current.layers.get(layer.digest)
        users = len(staying.layers.get(layer.digest, ()))
        if published is None:
            layers[layer.digest] = LayerChange(
                "ingest", layer.digest, layer.size, None, users=users
            )
            brought.append(layer.digest)
            download += layer.size
        else:
            layers[layer.digest] = _published_change("shared", published, users)
    return replace(change, new_layers=tuple(brought), download_bytes=download)


# --- phase 6: problems -----------------------------------------------------------


def _all_problems(
    problems: Sequence[Problem], resolutions: Sequence[Resolution], standing: _Standing
) -> tuple[Problem, ...]:
    return _unique(
        [
            *problems,
            *(r.problem for r in resolutions if r.problem is not None),
            *(problem for _wish, problem in standing.unresolved),
        ]
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

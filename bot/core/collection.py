"""What garbage collection deletes: a pure decision over the published tree's facts.

:func:`decide_collection` takes what is published (links, images' layers,
layers' users, the remove schedule), the date, the grace period and the
deletion cap, and says what goes and what the schedule becomes; the
publisher's :mod:`bot.publisher.gc` carries it out in one transaction.
The rules (fail closed; dates and retiring paths as :mod:`bot.core.lifecycle`
defines them):

- a retiring path (a wish removed from the wishlist; its schedule entry
  names the path and the path still serves the image) is deleted once its
  grace period is over: its symlink (or per-architecture links and the
  variant symlink), with its ``.metadata`` directory;
- an image in the remove schedule is deleted when the grace periods of all
  its entries are over and no symlink (public or per-architecture) points at
  it any more, retiring paths included (they go first, in the same run); if a
  path that is not retiring points at it, its entries are dropped (it is live;
  a later removal schedules it anew with a fresh date);
- a layer is deleted when no remaining image refers to it (by the images'
  metadata or by the layer's ``origin.json`` backlinks) and its grace period
  is over; it starts when the layer was first found unused, or is inherited
  from the deleted image that was its last user;
- if any served image has no metadata listing its layers, no layer is deleted;
- at most ``max_deletions`` deletions per run (a retiring path, an image
  nobody serves, a layer: one each); everything else waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bot.core.lifecycle import grace_end, public_path, serving_key
from bot.core.model import ScheduledRemoval


@dataclass(frozen=True)
class Scheduled:
    """One entry of the remove schedule; an image's entry also names its layers."""

    removal: ScheduledRemoval
    layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class TreeFacts:
    """What gc needs to know of a published tree."""

    #: every symlink that serves an image (public or ``.multiarch``): link path -> image id
    links: Mapping[str, str]
    #: image id -> its layers (from its metadata)
    image_layers: Mapping[str, tuple[str, ...]]
    #: served images whose metadata does not list their layers
    unknown_layers: frozenset[str]
    #: layer digest -> the image ids its ``origin.json`` names
    layer_users: Mapping[str, frozenset[str]]
    schedule: tuple[Scheduled, ...]
    #: image ids that have a flat tree
    flats: frozenset[str]


@dataclass
class Collection:
    """What a gc run deletes, what waits, and the schedule it leaves."""

    #: retiring paths deleted: (image id it served, public path)
    deleted_paths: list[tuple[str, str]] = field(default_factory=list)
    #: their links (public, variant and ``.multiarch`` links)
    gone_links: set[str] = field(default_factory=set)
    deleted_images: list[tuple[str, str | None]] = field(default_factory=list)  # (id, path)
    #: image id -> the date of its last schedule entry (its layers inherit it)
    image_dates: dict[str, datetime] = field(default_factory=dict)
    deleted_layers: list[str] = field(default_factory=list)
    waiting: list[ScheduledRemoval] = field(default_factory=list)
    capped: int = 0
    #: deletions counted against the cap
    spent: int = 0
    warnings: list[str] = field(default_factory=list)
    schedule: list[Scheduled] = field(default_factory=list)
    #: schedule entries dropped because what they name is used again
    dropped: bool = False

    def changes(self, before: tuple[Scheduled, ...]) -> bool:
        """Does carrying this out change the tree (deletions or another schedule)?"""
        keys = {(e.removal.kind, e.removal.id) for e in self.schedule}
        return (
            self.dropped
            or bool(self.deleted_images or self.deleted_layers or self.deleted_paths)
            or keys != {(e.removal.kind, e.removal.id) for e in before}
        )


class _Run:
    """The state of one decision: the facts, the budget, the result so far."""

    def __init__(
        self, facts: TreeFacts, now: datetime, grace_days: int, max_deletions: int
    ) -> None:
        self.facts, self.now, self.grace_days = facts, now, grace_days
        self.budget = max(0, max_deletions)
        self.out = Collection()
        self.serving: dict[tuple[str, str], list[str]] = {}
        for link, image_id in facts.links.items():
            self.serving.setdefault(serving_key(link, image_id), []).append(link)
        #: image id -> the date of its latest entry (an image waits for all its paths)
        self.last: dict[str, datetime] = {}
        for entry in facts.schedule:
            removal = entry.removal
            if removal.kind == "image":
                self.last[removal.id] = max(
                    removal.scheduled, self.last.get(removal.id, removal.scheduled)
                )
        #: image ids that stay published after this run (set by step 2)
        self.alive: set[str] = set()

    def due(self, scheduled: datetime) -> bool:
        return grace_end(scheduled, self.grace_days) <= self.now

    def retiring_links(self, removal: ScheduledRemoval) -> list[str]:
        if not removal.path:
            return []
        return self.serving.get(serving_key(removal.path, removal.id), [])

    def keep(self, entry: Scheduled, *, waits: bool) -> None:
        """``entry`` stays on the schedule: in its grace period, or capped."""
        self.out.schedule.append(entry)
        if waits:
            self.out.waiting.append(entry.removal)
        else:
            self.out.capped += 1

    def spend(self) -> bool:
        """Take one deletion from the budget (False: none left)."""
        if self.budget == 0:
            return False
        self.budget -= 1
        self.out.spent += 1
        return True

    def delete_image(self, removal: ScheduledRemoval) -> None:
        self.out.image_dates[removal.id] = self.last[removal.id]
        self.out.deleted_images.append((removal.id, removal.path))


def decide_collection(
    facts: TreeFacts, now: datetime, *, grace_days: int, max_deletions: int
) -> Collection:
    """What gc deletes now, and the remove schedule it leaves (see the module's rules)."""
    run = _Run(facts, now, grace_days, max_deletions)
    image_entries = sorted(
        (e for e in facts.schedule if e.removal.kind == "image"),
        key=lambda e: (e.removal.scheduled, e.removal.id, e.removal.path or ""),
    )
    run.out.schedule = [e for e in facts.schedule if e.removal.kind == "layer"]
    retired, waiting = _retire_paths(run, image_entries)
    _images(run, retired, waiting)
    _layers(run)
    return run.out


def _retire_paths(
    run: _Run, image_entries: list[Scheduled]
) -> tuple[list[Scheduled], list[Scheduled]]:
    """Step 1: retiring paths whose grace period is over go (their links and metadata).
    Returns the retired entries and the image entries of paths that do not serve."""
    retired: list[Scheduled] = []
    waiting: list[Scheduled] = []
    for entry in image_entries:
        removal = entry.removal
        links = run.retiring_links(removal)
        if not links:
            waiting.append(entry)
        elif not run.due(removal.scheduled):
            run.keep(entry, waits=True)
        elif not run.spend():
            run.keep(entry, waits=False)
        else:
            retired.append(entry)
            run.out.gone_links.update(links)
            run.out.deleted_paths.append((removal.id, public_path(removal.path or "")))
    return retired, waiting


def _images(run: _Run, retired: list[Scheduled], waiting: list[Scheduled]) -> None:
    """Step 2: images go when nothing points at them any more and all their entries
    are due (every path's jobs get their grace period)."""
    out = run.out
    pointed, live = _served_after(run)
    for entry in retired:
        removal = entry.removal
        if removal.id in pointed or not run.due(run.last[removal.id]):
            continue  # still served by another path, or another entry's grace period runs
        if removal.id not in out.image_dates:
            run.delete_image(removal)
    for entry in waiting:
        _waiting_image(run, entry, live, pointed)
    out.schedule = [e for e in out.schedule if _stays(e, out.image_dates)]
    run.alive = (pointed | run.facts.flats) - set(out.image_dates)
    run.alive |= {e.removal.id for e in out.schedule if e.removal.kind == "image"}


def _served_after(run: _Run) -> tuple[set[str], set[str]]:
    """The images links still point at once step 1's links are gone, and those of
    them served by a path that is not retiring (live)."""
    still_retiring = {
        serving_key(e.removal.path or "", e.removal.id)
        for e in run.out.schedule
        if run.retiring_links(e.removal)
    }
    remaining = {
        link: image for link, image in run.facts.links.items() if link not in run.out.gone_links
    }
    live = {i for link, i in remaining.items() if serving_key(link, i) not in still_retiring}
    return set(remaining.values()), live


def _stays(entry: Scheduled, deleted: Mapping[str, datetime]) -> bool:
    return entry.removal.kind == "layer" or entry.removal.id not in deleted


def _waiting_image(run: _Run, entry: Scheduled, live: set[str], pointed: set[str]) -> None:
    """An image entry whose path does not serve it: delete, keep waiting, or drop."""
    out = run.out
    removal = entry.removal
    if removal.id in out.image_dates:
        return  # deleted with a retired path of the same image
    if removal.id in live:
        out.dropped = True  # live again
    elif not run.due(run.last[removal.id]) or removal.id in pointed:
        # in its grace period, or still served by a retiring path (which goes later)
        run.keep(entry, waits=True)
    elif not run.spend():
        run.keep(entry, waits=False)
    else:
        run.delete_image(removal)


def _referenced(run: _Run) -> set[str]:
    """The layers still in use once this run's images are gone."""
    facts = run.facts
    referenced: set[str] = set()
    for image_id in run.alive:
        referenced.update(facts.image_layers.get(image_id, ()))
    for entry in run.out.schedule:
        if entry.removal.kind == "image":
            referenced.update(entry.layers)
    for digest, users in facts.layer_users.items():
        if users & run.alive:
            referenced.add(digest)
    return referenced


def _layers(run: _Run) -> None:
    """Step 3: layers nobody uses go once their grace period is over (none at all
    while a served image does not list its layers)."""
    out = run.out
    referenced = _referenced(run)
    unknown = _unknown_layers(run)
    entries = {e.removal.id: e for e in out.schedule if e.removal.kind == "layer"}
    out.schedule = [e for e in out.schedule if e.removal.kind == "image"]
    for digest, users in sorted(run.facts.layer_users.items()):
        if digest in referenced:
            out.dropped = out.dropped or digest in entries
        elif unknown:
            if digest in entries:
                out.schedule.append(entries[digest])
        else:
            _unused_layer(run, digest, users, entries.get(digest))
    # layer entries whose layer is already gone are dropped silently


def _unknown_layers(run: _Run) -> bool:
    """Does a served image not list its layers? (then no layer goes; say so)"""
    unknown = run.facts.unknown_layers & run.alive
    if unknown:
        run.out.warnings.append(
            f"{len(unknown)} served image(s) have no metadata listing their layers; "
            "no layer is deleted until they do"
        )
    return bool(unknown)


def _unused_layer(run: _Run, digest: str, users: frozenset[str], entry: Scheduled | None) -> None:
    if entry is None:
        inherited = [run.out.image_dates[u] for u in users if u in run.out.image_dates]
        since = max(inherited) if inherited else run.now
        entry = Scheduled(ScheduledRemoval(kind="layer", id=digest, scheduled=since))
    if not run.due(entry.removal.scheduled):
        run.keep(entry, waits=True)
    elif not run.spend():
        run.keep(entry, waits=False)
    else:
        run.out.deleted_layers.append(digest)

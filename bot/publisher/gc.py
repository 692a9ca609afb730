"""Garbage collection: delete what nobody uses once its grace period is over.

Rules (fail closed):

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
- at most ``max_deletions`` deletions per run; everything else waits.

The caller holds the publisher lock (``wishbot gc`` does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.core import layout
from bot.core.model import ScheduledRemoval
from bot.core.plan import public_path
from bot.publisher import podman
from bot.publisher.backend import Publisher, Transaction
from bot.publisher.metadata import ORIGIN, ScheduleEntry, schedule_json
from bot.publisher.state import scan


@dataclass
class GcReport:
    now: datetime
    grace_days: int
    dry_run: bool
    deleted_images: list[tuple[str, str | None]] = field(default_factory=list)  # (id, path)
    #: retiring paths deleted: (image id it served, public path)
    deleted_paths: list[tuple[str, str]] = field(default_factory=list)
    deleted_layers: list[str] = field(default_factory=list)
    waiting: list[ScheduledRemoval] = field(default_factory=list)  # still in their grace period
    capped: int = 0  # deletions left for a later run because of max_deletions
    warnings: list[str] = field(default_factory=list)
    transactions: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "version": 1,
            "dry_run": self.dry_run,
            "grace_days": self.grace_days,
            "deleted_images": [{"id": i, "path": p} for i, p in self.deleted_images],
            "deleted_paths": [{"id": i, "path": p} for i, p in self.deleted_paths],
            "deleted_layers": list(self.deleted_layers),
            "waiting": [
                {
                    "kind": w.kind,
                    "id": w.id,
                    "path": w.path,
                    "eligible": (w.scheduled + timedelta(days=self.grace_days)).isoformat(),
                }
                for w in self.waiting
            ],
            "capped": self.capped,
            "warnings": list(self.warnings),
        }

    def render(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [
            f"gc: {verb} {len(self.deleted_paths)} retiring path(s), "
            f"{len(self.deleted_images)} image(s) and {len(self.deleted_layers)} layer(s); "
            f"{len(self.waiting)} waiting for their grace period"
        ]
        lines += [f"  {verb} path {p} (served {i})" for i, p in self.deleted_paths]
        lines += [
            f"  {verb} image {i}" + (f" (was {p})" if p else "") for i, p in self.deleted_images
        ]
        lines += [f"  {verb} layer {d}" for d in self.deleted_layers]
        if self.capped:
            lines.append(f"  {self.capped} more left for the next run (max deletions reached)")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def collect(
    publisher: Publisher,
    now: datetime,
    *,
    grace_days: int,
    max_deletions: int,
    dry_run: bool = False,
) -> GcReport:
    grace = timedelta(days=grace_days)
    report = GcReport(now=now, grace_days=grace_days, dry_run=dry_run)
    found = scan(publisher.root)
    budget = max(0, max_deletions)

    # link path -> image id, grouped by the public path the link serves
    serving: dict[tuple[str, str], list[str]] = {}
    for link, image_id in found.links.items():
        serving.setdefault((public_path(link), image_id), []).append(link)
    image_entries = sorted(
        (e for e in found.schedule if e.removal.kind == "image"),
        key=lambda e: (e.removal.scheduled, e.removal.id, e.removal.path or ""),
    )
    schedule: list[ScheduleEntry] = [e for e in found.schedule if e.removal.kind == "layer"]

    def retiring_links(removal: ScheduledRemoval) -> list[str]:
        if not removal.path:
            return []
        return serving.get((public_path(removal.path), removal.id), [])

    # 1. retiring paths whose grace period is over go (their symlinks and metadata)
    retired: list[ScheduleEntry] = []
    waiting_images: list[ScheduleEntry] = []
    gone_links: set[str] = set()
    for entry in image_entries:
        removal = entry.removal
        links = retiring_links(removal)
        if not links:
            waiting_images.append(entry)
        elif removal.scheduled + grace > now:
            schedule.append(entry)
            report.waiting.append(removal)
        elif budget == 0:
            schedule.append(entry)
            report.capped += 1
        else:
            budget -= 1
            retired.append(entry)
            gone_links.update(links)
            report.deleted_paths.append((removal.id, public_path(removal.path or "")))
    retiring_keys = {
        (public_path(e.removal.path or ""), e.removal.id)
        for e in schedule
        if retiring_links(e.removal)
    }
    remaining = {link: i for link, i in found.links.items() if link not in gone_links}
    pointed = set(remaining.values())
    live = {i for link, i in remaining.items() if (public_path(link), i) not in retiring_keys}

    # 2. images: deleted when nothing points at them any more and their time is up
    # an image waits for the latest of its entries (every path's jobs get their grace period)
    last: dict[str, datetime] = {}
    for entry in image_entries:
        removal = entry.removal
        last[removal.id] = max(removal.scheduled, last.get(removal.id, removal.scheduled))
    image_deleted_at: dict[str, datetime] = {}  # image id -> its schedule date
    dropped = False
    for entry in retired:
        removal = entry.removal
        if removal.id in pointed or last[removal.id] + grace > now:
            continue  # still served by another path, or another entry's grace period runs
        if removal.id not in image_deleted_at:
            image_deleted_at[removal.id] = last[removal.id]
            report.deleted_images.append((removal.id, removal.path))
    for entry in waiting_images:
        removal = entry.removal
        if removal.id in image_deleted_at:
            continue  # deleted with a retired path of the same image
        if removal.id in live:
            dropped = True  # live again
            continue
        if last[removal.id] + grace > now or removal.id in pointed:
            # in its grace period, or still served by a retiring path (which goes later)
            schedule.append(entry)
            report.waiting.append(removal)
            continue
        if budget == 0:
            schedule.append(entry)
            report.capped += 1
            continue
        budget -= 1
        report.deleted_images.append((removal.id, removal.path))
        image_deleted_at[removal.id] = last[removal.id]
    schedule = [
        e for e in schedule if e.removal.kind == "layer" or e.removal.id not in image_deleted_at
    ]

    # which layers are still in use after those deletions
    alive = (pointed | found.flats) - set(image_deleted_at)
    alive |= {e.removal.id for e in schedule if e.removal.kind == "image"}
    referenced: set[str] = set()
    for image_id in alive:
        referenced.update(found.image_layers.get(image_id, ()))
    for entry in schedule:
        if entry.removal.kind == "image":
            referenced.update(entry.layers)
    for digest, layer in found.layers.items():
        if layer.users & alive:
            referenced.add(digest)
    unknown = found.unknown_layers & alive
    if unknown:
        report.warnings.append(
            f"{len(unknown)} served image(s) have no metadata listing their layers; "
            "no layer is deleted until they do"
        )

    layer_entries = {e.removal.id: e for e in schedule if e.removal.kind == "layer"}
    schedule = [e for e in schedule if e.removal.kind == "image"]
    for digest, layer in sorted(found.layers.items()):
        if digest in referenced:
            dropped = dropped or digest in layer_entries
            continue
        if unknown:
            if digest in layer_entries:
                schedule.append(layer_entries[digest])
            continue
        found_entry = layer_entries.get(digest)
        if found_entry is not None:
            entry = found_entry
        else:
            inherited = [image_deleted_at[u] for u in layer.users if u in image_deleted_at]
            since = max(inherited) if inherited else now
            entry = ScheduleEntry(ScheduledRemoval(kind="layer", id=digest, scheduled=since))
        if entry.removal.scheduled + grace > now:
            schedule.append(entry)
            report.waiting.append(entry.removal)
        elif budget == 0:
            schedule.append(entry)
            report.capped += 1
        else:
            budget -= 1
            report.deleted_layers.append(digest)
    # layer entries whose layer is already gone are dropped silently
    changed = (
        dropped
        or bool(report.deleted_images or report.deleted_layers or report.deleted_paths)
        or {(e.removal.kind, e.removal.id) for e in schedule}
        != {(e.removal.kind, e.removal.id) for e in found.schedule}
    )
    if dry_run or not changed:
        return report

    deleted_images = set(image_deleted_at)
    deleted_layers = set(report.deleted_layers)
    with publisher.transaction() as txn:
        _remove_links(txn, gone_links, remaining)
        podman.remove_images(txn, deleted_images, (p for _, p in report.deleted_paths))
        for image_id in sorted(deleted_images):
            txn.remove(layout.flat_dir(image_id))
        for digest in report.deleted_layers:
            txn.remove(layout.layer_dir(digest))
        for digest, layer in found.layers.items():
            if digest in deleted_layers or not layer.users & deleted_images:
                continue
            txn.write_json(
                f"{layout.layer_metadata_dir(digest)}/{ORIGIN}",
                {"origin": sorted(layer.users - deleted_images)},
            )
        txn.write_json(layout.REMOVE_SCHEDULE, schedule_json(schedule))
    report.transactions = 1
    return report


def _remove_links(txn: Transaction, gone: set[str], remaining: dict[str, str]) -> None:
    """Delete retired links with their metadata, outermost first (a crash between two
    deletes never leaves a path that dangles): a variant symlink goes with its last
    ``.multiarch`` link, before it."""
    root = txn.root
    variants = {public_path(link) for link in gone} - gone
    still = {public_path(link) for link in remaining if link.startswith(f"{layout.MULTIARCH}/")}
    for public in sorted(variants - still):
        path = root / public
        if path.is_symlink() and layout.is_variant_link(os.readlink(path)):
            txn.remove(public)
    for link in sorted(gone):
        txn.remove(link)
    for link in sorted(gone):
        txn.remove(layout.image_metadata_dir(link))

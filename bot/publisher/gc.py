"""Garbage collection: delete what nobody uses once its grace period is over.

Rules (fail closed):

- an image in the remove schedule is deleted when its grace period is over
  and no symlink (public or per-architecture) points at it any more; if one
  does again, its entry is dropped (it is live; a later removal schedules it
  anew with a fresh date);
- a layer is deleted when no remaining image refers to it (by the images'
  metadata or by the layer's ``origin.json`` backlinks) and its grace period
  is over; it starts when the layer was first found unused, or is inherited
  from the deleted image that was its last user;
- if any served image has no metadata listing its layers, no layer is deleted;
- at most ``max_deletions`` deletions per run; everything else waits.

The caller holds the publisher lock (``wishbot gc`` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.core import layout
from bot.core.model import ScheduledRemoval
from bot.publisher.backend import Publisher
from bot.publisher.metadata import ORIGIN, ScheduleEntry, schedule_json, write_json
from bot.publisher.state import scan


@dataclass
class GcReport:
    now: datetime
    grace_days: int
    dry_run: bool
    deleted_images: list[tuple[str, str | None]] = field(default_factory=list)  # (id, path)
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
            f"gc: {verb} {len(self.deleted_images)} image(s) and "
            f"{len(self.deleted_layers)} layer(s); {len(self.waiting)} waiting for their grace period"
        ]
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
    pointed = set(found.links.values())
    budget = max(0, max_deletions)

    schedule: list[ScheduleEntry] = []
    image_deleted_at: dict[str, datetime] = {}  # image id -> its schedule date
    dropped = False
    for entry in found.schedule:
        removal = entry.removal
        if removal.kind != "image":
            schedule.append(entry)
            continue
        if removal.id in pointed:
            dropped = True  # live again
            continue
        if removal.scheduled + grace > now:
            schedule.append(entry)
            report.waiting.append(removal)
            continue
        if budget == 0:
            schedule.append(entry)
            report.capped += 1
            continue
        budget -= 1
        report.deleted_images.append((removal.id, removal.path))
        image_deleted_at[removal.id] = removal.scheduled

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
        or bool(report.deleted_images or report.deleted_layers)
        or {(e.removal.kind, e.removal.id) for e in schedule}
        != {(e.removal.kind, e.removal.id) for e in found.schedule}
    )
    if dry_run or not changed:
        return report

    deleted_images = set(image_deleted_at)
    deleted_layers = set(report.deleted_layers)
    with publisher.transaction() as view:
        for image_id in sorted(deleted_images):
            publisher.remove(view, layout.flat_dir(image_id))
        for digest in report.deleted_layers:
            publisher.remove(view, layout.layer_dir(digest))
        for digest, layer in found.layers.items():
            if digest in deleted_layers or not layer.users & deleted_images:
                continue
            write_json(
                view / layout.layer_metadata_dir(digest) / ORIGIN,
                {"origin": sorted(layer.users - deleted_images)},
            )
        write_json(view / layout.REMOVE_SCHEDULE, schedule_json(schedule))
    report.transactions = 1
    return report

"""Garbage collection: delete what nobody uses once its grace period is over.

What goes is decided by :func:`bot.core.collection.decide_collection` (the
rules are written there); this module reads the tree, hands the facts to that
decision and carries it out in one transaction: retired links first
(outermost first), then the podman store's entries, flat images, layers,
rewritten ``origin.json`` backlinks and the new remove schedule.

The caller holds the publisher lock (``wishbot gc`` does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.core import layout
from bot.core.collection import Collection, Scheduled, TreeFacts, decide_collection
from bot.core.lifecycle import public_path
from bot.core.model import ScheduledRemoval
from bot.publisher import podman
from bot.publisher.backend import Publisher, Transaction
from bot.publisher.metadata import ORIGIN, ScheduleEntry, schedule_json
from bot.publisher.state import TreeScan, scan


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
    """Decide what goes (:func:`bot.core.collection.decide_collection`) and, unless
    ``dry_run``, delete it in one transaction."""
    found = scan(publisher.root)
    facts = TreeFacts(
        links=found.links,
        image_layers=found.image_layers,
        unknown_layers=frozenset(found.unknown_layers),
        layer_users={digest: layer.users for digest, layer in found.layers.items()},
        schedule=tuple(Scheduled(e.removal, e.layers) for e in found.schedule),
        flats=frozenset(found.flats),
    )
    decided = decide_collection(facts, now, grace_days=grace_days, max_deletions=max_deletions)
    report = GcReport(
        now=now,
        grace_days=grace_days,
        dry_run=dry_run,
        deleted_images=decided.deleted_images,
        deleted_paths=decided.deleted_paths,
        deleted_layers=decided.deleted_layers,
        waiting=decided.waiting,
        capped=decided.capped,
        warnings=decided.warnings,
    )
    if dry_run or not decided.changes(facts.schedule):
        return report
    with publisher.transaction() as txn:
        _carry_out(txn, decided, found)
    report.transactions = 1
    return report


def _carry_out(txn: Transaction, decided: Collection, found: TreeScan) -> None:
    """Delete what was decided, outermost first, and write the new schedule."""
    deleted_images, deleted_layers = set(decided.image_dates), set(decided.deleted_layers)
    remaining = {link: i for link, i in found.links.items() if link not in decided.gone_links}
    _remove_links(txn, decided.gone_links, remaining)
    podman.remove_images(txn, deleted_images, (p for _, p in decided.deleted_paths))
    for image_id in sorted(deleted_images):
        txn.remove(layout.flat_dir(image_id))
    for digest in decided.deleted_layers:
        txn.remove(layout.layer_dir(digest))
    for digest, layer in found.layers.items():
        if digest in deleted_layers or not layer.users & deleted_images:
            continue
        txn.write_json(
            f"{layout.layer_metadata_dir(digest)}/{ORIGIN}",
            {"origin": sorted(layer.users - deleted_images)},
        )
    schedule = [ScheduleEntry(e.removal, e.layers) for e in decided.schedule]
    txn.write_json(layout.REMOVE_SCHEDULE, schedule_json(schedule))


def _remove_links(txn: Transaction, gone: set[str], remaining: dict[str, str]) -> None:
    """Delete retired links with their metadata, outermost first (a crash between two
    deletes never leaves a path that dangles): a variant symlink goes with its last
    ``.multiarch`` link, before it."""
    root = txn.root
    variants = {public_path(link) for link in gone} - gone
    still = {public_path(link) for link in remaining if link.startswith(f"{layout.MULTIARCH}/")}
    for public in sorted(variants - still):
        path = root / public
        if path.is_symlink() and layout.serves_variant(public, os.readlink(path)):
            txn.remove(public)
    for link in sorted(gone):
        txn.remove(link)
    for link in sorted(gone):
        txn.remove(layout.image_metadata_dir(link))

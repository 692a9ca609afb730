"""Splitting a plan across N publisher hosts without a coordinator.

``wishbot apply --shard I/N`` runs on N hosts (the jobs of a CI matrix, say),
each planning on its own and executing only its share. Nobody hands out the
work: every host computes the same split from the same plan, so the split
must be a pure function of it, independent of dict and set order and of
``PYTHONHASHSEED`` (ties are broken by keys, hashes are sha256).

The unit of work is a public path: every change of one path (all platforms of
a multi-platform wish, whose thin image index goes with its last platform)
goes to one shard. Paths whose first (base) layer is the same go together
where they can, so that two hosts do not convert the same new layer (waiting
on the same lease, doing the work twice); a group heavier than a fair share
(total weight / N) is split into its paths. The units are then dealt out
heaviest first, each to the least loaded shard (ties to the lowest index):
longest-processing-time-first.

A path's weight is the compressed bytes of the distinct layers of the images
wished for at it (every platform), at least 1. It is deliberately *not* the
bytes the plan would download right now: those shrink as the other hosts
publish, and a host that plans a minute after another (its share half done)
must arrive at the same split, or a path could fall between two shards. For
the same reason the paths with no wished image (removed ones, errors, images
kept because their wish failed) are not dealt out by load: a removed path
leaves the plan once its shard retired it, and must not move anyone else.
Each goes to the shard a sha256 of its path names.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from bot.core.model import ResolvedImage
from bot.core.plan import ImageChange, LayerChange, Plan
from bot.core.text import escape_terminal, plural
from bot.errors import UsageError

#: the most shards a plan may be split into
MAX_SHARDS = 1024

_SHARD = re.compile(r"^\s*(\d{1,4})\s*/\s*(\d{1,4})\s*$", re.ASCII)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based: ``2/3`` is the second of three)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise UsageError(
                f"shard count {self.count} is out of range",
                hint=f"split into 1 to {MAX_SHARDS} shards",
            )
        if not 1 <= self.index <= self.count:
            raise UsageError(
                f"shard {self.index}/{self.count} does not exist",
                hint=f"the shards of {self.count} are 1/{self.count} to "
                f"{self.count}/{self.count} (counted from 1)",
            )

    @classmethod
    def parse(cls, text: str, *, option: str = "--shard") -> Shard:
        """``"I/N"`` -> ``Shard(I, N)``; a :class:`UsageError` saying what is wrong."""
        match = _SHARD.match(text)
        if match is None:
            raise UsageError(
                f"{option} '{text}' is not I/N",
                hint="e.g. --shard 2/3 for the second of three hosts (counted from 1)",
            )
        try:
            return cls(int(match.group(1)), int(match.group(2)))
        except UsageError as exc:
            raise UsageError(f"{option} '{text}': {exc.message}", hint=exc.hint) from None

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Unit:
    """Paths that go to one shard together, and what they weigh."""

    key: str  # its first path: the tie-breaker
    paths: tuple[str, ...]
    weight: int


def changes_by_path(plan: Plan) -> dict[str, list[ImageChange]]:
    """The plan's changes by public path, in plan order."""
    by_path: dict[str, list[ImageChange]] = {}
    for change in plan.images:
        by_path.setdefault(change.path, []).append(change)
    return by_path


def _wished_images(changes: Iterable[ImageChange]) -> list[ResolvedImage]:
    """The images wished for at a path, by platform (whatever the rows' order)."""
    wished = [change.new for change in changes if change.new is not None]
    return sorted(wished, key=lambda image: (str(image.platform), image.image_id))


def weight(images: Iterable[ResolvedImage]) -> int:
    """Compressed bytes of the distinct layers of ``images``; at least 1."""
    sizes = {layer.digest: layer.size for image in images for layer in image.layers}
    return max(1, sum(sizes.values()))


@dataclass(frozen=True)
class _Grouped:
    """The plan's paths by the base layer of their first wished image."""

    groups: dict[str, list[str]]  # base layer digest -> paths (sorted)
    images: dict[str, list[ResolvedImage]]  # path -> its wished images
    loose: list[str]  # paths with no wished image


def _grouped(plan: Plan) -> _Grouped:
    grouped = _Grouped({}, {}, [])
    for path, changes in sorted(changes_by_path(plan).items()):
        wished = _wished_images(changes)
        if not wished:
            grouped.loose.append(path)
            continue
        grouped.images[path] = wished
        base = wished[0].layers[0].digest if wished[0].layers else path
        grouped.groups.setdefault(base, []).append(path)
    return grouped


def units(plan: Plan, count: int) -> tuple[list[Unit], list[str]]:
    """The units dealt out by load, and the paths with no wished image (placed by hash)."""
    grouped = _grouped(plan)
    images = grouped.images
    fair_share = weight(image for found in images.values() for image in found) / count
    dealt: list[Unit] = []
    for paths in grouped.groups.values():
        group = Unit(paths[0], tuple(paths), weight(i for p in paths for i in images[p]))
        if group.weight <= fair_share or len(paths) == 1:
            dealt.append(group)
        else:
            dealt += [Unit(p, (p,), weight(images[p])) for p in paths]
    return dealt, grouped.loose


def _hashed(path: str, count: int) -> int:
    digest = hashlib.sha256(path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def deal(dealt: Sequence[Unit], count: int) -> dict[str, int]:
    """Longest-processing-time-first: heaviest unit first (then by key), each to
    the least loaded shard (ties to the lowest index). Path -> shard index."""
    loads = [(0, index) for index in range(1, count + 1)]  # a heap: (load, index)
    placed: dict[str, int] = {}
    for unit in sorted(dealt, key=lambda u: (-u.weight, u.key)):
        load, lightest = heapq.heappop(loads)
        heapq.heappush(loads, (load + unit.weight, lightest))
        placed.update(dict.fromkeys(unit.paths, lightest))
    return placed


def assignment(plan: Plan, count: int) -> dict[str, int]:
    """Every public path of ``plan`` -> the (1-based) shard of ``count`` that executes it,
    sorted by path."""
    Shard(1, count)  # the range check
    dealt, loose = units(plan, count)
    placed = deal(dealt, count)
    placed.update((path, _hashed(path, count)) for path in loose)
    return dict(sorted(placed.items()))


def select(plan: Plan, shard: Shard) -> Plan:
    """``plan`` restricted to ``shard``'s paths, its layers and totals made to agree.

    A layer the whole plan ingests once may be needed by images on two shards:
    each shard's plan counts it (each host downloads it, or finds it published).
    """
    placed = assignment(plan, shard.count)
    mine = tuple(change for change in plan.images if placed[change.path] == shard.index)
    rows = _rebrought(mine, {x.digest for x in plan.layers if x.action == "ingest"})
    used = _used_ids(rows)
    return replace(
        plan,
        images=rows,
        layers=_layers_of(plan.layers, rows),
        unscheduled=tuple(i for i in plan.unscheduled if i in used),
    )


def _rebrought(rows: Sequence[ImageChange], ingest: set[str]) -> tuple[ImageChange, ...]:
    """The rows with the new layers each brings, counted once per shard."""
    claimed: set[str] = set()
    out: list[ImageChange] = []
    for change in rows:
        if change.action not in ("add", "update") or change.new is None:
            out.append(change)
            continue
        sizes = {x.digest: x.size for x in change.new.layers if x.digest in ingest}
        brought = tuple(d for d in sizes if d not in claimed)
        claimed.update(brought)
        download = sum(sizes[d] for d in brought)
        out.append(replace(change, new_layers=brought, download_bytes=download))
    return tuple(out)


def _layers_of(
    layers: Sequence[LayerChange], rows: Sequence[ImageChange]
) -> tuple[LayerChange, ...]:
    """The plan's layer changes that concern ``rows``: the layers of their new
    images, and the scheduled layers of their scheduled old images."""
    wanted = {x.digest for image in _wished_images(rows) for x in image.layers}
    dropped = {d for c in rows if c.scheduled and c.old is not None for d in c.old.layers}
    return tuple(
        layer
        for layer in layers
        if layer.digest in (dropped if layer.action == "schedule" else wanted)
    )


def _used_ids(rows: Sequence[ImageChange]) -> set[str]:
    """Image ids and layer digests ``rows`` use (what may come off the schedule)."""
    used: set[str] = set()
    for change in rows:
        if change.new is not None:
            used.add(change.new.image_id)
            used.update(x.digest for x in change.new.layers)
        if change.old is not None:
            used.add(change.old.image_id)
            used.update(change.old.layers)
    return used


def shards_json(plan: Plan, count: int) -> dict[str, object]:
    """The split for ``wishbot plan --format json --shards N``."""
    return {"count": count, "assignment": assignment(plan, count)}


def shards_text(plan: Plan, count: int) -> str:
    """The split for ``wishbot plan --shards N``: each shard and its paths."""
    by_shard: dict[int, list[str]] = {index: [] for index in range(1, count + 1)}
    for path, index in assignment(plan, count).items():
        by_shard[index].append(path)
    lines = ["", f"Shards (wishbot apply --shard I/{count}):"]
    for index, paths in by_shard.items():
        lines.append(f"  {index}/{count}: {plural(len(paths), 'path')}")
        lines += [f"    {escape_terminal(path)}" for path in paths]
    return "\n".join(lines) + "\n"

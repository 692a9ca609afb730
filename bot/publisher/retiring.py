"""Retiring paths: a wish left the wishlist, its path serves on until gc.

Grid jobs name an image by its public path, so a job queued before a wish
was removed must still find it. ``apply`` therefore leaves a removed path in
place and writes an image entry to the remove schedule naming that path; the
path is *retiring* while it still serves the scheduled image. gc deletes the
path (its symlinks and metadata) together with the image once the grace
period is over. An entry whose path serves another image now (a moved tag)
is an old image waiting, nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from bot.core import layout
from bot.core.lifecycle import public_path
from bot.core.model import ScheduledRemoval
from bot.publisher.metadata import ScheduleEntry
from bot.publisher.state import flat_target


def serving_links(root: Path, path: str) -> dict[str, str]:
    """The symlinks that serve the public ``path``: link path -> image id.

    A plain path is its own symlink into ``.flat``; a multi-platform path is a
    variant symlink and is served by each ``.multiarch/<arch>/<path>`` link.
    """
    public = root / path
    if not public.is_symlink():
        return {}
    target = os.readlink(public)
    if not layout.serves_variant(path, target):
        image = flat_target(path, target)
        return {path: image} if image else {}
    out: dict[str, str] = {}
    arch_root = root / layout.MULTIARCH
    for arch in sorted(arch_root.iterdir()) if arch_root.is_dir() else []:
        link_path = f"{layout.MULTIARCH}/{arch.name}/{path}"
        link = root / link_path
        if link.is_symlink():
            image = flat_target(link_path, os.readlink(link))
            if image:
                out[link_path] = image
    return out


def is_retiring(root: Path, removal: ScheduledRemoval) -> bool:
    """Is ``removal`` a removed path that still serves its scheduled image?"""
    if removal.kind != "image" or not removal.path:
        return False
    return removal.id in serving_links(root, public_path(removal.path)).values()


def revive(
    root: Path, entries: Iterable[ScheduleEntry], path: str, ids: Iterable[str]
) -> list[ScheduleEntry]:
    """The schedule once ``path`` serves again: entries for ``ids`` (image ids,
    layer digests) are dropped, except retiring paths elsewhere (they still go)."""
    wanted = set(ids)
    kept: list[ScheduleEntry] = []
    for entry in entries:
        removal = entry.removal
        if removal.id in wanted and not (
            removal.path
            and public_path(removal.path) != public_path(path)
            and is_retiring(root, removal)
        ):
            continue
        kept.append(entry)
    return kept

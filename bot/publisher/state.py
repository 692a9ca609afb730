"""Read what a publisher tree serves: the current state for planning and gc.

Works on a tree wishbot wrote, on one the reference converter wrote, and on a
read-only CernVM-FS mount: it only reads, never follows a public symlink into
a flat image, and tolerates missing or malformed metadata (an image without
``manifest.json`` is still reported, with what its symlink tells).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bot.core import layout
from bot.core.model import CurrentState, Platform, PublishedImage, PublishedLayer
from bot.core.reference import ReferenceError, parse
from bot.publisher.metadata import (
    LAYERS,
    MANIFEST,
    ORIGIN,
    ImageRecord,
    LayerInfo,
    ScheduleEntry,
    read_json,
    read_origin,
    read_schedule,
)

#: the variant-symlink marker CernVM-FS expands on the client
ARCH_VARIABLE = layout.ARCH_VARIABLE
_MAX_DEPTH = 16


@dataclass
class TreeScan:
    """Everything :func:`scan` found; :func:`read_state` and gc use it."""

    images: list[PublishedImage] = field(default_factory=list)
    #: every symlink into ``.flat`` (public or per-architecture) -> image id
    links: dict[str, str] = field(default_factory=dict)
    #: image id -> its layers, for images whose metadata lists them
    image_layers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: image ids served by a symlink whose layers are unknown (no metadata)
    unknown_layers: set[str] = field(default_factory=set)
    layers: dict[str, PublishedLayer] = field(default_factory=dict)
    schedule: list[ScheduleEntry] = field(default_factory=list)
    flats: set[str] = field(default_factory=set)


def read_state(root: Path, cvmfs_repo: str) -> CurrentState:
    found = scan(root)
    return CurrentState(
        cvmfs_repo=cvmfs_repo,
        images=tuple(sorted(found.images, key=lambda i: (i.path, str(i.platform)))),
        layers=dict(sorted(found.layers.items())),
        schedule=tuple(entry.removal for entry in found.schedule),
        flat_images=frozenset(found.flats),
    )


def scan(root: Path) -> TreeScan:
    found = TreeScan()
    for path, target in public_links(root):
        if layout.serves_variant(path, target):
            arch_root = root / layout.MULTIARCH
            arches = sorted(p.name for p in arch_root.iterdir()) if arch_root.is_dir() else []
            for arch in arches:
                arch_path = f"{layout.MULTIARCH}/{arch}/{path}"
                link = root / arch_path
                if link.is_symlink():
                    target = os.readlink(link)
                    _add_image(root, found, path, arch_path, target, layout.platform_of(arch))
        else:
            _add_image(root, found, path, path, target, None)
    found.layers = _layers(root)
    found.schedule = read_schedule(root / layout.REMOVE_SCHEDULE)
    found.flats = _flats(root)
    return found


def public_links(root: Path) -> Iterator[tuple[str, str]]:
    """``(path, symlink text)`` for each human-readable image path.

    Public paths are ``<registry>/<repository>:<tag>``: top-level names that
    start with ``.`` (and the podman store) are internal, and below the registry level an entry whose
    name carries ``:`` or ``@`` is an image (a real directory there is a legacy
    flat image and is not descended into).
    """
    if not root.is_dir():
        return

    def walk(directory: Path, rel: str, depth: int) -> Iterator[tuple[str, str]]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if depth == 0 and (name.startswith(".") or name == layout.PODMAN_STORE):
                continue
            child = f"{rel}/{name}" if rel else name
            if entry.is_symlink():
                if depth >= 1:
                    yield child, os.readlink(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                leaf = depth >= 1 and (":" in name or "@" in name)
                if not leaf and depth < _MAX_DEPTH:
                    yield from walk(Path(entry.path), child, depth + 1)

    yield from walk(root, "", 0)


def flat_target(link_path: str, target: str) -> str | None:
    """The image id a symlink at ``link_path`` with text ``target`` serves, if any."""
    if target.startswith("/"):
        return None
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), target))
    parts = resolved.split("/")
    if len(parts) == 3 and parts[0] == layout.FLAT and len(parts[2]) == 64:
        return f"sha256:{parts[2]}"
    return None


def _exact_platform(from_tree: Platform | None, recorded: Platform) -> Platform:
    """The platform an image was published for: its metadata's, when it names the
    same ``.multiarch`` directory (``aarch64`` holds arm64 and arm64/v8 alike)."""
    if from_tree is None or layout.arch_name(recorded) == layout.arch_name(from_tree):
        return recorded
    return from_tree


def _add_image(
    root: Path,
    found: TreeScan,
    path: str,
    link_path: str,
    target: str,
    platform: Platform | None,
) -> None:
    image_id = flat_target(link_path, target)
    if image_id is None:
        return
    found.links[link_path] = image_id
    metadata_path = root / layout.image_metadata_dir(link_path) / MANIFEST
    record = ImageRecord.from_json(read_json(metadata_path), path)
    if record is not None and record.image_id != image_id:
        record = None  # metadata of another image: trust the symlink
    if record is not None:
        found.image_layers[image_id] = tuple(d for d, _, _ in record.layers)
        found.images.append(
            PublishedImage(
                path=path,
                reference=record.reference,
                platform=_exact_platform(platform, record.platform),
                manifest_digest=record.manifest_digest,
                image_id=image_id,
                layers=tuple(d for d, _, _ in record.layers),
                updated=record.converted,
                thin_image=record.thin_image,
                unpacked_size=record.unpacked_size,
            )
        )
        return
    found.unknown_layers.add(image_id)
    try:
        reference = parse(path)
    except ReferenceError:
        return
    try:
        updated = datetime.fromtimestamp((root / link_path).lstat().st_mtime, UTC)
    except OSError:
        updated = datetime.fromtimestamp(0, UTC)
    found.images.append(
        PublishedImage(
            path=path,
            reference=reference,
            platform=platform or Platform("linux", "amd64"),
            manifest_digest="",
            image_id=image_id,
            layers=(),
            updated=updated,
        )
    )


def _partitions(base: Path) -> Iterator[Path]:
    if not base.is_dir():
        return
    for part in sorted(base.iterdir()):
        if len(part.name) == 2 and part.is_dir() and not part.is_symlink():
            for item in sorted(part.iterdir()):
                if len(item.name) == 64 and item.name.startswith(part.name):
                    yield item


def _layers(root: Path) -> dict[str, PublishedLayer]:
    out: dict[str, PublishedLayer] = {}
    for item in _partitions(root / layout.LAYERS):
        digest = f"sha256:{item.name}"
        if not (item / "layerfs").is_dir():
            continue
        info = LayerInfo.from_json(read_json(item / layout.METADATA / LAYERS), digest)
        out[digest] = PublishedLayer(
            digest=digest,
            diff_id=info.diff_id,
            compressed_size=info.compressed_size,
            unpacked_size=info.unpacked_size,
            users=read_origin(item / layout.METADATA / ORIGIN),
        )
    return out


def _flats(root: Path) -> set[str]:
    return {f"sha256:{item.name}" for item in _partitions(root / layout.FLAT) if item.is_dir()}

"""Small fake images written straight into a publisher tree (for gc and state tests).

They go through the real publisher transactions and the real metadata
formats, like ``apply`` would, without a registry or tar layers: a layer is a
``layerfs`` with one file, a flat image a directory with one file per layer.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path

from bot.core import layout
from bot.core.model import Platform, ScheduledRemoval
from bot.core.reference import parse
from bot.publisher.backend import Publisher
from bot.publisher.metadata import (
    LAYERS,
    MANIFEST,
    ORIGIN,
    ImageRecord,
    LayerInfo,
    ScheduleEntry,
    read_origin,
    read_schedule,
    schedule_json,
    write_json,
)
from bot.publisher.retiring import revive


def digest(name: str) -> str:
    return f"sha256:{hashlib.sha256(name.encode()).hexdigest()}"


def publish_image(
    publisher: Publisher,
    path: str,
    image_id: str,
    layers: list[str],
    now: datetime,
) -> None:
    """Publish (or re-point) ``path`` to an image made of ``layers`` (digests)."""
    root = publisher.root
    with publisher.transaction() as view:
        for layer in layers:
            fs = layout.layerfs_dir(layer)
            if not (root / fs).is_dir() and not (view / fs).is_dir():
                (view / fs).mkdir(parents=True)
                (view / fs / layout.hex_of(layer)[:8]).write_text(layer)
                info = LayerInfo(layer, layer, "application/x-tar", 10, 10, 1)
                write_json(view / layout.layer_metadata_dir(layer) / LAYERS, info.to_json())
            origin = f"{layout.layer_metadata_dir(layer)}/{ORIGIN}"
            users = read_origin(view.resolve(origin))
            write_json(view / origin, {"origin": sorted(users | {image_id})})
        flat = layout.flat_dir(image_id)
        if not (root / flat).is_dir():
            (view / flat).mkdir(parents=True)
            for layer in layers:
                (view / flat / layout.hex_of(layer)[:8]).write_text(layer)
        old_link = root / path
        old_id = None
        if old_link.is_symlink():
            target = os.readlink(old_link)
            old_id = f"sha256:{target.rsplit('/', 1)[-1]}"
        record = ImageRecord(
            path=path,
            reference=parse(path),
            platform=Platform("linux", "amd64"),
            manifest_digest=digest(f"manifest-{image_id}"),
            image_id=image_id,
            layers=tuple((d, 10, "application/x-tar") for d in layers),
            converted=now,
        )
        write_json(view / layout.image_metadata_dir(path) / MANIFEST, record.to_json())
        link = view / path
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(link.name + ".tmp")
        os.symlink(layout.flat_link(path, image_id), tmp)
        os.replace(tmp, link)
        schedule_path = view.resolve(layout.REMOVE_SCHEDULE)
        entries = read_schedule(schedule_path, now) if schedule_path.exists() else []
        entries = revive(root, entries, path, {image_id, *layers})
        if old_id and old_id != image_id:
            # moved: the old image waits from now (also when the path was retiring)
            entries = [e for e in entries if (e.removal.id, e.removal.path) != (old_id, path)]
            old_layers = _layers_of(root, old_id, path)
            entries.append(ScheduleEntry(ScheduledRemoval("image", old_id, now, path), old_layers))
        write_json(view / layout.REMOVE_SCHEDULE, schedule_json(entries))


def _layers_of(root: Path, image_id: str, path: str) -> tuple[str, ...]:
    from bot.publisher.metadata import read_json

    record = ImageRecord.from_json(
        read_json(root / layout.image_metadata_dir(path) / MANIFEST), path
    )
    return tuple(d for d, _, _ in record.layers) if record and record.image_id == image_id else ()


def unpublish(publisher: Publisher, path: str, now: datetime) -> None:
    """Remove the wish for ``path`` like ``apply`` does: the path stays (retiring) and
    goes to the remove schedule with its image; gc deletes both after the grace period."""
    root = publisher.root
    target = os.readlink(root / path)
    image_id = f"sha256:{target.rsplit('/', 1)[-1]}"
    layers = _layers_of(root, image_id, path)
    with publisher.transaction() as view:
        schedule_path = root / layout.REMOVE_SCHEDULE
        entries = read_schedule(schedule_path, now) if schedule_path.exists() else []
        entries.append(ScheduleEntry(ScheduledRemoval("image", image_id, now, path), layers))
        write_json(view / layout.REMOVE_SCHEDULE, schedule_json(entries))

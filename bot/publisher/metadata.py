"""The JSON files of the unpacked layout: what they hold and how they are spelled.

Each format is compatible with the reference converter (DUCC) where DUCC has
one, and carries wishbot's own, versioned fields beside it (DUCC's Go decoder
ignores unknown keys). See ``docs/layout.md``.

- layer ``.metadata/origin.json``: ``{"origin": ["sha256:<image id>", ...]}``
  (DUCC's ``Backlink``): the images that use the layer.
- layer ``.metadata/layers.json``: DUCC's one-element array of
  containers/storage layer records (``id``, ``compressed-diff-digest``,
  ``diff-digest``, ``diff-size``) with a ``"wishbot"`` object: ``{"version": 1,
  "digest", "diff_id", "media_type", "compressed_size", "unpacked_size", "entries"}``.
- image ``.metadata/<path>/manifest.json``: the image manifest as DUCC stores
  it (``config.digest`` is the image id, ``layers[].digest``) plus a
  ``"wishbot"`` object: reference, manifest digest, platform, converted time,
  thin image name, unpacked size.
- ``.metadata/remove-schedule.json``: a list (DUCC: a list of manifests);
  image entries are manifest-shaped (``config.digest`` = image id) and every
  entry has a ``"wishbot"`` object with kind, id, scheduled time and path.

Readers are tolerant: a file that is missing or malformed yields ``None``
(or an empty value) rather than an exception, so a foreign or older tree can
still be read; except where reading damage as empty would lose something:
a damaged remove schedule (or a damaged ``origin.json`` about to be
rewritten) is an error that names the file (:func:`read_json_strict`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.core.mediatypes import DOCKER_FOREIGN_LAYER_GZIP, OCI_CONFIG, OCI_MANIFEST
from bot.core.model import Platform, ScheduledRemoval
from bot.core.reference import ImageReference, ReferenceError, parse
from bot.errors import PublisherError

FORMAT_VERSION = 1
ORIGIN = "origin.json"
LAYERS = "layers.json"
MANIFEST = "manifest.json"

# --- small helpers ---------------------------------------------------------


def iso(moment: datetime) -> str:
    """UTC ISO-8601 with a ``Z`` (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def dumps(data: object) -> bytes:
    """Stable JSON bytes: sorted keys, two-space indent, trailing newline."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def read_json(path: Path) -> Any:
    """The decoded file, or ``None`` when it is missing or not JSON."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def read_json_strict(path: Path, what: str) -> Any:
    """The decoded file, ``None`` when it does not exist; a file that exists but
    cannot be read or decoded is an error (fail closed: never read as empty)."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PublisherError(
            f"the {what} {path} cannot be read: {reason}",
            hint=f"restore it from a backup or repair the JSON by hand; wishbot will not "
            f"read a damaged {what} as empty",
        ) from None


def write_json(path: Path, data: object) -> None:
    """Write ``data`` next to ``path`` and rename it into place (atomic, durable).

    A failed write (a full disk) leaves neither the file nor the temporary one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(dumps(data))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _digest(value: str) -> str:
    return value if ":" in value else f"sha256:{value}"


def go_field(data: object, key: str) -> Any:
    """``data[key]`` matched as Go's ``encoding/json`` does: an exact key first,
    then any spelling of it (DUCC writes ``"Config"``, ``"Layers"``, ``"Digest"``)."""
    if not isinstance(data, dict):
        return None
    if key in data:
        return data[key]
    folded = key.casefold()
    for name, value in data.items():
        if isinstance(name, str) and name.casefold() == folded:
            return value
    return None


#: never published (DUCC skips them too): Windows base layers served from elsewhere
FOREIGN_LAYER = DOCKER_FOREIGN_LAYER_GZIP


def manifest_summary(data: object) -> tuple[str | None, tuple[str, ...]]:
    """(image id, published layer digests) of a manifest.json in either tool's spelling."""
    image_id = go_field(go_field(data, "config"), "digest")
    layers = tuple(
        digest
        for item in go_field(data, "layers") or []
        if isinstance(digest := go_field(item, "digest"), str)
        and go_field(item, "mediaType") != FOREIGN_LAYER
    )
    return (image_id if isinstance(image_id, str) else None), layers


# --- layer metadata --------------------------------------------------------


def origin_json(image_ids: Iterable[str]) -> dict[str, object]:
    return {"origin": sorted({_digest(i) for i in image_ids})}


def read_origin(path: Path, *, strict: bool = False) -> frozenset[str]:
    """The images that use a layer; ``strict`` (before rewriting the file): a
    damaged file is an error instead of no users."""
    data = read_json_strict(path, "layer backlinks file") if strict else read_json(path)
    if data is None:
        return frozenset()
    if not isinstance(data, dict) or not isinstance(data.get("origin"), list):
        if strict:
            raise PublisherError(
                f'the layer backlinks file {path} is not of the form {{"origin": [...]}}',
                hint="restore it from a backup or repair it by hand",
            )
        return frozenset()
    return frozenset(_digest(i) for i in data["origin"] if isinstance(i, str))


@dataclass(frozen=True)
class LayerInfo:
    """``layers.json`` of a layer, in DUCC's format: a one-element array of
    containers/storage layer records, which DUCC's podman-store code reads
    back (``id`` = diffID hex, ``compressed-diff-digest``, ``diff-digest``,
    ``diff-size``), wishbot's own fields in a ``"wishbot"`` object beside them.
    Reads DUCC's array, this one, and wishbot's older plain object.
    """

    digest: str
    diff_id: str | None
    media_type: str
    compressed_size: int
    unpacked_size: int
    entries: int = 0

    def to_json(self) -> list[dict[str, object]]:
        record: dict[str, object] = {
            "compressed-diff-digest": self.digest,
            "compressed-size": self.compressed_size,
            "diff-size": self.unpacked_size,
            "wishbot": {
                "version": FORMAT_VERSION,
                "digest": self.digest,
                "diff_id": self.diff_id,
                "media_type": self.media_type,
                "compressed_size": self.compressed_size,
                "unpacked_size": self.unpacked_size,
                "entries": self.entries,
            },
        }
        if self.diff_id:
            record["id"] = self.diff_id.split(":", 1)[-1]
            record["diff-digest"] = self.diff_id
        return [record]

    @classmethod
    def from_json(cls, data: object, digest: str) -> LayerInfo:
        d = _layer_record(data, digest)
        extra = d.get("wishbot")
        ours = extra if isinstance(extra, dict) else d

        def number(*keys: str) -> int:
            for source, key in ((ours, keys[0]), *((d, k) for k in keys[1:])):
                value = source.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
            return 0

        diff_id = ours.get("diff_id") or d.get("diff-digest")
        media_type = ours.get("media_type")
        return cls(
            digest=digest,
            diff_id=diff_id if isinstance(diff_id, str) else None,
            media_type=media_type if isinstance(media_type, str) else "",
            compressed_size=number("compressed_size", "compressed-size"),
            unpacked_size=number("unpacked_size", "diff-size"),
            entries=number("entries"),
        )


def _layer_record(data: object, digest: str) -> dict[str, Any]:
    """The record of ``digest`` in a layers.json (DUCC's array or an object)."""
    if isinstance(data, dict):
        return data
    if isinstance(data, list):
        records = [item for item in data if isinstance(item, dict)]
        for item in records:
            if item.get("compressed-diff-digest") == digest:
                return item
        if records:
            return records[0]
    return {}


# --- image manifest.json ---------------------------------------------------


@dataclass(frozen=True)
class ImageRecord:
    """What ``.metadata/<path>/manifest.json`` says about one converted image."""

    path: str
    reference: ImageReference
    platform: Platform
    manifest_digest: str
    image_id: str
    layers: tuple[tuple[str, int, str], ...]  # (digest, compressed size, media type)
    converted: datetime
    thin_image: str | None = None
    unpacked_size: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.image_id, "size": 0},
            "layers": [
                {"mediaType": media_type, "digest": digest, "size": size}
                for digest, size, media_type in self.layers
            ],
            "wishbot": {
                "version": FORMAT_VERSION,
                "path": self.path,
                "reference": str(self.reference),
                "manifest_digest": self.manifest_digest,
                "platform": str(self.platform),
                "converted": iso(self.converted),
                "thin_image": self.thin_image,
                "unpacked_size": self.unpacked_size,
            },
        }

    @classmethod
    def from_json(cls, data: object, path: str) -> ImageRecord | None:
        """Decode a manifest.json; ``None`` if it has no usable image id.

        A DUCC file (a bare registry manifest) decodes with the reference taken
        from ``path`` and the platform defaulted to linux/amd64.
        """
        if not isinstance(data, dict):
            return None
        image_id = go_field(go_field(data, "config"), "digest")
        if not isinstance(image_id, str):
            return None
        layers = _manifest_layers(go_field(data, "layers") or [])
        extra = _wishbot_section(data)
        reference = _reference(extra.get("reference")) or _reference_from_path(path)
        if reference is None:
            return None
        return cls(
            path=path,
            reference=reference,
            platform=_platform(extra.get("platform")),
            manifest_digest=_str_or_none(extra.get("manifest_digest")) or "",
            image_id=image_id,
            layers=tuple(layers),
            converted=parse_time(extra.get("converted")) or datetime.fromtimestamp(0, UTC),
            thin_image=_str_or_none(extra.get("thin_image")),
            unpacked_size=_int_or_zero(extra.get("unpacked_size")),
        )


def _wishbot_section(data: dict[str, object]) -> dict[str, object]:
    """The ``wishbot`` object of a manifest.json; empty when absent (a DUCC file)."""
    extra = data.get("wishbot")
    return extra if isinstance(extra, dict) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_zero(value: object) -> int:
    return value if isinstance(value, int) else 0


def _manifest_layers(items: Iterable[object]) -> list[tuple[str, int, str]]:
    """(digest, size, media type) of a manifest's layers; unusable entries skipped."""
    layers: list[tuple[str, int, str]] = []
    for item in items:
        digest = go_field(item, "digest")
        if isinstance(digest, str):
            size = go_field(item, "size")
            media_type = go_field(item, "mediaType")
            layers.append(
                (
                    digest,
                    size if isinstance(size, int) else 0,
                    media_type if isinstance(media_type, str) else "",
                )
            )
    return layers


def _platform(text: object) -> Platform:
    """A recorded platform; linux/amd64 when none or not valid (DUCC files)."""
    try:
        return Platform.parse(str(text or "linux/amd64"))
    except ValueError:
        return Platform("linux", "amd64")


def _reference(text: object) -> ImageReference | None:
    if not isinstance(text, str):
        return None
    try:
        return parse(text)
    except ReferenceError:
        return None


def _reference_from_path(path: str) -> ImageReference | None:
    """``registry/repo:tag`` (a layout path) back to a reference."""
    return _reference(path)


# --- remove-schedule.json --------------------------------------------------


@dataclass(frozen=True)
class ScheduleEntry:
    """One entry of the remove schedule; images also remember their layers."""

    removal: ScheduledRemoval
    layers: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        r = self.removal
        extra: dict[str, object] = {
            "version": FORMAT_VERSION,
            "kind": r.kind,
            "id": r.id,
            "scheduled": iso(r.scheduled),
            "path": r.path,
        }
        if r.kind == "image":
            return {
                "schemaVersion": 2,
                "config": {"mediaType": OCI_CONFIG, "digest": r.id, "size": 0},
                "layers": [{"digest": d} for d in self.layers],
                "wishbot": extra,
            }
        return {"wishbot": extra}

    @classmethod
    def from_json(cls, data: object, default_time: datetime) -> ScheduleEntry | None:
        if not isinstance(data, dict):
            return None
        extra = data.get("wishbot")
        extra = extra if isinstance(extra, dict) else {}
        kind = extra.get("kind", "image")
        ident = extra.get("id")
        config_id, layers = manifest_summary(data)
        if ident is None:
            ident = config_id
        if kind not in ("image", "layer") or not isinstance(ident, str) or not ident:
            return None
        path = extra.get("path")
        removal = ScheduledRemoval(
            kind="image" if kind == "image" else "layer",
            id=ident,
            scheduled=parse_time(extra.get("scheduled")) or default_time,
            path=path if isinstance(path, str) else None,
        )
        return cls(removal, layers)


def read_schedule(path: Path, default_time: datetime | None = None) -> list[ScheduleEntry]:
    """The schedule's entries; a DUCC entry without a date gets ``default_time``
    (the file's modification time when not given).

    A missing schedule is empty; a damaged one (truncated, not JSON, not a
    list) is a :class:`PublisherError`: read as empty and written back, the
    images it schedules would never be collected.
    """
    data = read_json_strict(path, "remove schedule")
    if data is None:
        return []
    if not isinstance(data, list):
        raise PublisherError(
            f"the remove schedule {path} is not a JSON list",
            hint="restore it from a backup or repair it by hand; wishbot will not read "
            "a damaged remove schedule as empty",
        )
    if default_time is None:
        try:
            default_time = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError:
            default_time = datetime.fromtimestamp(0, UTC)
    out: list[ScheduleEntry] = []
    for item in data:
        entry = ScheduleEntry.from_json(item, default_time)
        if entry is not None:
            out.append(entry)
    return out


def schedule_json(entries: Iterable[ScheduleEntry]) -> list[dict[str, object]]:
    """Sorted, one entry per (kind, id, path): the earliest date wins.

    An image may wait under several paths (each retiring path keeps its own
    date); a layer has one entry.
    """
    best: dict[tuple[str, str, str], ScheduleEntry] = {}
    for entry in entries:
        removal = entry.removal
        path = (removal.path or "") if removal.kind == "image" else ""
        key = (removal.kind, removal.id, path)
        if key not in best or entry.removal.scheduled < best[key].removal.scheduled:
            best[key] = entry
    return [best[key].to_json() for key in sorted(best)]

"""The catalog: what the publisher serves, as JSON (machine) and Markdown (people).

``catalog.json`` (``schemas/catalog.schema.json``) holds everything the plan
needs as the current state, so :func:`state_from_catalog` can stand in for
reading the publisher's tree. ``CATALOG.md`` groups images by registry and
repository with a table of contents and anchors derived from paths. Both are
deterministic: the same state gives byte-identical output (a generation time
appears only when one is passed in).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.core.lifecycle import deletion_date, public_path, retires_at, retiring, serving
from bot.core.model import (
    CurrentState,
    Platform,
    PublishedImage,
    PublishedLayer,
    ScheduledRemoval,
)
from bot.core.reference import ImageReference, ReferenceError, parse
from bot.core.render import iso
from bot.core.schemas import schema_errors
from bot.core.text import clean, code_span, escape_markdown, human_size, plural
from bot.errors import PublisherError

CATALOG_SCHEMA = "wishbot-catalog/1"
SCHEMA_FILE = "catalog.schema.json"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


# --- ordering -------------------------------------------------------------------


def _image_key(image: PublishedImage) -> tuple[str, str, str]:
    return (public_path(image.path), str(image.platform), image.path)


def _removal_key(removal: ScheduledRemoval) -> tuple[str, str, str, str]:
    return (iso(removal.scheduled) or "", removal.kind, removal.id, removal.path or "")


def canonical_state(state: CurrentState) -> CurrentState:
    """The same state with images and the schedule in catalog order (sorted)."""
    return CurrentState(
        cvmfs_repo=state.cvmfs_repo,
        images=tuple(sorted(state.images, key=_image_key)),
        layers=dict(sorted(state.layers.items())),
        schedule=tuple(sorted(state.schedule, key=_removal_key)),
        flat_images=state.flat_images,
    )


# --- JSON -------------------------------------------------------------------------


def _image_json(
    cvmfs_repo: str,
    image: PublishedImage,
    layers: Mapping[str, PublishedLayer],
    deletion: datetime | None,
) -> dict[str, Any]:
    ref = image.reference.normalized()
    compressed = sum(layers[d].compressed_size for d in image.layers if d in layers)
    return {
        "path": image.path,
        "public_path": public_path(image.path),
        "cvmfs_path": f"/cvmfs/{cvmfs_repo}/{public_path(image.path)}",
        "reference": str(image.reference),
        "registry": ref.registry,
        "repository": ref.repository,
        "tag": ref.tag,
        "digest": ref.digest,
        "platform": str(image.platform),
        "manifest_digest": image.manifest_digest,
        "image_id": image.image_id,
        "layers": list(image.layers),
        "size": image.unpacked_size,
        "compressed_size": compressed,
        "thin_image": image.thin_image,
        "updated": iso(image.updated),
        "deletion": iso(deletion),
    }


def catalog_json(
    state: CurrentState,
    *,
    grace_days: int,
    generated: datetime | None = None,
    verified: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """Every published image, layer and scheduled removal (sorted; schema ``wishbot-catalog/1``).

    ``verified``, when given, is the last scheduled ``wishbot verify --deep``'s status.
    """
    state = canonical_state(state)
    paths = retiring(state)
    data: dict[str, Any] = {
        "schema": CATALOG_SCHEMA,
        "cvmfs_repo": state.cvmfs_repo,
        "generated": iso(generated),
        "grace_days": grace_days,
        "images": [
            _image_json(
                state.cvmfs_repo,
                image,
                state.layers,
                retires_at(image, paths, grace_days),
            )
            for image in state.images
        ],
        "layers": [
            {
                "digest": layer.digest,
                "diff_id": layer.diff_id,
                "compressed_size": layer.compressed_size,
                "unpacked_size": layer.unpacked_size,
                "users": sorted(layer.users),
            }
            for _digest, layer in sorted(state.layers.items())
        ],
        "schedule": [
            {
                "kind": removal.kind,
                "id": removal.id,
                "path": removal.path,
                "scheduled": iso(removal.scheduled),
                "deletion": iso(deletion_date(removal, grace_days)),
                "serving": serving(removal, paths),
            }
            for removal in state.schedule
        ],
        "flat_images": sorted(state.flat_images),
    }
    if verified is not None:
        data["verified"] = dict(verified)
    return data


def _time(text: str, where: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise PublisherError(
            f"'{text}' is not an RFC 3339 date-time",
            where=f"catalog {where}",
            hint="regenerate the catalog with 'wishbot catalog'",
        ) from None


def _reference(text: str, where: str) -> ImageReference:
    try:
        return parse(text)
    except ReferenceError as exc:
        raise PublisherError(
            f"'{text}' is not an image reference: {exc}",
            where=f"catalog {where}",
            hint="regenerate the catalog with 'wishbot catalog'",
        ) from None


def _platform(text: str, where: str) -> Platform:
    try:
        return Platform.parse(text)
    except ValueError as exc:
        raise PublisherError(
            str(exc), where=f"catalog {where}", hint="regenerate the catalog with 'wishbot catalog'"
        ) from None


def state_from_catalog(data: object) -> CurrentState:
    """The publisher's current state from a ``catalog.json`` document (validated first).

    Raises :class:`~bot.errors.PublisherError` naming the first offending
    field when the document does not follow ``schemas/catalog.schema.json``.
    """
    errors = schema_errors(data, SCHEMA_FILE, limit=3)
    if errors:
        raise PublisherError(
            "the catalog does not follow schema wishbot-catalog/1: " + "; ".join(errors),
            where="catalog.json",
            hint="pass a catalog written by 'wishbot catalog --json' or read the publisher tree",
        )
    assert isinstance(data, dict)
    images = []
    for index, item in enumerate(data["images"]):
        where = f"images/{index}"
        images.append(
            PublishedImage(
                path=item["path"],
                reference=_reference(item["reference"], f"{where}/reference"),
                platform=_platform(item["platform"], f"{where}/platform"),
                manifest_digest=item["manifest_digest"],
                image_id=item["image_id"],
                layers=tuple(item["layers"]),
                updated=_time(item["updated"], f"{where}/updated"),
                thin_image=item["thin_image"],
                unpacked_size=item["size"],
            )
        )
    layers = {
        item["digest"]: PublishedLayer(
            digest=item["digest"],
            diff_id=item["diff_id"],
            compressed_size=item["compressed_size"],
            unpacked_size=item["unpacked_size"],
            users=frozenset(item["users"]),
        )
        for item in data["layers"]
    }
    schedule = tuple(
        ScheduledRemoval(
            kind=item["kind"],
            id=item["id"],
            scheduled=_time(item["scheduled"], f"schedule/{index}/scheduled"),
            path=item["path"],
        )
        for index, item in enumerate(data["schedule"])
    )
    return CurrentState(
        cvmfs_repo=data["cvmfs_repo"],
        images=tuple(images),
        layers=layers,
        schedule=schedule,
        flat_images=frozenset(data["flat_images"]),
    )


# --- Markdown ---------------------------------------------------------------------


def anchor(path: str) -> str:
    """A stable HTML anchor for a path: readable slug plus a short hash (unique per path)."""
    slug = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")[:80]
    return f"{slug}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def _code(digest: str | None) -> str:
    """A full digest as code (it wraps in a list; tables use :func:`_short`)."""
    return code_span(digest) if digest else "—"


def _short(digest: str | None) -> str:
    if digest and _DIGEST_RE.match(digest):
        return f"`{digest[:19]}`"
    return code_span(digest) if digest else "—"


@dataclass(frozen=True)
class CatalogEntry:
    """One path people run: every platform published under it, newest update, deletion."""

    path: str  # public path "<registry>/<repository>:<tag>"
    cvmfs_path: str
    registry: str
    repository: str
    tag: str
    images: tuple[PublishedImage, ...]  # one per platform, sorted
    deletion: datetime | None  # when gc deletes a path removed from the wishlist

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(str(image.platform) for image in self.images)

    @property
    def size(self) -> int:
        """Unpacked bytes of the largest platform (what one machine needs)."""
        return max((image.unpacked_size for image in self.images), default=0)

    @property
    def updated(self) -> datetime:
        return max(image.updated for image in self.images)


def catalog_entries(state: CurrentState, *, grace_days: int) -> list[CatalogEntry]:
    """One entry per public path, in catalog order (registry, repository, path)."""
    state = canonical_state(state)
    retiring_paths = retiring(state)
    by_path: dict[str, list[PublishedImage]] = {}
    for image in state.images:
        by_path.setdefault(public_path(image.path), []).append(image)
    entries = []
    for path, images in by_path.items():
        ref = images[0].reference.normalized()
        deletions = [retires_at(i, retiring_paths, grace_days) for i in images]
        entries.append(
            CatalogEntry(
                path=path,
                cvmfs_path=f"/cvmfs/{state.cvmfs_repo}/{path}",
                registry=ref.registry,
                repository=ref.repository,
                tag=ref.tag if ref.tag is not None else ref.digest or "",
                images=tuple(images),
                deletion=min((d for d in deletions if d is not None), default=None),
            )
        )
    return sorted(entries, key=lambda e: (e.registry, e.repository, e.path))


def catalog_markdown(
    state: CurrentState, *, grace_days: int, generated: datetime | None = None
) -> str:
    """``CATALOG.md``: contents, one section per registry, a table per repository (deterministic).

    Each table has one row per path people run (path first, then tag,
    platforms, size, updated); digests and thin images follow in ``<details>``.
    """
    state = canonical_state(state)
    entries = catalog_entries(state, grace_days=grace_days)
    groups: Groups = {}
    for entry in entries:
        groups.setdefault(entry.registry, {}).setdefault(entry.repository, []).append(entry)
    lines = _summary(state, entries, groups, grace_days)
    if generated is not None:
        lines += ["", f"Generated {iso(generated)}."]
    lines += _contents(state, groups)
    for registry in sorted(groups):
        lines += [f"## {escape_markdown(registry)}", ""]
        for repository in sorted(groups[registry]):
            lines += _repository_section(f"{registry}/{repository}", groups[registry][repository])
    lines += _schedule_section(state, grace_days)
    return "\n".join(lines).rstrip("\n") + "\n"


Groups = dict[str, dict[str, list[CatalogEntry]]]  # registry -> repository -> paths


def _summary(
    state: CurrentState, entries: list[CatalogEntry], groups: Groups, grace_days: int
) -> list[str]:
    """The title and what the catalog holds, with the paths that are leaving."""
    repo = state.cvmfs_repo
    total_compressed = sum(layer.compressed_size for layer in state.layers.values())
    leaving = [entry for entry in entries if entry.deletion is not None]
    lines = [f"# Container images in {escape_markdown(repo)}", ""]
    lines.append(
        f"{plural(len(entries), 'image path')} in "
        f"{plural(sum(len(r) for r in groups.values()), 'repository', 'repositories')} on "
        f"{plural(len(groups), 'registry', 'registries')}; "
        f"{plural(len(state.layers), 'layer')} ({human_size(total_compressed)} compressed). "
        f"Run an image with `apptainer exec /cvmfs/{clean(repo)}/<path> <command>`."
    )
    if leaving:
        lines += [
            "",
            f"⏳ {plural(len(leaving), 'path')} removed from the wishlist still "
            f"serve{'s' if len(leaving) == 1 else ''} until the grace period of "
            f"{grace_days} days is over; then gc deletes "
            f"{'it' if len(leaving) == 1 else 'them'}.",
        ]
    return lines


def _contents(state: CurrentState, groups: Groups) -> list[str]:
    lines = ["", "## Contents", ""]
    for registry in sorted(groups):
        lines.append(f"- **{escape_markdown(registry)}**")
        for repository in sorted(groups[registry]):
            name = f"{registry}/{repository}"
            tags = len(groups[registry][repository])
            lines.append(
                f"  - [{escape_markdown(repository)}](#{anchor(name)}) ({tags} "
                f"tag{'' if tags == 1 else 's'})"
            )
    if state.schedule:
        lines.append(f"- [Waiting for removal](#{anchor('.metadata/remove-schedule.json')})")
    lines.append("")
    return lines


def _repository_section(name: str, entries: list[CatalogEntry]) -> list[str]:
    lines = [
        f'### <a id="{anchor(name)}"></a>{escape_markdown(name)}',
        "",
        "| Path | Tag | Platforms | Size | Updated |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for entry in entries:
        cells = [
            f'<a id="{anchor(entry.path)}"></a>{code_span(entry.cvmfs_path)}'
            + _retiring_note(entry.deletion),
            code_span(entry.tag),
            escape_markdown(", ".join(entry.platforms)),
            human_size(entry.size),
            entry.updated.strftime("%Y-%m-%d"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"<details><summary>Digests and thin images ({plural(len(entries), 'path')})</summary>",
        "",
    ]
    for entry in entries:
        for image in entry.images:
            thin = f", thin image {code_span(image.thin_image)}" if image.thin_image else ""
            lines.append(
                f"- {code_span(entry.tag)} {escape_markdown(image.platform)}: manifest "
                f"{_code(image.manifest_digest)}, image ID {_code(image.image_id)}{thin}"
            )
    lines += ["", "</details>", ""]
    return lines


def _schedule_section(state: CurrentState, grace_days: int) -> list[str]:
    if not state.schedule:
        return []
    retiring_paths = retiring(state)
    lines = [
        f'## <a id="{anchor(".metadata/remove-schedule.json")}"></a>Waiting for removal',
        "",
        f"Deleted after a grace period of {grace_days} days.",
        "",
        "| Kind | Image or layer | Was at | Scheduled | Deleted after |",
        "| --- | --- | --- | --- | --- |",
    ]
    for removal in state.schedule:
        was = code_span(removal.path) if removal.path else "—"
        if serving(removal, retiring_paths):
            was += " (⏳ removed from the wishlist, still served)"
        lines.append(
            f"| {removal.kind} | {_short(removal.id)} | {was} "
            f"| {removal.scheduled:%Y-%m-%d} "
            f"| {deletion_date(removal, grace_days):%Y-%m-%d} |"
        )
    lines.append("")
    return lines


def _retiring_note(deletion: datetime | None) -> str:
    if deletion is None:
        return ""
    return f"<br>⏳ removed from the wishlist, deleted after {deletion:%Y-%m-%d}"


CATALOG_MD = "CATALOG.md"
CATALOG_JSON = "catalog.json"


def catalog_files(
    state: CurrentState,
    *,
    grace_days: int,
    generated: datetime | None = None,
    verified: Mapping[str, object] | None = None,
) -> dict[str, bytes]:
    """``CATALOG.md`` and ``catalog.json`` as bytes, ready to commit (deterministic)."""
    data = catalog_json(state, grace_days=grace_days, generated=generated, verified=verified)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    markdown = catalog_markdown(state, grace_days=grace_days, generated=generated)
    if verified is not None:
        markdown = _with_verified(markdown, verified)
    return {CATALOG_MD: markdown.encode(), CATALOG_JSON: text.encode()}


def _with_verified(markdown: str, verified: Mapping[str, object]) -> str:
    """One line under the summary: when the tree was last verified, and the outcome."""
    if verified.get("ok"):
        outcome = "clean"
    else:
        outcome = (
            f"{verified.get('errors', 0)} error(s), {verified.get('warnings', 0)} warning(s)"
            " (run `wishbot verify --deep`)"
        )
    line = f"Last verified (deep) {escape_markdown(verified.get('checked'))}: {outcome}."
    head, sep, rest = markdown.partition("\n\n## Contents")
    return f"{head}\n\n{line}{sep}{rest}"

"""``wishbot verify``: collect the facts of a published tree for :mod:`bot.core.audit`.

Only reads. Works on a tree wishbot wrote, on one the reference converter
(DUCC) wrote, and on a read-only ``/cvmfs`` client mount.

Deep mode checks each layer's files against its tar. A diffID is the sha256
of the original tar stream; it cannot be recomputed from unpacked files
(headers, order, padding and times are gone). So ``--deep`` downloads the
layer again from a registry that serves it (the client checks its digest),
unpacks it with the same tar engine into a temporary directory (which
computes the diffID of the stream) and compares the two trees entry by
entry: type, permission bits, size, content sha256 or link target. The
diffID ties the tar to the image config; the comparison ties the published
files to the tar, and names each path that differs (a lost ``.wh.`` marker, an
edited file). No digest is recorded at publish time: publishing costs
nothing extra and layers written by DUCC are checked the same way.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from bot.core import audit, layout
from bot.core.audit import FlatFacts, ImageMeta, LayerCheck, LayerFacts, TreeFacts
from bot.core.reference import ImageReference, ReferenceError, parse
from bot.errors import PublisherError, WishbotError
from bot.publisher.backend import Publisher
from bot.publisher.metadata import (
    LAYERS,
    MANIFEST,
    ORIGIN,
    ImageRecord,
    LayerInfo,
    iso,
    manifest_summary,
    parse_time,
    read_json,
    read_origin,
    read_schedule,
)
from bot.publisher.state import _partitions, public_links
from bot.publisher.unpack import Limits, unpack_layer

#: whiteout markers reported per flat image (the scan stops there)
MAX_MARKERS = 5
_MAX_DEPTH = 16
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LayerSource:
    """Where a layer can be downloaded again: an image reference that lists it."""

    reference: ImageReference
    size: int
    media_type: str


#: ``(reference, digest, size, dest)`` -> the blob at ``dest`` (RegistryClient.download_blob)
Download = Callable[[ImageReference, str, int, Path], None]


# --- flat images ------------------------------------------------------------------


def flat_facts(flat: Path, image_id: str) -> FlatFacts:
    """Which Singularity files ``flat`` lacks and which whiteout markers it holds."""
    missing = tuple(name for name in audit.SINGULARITY_FILES if not os.path.lexists(flat / name))
    return FlatFacts(image_id=image_id, missing=missing, whiteouts=tuple(_markers(flat)))


def _markers(flat: Path) -> Iterator[str]:
    """Whiteout names in ``flat``, at most :data:`MAX_MARKERS` (iterative: any depth)."""
    found = 0
    pending = [(str(flat), "")]
    while pending:
        directory, rel = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".wh."):
                yield f"{rel}{entry.name}"
                found += 1
                if found >= MAX_MARKERS:
                    return
            if entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, f"{rel}{entry.name}/"))


def check_flat(flat: Path, image_id: str) -> None:
    """The cheap check of a freshly built flat image; raises what a client would miss."""
    facts = audit.TreeFacts(flats={image_id: flat_facts(flat, image_id)})
    problems = audit.check_flats(facts, [image_id])
    if problems:
        raise PublisherError(
            "; ".join(f"{p.message}" for p in problems),
            where=layout.flat_dir(image_id),
            hint="the flat image was not published; report it with the image's name",
        )


# --- the tree -------------------------------------------------------------------


def _links(root: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    links = dict(public_links(root))
    public = tuple(sorted(links))
    arch_root = root / layout.MULTIARCH
    if arch_root.is_dir():
        for arch in sorted(arch_root.iterdir()):
            if arch.is_dir() and not arch.is_symlink():
                prefix = f"{layout.MULTIARCH}/{arch.name}"
                for path, text in public_links(arch):
                    links[f"{prefix}/{path}"] = text
    return links, public


def _metadata(root: Path) -> dict[str, ImageMeta]:
    base = root / layout.METADATA
    out: dict[str, ImageMeta] = {}
    if not base.is_dir():
        return out
    for directory, dirs, files in os.walk(base):
        rel = os.path.relpath(directory, base)
        if rel.count(os.sep) >= _MAX_DEPTH:
            dirs[:] = []
        if MANIFEST in files and rel != ".":
            image_id, layers = manifest_summary(read_json(Path(directory) / MANIFEST))
            out[rel.replace(os.sep, "/")] = ImageMeta(image_id, layers)
            dirs[:] = []
    return out


def _layers(root: Path) -> dict[str, LayerFacts]:
    out: dict[str, LayerFacts] = {}
    for item in _partitions(root / layout.LAYERS):
        digest = f"sha256:{item.name}"
        info = LayerInfo.from_json(read_json(item / layout.METADATA / LAYERS), digest)
        out[digest] = LayerFacts(
            digest=digest,
            has_layerfs=(item / "layerfs").is_dir(),
            users=read_origin(item / layout.METADATA / ORIGIN),
            diff_id=info.diff_id,
        )
    return out


def collect(root: Path) -> TreeFacts:
    """The facts of the tree at ``root`` (not deep)."""
    links, public = _links(root)
    schedule = read_schedule(root / layout.REMOVE_SCHEDULE)
    return TreeFacts(
        links=links,
        public=public,
        flats={
            f"sha256:{item.name}": flat_facts(item, f"sha256:{item.name}")
            for item in _partitions(root / layout.FLAT)
            if item.is_dir()
        },
        layers=_layers(root),
        metadata=_metadata(root),
        schedule=tuple(entry.removal for entry in schedule),
        scheduled_layers={
            e.removal.id: e.layers for e in schedule if e.removal.kind == "image" and e.layers
        },
    )


# --- deep: each layer against its tar --------------------------------------------


def layer_sources(root: Path, facts: TreeFacts) -> dict[str, LayerSource]:
    """For each layer, an image reference that lists it: from the images' metadata,
    then from the remove schedule (an old image waits under the path it served)."""
    out: dict[str, LayerSource] = {}
    _add_metadata_sources(root, facts, out)
    _add_schedule_sources(root, out)
    _complete_from_layer_info(root, out)
    return out


def _add_metadata_sources(root: Path, facts: TreeFacts, out: dict[str, LayerSource]) -> None:
    """Each published image's layers, first image (by metadata link) first."""
    for link in sorted(facts.metadata):
        data = read_json(root / layout.image_metadata_dir(link) / MANIFEST)
        path = link.split("/", 2)[2] if link.startswith(f"{layout.MULTIARCH}/") else link
        record = ImageRecord.from_json(data, path)
        if record is None:
            continue
        for digest, size, media_type in record.layers:
            out.setdefault(digest, LayerSource(record.reference, size, media_type))


def _add_schedule_sources(root: Path, out: dict[str, LayerSource]) -> None:
    """Layers only a scheduled (old) image still lists, under the path it served."""
    for entry in read_schedule(root / layout.REMOVE_SCHEDULE):
        reference = _reference(entry.removal.path)
        if reference is not None:
            for digest in entry.layers:
                out.setdefault(digest, LayerSource(reference, 0, ""))


def _complete_from_layer_info(root: Path, out: dict[str, LayerSource]) -> None:
    """Size and media type from each layer's own layers.json where it records them."""
    for digest, source in list(out.items()):
        info = LayerInfo.from_json(
            read_json(root / layout.layer_metadata_dir(digest) / LAYERS), digest
        )
        out[digest] = LayerSource(
            source.reference,
            info.compressed_size or source.size,
            info.media_type or source.media_type,
        )


def _reference(path: str | None) -> ImageReference | None:
    if not path:
        return None
    try:
        return parse(path)
    except ReferenceError:
        return None


Entry = tuple[str, int, int, str]  # kind, permission bits, size, sha256 or link target


def tree_entries(top: Path) -> dict[str, Entry]:
    """Every entry under ``top`` (not followed), ``.cvmfscatalog`` at the top excluded.

    Iterative: a hostile layer may nest directories deeper than Python recurses."""
    out: dict[str, Entry] = {}
    pending: list[tuple[str, str]] = [(str(top), "")]
    while pending:
        directory, rel = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:  # a 0000 directory: its contents are compared as unknown
            out[f"{rel}(unreadable)"] = ("other", 0, 0, "")
            continue
        for entry in entries:
            name = f"{rel}{entry.name}"
            if name == layout.CATALOG_MARKER:
                continue
            out[name] = _entry(entry)
            if out[name][0] == "dir":
                pending.append((entry.path, f"{name}/"))
    return out


def _entry(entry: os.DirEntry[str]) -> Entry:
    st = entry.stat(follow_symlinks=False)
    mode = st.st_mode & 0o7777
    if entry.is_symlink():
        return ("link", 0, 0, os.readlink(entry.path))
    if entry.is_dir(follow_symlinks=False):
        return ("dir", mode, 0, "")
    if entry.is_file(follow_symlinks=False):
        return ("file", mode, st.st_size, _file_digest(entry.path))
    return ("other", mode, 0, "")


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return "unreadable"
    return digest.hexdigest()


def compare_trees(published: dict[str, Entry], expected: dict[str, Entry]) -> list[str]:
    """What differs, one line per path, sorted."""
    out: list[str] = []
    for name in sorted(set(published) | set(expected)):
        have, want = published.get(name), expected.get(name)
        if have is None:
            out.append(f"{name}: missing")
        elif want is None:
            out.append(f"{name}: not in the layer")
        elif have != want and not _unreadable_match(have, want):
            out.append(f"{name}: {_difference(have, want)}")
    return out


def _unreadable_match(have: Entry, want: Entry) -> bool:
    return "unreadable" in (have[3], want[3]) and have[:3] == want[:3]


def _difference(have: Entry, want: Entry) -> str:
    if have[0] != want[0]:
        return f"a {have[0]}, the layer has a {want[0]}"
    if have[1] != want[1]:
        return f"mode {have[1]:o}, the layer has {want[1]:o}"
    if have[0] == "link":
        return f"points to {have[3]}, the layer to {want[3]}"
    return "content differs"


def check_layer(
    root: Path, digest: str, source: LayerSource, download: Download, limits: Limits
) -> LayerCheck:
    """Download ``digest`` again, unpack it, compare with the published layerfs."""
    with tempfile.TemporaryDirectory(prefix="wishbot-verify-") as tmp:
        blob = Path(tmp) / "blob"
        try:
            download(source.reference, digest, source.size, blob)
            stats = unpack_layer(
                blob,
                source.media_type,
                Path(tmp) / "layerfs",
                limits=limits,
                context=f"layer {digest} of {source.reference}",
                sidecar=Path(tmp) / "layerfs.json",
            )
        except WishbotError as exc:
            return LayerCheck(digest, problem=f"could not check against {source.reference}: {exc}")
        expected = tree_entries(Path(tmp) / "layerfs")
    published = tree_entries(root / layout.layerfs_dir(digest))
    return LayerCheck(
        digest, differences=tuple(compare_trees(published, expected)), diff_id=stats.diff_id
    )


#: which layers a deep verify checks: all published ones, or a selection of them
Select = Callable[[list[str]], list[str]]


def deep_checks(
    root: Path,
    facts: TreeFacts,
    download: Download,
    limits: Limits,
    select: Select | None = None,
) -> tuple[LayerCheck, ...]:
    sources = layer_sources(root, facts)
    published = sorted(d for d, layer in facts.layers.items() if layer.has_layerfs)
    out: list[LayerCheck] = []
    for digest in select(published) if select else published:
        source = sources.get(digest)
        if source is None:
            out.append(
                LayerCheck(digest, problem="no image metadata names a registry to check it against")
            )
            continue
        out.append(check_layer(root, digest, source, download, limits))
    return tuple(out)


def verify(
    root: Path,
    *,
    download: Download | None = None,
    limits: Limits | None = None,
    select: Select | None = None,
) -> audit.AuditReport:
    """Audit the tree at ``root``; deep (each layer, or those ``select`` picks, against
    its tar) when ``download`` is given."""
    facts = collect(root)
    if download is not None:
        limits = limits or Limits(1 << 40, 1 << 24)
        facts.deep = deep_checks(root, facts, download, limits, select)
    report = audit.audit(facts, deep=download is not None)
    report.deep_layers = len(facts.deep)
    return report


# --- the scheduled deep verify: its status, for metrics and the catalog ------------

#: the last scheduled deep verify's outcome (counts only), written into the tree
STATUS = f"{layout.METADATA}/wishbot-verify.json"


def status_json(
    report: audit.AuditReport, now: datetime, cursor: str | None = None
) -> dict[str, object]:
    errors = sum(1 for f in report.findings if f.severity == "error")
    return {
        "schema": "wishbot-verify-status/1",
        "checked": iso(now),
        "deep": report.deep,
        "ok": report.ok,
        "errors": errors,
        "warnings": len(report.findings) - errors,
        "layers": report.layers,
        "layers_checked": report.deep_layers,
        "cursor": cursor,
    }


def read_status(root: Path) -> dict[str, object] | None:
    """The last scheduled verify's status, or None (never run, unreadable)."""
    data = read_json(root / STATUS)
    if not isinstance(data, dict) or parse_time(data.get("checked")) is None:
        return None
    return data


def verify_due(root: Path, now: datetime, interval: float) -> bool:
    if interval <= 0:
        return False
    status = read_status(root)
    checked = parse_time(status.get("checked")) if status else None
    return checked is None or now - checked >= timedelta(seconds=interval)


def next_batch(published: list[str], cursor: object, batch: int) -> list[str]:
    """Up to ``batch`` layers after ``cursor`` in digest order, wrapping around (0: all)."""
    if batch <= 0 or batch >= len(published):
        return list(published)
    start = sum(1 for d in published if isinstance(cursor, str) and d <= cursor)
    ring = published[start:] + published[:start]
    return ring[:batch]


def scheduled_verify(
    publisher: Publisher, now: datetime, download: Download, limits: Limits, batch: int = 0
) -> str:
    """Run the deep verify (``batch`` layers a run, in turn; 0: every layer) and record
    its status in one small transaction; a summary line."""
    status = read_status(publisher.root) or {}
    picked: list[str] = []

    def select(published: list[str]) -> list[str]:
        picked.extend(next_batch(published, status.get("cursor"), batch))
        return picked

    report = verify(publisher.root, download=download, limits=limits, select=select)
    with publisher.transaction() as txn:
        txn.write_json(STATUS, status_json(report, now, picked[-1] if picked else None))
    scope = f"{report.deep_layers} of {report.layers} layer(s)"
    if report.ok:
        return f"deep verify ({scope}): clean"
    return f"deep verify ({scope}): {len(report.findings)} finding(s) (run wishbot verify --deep)"

"""Execute a :class:`~bot.core.plan.Plan` on a publisher: one transaction per image.

For an image that is added or moved, inside one transaction:

1. each layer not yet published is downloaded into a temporary directory
   (the client verifies digest and size), its diffID checked against the
   image config, and unpacked as-is into ``.layers/xx/<hex>/layerfs``, with
   ``layers.json``. A publisher with :attr:`~Publisher.separate_layers`
   (CernVM-FS, whose publish would drop whiteout files) gets them unpacked
   outside the repository and publishes each on its own *before* the image's
   transaction, together with the flat image's ``.flat/xx`` partition;
2. the flat image ``.flat/xx/<id>`` is built from the layers' ``layerfs``
   (fresh in this run or published before) with the Apptainer/Singularity
   metadata, unless it exists already; where the publisher has catalog-level
   clones, it starts as a copy of its first layer's published ``layerfs``
   (when that holds no whiteout) and only the other layers are applied; it is
   checked (:func:`bot.publisher.verify.check_flat`: its Singularity files
   are there, no whiteout marker is left);
3. backlinks (``origin.json``), ``.cvmfscatalog`` markers, ``manifest.json``
   (and the tree's repository name, :mod:`bot.publisher.repoinfo`);
4. the public symlink (re-pointed atomically; a non-symlink is never
   replaced), or for a multi-platform wish the per-architecture symlink plus
   the CernVM-FS variant symlink;
5. the old image of a moved tag goes to the remove schedule;
6. the thin image is pushed, last, so a failed push aborts the transaction
   and the next run tries again; a multi-platform wish gets each platform's
   thin image by digest and, with its last platform converted, an OCI index
   of all of them under the output name.

A removed wish keeps its public path: the path goes to the remove schedule
and serves the same image until gc deletes both after the grace period (see
:mod:`bot.publisher.retiring`). A wish asked for again before that keeps the
path and takes it off the schedule.

A failing image is reported and aborted; the others are still published.
Nothing to do opens no transaction and downloads nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import tarfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

from bot.config import Config
from bot.core import layout
from bot.core.mediatypes import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST
from bot.core.model import Layer, PublishedImage, ResolvedImage, ScheduledRemoval
from bot.core.plan import ImageChange, Plan, public_path
from bot.core.reference import ImageReference, ReferenceError, parse
from bot.core.render import human_size
from bot.errors import IntegrityError, LeaseBusy, LeaseRefused, PublisherError, WishbotError
from bot.publisher import adopt, hooks, podman
from bot.publisher.backend import Publisher, Scope, Transaction, TreeReader
from bot.publisher.diskerrors import disk_error
from bot.publisher.flatten import apply_layerfs, readable_as_is, write_singularity_metadata
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
    schedule_json,
    write_json,
)
from bot.publisher.repoinfo import REPOSITORY_INFO, record_repository, recorded_repository
from bot.publisher.retiring import revive, serving_links
from bot.publisher.scratch import blob_dir
from bot.publisher.state import ARCH_VARIABLE, scan
from bot.publisher.unpack import LayerStats, Limits, recorded_diff_id, unpack_layer
from bot.publisher.verify import check_flat

_log = logging.getLogger(__name__)

Progress = Callable[[str], None]
#: ``(label, bytes done, bytes total)`` while a layer downloads (for progress bars)
Meter = Callable[[str, int, int], None]

WHITEOUT_PREFIX = ".wh."
#: the image's config blob, beside its manifest.json (content-addressed: its digest is the image id)
CONFIG = "config.json"


class Watch(Protocol):
    """Where an apply run is, for a progress display (besides the step lines)."""

    def planned(self, plan: Plan) -> None:
        """Before the first image: what is to be done (images, bytes to download)."""

    def image(self, number: int, count: int, change: ImageChange) -> None:
        """Image ``number`` of ``count`` (the images with work to do) starts."""


class RegistryClientLike(Protocol):
    """What apply needs from :class:`bot.registry.client.RegistryClient`."""

    def download_blob(
        self,
        ref: ImageReference,
        digest: str,
        size: int,
        dest: Path,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None: ...

    def push_blob(self, ref: ImageReference, data: bytes) -> str: ...

    def push_manifest(self, ref: ImageReference, body: bytes, media_type: str) -> str: ...


@dataclass(frozen=True)
class ImageResult:
    """What happened to one planned image."""

    path: str
    reference: str
    platform: str
    action: str
    ok: bool
    message: str = ""
    thin_image: str | None = None
    downloaded_layers: int = 0
    downloaded_bytes: int = 0
    wish: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "reference": self.reference,
            "platform": self.platform,
            "action": self.action,
            "ok": self.ok,
            "message": self.message,
            "thin_image": self.thin_image,
            "downloaded_layers": self.downloaded_layers,
            "downloaded_bytes": self.downloaded_bytes,
            "wish": self.wish,
        }


@dataclass
class ApplyReport:
    results: list[ImageResult] = field(default_factory=list)
    transactions: int = 0

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    @property
    def failures(self) -> list[ImageResult]:
        return [result for result in self.results if not result.ok]

    @property
    def downloaded_layers(self) -> int:
        return sum(result.downloaded_layers for result in self.results)

    def to_json(self) -> dict[str, object]:
        return {
            "version": 1,
            "ok": self.ok,
            "transactions": self.transactions,
            "downloaded_layers": self.downloaded_layers,
            "images": [result.to_json() for result in self.results],
        }


def _quiet(_line: str) -> None:
    return None


def apply_plan(
    plan: Plan,
    publisher: Publisher,
    client: RegistryClientLike,
    *,
    config: Config,
    progress: Progress | None = None,
    output_format: str | None = None,
    meter: Meter | None = None,
    watch: Watch | None = None,
) -> ApplyReport:
    """Converge the publisher to ``plan``; every image in its own transaction.

    ``output_format`` names the thin images (``$(image)`` placeholders); with
    ``None`` or ``config.thin`` false no thin image is pushed. ``progress``
    gets a line per step, ``meter`` the bytes of each layer download,
    ``watch`` the plan and each image as it starts ("image N of M").
    """
    say = progress or _quiet
    report = ApplyReport()
    opened = publisher.transactions_opened
    if watch is not None:
        watch.planned(plan)
    count = sum(1 for change in plan.images if has_work(plan, change))
    number = 0
    indexes = _thin_indexes(plan)
    for change in plan.images:
        if watch is not None and has_work(plan, change):
            number += 1
            watch.image(number, count, change)
        index = indexes.get(id(change))
        result = _apply_change(
            plan, change, publisher, client, config, say, output_format, meter, index
        )
        if result is not None:
            report.results.append(result)
    report.transactions = publisher.transactions_opened - opened
    return report


def has_work(plan: Plan, change: ImageChange) -> bool:
    """Does executing ``change`` write to the publisher (an "image N of M")?"""
    if change.action in ("add", "update", "remove"):
        return True
    return (
        change.action == "unchanged"
        and change.old is not None
        and change.old.image_id in plan.unscheduled
    )


def _apply_change(
    plan: Plan,
    change: ImageChange,
    publisher: Publisher,
    client: RegistryClientLike,
    config: Config,
    say: Progress,
    output_format: str | None,
    meter: Meter | None = None,
    index: list[ResolvedImage] | None = None,
) -> ImageResult | None:
    base = _base_result(change)
    if change.action == "unchanged":
        return _unchanged(plan, change, publisher, say, base)
    if change.action == "error":
        return _error_result(change, base)
    try:
        _check_path(change.path)
        if change.action == "remove":
            assert change.old is not None
            say(f"{change.path}: removed from the wishlist; it serves until gc deletes it")
            with publisher.transaction(SCHEDULE_SCOPE) as txn:
                _retire_path(publisher, txn, change.old, plan.now)
            return replace(base, ok=True, message="retiring; path and image scheduled for removal")
        assert change.new is not None
        _check_image(change.new)
        converter = _Converter(plan, change, change.new, publisher, client, config, say, meter)
        converter.index = index
        thin = _thin_name(output_format, change.new.reference) if config.thin else None
        converter.run(thin)
        return replace(
            base,
            ok=True,
            message="published",
            thin_image=thin,
            downloaded_layers=converter.downloaded_layers,
            downloaded_bytes=converter.downloaded_bytes,
        )
    except Exception as exc:  # one image's failure never stops the others
        message = _failure(change.path, exc)
        say(f"{change.path}: FAILED: {message}")
        return replace(base, message=message)


def _base_result(change: ImageChange) -> ImageResult:
    """The result of ``change`` before it is executed: not ok, no message yet."""
    wish = change.wish.text if change.wish else ""
    image = change.new or change.old
    platform = str(image.platform) if image else ""
    return ImageResult(
        path=change.path,
        reference=str(change.reference),
        platform=platform,
        action=change.action,
        ok=False,
        wish=wish,
    )


def _error_result(change: ImageChange, base: ImageResult) -> ImageResult:
    """A change the plan already found wrong: its problem and hint, as the message."""
    problem = change.problem
    if problem is None:
        return replace(base, message="error")
    hint = f" — {problem.hint}" if problem.hint else ""
    return replace(base, message=f"{problem.message}{hint}")


def _unchanged(
    plan: Plan, change: ImageChange, publisher: Publisher, say: Progress, base: ImageResult
) -> ImageResult | None:
    """An unchanged image: a retiring path wished again is taken off the schedule."""
    if change.old is None or change.old.image_id not in plan.unscheduled:
        return None
    try:
        if not _keep_path(publisher, change.path, change.old, plan.now):
            return None
    except WishbotError as exc:
        say(f"{change.path}: FAILED: {exc}")
        return replace(base, message=str(exc))
    say(f"{change.path}: wished again; its scheduled removal is cancelled")
    return replace(base, ok=True, message="kept; scheduled removal cancelled")


def _failure(path: str, exc: Exception) -> str:
    """What failed an image, for the report: a wishbot error as it is, a disk error
    with its path and what to do, anything else as the bug it is."""
    if isinstance(exc, WishbotError):
        return str(exc)
    if isinstance(exc, OSError):  # the publisher's disk: read-only, not ours, full
        return str(disk_error(exc, f"{path}: cannot publish"))
    _log.debug("unexpected error publishing %s", path, exc_info=True)
    return (
        f"internal error: {type(exc).__name__}: {exc} "
        "(run with --debug for a traceback; please report it)"
    )


_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ARCH = re.compile(r"^[a-z0-9_]+(?::[a-z0-9_.]+)?$")


def _check_path(path: str) -> None:
    parts = path.split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts) or path.startswith("."):
        raise PublisherError(f"refusing to publish at the unsafe path '{path}'")


def _check_image(image: ResolvedImage) -> None:
    """Digests and architecture names become paths: accept only their strict forms."""
    for digest in (image.image_id, *(layer.digest for layer in image.layers)):
        if not _DIGEST.match(digest):
            raise PublisherError(
                f"{image.reference}: '{digest}' is not a sha256 digest; refusing to use it",
                hint="the registry served a malformed manifest",
            )
    if image.multiarch and not _ARCH.match(layout.arch_name(image.platform)):
        raise PublisherError(
            f"{image.reference}: platform '{image.platform}' cannot name a directory"
        )


def _thin_name(output_format: str | None, reference: ImageReference) -> str | None:
    if not output_format:
        return None
    from bot.core.recipe import output_name

    return str(output_name(output_format, reference))


class _Converter:
    """Converts one resolved image inside one transaction."""

    def __init__(
        self,
        plan: Plan,
        change: ImageChange,
        image: ResolvedImage,
        publisher: Publisher,
        client: RegistryClientLike,
        config: Config,
        say: Progress,
        meter: Meter | None = None,
    ) -> None:
        self.plan = plan
        self.meter = meter
        self.change = change
        self.image = image
        self.publisher = publisher
        self.root = publisher.root
        self.client = client
        self.config = config
        self.say = say
        self.limits = Limits(config.max_layer_bytes, config.max_layer_entries)
        self.downloaded_layers = 0
        self.downloaded_bytes = 0
        #: where new layers are unpacked before they are published on their own
        self.staging: Path | None = None
        #: the flat image started as a catalog-level copy of the first layer
        self.cloned = False
        #: every platform of a multi-platform wish, when this image pushes their thin index
        self.index: list[ResolvedImage] | None = None

    def _reader(self, dest: Transaction | Path | None = None) -> TreeReader:
        """Read-your-writes before or outside the image's transaction: the layer
        staging area of a publisher with separate layers (or ``dest``), else the
        published tree."""
        if isinstance(dest, Transaction):
            return dest
        return TreeReader(self.root, [dest, self.staging])

    def run(self, thin: str | None) -> None:
        image = self.image
        path = self.change.path
        link = layout.multiarch_path(image.platform, path) if image.multiarch else path
        for candidate in {path, link}:
            existing = self.root / candidate
            if os.path.lexists(existing) and not existing.is_symlink():
                raise PublisherError(
                    f"{candidate} exists in the publisher and is not a symlink",
                    hint="wishbot never replaces a real file or directory; move it away by hand",
                )
        self.say(f"{path}: converting {image.reference} ({image.platform}, {image.image_id})")
        with blob_dir() as tmp:
            if self.publisher.separate_layers:
                self._stage_and_publish_layers(tmp)
            if self.publisher.leased:
                self._publish_in_steps(self._steps(tmp, path, link, thin), thin)
            else:
                with self._image_transaction() as txn:
                    txn.read_first(self.staging)
                    if not self.publisher.separate_layers:
                        self._layers(txn, tmp)
                    self._write_image(txn, self._steps(tmp, path, link, thin), thin)
        self.say(f"{path}: done")

    def _stage_and_publish_layers(self, tmp: Path) -> None:
        """Unpack the new layers outside the repository, then publish each in a
        step of its own (whiteout files kept), before the image's transaction;
        with them the flat image's partition directory, so it can be cloned into."""
        self.staging = tmp / "staged"
        self._layers(self.staging, tmp)
        new = [
            digest
            for digest in dict.fromkeys(layer.digest for layer in self.image.layers)
            if (self.staging / layout.layer_dir(digest)).is_dir()
        ]
        staged = [(layout.layer_dir(d), self.staging / layout.layer_dir(d)) for d in new]
        partition = posixpath.dirname(layout.flat_dir(self.image.image_id))
        flat_exists = os.path.lexists(self.root / layout.flat_dir(self.image.image_id))
        dirs = [] if flat_exists or (self.root / partition).is_dir() else [partition]
        if staged or dirs:
            self.say(f"{self.change.path}: publishing {len(staged)} new layer(s)")
            self.publisher.publish_layers(staged, dirs)

    def _image_transaction(self, scope: Scope | None = None) -> AbstractContextManager[Transaction]:
        """The image's transaction (or the flat image's step, on ``scope``); its flat
        image starts as a catalog-level copy of its first layer where the
        publisher can (see :meth:`_clone_source`)."""
        source = self._clone_source()
        if source is None:
            return self.publisher.transaction(scope)
        self.cloned = True
        flat = layout.flat_dir(self.image.image_id)
        return self.publisher.clone_transaction(source, flat, scope)

    def _clone_source(self) -> str | None:
        """The published ``layerfs`` of the first layer, when the flat image is new
        and that layer is published and holds no whiteout (a copy would carry the
        markers into the flat image)."""
        flat = layout.flat_dir(self.image.image_id)
        if not self.publisher.catalog_clones or os.path.lexists(self.root / flat):
            return None
        source = layout.layerfs_dir(self.image.layers[0].digest)
        if not (self.root / posixpath.dirname(flat)).is_dir() or not (self.root / source).is_dir():
            return None
        if _has_whiteouts(self._reader().resolve(source)):
            return None
        return source

    def _steps(self, tmp: Path, path: str, link: str, thin: str | None) -> list[_Step]:
        """What converting the image writes, in order, each step with the paths it
        writes: one transaction for all of them, or (a leased publisher) one
        each, the public path last."""
        image, root = self.image, self.root
        flat = layout.flat_dir(image.image_id)
        steps = [_Step("flat image", (flat,), lambda txn: self._flat_step(txn, tmp))]
        steps += [self._backlink_step(d) for d in dict.fromkeys(x.digest for x in image.layers)]
        steps.append(
            _Step(
                "metadata",
                (layout.image_metadata_dir(link),),
                lambda t: self._manifest(t, link, thin),
            )
        )
        steps.append(
            _Step(
                "repository record",
                (REPOSITORY_INFO,),
                lambda txn: record_repository(txn, self.plan.cvmfs_repo),
                wanted=lambda: recorded_repository(root) != self.plan.cvmfs_repo,
            )
        )
        if self.config.podman_store:
            steps.append(
                _Step(
                    "podman store",
                    (layout.PODMAN_STORE,),
                    lambda txn: podman.publish(txn, image, path, self.client, self.plan.now),
                )
            )
        steps.append(
            _Step(
                "remove schedule",
                (layout.REMOVE_SCHEDULE,),
                self._schedule,
                wanted=lambda: self._new_schedule(TreeReader(root)) is not None,
            )
        )
        steps.append(_Step("public path", (link,), lambda txn: self._link(txn, link), visible=True))
        if link != path:
            steps.append(
                _Step("variant symlink", (path,), lambda t: self._variant(t, path), visible=True)
            )
        return steps

    def _backlink_step(self, digest: str) -> _Step:
        """Add this image to the ``origin.json`` of the layer ``digest``."""
        origin = self.root / layout.layer_metadata_dir(digest) / ORIGIN
        return _Step(
            "backlink",
            (layout.layer_metadata_dir(digest),),
            lambda txn: self._backlinks_into(txn, [digest]),
            wanted=lambda: self.image.image_id not in read_origin(origin),
        )

    def _write_image(self, txn: Transaction, steps: list[_Step], thin: str | None) -> None:
        """Every step in the one transaction ``txn``; the thin image pushed last, so
        a failed push aborts it."""
        for step in steps:
            step.write(txn)
        hooks.crash_point("linked")
        if thin:
            self._push_thin(thin)
        hooks.crash_point("image-written")
        self.say(f"{self.change.path}: publishing")

    def _publish_in_steps(self, steps: list[_Step], thin: str | None) -> None:
        """A leased publisher: each step in a transaction on exactly its paths
        (skipped when the published tree shows it is not needed); the thin image
        is pushed before the steps that make the image visible."""
        for step in steps:
            if step.visible and thin:
                self._push_thin(thin)
                thin = None
            if step.wanted():
                self._leased_step(step)
        hooks.crash_point("linked")
        hooks.crash_point("image-written")

    def _leased_step(self, step: _Step) -> None:
        """Run ``step`` in a transaction of its own; a publish the gateway refused
        (the transaction was aborted) is tried again, once."""
        scope = Scope(step.paths)
        self.say(f"{self.change.path}: publishing the {step.name}")
        for attempt in (1, 2):
            try:
                opening = (
                    self._image_transaction(scope)
                    if step.name == "flat image"
                    else self.publisher.transaction(scope)
                )
                with opening as txn:
                    txn.read_first(self.staging)
                    step.write(txn)
                return
            except LeaseBusy:
                raise
            except LeaseRefused as exc:
                if attempt == 2:
                    raise
                self.say(f"{self.change.path}: {step.name}: {exc.message}; trying again")

    # --- steps --------------------------------------------------------------

    def _layers(self, dest: Transaction | Path, tmp: Path) -> None:
        """Download and unpack the layers that are not published yet, into the
        transaction or (a publisher with separate layers) the staging area."""
        expected = expected_diff_ids(self.image)
        reader = self._reader(dest)
        for layer in self.image.layers:
            layerfs = layout.layerfs_dir(layer.digest)
            if (self.root / layerfs).is_dir() or reader.is_dir(layerfs):
                check_published_diff_id(reader.resolve(layerfs), layer, expected, self.image)
                continue
            hex_digest = layout.hex_of(layer.digest)
            blob = tmp / hex_digest
            self.say(
                f"{self.change.path}: downloading layer {layer.digest} ({human_size(layer.size)})"
            )
            self.client.download_blob(
                self.image.reference,
                layer.digest,
                layer.size,
                blob,
                progress=self._metered(f"{layout.hex_of(layer.digest)[:12]}", layer.size),
            )
            self.downloaded_layers += 1
            self.downloaded_bytes += layer.size
            hooks.crash_point("downloaded")
            self.say(f"{self.change.path}: unpacking layer {layer.digest}")
            stats = self._unpack_checked(blob, layer, dest / layerfs, expected)
            info = LayerInfo(
                digest=layer.digest,
                diff_id=stats.diff_id,
                media_type=layer.media_type,
                compressed_size=layer.size,
                unpacked_size=stats.unpacked_size,
                entries=stats.entries,
            )
            write_json(dest / layout.layer_metadata_dir(layer.digest) / LAYERS, info.to_json())
            blob.unlink()
            hooks.crash_point("layer")

    def _metered(self, label: str, total: int) -> Callable[[int], None] | None:
        meter = self.meter
        if meter is None:
            return None
        return lambda done: meter(label, done, total)

    def _context(self, digest: str) -> str:
        return f"layer {digest} of {self.image.reference}"

    def _flat(self, txn: Transaction, tmp: Path) -> None:
        flat = layout.flat_dir(self.image.image_id)
        layers = self.image.layers
        if self.cloned and txn.is_dir(flat):
            # the first layer is there already, as a catalog-level copy
            layers = layers[1:]
        elif (self.root / flat).is_dir() or txn.is_dir(flat):
            return
        self.say(f"{self.change.path}: building the flat image {flat}")
        target = txn.mkdir(flat)
        # From the unpacked layers (fresh in this run or published before): a
        # local copy, about three times faster than decompressing the blobs
        # again, and the same tree.
        for layer in layers:
            layerfs, sidecar = self._flat_source(txn, layer, tmp)
            apply_layerfs(
                target,
                layerfs,
                context=self._context(layer.digest),
                sidecar=sidecar if sidecar is not None else self._sidecar(txn, layer),
            )
            hooks.crash_point("flat-layer")
        write_singularity_metadata(target, self.image.config)

    def _sidecar(self, txn: Transaction, layer: Layer) -> Path:
        """The layer's sidecar; a layer published by DUCC gets one first (see adopt)."""
        sidecar = txn.resolve(adopt.sidecar_relpath(layer.digest))
        if sidecar.exists():
            return sidecar
        self.say(
            f"{self.change.path}: layer {layer.digest} has no sidecar (published by DUCC?): "
            "checking it against its tar"
        )
        diff_ids = self.image.config.diff_ids
        expected = dict(zip((x.digest for x in self.image.layers), diff_ids, strict=False))
        self.downloaded_layers += 1
        self.downloaded_bytes += layer.size
        return adopt.backfill_sidecar(
            txn,
            layer,
            self.image.reference,
            lambda ref, digest, size, dest: self.client.download_blob(ref, digest, size, dest),
            diff_id=expected.get(layer.digest) or layer.diff_id,
            limits=self.limits,
        )

    def _check_flat(self, txn: Transaction) -> None:
        """The cheap verify of a flat image built in this transaction: a problem
        aborts the image before anything of it is visible."""
        staged = txn / layout.flat_dir(self.image.image_id)
        if staged.is_dir():
            check_flat(staged, self.image.image_id)

    def _flat_source(self, txn: Transaction, layer: Layer, tmp: Path) -> tuple[Path, Path | None]:
        """The layerfs to build the flat image from, and its sidecar (None: its own).

        A layerfs published before this transaction is read as it is when it
        can be (always as root). Without root, one whose modes deny its owner
        (a ``0000`` directory, ``etc/shadow``) could only be read by changing
        those modes in the live tree, outside any transaction, where a crash
        would leave them changed: its blob is unpacked again into scratch
        space instead, where modes may be opened freely.
        """
        relpath = layout.layerfs_dir(layer.digest)
        source = txn.resolve(relpath)
        if source == txn.view / relpath or readable_as_is(source):
            return source, None
        self.say(
            f"{self.change.path}: layer {layer.digest} is not readable without changing "
            "its published modes; unpacking its blob again"
        )
        hex_digest = layout.hex_of(layer.digest)
        blob = tmp / f"{hex_digest}.again"
        self.client.download_blob(self.image.reference, layer.digest, layer.size, blob)
        self.downloaded_layers += 1
        self.downloaded_bytes += layer.size
        dest = tmp / f"{hex_digest}.layer" / "layerfs"
        sidecar = tmp / f"{hex_digest}.layer" / "layerfs.json"
        self._unpack_checked(blob, layer, dest, expected_diff_ids(self.image), sidecar)
        blob.unlink()
        return dest, sidecar

    def _unpack_checked(
        self,
        blob: Path,
        layer: Layer,
        dest: Path,
        expected: dict[str, str],
        sidecar: Path | None = None,
    ) -> LayerStats:
        """Unpack ``blob`` into ``dest`` (a new layerfs); refuse it unless its diffID
        is the one the image config requires."""
        dest.mkdir(parents=True)
        stats = unpack_layer(
            blob,
            layer.media_type,
            dest,
            limits=self.limits,
            context=self._context(layer.digest),
            sidecar=sidecar,
        )
        check_diff_id(stats.diff_id, layer, expected, self.image)
        if stats.dropped_xattrs:
            shown = "; ".join(stats.dropped_xattrs[:5])
            more = len(stats.dropped_xattrs) - 5
            self.say(
                f"{self.change.path}: layer {layer.digest}: extended attributes not "
                f"published: {shown}" + (f" and {more} more" if more > 0 else "")
            )
        return stats

    def _flat_step(self, txn: Transaction, tmp: Path) -> None:
        self._flat(txn, tmp)
        self._check_flat(txn)
        self._markers(txn)

    def _backlinks_into(self, txn: Transaction, digests: list[str]) -> None:
        """Add this image to the ``origin.json`` of each layer in ``digests``.

        Read and written in the transaction, never carried by a layer's ingest:
        under a gateway another publisher may have added itself since this
        one's view was last brought up to date, and only a transaction on the
        file's lease sees that."""
        for digest in digests:
            relpath = f"{layout.layer_metadata_dir(digest)}/{ORIGIN}"
            users = read_origin(txn.resolve(relpath), strict=True)
            if self.image.image_id not in users:
                txn.write_json(relpath, {"origin": sorted(users | {self.image.image_id})})

    def _markers(self, txn: Transaction) -> None:
        # where the reference converter puts them: not in the .flat/xx partitions
        dirs = [
            layout.FLAT,
            layout.flat_dir(self.image.image_id),
            layout.LAYERS,
        ]
        for layer in self.image.layers:
            dirs.append(posixpath.dirname(layout.layer_dir(layer.digest)))
            dirs.append(layout.layerfs_dir(layer.digest))
        for directory in dict.fromkeys(dirs):
            marker = f"{directory}/{layout.CATALOG_MARKER}"
            # a leased step writes only its own (the publisher made the others
            # with their directories)
            if txn.scope.covers(marker) and not txn.exists(marker):
                txn.mkdir(directory)
                txn.write_bytes(marker, b"")

    def _manifest(self, txn: Transaction, link: str, thin: str | None) -> None:
        image = self.image
        unpacked = 0
        for layer in dict.fromkeys(layer.digest for layer in image.layers):
            info_path = txn.resolve(f"{layout.layer_metadata_dir(layer)}/{LAYERS}")
            unpacked += LayerInfo.from_json(read_json(info_path), layer).unpacked_size
        record = ImageRecord(
            path=self.change.path,
            reference=image.reference,
            platform=image.platform,
            manifest_digest=image.manifest_digest,
            image_id=image.image_id,
            layers=tuple((x.digest, x.size, x.media_type) for x in image.layers),
            converted=self.plan.now,
            thin_image=thin,
            unpacked_size=unpacked,
        )
        txn.write_json(f"{layout.image_metadata_dir(link)}/{MANIFEST}", record.to_json())
        config = _config_blob(self.client, image)
        if config is not None:
            txn.write_bytes(f"{layout.image_metadata_dir(link)}/{CONFIG}", config)

    def _link(self, txn: Transaction, link: str) -> None:
        txn.symlink(link, layout.flat_link(link, self.image.image_id))

    def _variant(self, txn: Transaction, path: str) -> None:
        variant = f"{layout.MULTIARCH}/{ARCH_VARIABLE}/{path}"
        txn.symlink(path, layout.relative_link(path, variant))

    def _schedule(self, txn: Transaction) -> None:
        kept = self._new_schedule(txn)
        if kept is not None:
            txn.write_json(layout.REMOVE_SCHEDULE, schedule_json(kept))

    def _new_schedule(self, reader: TreeReader) -> list[ScheduleEntry] | None:
        """The remove schedule once this image is published (None: unchanged)."""
        now = self.plan.now
        revived = {self.image.image_id, *(x.digest for x in self.image.layers)}
        entries = _read_schedule(reader.resolve(layout.REMOVE_SCHEDULE), now)
        kept = revive(self.root, entries, self.change.path, revived)
        old = self.change.old
        if (
            self.change.action == "update"
            and old is not None
            and old.image_id != self.image.image_id
        ):
            # a retiring path wished again with a moved tag served the old image until
            # now: the old image waits from now, like any moved tag's
            kept = [e for e in kept if not _same_entry(e, old)]
            kept.append(_image_entry(old, now))
        return kept if kept != entries else None

    def _push_thin(self, name: str) -> None:
        try:
            target = parse(name)
        except ReferenceError as exc:
            raise PublisherError(
                f"the thin image name '{name}' of {self.image.reference} is not valid: {exc}",
                hint="check output_format in the wishlist",
            ) from None
        repo = self.plan.cvmfs_repo
        if not self.image.multiarch:
            self.say(f"{self.change.path}: pushing the thin image {name}")
            push_thin_image(self.client, target, self.image, repo)
            return
        # one thin image per platform, by digest; the name gets an index of them all,
        # pushed with the last platform converted in this run
        by_digest = replace(target, tag=None, digest=None)
        push_thin_image(self.client, by_digest, self.image, repo)
        if self.index:
            # platforms that failed to publish stay out: their layers are not there
            members = [
                m
                for m in self.index
                if m is self.image or (self.root / layout.flat_dir(m.image_id)).is_dir()
            ]
            self.say(f"{self.change.path}: pushing the thin image index {name}")
            push_thin_index(self.client, target, members, repo)


#: retiring a path or keeping one writes the remove schedule only
SCHEDULE_SCOPE = Scope((layout.REMOVE_SCHEDULE,))


@dataclass(frozen=True)
class _Step:
    """A part of converting an image: what it writes (``paths``, the scope of its
    transaction on a leased publisher) and how."""

    name: str
    paths: tuple[str, ...]
    write: Callable[[Transaction], None]
    #: is it needed, by the published tree (a leased publisher skips it otherwise)
    wanted: Callable[[], bool] = lambda: True
    #: it makes the image visible: runs after everything else
    visible: bool = False


def _config_blob(client: RegistryClientLike, image: ResolvedImage) -> bytes | None:
    """The image's config blob as the client resolved it (cached: no new download)."""
    get_config = getattr(client, "get_config", None)
    if get_config is None:
        return None
    blob = get_config(image.reference, image.image_id)
    return blob if isinstance(blob, bytes) and _sha256(blob) == image.image_id else None


def published_configs(root: Path) -> dict[str, bytes]:
    """The config blobs of the published images (``.metadata/<path>/config.json``),
    by digest, each checked against it: a re-run resolves them without a download."""
    found: dict[str, bytes] = {}
    for link, image_id in scan(root).links.items():
        try:
            blob = (root / layout.image_metadata_dir(link) / CONFIG).read_bytes()
        except OSError:
            continue
        if _sha256(blob) == image_id:
            found[image_id] = blob
    return found


def _has_whiteouts(tree: Path) -> bool:
    """Does the layer tree hold a whiteout file (``.wh.<name>`` or ``.wh..wh..opq``)?"""
    for _dirpath, dirs, files in os.walk(tree):
        if any(name.startswith(WHITEOUT_PREFIX) for name in (*dirs, *files)):
            return True
    return False


def expected_diff_ids(image: ResolvedImage) -> dict[str, str]:
    """Layer digest -> the diffID its image config requires.

    The OCI image spec requires ``rootfs.diff_ids``, one per layer: a config
    without them (or with another count) is malformed and refused, never
    published unchecked.
    """
    diff_ids = image.config.diff_ids
    if len(diff_ids) != len(image.layers):
        raise IntegrityError(
            f"{image.reference}: the image config lists {len(diff_ids)} diffIDs "
            f"(rootfs.diff_ids) for {len(image.layers)} layers",
            hint="the OCI image spec requires one per layer; ask the image's owner to rebuild it",
        )
    expected: dict[str, str] = {}
    for layer, diff_id in zip(image.layers, diff_ids, strict=True):
        if expected.setdefault(layer.digest, diff_id) != diff_id:
            raise IntegrityError(
                f"{image.reference}: the image config gives layer {layer.digest} two diffIDs",
                hint="the image is malformed; ask its owner to rebuild it",
            )
    return expected


def check_diff_id(found: str, layer: Layer, expected: dict[str, str], image: ResolvedImage) -> None:
    """The layer unpacked to ``found``: refuse it unless the config says the same."""
    want = expected[layer.digest]
    if found != want:
        raise IntegrityError(
            f"layer {layer.digest} of {image.reference} unpacks to diffID "
            f"{found}, but the image config says {want}",
            hint="the registry serves a corrupt or forged image; ask its owner",
        )


def check_published_diff_id(
    layerfs: Path, layer: Layer, expected: dict[str, str], image: ResolvedImage
) -> None:
    """An already published layer: the diffID recorded when it was unpacked must be
    the one this image's config asks for (a config cannot claim another content)."""
    recorded = recorded_diff_id(layerfs)
    if recorded is not None and recorded != expected[layer.digest]:
        raise IntegrityError(
            f"layer {layer.digest} is published with diffID {recorded}, but the config "
            f"of {image.reference} says {expected[layer.digest]}",
            hint="the image config is corrupt or forged; ask the image's owner",
        )


def _read_schedule(path: Path, now: datetime) -> list[ScheduleEntry]:
    return read_schedule(path, now) if path.exists() else []


def _same_entry(entry: ScheduleEntry, image: PublishedImage) -> bool:
    removal = entry.removal
    return (
        removal.kind == "image"
        and removal.id == image.image_id
        and removal.path is not None
        and public_path(removal.path) == public_path(image.path)
    )


def _image_entry(image: PublishedImage, now: datetime) -> ScheduleEntry:
    return ScheduleEntry(
        ScheduledRemoval(kind="image", id=image.image_id, scheduled=now, path=image.path),
        layers=image.layers,
    )


def _retire_path(
    publisher: Publisher, txn: Transaction, old: PublishedImage, now: datetime
) -> None:
    """Schedule a removed path: it keeps serving ``old`` until gc deletes both.

    Nothing is unlinked here: the symlinks (for a multi-platform wish the
    variant symlink and the ``.multiarch`` links) and the metadata stay until
    gc. An earlier entry for the same path and image keeps its date.
    """
    root = publisher.root
    public = root / old.path
    if os.path.lexists(public) and not public.is_symlink():
        raise PublisherError(
            f"{old.path} is not a symlink; refusing to schedule it for removal",
            hint="wishbot only removes what it published",
        )
    # read in the transaction: another publisher may have changed it meanwhile
    entries = _read_schedule(txn.resolve(layout.REMOVE_SCHEDULE), now)
    entries.append(_image_entry(old, now))
    txn.write_json(layout.REMOVE_SCHEDULE, schedule_json(entries))


def _keep_path(publisher: Publisher, path: str, image: PublishedImage, now: datetime) -> bool:
    """A retiring ``path`` is wished again: take it (and what it uses) off the schedule.

    False (and no transaction) when the schedule has no entry for it.
    """
    root = publisher.root
    entries = _read_schedule(root / layout.REMOVE_SCHEDULE, now)
    if image.image_id not in serving_links(root, path).values():
        return False
    wanted = {image.image_id, *image.layers}
    kept = revive(root, entries, path, wanted)
    if kept == entries:
        return False
    with publisher.transaction(SCHEDULE_SCOPE) as txn:
        # again in the transaction: another publisher may have changed it meanwhile
        entries = _read_schedule(txn.resolve(layout.REMOVE_SCHEDULE), now)
        txn.write_json(layout.REMOVE_SCHEDULE, schedule_json(revive(root, entries, path, wanted)))
    return True


# --- thin images -------------------------------------------------------------


def thin_json(image: ResolvedImage, cvmfs_repo: str) -> dict[str, object]:
    """The thin image descriptor: where in CernVM-FS each layer lives, bottom to top."""
    return {
        "version": "1.0",
        "origin": image.reference.url,
        "layers": [
            {
                "digest": layout.hex_of(layer.digest),
                "url": layout.layer_url(cvmfs_repo, layer.digest),
            }
            for layer in image.layers
        ],
    }


def _thin_layer(descriptor: dict[str, object]) -> tuple[bytes, bytes]:
    """(gzip blob, uncompressed tar) of one file ``thin.json``; byte-for-byte reproducible."""
    body = json.dumps(descriptor, indent=2).encode("utf-8")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("thin.json")
        info.size = len(body)
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(body))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), plain


def thin_image_parts(image: ResolvedImage, cvmfs_repo: str) -> tuple[bytes, bytes, bytes]:
    """(layer blob, config blob, manifest) of the thin image for ``image``."""
    layer, plain = _thin_layer(thin_json(image, cvmfs_repo))
    cfg = image.config
    config = {
        "architecture": image.platform.architecture,
        "os": image.platform.os,
        **({"variant": image.platform.variant} if image.platform.variant else {}),
        "config": {
            "Env": [*cfg.env, "CVMFS_IMAGE=true"],
            "Cmd": list(cfg.cmd) or None,
            "Entrypoint": list(cfg.entrypoint) or None,
            "WorkingDir": cfg.working_dir,
            "User": cfg.user,
            "Labels": {**cfg.labels, "cvmfs_image": "true"},
        },
        "rootfs": {"type": "layers", "diff_ids": [_sha256(plain)]},
        "history": [{"created_by": f"wishbot thin image of {image.reference}"}],
    }
    config_blob = json.dumps(config, sort_keys=True).encode("utf-8")
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": _sha256(config_blob),
            "size": len(config_blob),
        },
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": _sha256(layer), "size": len(layer)}],
        "annotations": {"org.cernvm.cvmfs.origin": image.reference.url},
    }
    return layer, config_blob, json.dumps(manifest, sort_keys=True).encode("utf-8")


def push_thin_image(
    client: RegistryClientLike, target: ImageReference, image: ResolvedImage, cvmfs_repo: str
) -> str:
    """Push the thin image of ``image`` to ``target`` with the registry API; its digest."""
    layer, config_blob, manifest = thin_image_parts(image, cvmfs_repo)
    for blob in (layer, config_blob):
        digest = client.push_blob(target, blob)
        if digest != _sha256(blob):
            raise IntegrityError(f"the registry stored {digest} for a blob of {_sha256(blob)}")
    return client.push_manifest(target, manifest, OCI_MANIFEST)


def _thin_indexes(plan: Plan) -> dict[int, list[ResolvedImage]]:
    """For each multi-platform path with a platform to convert: its last such
    change (by ``id``) -> every platform the path will serve, in plan order."""
    members: dict[str, list[ResolvedImage]] = {}
    last: dict[str, ImageChange] = {}
    for change in plan.images:
        new = change.new
        if new is None or not new.multiarch or change.action == "error":
            continue
        members.setdefault(change.path, []).append(new)
        if change.action in ("add", "update"):
            last[change.path] = change
    return {id(change): members[path] for path, change in last.items()}


def thin_index(images: Sequence[ResolvedImage], cvmfs_repo: str) -> bytes:
    """The OCI image index of the thin images of every platform of a wish."""
    manifests = []
    for image in images:
        manifest = thin_image_parts(image, cvmfs_repo)[2]
        platform: dict[str, str] = {
            "architecture": image.platform.architecture,
            "os": image.platform.os,
        }
        if image.platform.variant:
            platform["variant"] = image.platform.variant
        manifests.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": _sha256(manifest),
                "size": len(manifest),
                "platform": platform,
            }
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return json.dumps(index, sort_keys=True).encode("utf-8")


def push_thin_index(
    client: RegistryClientLike,
    target: ImageReference,
    images: Sequence[ResolvedImage],
    cvmfs_repo: str,
) -> str:
    """Push every platform's thin image by digest, then their index to ``target``."""
    by_digest = replace(target, tag=None, digest=None)
    for image in images:
        push_thin_image(client, by_digest, image, cvmfs_repo)
    return client.push_manifest(target, thin_index(images, cvmfs_repo), OCI_INDEX)


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def failing_wishes(report: ApplyReport) -> Sequence[str]:
    """Each failing wish (as written), once, in order."""
    return list(dict.fromkeys(r.wish or r.reference for r in report.failures))

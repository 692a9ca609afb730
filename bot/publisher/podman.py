"""The podman additional image store under ``podmanStore/`` (opt-in: ``podman_store``).

With it, ``podman --storage-opt overlay.imagestore=/cvmfs/<repo>/podmanStore
run <registry>/<repository>:<tag>`` finds a published image without pulling
it. The layout is the reference converter's (DUCC) and what containers/storage
reads for its overlay driver::

    podmanStore/overlay/<layer id>/diff        -> ../../../.flat/xx/<image id>  (relative)
    podmanStore/overlay/<layer id>/link        the layer's short name (26 characters)
    podmanStore/overlay/l/<short name>         -> ../<layer id>/diff
    podmanStore/overlay-images/images.json     one entry per image (id, names, top layer)
    podmanStore/overlay-images/<image id>/manifest        the manifest as served
    podmanStore/overlay-images/<image id>/=<base64 key>   the config blob (key: its digest)
    podmanStore/overlay-layers/layers.json     one entry per layer
    podmanStore/overlay-{images,layers}/*.lock empty lock files containers/storage expects

Each image is one synthetic layer: its ``diff`` is the flat image, already
merged, so there is no overlay chain to assemble. The layer id is DUCC's
(sha256 of ``cvmfs-flat-layer:<image id hex>``), the short name is derived
from it, so a re-run writes the same bytes. The image id is the config
digest (as podman's own), its name the public path (``registry/repository:tag``);
names are unique in a store, so a moved tag takes its name to the new image.
For a multi-platform wish only the ``amd64`` image (CernVM-FS's default
architecture) carries the name; the others are listed by id.

``images.json`` and ``layers.json`` are shared by all images: they are read
from the transaction view if this transaction wrote them (read-your-writes),
else from the published tree, and written whole into the view, so each
transaction replaces them at once. A malformed file is never overwritten
(fail closed). Only files, symlinks and JSON here: no network, no clock
(the caller passes the manifest and config bytes and the time).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bot.core import layout
from bot.core.model import ResolvedImage
from bot.core.reference import ImageReference, ReferenceError, parse
from bot.errors import IntegrityError, PublisherError
from bot.publisher.backend import Transaction
from bot.publisher.metadata import read_json

STORE = layout.PODMAN_STORE
OVERLAY = f"{STORE}/overlay"
LINKS = f"{OVERLAY}/l"
IMAGES = f"{STORE}/overlay-images"
LAYERS = f"{STORE}/overlay-layers"
IMAGES_JSON = f"{IMAGES}/images.json"
LAYERS_JSON = f"{LAYERS}/layers.json"
LOCKS = (f"{IMAGES}/images.lock", f"{LAYERS}/layers.lock")
#: nested catalogs, where the reference converter puts them
CATALOG_DIRS = (STORE, OVERLAY, IMAGES, LAYERS)
MANIFEST_KEY = "manifest"
DEFAULT_ARCH = "amd64"

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


# --- names and ids (pure) -----------------------------------------------------


def flat_layer_id(image_id: str) -> str:
    """The synthetic layer's id (DUCC's ``FlatLayerID``): stable across re-runs."""
    return hashlib.sha256(f"cvmfs-flat-layer:{layout.hex_of(image_id)}".encode()).hexdigest()


def link_id(layer_id: str) -> str:
    """The layer's short name under ``overlay/l`` (26 characters as containers/storage's)."""
    digest = hashlib.sha256(f"wishbot-link:{layer_id}".encode()).digest()
    return "".join(_BASE32[b % 32] for b in digest[:26])


def big_data_name(key: str) -> str:
    """containers/storage's file name for a big-data key (``makeBigDataBaseName``):
    the key itself if it is only ``[a-z0-9.]``, else ``=`` + its base64."""
    if key and all(c == "." or c.isdigit() or "a" <= c <= "z" for c in key):
        return key
    return "=" + base64.b64encode(key.encode("utf-8")).decode("ascii")


def store_name(image: ResolvedImage, path: str) -> str | None:
    """The name podman lists for ``image`` published at ``path``, if it gets one."""
    if image.multiarch and image.platform.architecture != DEFAULT_ARCH:
        return None
    try:
        parse(path)
    except ReferenceError:
        return None
    return path


def _timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StoreImage:
    """What the store records for one published (flat) image."""

    image_id: str  # sha256:<hex>, the config digest
    manifest_digest: str
    manifest: bytes
    config: bytes
    name: str | None
    size: int  # bytes of the flat image's regular files
    created: datetime

    @property
    def hex(self) -> str:
        return layout.hex_of(self.image_id)

    @property
    def layer_id(self) -> str:
        return flat_layer_id(self.image_id)

    def image_entry(self) -> dict[str, Any]:
        """The ``images.json`` entry (containers/storage ``Image``)."""
        return {
            "id": self.hex,
            "digest": self.manifest_digest,
            "names": [self.name] if self.name else [],
            "layer": self.layer_id,
            "big-data-names": [MANIFEST_KEY, self.image_id],
            "big-data-sizes": {MANIFEST_KEY: len(self.manifest), self.image_id: len(self.config)},
            "big-data-digests": {MANIFEST_KEY: self.manifest_digest, self.image_id: self.image_id},
            "created": _timestamp(self.created),
        }

    def layer_entry(self) -> dict[str, Any]:
        """The ``layers.json`` entry (containers/storage ``Layer``). The flat image has no
        tar of its own: its diff digest is DUCC's stable placeholder."""
        return {
            "id": self.layer_id,
            "created": _timestamp(self.created),
            "diff-digest": f"sha256:{self.layer_id}",
            "diff-size": self.size,
        }


def merge_image(entries: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """``images.json`` with ``new`` in it: an entry for the same id keeps its other
    fields and names and gains the new name; no other entry keeps that name."""
    names = set(new.get("names") or [])
    out: list[dict[str, Any]] = []
    found = False
    for entry in entries:
        if entry.get("id") == new["id"]:
            found = True
            merged = {**new, **entry}
            kept = list(entry.get("names") or [])
            merged["names"] = kept + sorted(names - set(kept))
            out.append(merged)
        elif names & set(entry.get("names") or []):
            out.append({**entry, "names": [n for n in entry["names"] if n not in names]})
        else:
            out.append(entry)
    if not found:
        out.append(new)
    return out


def merge_layer(entries: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    if any(entry.get("id") == new["id"] for entry in entries):
        return entries
    return [*entries, new]


def drop_images(
    images: list[dict[str, Any]], ids: set[str], names: set[str]
) -> list[dict[str, Any]]:
    """``images.json`` without the images ``ids`` (hex) and without the ``names``."""
    out: list[dict[str, Any]] = []
    for entry in images:
        if entry.get("id") in ids:
            continue
        if names & set(entry.get("names") or []):
            entry = {**entry, "names": [n for n in entry["names"] if n not in names]}
        out.append(entry)
    return out


# --- the registry side --------------------------------------------------------


class _Served(Protocol):
    @property
    def body(self) -> bytes: ...


@runtime_checkable
class ImageSource(Protocol):
    """What the store needs from :class:`bot.registry.client.RegistryClient`."""

    def get_manifest(self, ref: ImageReference, reference: str | None = None) -> _Served: ...

    def get_config(self, ref: ImageReference, digest: str, size: int | None = None) -> bytes: ...


def fetch_blobs(client: object, image: ResolvedImage) -> tuple[bytes, bytes]:
    """(manifest, config) of ``image`` exactly as the registry serves them, verified."""
    if not isinstance(client, ImageSource):
        raise PublisherError(
            "the podman store needs the image's manifest and config, "
            "and this registry client cannot fetch them",
            hint="turn podman_store off, or publish with wishbot's registry client",
        )
    manifest = client.get_manifest(image.reference, image.manifest_digest).body
    config = client.get_config(image.reference, image.image_id)
    for what, data, digest in (
        ("manifest", manifest, image.manifest_digest),
        ("config", config, image.image_id),
    ):
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            raise IntegrityError(
                f"{image.reference}: the {what} served does not match {digest}",
                hint="the registry or a proxy altered it; try again",
            )
    return manifest, config


# --- the tree side ------------------------------------------------------------


def _read_list(txn: Transaction, relpath: str) -> list[dict[str, Any]]:
    path = txn.resolve(relpath)
    if not os.path.lexists(path):
        return []
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise PublisherError(
            f"{relpath} is not a JSON list of entries; refusing to overwrite it",
            hint="repair or remove the podman store file by hand, then run again",
        )
    return data


def flat_size(directory: Path) -> int:
    """Bytes of the regular files under ``directory`` (symlinks not followed)."""
    total = 0
    for top, _dirs, files in os.walk(directory):
        for name in files:
            try:
                info = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(top, name)):
                total += info.st_size
    return total


def describe(
    txn: Transaction,
    image: ResolvedImage,
    path: str,
    manifest: bytes,
    config: bytes,
    now: datetime,
) -> StoreImage:
    """The store's record of ``image`` (its flat image as the transaction sees it)."""
    return StoreImage(
        image_id=image.image_id,
        manifest_digest=image.manifest_digest,
        manifest=manifest,
        config=config,
        name=store_name(image, path),
        size=flat_size(txn.resolve(layout.flat_dir(image.image_id))),
        created=now,
    )


def add_image(txn: Transaction, entry: StoreImage) -> None:
    """Write ``entry`` into the store inside the open transaction ``txn``.

    Files that exist already are left alone; the shared JSON files are
    rewritten only when they change, so a re-run writes nothing.
    """
    flat = layout.flat_dir(entry.image_id)
    if not txn.exists(flat):
        raise PublisherError(f"{flat} is not published; the podman store cannot point at it")
    _add_layer(txn, entry.layer_id, flat)
    data_dir = f"{IMAGES}/{entry.hex}"
    for key, blob in ((MANIFEST_KEY, entry.manifest), (entry.image_id, entry.config)):
        _write_new(txn, f"{data_dir}/{big_data_name(key)}", blob)
    images = _read_list(txn, IMAGES_JSON)
    _update_list(txn, IMAGES_JSON, images, merge_image(images, entry.image_entry()))
    layers = _read_list(txn, LAYERS_JSON)
    _update_list(txn, LAYERS_JSON, layers, merge_layer(layers, entry.layer_entry()))
    for relpath in (*LOCKS, *(f"{d}/{layout.CATALOG_MARKER}" for d in CATALOG_DIRS)):
        _write_new(txn, relpath, b"")


def _add_layer(txn: Transaction, layer_id: str, flat: str) -> None:
    """The overlay layer of an image: its ``diff`` is the flat image, plus its short link."""
    layer_dir = f"{OVERLAY}/{layer_id}"
    short = link_id(layer_id)
    if not txn.exists(f"{layer_dir}/diff"):
        txn.symlink(f"{layer_dir}/diff", layout.relative_link(f"{layer_dir}/diff", flat))
    _write_new(txn, f"{layer_dir}/link", short.encode("ascii"))
    if not txn.exists(f"{LINKS}/{short}"):
        txn.symlink(f"{LINKS}/{short}", f"../{layer_id}/diff")


def _write_new(txn: Transaction, relpath: str, data: bytes) -> None:
    """Write ``relpath`` unless it exists (a re-run writes nothing)."""
    if not txn.exists(relpath):
        txn.write_bytes(relpath, data)


def _update_list(
    txn: Transaction, name: str, old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> None:
    """Rewrite a shared JSON list only when it changes (or is missing)."""
    if new != old or not txn.exists(name):
        txn.write_json(name, new)


def publish(
    txn: Transaction,
    image: ResolvedImage,
    path: str,
    client: object,
    now: datetime,
) -> None:
    """Fetch the manifest and config of ``image`` and add it to the store (apply's hook)."""
    manifest, config = fetch_blobs(client, image)
    add_image(txn, describe(txn, image, path, manifest, config, now))


def remove_images(txn: Transaction, image_ids: Iterable[str], names: Iterable[str] = ()) -> None:
    """Drop the store entries of deleted images, and ``names`` of deleted paths (gc's hook).

    No store, nothing to do: a tree without ``podmanStore`` is never touched.
    """
    if not txn.exists(IMAGES_JSON):
        return
    ids = {layout.hex_of(i) for i in image_ids}
    gone_names = set(names)
    images = _read_list(txn, IMAGES_JSON)
    layers = _read_list(txn, LAYERS_JSON)
    doomed = [e for e in images if e.get("id") in ids]
    kept_images = drop_images(images, ids, gone_names)
    layer_ids = _unused_layers(doomed, kept_images)
    kept_layers = [e for e in layers if e.get("id") not in layer_ids]
    if kept_images == images and kept_layers == layers:
        return
    _remove_files(txn, doomed, layer_ids)
    txn.write_json(IMAGES_JSON, kept_images)
    if kept_layers != layers:
        txn.write_json(LAYERS_JSON, kept_layers)


def _remove_files(txn: Transaction, doomed: list[dict[str, Any]], layer_ids: set[str]) -> None:
    """Remove the store directories of the doomed images and of their unused layers."""
    for entry in doomed:
        txn.remove(f"{IMAGES}/{entry['id']}")
    for layer in sorted(layer_ids):
        if _safe_id(layer):
            _remove_layer(txn, layer)


def _unused_layers(doomed: list[dict[str, Any]], kept: list[dict[str, Any]]) -> set[str]:
    """The layers of the doomed images that no kept image uses."""
    layer_ids = {str(e.get("layer")) for e in doomed if e.get("layer")}
    return layer_ids - {e.get("layer") for e in kept}


def _remove_layer(txn: Transaction, layer: str) -> None:
    short = _read_link(txn.resolve(f"{OVERLAY}/{layer}/link"))
    if short:
        txn.remove(f"{LINKS}/{short}")
    txn.remove(f"{OVERLAY}/{layer}")


def _safe_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _read_link(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text and text.isalnum() and len(text) <= 64 else None

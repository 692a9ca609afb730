"""Taking over a repository written by the reference converter (DUCC).

DUCC's formats, read from its source (``ducc/`` in the CernVM-FS tree):

- ``.layers/xx/<hex>/layerfs``: the layer's tar ingested as is
  (``cvmfs_server ingest --catalog``), whiteouts kept; no sidecar;
- ``.layers/xx/<hex>/.metadata/layers.json``: ``[]LayerInfo`` (containers/storage
  layer records: ``id`` = diffID hex, ``created``, ``compressed-diff-digest``,
  ``diff-digest``, ``diff-size``), read back by its podman-store code;
- ``.layers/xx/<hex>/.metadata/origin.json``: ``{"origin": [image ids]}``;
- ``.metadata/<registry>/<repository>:<tag>/manifest.json``: ``json.Marshal`` of
  a Go struct without tags, so the keys are capitalised (``SchemaVersion``,
  ``Config.Digest``, ``Layers[].Digest``); "already converted" compares
  ``Config.Digest``;
- ``.metadata/remove-schedule.json``: ``[]Manifest`` in the same spelling, no dates;
- ``.chains/xx/<chain id>/``: its build cache (one tree per layer chain, the
  source of its flat images' template transactions), ``.dirty-chains/``:
  chains being built. Clients never read them. wishbot leaves both alone:
  DUCC reuses them when it converts again, and its own gc never removes them.

wishbot reads all of these as they are (``bot.publisher.metadata`` matches
keys as Go's decoder does, and reads DUCC's ``layers.json``) and writes
formats DUCC reads back. The one thing a DUCC layer lacks is wishbot's
sidecar (``layerfs.json``: what a directory tree cannot say about its tar),
needed only when a new flat image is built on it: :func:`backfill_sidecar`
downloads the layer once more, checks it and writes the sidecar beside the
published ``layerfs``, which is not re-published.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.core import layout
from bot.core.model import Layer
from bot.core.reference import ImageReference
from bot.core.render import plural
from bot.errors import IntegrityError
from bot.publisher.backend import Transaction
from bot.publisher.metadata import LAYERS, MANIFEST, go_field, read_json
from bot.publisher.state import _partitions
from bot.publisher.unpack import Limits, unpack_layer
from bot.publisher.verify import compare_trees, tree_entries

SIDECAR = "layerfs.json"
CHAINS = ".chains"
DIRTY_CHAINS = ".dirty-chains"

#: ``(reference, digest, size, dest)`` -> the blob at ``dest``
Download = Callable[[ImageReference, str, int, Path], None]


def sidecar_relpath(digest: str) -> str:
    return f"{layout.layer_metadata_dir(digest)}/{SIDECAR}"


def backfill_sidecar(
    txn: Transaction,
    layer: Layer,
    reference: ImageReference,
    download: Download,
    *,
    diff_id: str | None,
    limits: Limits,
) -> Path:
    """Write the sidecar of a published layer that has none (a DUCC layer) in the transaction.

    The layer is downloaded again (digest and size checked), its diffID
    checked against ``diff_id``, and unpacked into a temporary directory; the
    published ``layerfs`` must hold the same files, or the image fails (a
    layer that does not match its tar is never built upon). Returns the
    sidecar's path in the transaction.
    """
    context = f"layer {layer.digest} of {reference}"
    target = txn / sidecar_relpath(layer.digest)
    with tempfile.TemporaryDirectory(prefix="wishbot-adopt-") as tmp:
        blob = Path(tmp) / "blob"
        download(reference, layer.digest, layer.size, blob)
        fresh = Path(tmp) / "layerfs"
        stats = unpack_layer(
            blob, layer.media_type, fresh, limits=limits, context=context, sidecar=target
        )
        if diff_id and stats.diff_id != diff_id:
            target.unlink(missing_ok=True)
            raise IntegrityError(
                f"{context} unpacks to diffID {stats.diff_id}, but the image config says {diff_id}",
                hint="the registry serves a corrupt or forged image; ask its owner",
            )
        differences = compare_trees(
            tree_entries(txn.root / layout.layerfs_dir(layer.digest)), tree_entries(fresh)
        )
    if differences:
        target.unlink(missing_ok=True)
        raise IntegrityError(
            f"{context}: the published {layout.layerfs_dir(layer.digest)} differs from the "
            f"layer's tar ({'; '.join(differences[:3])})",
            hint="see wishbot verify --deep; re-publish the layer before building on it",
        )
    return target


# --- what a DUCC repository holds ------------------------------------------------------


@dataclass
class Inventory:
    """How much of a repository is in DUCC's formats, and what adoption will do with it."""

    ducc_manifests: list[str] = field(default_factory=list)
    ducc_layer_infos: int = 0
    layers_without_sidecar: list[str] = field(default_factory=list)
    undated_schedule_entries: int = 0
    chains: int = 0
    podman_store: bool = False

    @property
    def is_ducc(self) -> bool:
        return bool(
            self.ducc_manifests
            or self.ducc_layer_infos
            or self.layers_without_sidecar
            or self.chains
        )

    def to_json(self) -> dict[str, object]:
        return {
            "ducc_manifests": len(self.ducc_manifests),
            "ducc_layer_infos": self.ducc_layer_infos,
            "layers_without_sidecar": len(self.layers_without_sidecar),
            "undated_schedule_entries": self.undated_schedule_entries,
            "chains": self.chains,
            "podman_store": self.podman_store,
        }

    def render(self) -> list[str]:
        return [
            f"{plural(len(self.ducc_manifests), 'image manifest')} in DUCC's spelling "
            "(read as they are; left unchanged until an image is converted again)",
            f"{plural(self.ducc_layer_infos, 'layers.json', 'layers.json')} in DUCC's format "
            "(read as they are)",
            f"{plural(len(self.layers_without_sidecar), 'layer')} without wishbot's sidecar "
            "(the layer is downloaded once more, checked and given one when a new image is "
            "built on it; never re-published)",
            f"{plural(self.undated_schedule_entries, 'remove-schedule entry', 'remove-schedule entries')}"
            " without a date (their grace period counts from the file's modification time)",
            f"{plural(self.chains, 'chain')} in {CHAINS}/ (DUCC's build cache: left alone)",
            "podmanStore/ present (kept up to date when podman_store is on)"
            if self.podman_store
            else "no podmanStore/",
        ]


def _is_ducc_manifest(data: object) -> bool:
    return isinstance(data, dict) and "config" not in data and go_field(data, "config") is not None


def inventory(root: Path) -> Inventory:
    """What of the tree at ``root`` is in DUCC's formats (reads only)."""
    found = Inventory(podman_store=(root / layout.PODMAN_STORE).is_dir())
    _layer_inventory(root, found)
    found.ducc_manifests = _ducc_manifests(root / layout.METADATA)
    schedule = read_json(root / layout.REMOVE_SCHEDULE)
    if isinstance(schedule, list):
        found.undated_schedule_entries = sum(
            1 for x in schedule if isinstance(x, dict) and "wishbot" not in x
        )
    chains = root / CHAINS
    if chains.is_dir():
        found.chains = sum(
            1 for part in chains.iterdir() if part.is_dir() for _ in part.iterdir() if _.is_dir()
        )
    return found


def _layer_inventory(root: Path, found: Inventory) -> None:
    """Layers whose ``layers.json`` DUCC wrote, and those without a sidecar."""
    for item in _partitions(root / layout.LAYERS):
        meta = item / layout.METADATA
        info = read_json(meta / LAYERS)
        if isinstance(info, list) and not any(isinstance(x, dict) and "wishbot" in x for x in info):
            found.ducc_layer_infos += 1
        if (item / "layerfs").is_dir() and not (meta / SIDECAR).exists():
            found.layers_without_sidecar.append(f"sha256:{item.name}")


def _ducc_manifests(base: Path) -> list[str]:
    """The image metadata directories under ``base`` holding a manifest DUCC wrote."""
    found: list[str] = []
    if base.is_dir():
        for directory, dirs, files in os.walk(base):
            if MANIFEST in files and _is_ducc_manifest(read_json(Path(directory) / MANIFEST)):
                found.append(os.path.relpath(directory, base))
                dirs[:] = []
    return found

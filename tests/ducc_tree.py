"""A repository laid out the way the reference converter (DUCC) writes it.

Formats from DUCC's source (``ducc/`` in github.com/cvmfs/cvmfs):

- ``lib/conversion.go`` ``convertInputOutput``: each layer ingested with
  ``cvmfs_server ingest --catalog -t - -b .layers/xx/<hex>/layerfs`` (the tar as
  is, whiteouts kept, a nested catalog at the base), then ``StoreLayerInfo``:
  ``.metadata/layers.json`` = ``json.MarshalIndent([]LayerInfo{...}, "", " ")``;
  ``cvmfs/cvmfs.go`` ``SaveLayersBacklink``: ``origin.json`` = ``json.Marshal(Backlink)``,
  the image id appended; ``.metadata/<registry>/<repository>:<tag>/manifest.json`` =
  ``json.Marshal(da.Manifest)`` (``docker-api/util.go``: struct fields without
  json tags, so ``SchemaVersion``, ``MediaType``, ``Config``, ``Layers``, each
  ``MediaType``, ``Size``, ``Digest``);
- ``lib/image.go`` ``CreateSneakyChainStructure`` / ``cvmfs.CreateSneakyChain``: one
  ``.chains/xx/<chain id>/`` tree per layer chain (``GetChainIDs``: the first is
  ``sha256("<layer digest>")``, then ``sha256("<previous chain id> <layer digest>")``),
  each with ``.cvmfscatalog``, as is each ``.chains/xx``;
- ``lib/conversion.go`` ``ConvertWishFlat``: the flat image is a template
  transaction of the last chain into ``.flat/xx/<image id hex>`` plus the
  Singularity files, and the public symlink (relative) to it;
- ``cvmfs.AddManifestToRemoveScheduler``: ``.metadata/remove-schedule.json`` =
  ``json.Marshal([]da.Manifest)``;
- ``lib/podman_store.go``: ``podmanStore/overlay/<diffID hex>/diff`` -> the
  layer's ``layerfs``, ``link`` + ``overlay/l/<id>``, ``lower``,
  ``overlay-layers/layers.json`` and ``overlay-images/images.json`` (arrays,
  ``MarshalIndent(…, "", " ")``), ``overlay-images/<id>/manifest`` -> the image's
  ``manifest.json``, lock files.

The file trees themselves (layerfs, chains, flat) are made with wishbot's tar
engine; the metadata bytes are what Go's encoder writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.core import layout
from bot.core.model import ImageConfig
from bot.publisher.flatten import write_singularity_metadata
from bot.publisher.unpack import UNLIMITED, apply_layer, unpack_layer
from bot.sandbox.image_builder import PushedImage

CREATED = "2024-05-01T10:00:00Z"
MARKER = ".cvmfscatalog"


def go_json(data: object) -> bytes:
    """``json.Marshal``: compact, keys in struct order."""
    return json.dumps(data, separators=(",", ":")).encode()


def go_json_indent(data: object) -> bytes:
    """``json.MarshalIndent(data, "", " ")``."""
    return json.dumps(data, indent=1).encode()


def ducc_manifest(pushed: PushedImage) -> dict[str, object]:
    """``da.Manifest`` of an image, as ``json.Marshal`` spells it."""
    served = json.loads(pushed.manifest)
    return {
        "SchemaVersion": served["schemaVersion"],
        "MediaType": served.get("mediaType", ""),
        "Config": {
            "MediaType": served["config"]["mediaType"],
            "Size": served["config"]["size"],
            "Digest": served["config"]["digest"],
        },
        "Layers": [
            {"MediaType": x["mediaType"], "Size": x["size"], "Digest": x["digest"]}
            for x in served["layers"]
        ],
    }


def chain_ids(layer_digests: Sequence[str]) -> list[str]:
    out: list[str] = []
    for digest in layer_digests:
        text = digest if not out else f"{out[-1]} {digest}"
        out.append("sha256:" + hashlib.sha256(text.encode()).hexdigest())
    return out


def _touch_marker(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).touch()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def convert(root: Path, path: str, pushed: PushedImage, tars: Sequence[bytes], work: Path) -> None:
    """What ``cvmfs_ducc convert`` leaves for one image at public ``path``."""
    for directory in (layout.LAYERS, layout.FLAT, ".chains"):
        _touch_marker(root / directory)
    work.mkdir(parents=True, exist_ok=True)
    blobs = []
    for digest, diff_id, tar in zip(pushed.layer_digests, pushed.diff_ids, tars, strict=True):
        blob = work / layout.hex_of(digest)
        blob.write_bytes(tar)
        blobs.append(blob)
        _ingest_layer(root, digest, diff_id, blob, work)
        _backlink(root, digest, pushed.config_digest)
    _write(root / ".metadata" / path / "manifest.json", go_json(ducc_manifest(pushed)))
    last = _chains(root, pushed, blobs)
    flat = root / layout.flat_dir(pushed.config_digest)
    if not flat.exists():
        flat.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(last, flat, symlinks=True)
        write_singularity_metadata(flat, ImageConfig(cmd=("/bin/sh",)))
    link = root / path
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    os.symlink(layout.flat_link(path, pushed.config_digest), link)
    _podman(root, path, pushed)


def _ingest_layer(root: Path, digest: str, diff_id: str, blob: Path, work: Path) -> None:
    layerfs = root / layout.layerfs_dir(digest)
    if layerfs.exists():
        return
    _touch_marker(layerfs.parent.parent)
    unpack_layer(
        blob,
        "application/vnd.oci.image.layer.v1.tar",
        layerfs,
        limits=UNLIMITED,
        context="ducc ingest",
        sidecar=work / "discarded-sidecar.json",  # DUCC writes none
    )
    (layerfs / MARKER).touch()  # ingest --catalog
    info = [
        {
            "id": layout.hex_of(diff_id),
            "created": CREATED,
            "compressed-diff-digest": digest,
            "diff-digest": diff_id,
            "diff-size": blob.stat().st_size,
        }
    ]
    _write(root / layout.layer_metadata_dir(digest) / "layers.json", go_json_indent(info))


def _backlink(root: Path, digest: str, image_id: str) -> None:
    path = root / layout.layer_metadata_dir(digest) / "origin.json"
    origin = json.loads(path.read_bytes())["origin"] if path.exists() else []
    _write(path, go_json({"origin": [*origin, image_id]}))  # appended, as DUCC does


def _chains(root: Path, pushed: PushedImage, blobs: Sequence[Path]) -> Path:
    previous: Path | None = None
    for chain, blob in zip(chain_ids(pushed.layer_digests), blobs, strict=True):
        hex_id = layout.hex_of(chain)
        here = root / ".chains" / hex_id[:2] / hex_id
        _touch_marker(here.parent)
        if not here.exists():
            if previous is not None:
                shutil.copytree(previous, here, symlinks=True)
            apply_layer(
                here,
                blob,
                "application/vnd.oci.image.layer.v1.tar",
                limits=UNLIMITED,
                context="ducc chain",
            )
            (here / MARKER).touch()
        previous = here
    assert previous is not None
    return previous


def _podman(root: Path, path: str, pushed: PushedImage) -> None:
    store = root / "podmanStore"
    layers_json = store / "overlay-layers" / "layers.json"
    images_json = store / "overlay-images" / "images.json"
    layers = json.loads(layers_json.read_bytes()) if layers_json.exists() else []
    images = json.loads(images_json.read_bytes()) if images_json.exists() else []
    parent = ""
    for digest, diff_id in zip(pushed.layer_digests, pushed.diff_ids, strict=True):
        layer_id = layout.hex_of(diff_id)
        diff = store / "overlay" / layer_id / "diff"
        if not diff.is_symlink():
            diff.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(root / layout.layerfs_dir(digest), diff.parent), diff)
            short = hashlib.sha256(layer_id.encode()).hexdigest()[:26].upper()
            (diff.parent / "link").write_text(short)
            (store / "overlay" / "l").mkdir(exist_ok=True)
            os.symlink(f"../{layer_id}/diff", store / "overlay" / "l" / short)
        record = {
            "id": layer_id,
            "created": CREATED,
            "compressed-diff-digest": digest,
            "diff-digest": diff_id,
            "diff-size": 1,
        }
        if parent:
            record = {
                "id": layer_id,
                "parent": parent,
                **{k: v for k, v in record.items() if k != "id"},
            }
        if all(x["id"] != layer_id for x in layers):
            layers.append(record)
        parent = layer_id
    image_hex = layout.hex_of(pushed.config_digest)
    images.append({"id": image_hex, "names": [path], "layer": parent, "created": CREATED})
    manifest = store / "overlay-images" / image_hex / "manifest"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    if not manifest.is_symlink():
        os.symlink(
            os.path.relpath(root / ".metadata" / path / "manifest.json", manifest.parent), manifest
        )
    _write(layers_json, go_json_indent(layers))
    _write(images_json, go_json_indent(images))
    for lock in (
        store / "overlay-layers" / "layers.lock",
        store / "overlay-images" / "images.lock",
    ):
        lock.touch()


def schedule(root: Path, pushed: Sequence[PushedImage]) -> None:
    """``AddManifestToRemoveScheduler`` for each image: no dates, capitalised keys."""
    path = root / layout.REMOVE_SCHEDULE
    entries = json.loads(path.read_bytes()) if path.exists() else []
    entries += [ducc_manifest(p) for p in pushed]
    _write(path, go_json(entries))


# --- DUCC's readers, as its source reads these files -----------------------------------


def _go_get(data: dict[str, object], key: str) -> object:
    """Go's ``encoding/json``: exact key first, else a case-insensitive match."""
    if key in data:
        return data[key]
    return next((v for k, v in data.items() if k.casefold() == key.casefold()), None)


def _go_struct(data: object, fields: dict[str, type]) -> dict[str, object]:
    """Decode like ``json.Unmarshal`` into a struct: a wrong type is an error."""
    assert isinstance(data, dict), f"not an object: {data!r}"
    out: dict[str, object] = {}
    for name, kind in fields.items():
        value = _go_get(data, name)
        if value is not None:
            assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), (
                f"{name}: {value!r} is not a {kind.__name__}"
            )
        out[name] = value
    return out


def read_manifest(data: object) -> Any:
    """``da.Manifest``; returns it with ``Config`` and ``Layers`` decoded."""
    top: dict[str, Any] = _go_struct(
        data, {"SchemaVersion": int, "MediaType": str, "Config": dict, "Layers": list}
    )
    item = {"MediaType": str, "Size": int, "Digest": str}
    top["Config"] = _go_struct(top["Config"] or {}, item)
    top["Layers"] = [_go_struct(x, item) for x in top["Layers"] or []]
    return top


def read_layer_infos(data: object) -> list[dict[str, object]]:
    """``[]LayerInfo`` (``lib/podman_store.go``)."""
    assert isinstance(data, list), "layers.json must be an array for DUCC's podman-store code"
    fields = {
        "id": str,
        "parent": str,
        "created": str,
        "compressed-diff-digest": str,
        "compressed-size": int,
        "diff-digest": str,
        "diff-size": int,
    }
    return [_go_struct(x, fields) for x in data]


def read_backlink(data: object) -> list[str]:
    origin = _go_struct(data, {"origin": list})["origin"] or []
    assert isinstance(origin, list) and all(isinstance(x, str) for x in origin)
    return origin


def ducc_can_read(root: Path) -> None:
    """Every DUCC-format file decodes as DUCC's Go code decodes it."""
    for manifest in (root / ".metadata").rglob("manifest.json"):
        read_manifest(json.loads(manifest.read_bytes()))
    schedule_path = root / layout.REMOVE_SCHEDULE
    if schedule_path.exists():
        entries = json.loads(schedule_path.read_bytes())
        assert isinstance(entries, list)
        for entry in entries:
            read_manifest(entry)
    for meta in (root / layout.LAYERS).glob("*/*/.metadata"):
        if (meta / "layers.json").exists():
            read_layer_infos(json.loads((meta / "layers.json").read_bytes()))
        if (meta / "origin.json").exists():
            read_backlink(json.loads((meta / "origin.json").read_bytes()))
    store = root / "podmanStore"
    if store.is_dir():
        read_layer_infos(json.loads((store / "overlay-layers/layers.json").read_bytes()))


def ducc_gc_keeps(root: Path) -> tuple[set[str], set[str]]:
    """(flat images, layers) DUCC's ``garbage-collection`` keeps
    (``FindAllUsedFlatImages``: the targets of symlinks outside hidden top
    directories; ``FindAllUsedLayers``: the layers of every ``.metadata/**/manifest.json``)."""
    flats: set[str] = set()
    for directory, dirs, files in os.walk(root):
        if Path(directory) == root:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in (*dirs, *files):
            full = Path(directory) / name
            if full.is_symlink() and full.exists():
                flats.add(os.path.relpath(os.path.realpath(full), os.path.realpath(root)))
    layers = set()
    for manifest in (root / ".metadata").rglob("manifest.json"):
        for item in read_manifest(json.loads(manifest.read_bytes()))["Layers"]:
            layers.add(layout.layer_dir(str(item["Digest"])))
    return flats, layers

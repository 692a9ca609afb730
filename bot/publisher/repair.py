"""``wishbot verify --repair``: redo what can be redone safely, one transaction per fix.

- a flat image without its Singularity files or with whiteout markers is
  rebuilt from its published layers and its config (fetched again from a
  registry that serves it), checked, and replaced in one transaction;
- a layer whose files differ from its tar (``--deep``) is unpacked again from
  the re-downloaded blob, its sidecar and ``layers.json`` rewritten;
- ``origin.json`` backlinks are rewritten from what is published: images that
  exist and use the layer;
- remove-schedule entries for what is not published are dropped.

Everything else (a dangling path, missing metadata, orphans) is reported as
needing a person or ``wishbot apply`` / ``wishbot gc``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.core import audit, layout
from bot.core.audit import Finding, TreeFacts
from bot.core.model import ImageConfig, Layer
from bot.core.reference import ImageReference
from bot.core.render import escape_terminal
from bot.errors import PublisherError, WishbotError
from bot.publisher.adopt import backfill_sidecar
from bot.publisher.backend import Publisher, Transaction
from bot.publisher.flatten import apply_layerfs, write_singularity_metadata
from bot.publisher.metadata import (
    LAYERS,
    ORIGIN,
    LayerInfo,
    origin_json,
    read_json,
    read_schedule,
    schedule_json,
)
from bot.publisher.unpack import Limits, sidecar_path, unpack_layer
from bot.publisher.verify import LayerSource, check_flat, collect, layer_sources
from bot.registry.manifest import parse_config


class RegistryLike(Protocol):
    def download_blob(
        self, ref: ImageReference, digest: str, size: int, dest: Path, *, progress: None = None
    ) -> None: ...

    def get_config(self, ref: ImageReference, digest: str, size: int | None = None) -> bytes: ...


@dataclass(frozen=True)
class Repair:
    finding: Finding
    done: bool
    message: str

    def to_json(self) -> dict[str, object]:
        return {"finding": self.finding.to_json(), "done": self.done, "message": self.message}

    def render(self) -> str:
        done = "repaired" if self.done else "not repaired"
        return escape_terminal(f"{done}: {self.finding.path}: {self.message}")


Fix = Callable[[Finding], str]


class Repairer:
    def __init__(self, publisher: Publisher, client: RegistryLike | None, limits: Limits) -> None:
        self.publisher = publisher
        self.root = publisher.root
        self.client = client
        self.limits = limits
        self.facts: TreeFacts = collect(self.root)
        self.sources: dict[str, LayerSource] = layer_sources(self.root, self.facts)

    def run(self, findings: list[Finding]) -> list[Repair]:
        fixes: dict[str, Fix] = {
            "singularity": self.rebuild_flat,
            "whiteout": self.rebuild_flat,
            "layer-content": self.republish_layer,
            "backlink": self.rewrite_backlinks,
            "schedule": self.drop_stale_entries,
        }
        done: set[tuple[str, str]] = set()
        out: list[Repair] = []
        for finding in findings:
            fix = fixes.get(finding.check)
            key = (fix.__name__ if fix else finding.check, _subject(finding))
            if key in done:
                continue
            done.add(key)
            if fix is None:
                out.append(Repair(finding, False, finding.fix))
                continue
            try:
                out.append(Repair(finding, True, fix(finding)))
            except WishbotError as exc:
                out.append(Repair(finding, False, str(exc)))
        return out

    # --- the fixes ------------------------------------------------------------------

    def _registry(self) -> RegistryLike:
        if self.client is None:
            raise PublisherError(
                "needs a registry", hint="run wishbot verify --repair with access to it"
            )
        return self.client

    def _image_layers(self, image_id: str) -> tuple[str, ...]:
        serving = audit.served(self.facts)
        for link, served_id in sorted(serving.items()):
            meta = self.facts.metadata.get(link)
            if served_id == image_id and meta is not None and meta.image_id == image_id:
                return meta.layers
        layers = self.facts.scheduled_layers.get(image_id)
        if layers:
            return layers
        raise PublisherError(
            f"no metadata lists the layers of {image_id}", hint="re-publish it with wishbot apply"
        )

    def rebuild_flat(self, finding: Finding) -> str:
        image_id = audit.image_of(finding.path)
        layers = self._image_layers(image_id)
        source = self.sources.get(layers[-1]) if layers else None
        if source is None:
            raise PublisherError(f"no registry reference is known for {image_id}")
        body = self._registry().get_config(source.reference, image_id)
        config = _image_config(body, f"{source.reference}@{image_id}")
        flat = layout.flat_dir(image_id)
        with self.publisher.transaction() as txn:
            txn.remove(flat)
            target = txn / flat
            target.mkdir(parents=True)
            for digest in layers:
                apply_layerfs(
                    target,
                    self.root / layout.layerfs_dir(digest),
                    context=f"layer {digest} of {image_id}",
                    sidecar=self._sidecar(txn, digest),
                )
            write_singularity_metadata(target, config)
            (target / layout.CATALOG_MARKER).touch()
            check_flat(target, image_id)
        return f"rebuilt from its {len(layers)} layer(s)"

    def _sidecar(self, txn: Transaction, digest: str) -> Path:
        """The layer's sidecar; a layer DUCC published gets one first (see adopt)."""
        existing = sidecar_path(self.root / layout.layerfs_dir(digest))
        if existing.exists():
            return existing
        source = self.sources.get(digest)
        if source is None:
            raise PublisherError(f"no registry reference is known for {digest}")
        registry = self._registry()
        info = LayerInfo.from_json(
            read_json(self.root / layout.layer_metadata_dir(digest) / LAYERS), digest
        )
        return backfill_sidecar(
            txn,
            Layer(digest, source.size, source.media_type),
            source.reference,
            lambda ref, d, size, dest: registry.download_blob(ref, d, size, dest),
            diff_id=info.diff_id,
            limits=self.limits,
        )

    def republish_layer(self, finding: Finding) -> str:
        digest = f"sha256:{finding.path.split('/')[2]}"
        source = self.sources.get(digest)
        if source is None:
            raise PublisherError(f"no registry reference is known for {digest}")
        meta = layout.layer_metadata_dir(digest)
        with tempfile.TemporaryDirectory(prefix="wishbot-repair-") as tmp:
            blob = Path(tmp) / "blob"
            self._registry().download_blob(source.reference, digest, source.size, blob)
            with self.publisher.transaction() as txn:
                txn.remove(layout.layerfs_dir(digest))
                dest = txn / layout.layerfs_dir(digest)
                stats = unpack_layer(
                    blob,
                    source.media_type,
                    dest,
                    limits=self.limits,
                    context=f"layer {digest} of {source.reference}",
                )
                (dest / layout.CATALOG_MARKER).touch()
                old = LayerInfo.from_json(read_json(self.root / meta / LAYERS), digest)
                info = LayerInfo(
                    digest,
                    stats.diff_id,
                    source.media_type or old.media_type,
                    source.size,
                    stats.unpacked_size,
                    stats.entries,
                )
                txn.write_json(f"{meta}/{LAYERS}", info.to_json())
        return f"unpacked again from {source.reference} (diffID {stats.diff_id})"

    def rewrite_backlinks(self, finding: Finding) -> str:
        digest = f"sha256:{finding.path.split('/')[2]}"
        layer = self.facts.layers.get(digest)
        if layer is None:
            raise PublisherError(f"{digest} is not published")
        serving = audit.served(self.facts)
        known = audit.known_images(self.facts, serving)
        users = {u for u in layer.users if u in known}
        for link, image_id in serving.items():
            meta = self.facts.metadata.get(link)
            if meta is not None and digest in meta.layers:
                users.add(image_id)
        with self.publisher.transaction() as txn:
            txn.write_json(f"{layout.layer_metadata_dir(digest)}/{ORIGIN}", origin_json(users))
        return f"origin.json now lists {len(users)} image(s)"

    def _published(self, kind: str, ident: str) -> bool:
        return ident in (self.facts.flats if kind == "image" else self.facts.layers)

    def drop_stale_entries(self, _finding: Finding) -> str:
        entries = read_schedule(self.root / layout.REMOVE_SCHEDULE)
        kept = [e for e in entries if self._published(e.removal.kind, e.removal.id)]
        with self.publisher.transaction() as txn:
            txn.write_json(layout.REMOVE_SCHEDULE, schedule_json(kept))
        return f"dropped {len(entries) - len(kept)} entr(y/ies) for what is not published"


def _subject(finding: Finding) -> str:
    """What a fix works on: a layer's findings (files, layers.json) are one subject."""
    parts = finding.path.split("/")
    return "/".join(parts[:3]) if parts[0] == layout.LAYERS else finding.path


def _image_config(body: bytes, what: str) -> ImageConfig:
    return parse_config(body, what=what).config

"""Manifests, indexes and image configs: parsing, verifying, choosing a platform.

Pure functions over bytes the registry served; no network.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.core import mediatypes as mt
from bot.core.model import ImageConfig, Layer, Platform
from bot.errors import IntegrityError, Unsupported
from bot.registry import safejson

MAX_MANIFEST_BYTES = 4 * 2**20
MAX_CONFIG_BYTES = 8 * 2**20
#: no blob is this large; a bigger size is a hostile manifest (and would
#: overflow float arithmetic in totals)
MAX_DESCRIPTOR_SIZE = 2**48
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

# containerd's normalisation: a missing variant means this one
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7", "amd64": "v1"}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] | None = None

    @property
    def is_attestation(self) -> bool:
        annotations = self.annotations or {}
        if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            return True
        return self.platform is not None and (
            self.platform.os == "unknown" or self.platform.architecture == "unknown"
        )


@dataclass(frozen=True)
class Manifest:
    """One manifest or index exactly as served, verified against its digest."""

    digest: str
    media_type: str
    body: bytes
    data: Mapping[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEX_TYPES

    def entries(self) -> list[Descriptor]:
        """The manifests an index lists (attestations included)."""
        return [_descriptor(item, "manifests") for item in _list(self.data, "manifests")]

    def config_descriptor(self) -> Descriptor:
        config = self.data.get("config")
        if not isinstance(config, dict):
            raise Unsupported("the image manifest has no config descriptor")
        descriptor = _descriptor(config, "config")
        if descriptor.media_type not in mt.CONFIG_TYPES:
            raise Unsupported(
                f"this is not a container image (its config has media type '{descriptor.media_type}')",
                hint="only Docker and OCI container images can be published",
            )
        return descriptor

    def layers(self) -> list[Layer]:
        out = []
        for item in _list(self.data, "layers"):
            descriptor = _descriptor(item, "layers")
            if descriptor.media_type not in mt.LAYER_TYPES:
                raise Unsupported(
                    f"layer {descriptor.digest} has media type '{descriptor.media_type}', "
                    "which is not a container image layer",
                    hint="only tar, tar+gzip and tar+zstd layers can be published",
                )
            out.append(Layer(descriptor.digest, descriptor.size, descriptor.media_type))
        return out


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Unsupported(f"malformed manifest: '{key}' is not a list")
    return value


def _text(value: Any) -> str:
    """A string field as sent; anything else (numbers, lists, objects) is no string."""
    return value if isinstance(value, str) else ""


def _descriptor(item: Any, where: str) -> Descriptor:
    if not isinstance(item, dict):
        raise Unsupported(f"malformed manifest: an entry of '{where}' is not an object")
    digest, size = _checked_descriptor(item.get("digest"), item.get("size"), where)
    media_type = item.get("mediaType", "")
    annotations = item.get("annotations")
    return Descriptor(
        media_type=_text(media_type),
        digest=digest,
        size=size,
        platform=_descriptor_platform(item.get("platform")),
        annotations=_text_values(annotations) if isinstance(annotations, dict) else None,
    )


def _checked_descriptor(digest: Any, size: Any, where: str) -> tuple[str, int]:
    """A descriptor's sha256 digest and its size (within bounds), or why not."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        shown = repr(digest)[:80] if isinstance(digest, str) else type(digest).__name__
        raise Unsupported(f"malformed manifest: '{where}' has a non-sha256 digest {shown}")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_DESCRIPTOR_SIZE:
        raise Unsupported(f"malformed manifest: '{where}' entry {digest} has a bad size")
    return digest, size


def _descriptor_platform(raw: Any) -> Platform | None:
    if not isinstance(raw, dict):
        return None
    return Platform(
        _text(raw.get("os")), _text(raw.get("architecture")), _text(raw.get("variant")) or None
    )


def _text_values(mapping: dict[Any, Any]) -> dict[str, str]:
    """The entries whose values are strings (annotations, labels), keys as strings."""
    return {str(k): v for k, v in mapping.items() if isinstance(v, str)}


def parse_manifest(
    body: bytes,
    content_type: str,
    *,
    expected_digest: str | None,
    served_digest: str | None,
    what: str,
    limit: int = MAX_MANIFEST_BYTES,
) -> Manifest:
    """Verify and parse a manifest; ``what`` names it in messages (the reference)."""
    if len(body) > limit:
        raise Unsupported(f"{what}: the manifest is larger than {limit} bytes")
    digest = sha256_digest(body)
    _check_digest(digest, expected_digest, served_digest, what)
    try:
        data = safejson.loads(body)
    except safejson.BadJson as exc:
        raise Unsupported(f"{what}: the manifest {exc}") from None
    if not isinstance(data, dict):
        raise Unsupported(f"{what}: the manifest is not a JSON object")
    content_type = content_type.split(";", 1)[0].strip().lower()
    media_type = _media_type(data, _text(data.get("mediaType")) or content_type, what)
    return Manifest(digest=digest, media_type=media_type, body=body, data=data)


def _check_digest(
    digest: str, expected_digest: str | None, served_digest: str | None, what: str
) -> None:
    """The manifest's bytes hash to the digest asked for and to the one the registry names."""
    if expected_digest and digest != expected_digest:
        raise IntegrityError(
            f"{what}: the manifest served has digest {digest}, not the {expected_digest} asked for",
            hint="the registry or a proxy altered the manifest; try again or report it to the registry's operator",
        )
    if served_digest and served_digest.startswith("sha256:") and digest != served_digest:
        raise IntegrityError(
            f"{what}: the manifest bytes hash to {digest} but the registry says {served_digest}",
            hint="the transfer was altered; try again",
        )


def _media_type(data: dict[str, Any], media_type: str, what: str) -> str:
    """The manifest's media type: as declared or sent, else recognised by its shape."""
    if data.get("schemaVersion") == 1 or media_type in (
        mt.DOCKER_SCHEMA1,
        mt.DOCKER_SCHEMA1_SIGNED,
    ):
        raise Unsupported(
            f"{what} is a Docker schema 1 image, which is obsolete and not supported",
            hint="re-push the image with a current Docker or skopeo (schema 2 or OCI)",
        )
    if media_type in mt.MANIFEST_TYPES:
        return media_type
    # umoci and some registries leave mediaType out: recognise by shape
    if "manifests" in data:
        return mt.OCI_INDEX
    if "config" in data and "layers" in data:
        return mt.OCI_MANIFEST
    raise Unsupported(f"{what}: unsupported manifest media type '{media_type[:100]}'")


def _normal_variant(platform: Platform) -> str | None:
    return platform.variant or _DEFAULT_VARIANT.get(platform.architecture)


def platform_matches(wanted: Platform, offered: Platform) -> bool:
    """os and architecture equal; variants equal after containerd's defaults
    (``arm64`` = ``arm64/v8``, ``arm`` = ``arm/v7``, ``amd64`` = ``amd64/v1``)."""
    if wanted.os != offered.os or wanted.architecture != offered.architecture:
        return False
    return _normal_variant(wanted) == _normal_variant(offered)


def select_platform(entries: Sequence[Descriptor], wanted: Platform) -> Descriptor | None:
    """The first non-attestation entry of an index matching ``wanted``."""
    for entry in entries:
        if entry.is_attestation or entry.platform is None:
            continue
        if platform_matches(wanted, entry.platform):
            return entry
    return None


def offered_platforms(entries: Sequence[Descriptor]) -> list[str]:
    return [str(e.platform) for e in entries if e.platform is not None and not e.is_attestation]


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return ()


def _diff_ids(value: Any, what: str) -> tuple[str, ...]:
    ids = _strings(value)
    for diff_id in ids:
        if not _DIGEST.fullmatch(diff_id):
            raise Unsupported(
                f"{what}: the image config lists a diff_id that is not a sha256 digest",
                hint="the image is malformed; rebuild and re-push it",
            )
    return ids


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ParsedConfig:
    config: ImageConfig
    platform: Platform | None


def parse_config(body: bytes, *, what: str) -> ParsedConfig:
    """The parts of an image config blob wishbot uses."""
    try:
        data = safejson.loads(body)
    except safejson.BadJson as exc:
        raise Unsupported(f"{what}: the image config {exc}") from None
    if not isinstance(data, dict):
        raise Unsupported(f"{what}: the image config is not a JSON object")
    inner = _obj(data.get("config"))
    rootfs = _obj(data.get("rootfs"))
    labels = _obj(inner.get("Labels"))
    return ParsedConfig(
        config=ImageConfig(
            env=_strings(inner.get("Env")),
            entrypoint=_strings(inner.get("Entrypoint")),
            cmd=_strings(inner.get("Cmd")),
            working_dir=str(inner.get("WorkingDir") or ""),
            user=str(inner.get("User") or ""),
            labels=_text_values(labels),
            diff_ids=_diff_ids(rootfs.get("diff_ids"), what),
        ),
        platform=_config_platform(data),
    )


def _config_platform(data: dict[str, Any]) -> Platform | None:
    if not isinstance(data.get("os"), str) or not isinstance(data.get("architecture"), str):
        return None
    variant = data.get("variant")
    return Platform(
        data["os"], data["architecture"], variant if isinstance(variant, str) and variant else None
    )

"""The domain's data: wishes, resolved images, the publisher's current state.

Frozen dataclasses shared by every layer of wishbot. They carry data only;
the logic lives in the modules named after what it does (``recipe``,
``plan``, ``layout``, ``catalog``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from bot.core.reference import ImageReference

Severity = Literal["error", "warning"]


# --- diagnostics ----------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where in a file: 1-based line and column (0 = unknown)."""

    path: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}:{self.column or 1}"
        return self.path


@dataclass(frozen=True)
class Problem:
    """One finding about a wishlist or an image, for people and for JSON.

    ``code`` is a stable machine-readable identifier (``unknown-key``,
    ``not-found``, ``unavailable`` ...); ``hint`` says what to do.
    """

    severity: Severity
    message: str
    location: Location
    code: str = "invalid"
    hint: str | None = None
    image: str | None = None

    def __str__(self) -> str:
        text = f"{self.location}: {self.severity}: {self.message}"
        if self.hint:
            text += f" — {self.hint}"
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.location.path,
            "line": self.location.line,
            "column": self.location.column,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "image": self.image,
        }


# --- the wishlist ---------------------------------------------------------


@dataclass(frozen=True, order=True)
class Platform:
    """``os/architecture[/variant]``, e.g. ``linux/arm64/v8``."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(
                f"platform '{text}' is not valid: write os/architecture[/variant], e.g. linux/amd64"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


DEFAULT_PLATFORM = Platform("linux", "amd64")


@dataclass(frozen=True)
class Wish:
    """One input of the wishlist: an image reference and where it was written."""

    reference: ImageReference
    location: Location
    platforms: tuple[Platform, ...] = (DEFAULT_PLATFORM,)
    text: str = ""  # the input exactly as written

    @property
    def key(self) -> tuple[ImageReference, tuple[Platform, ...]]:
        """Identity for diffing two wishlists (spelling-independent)."""
        return (self.reference.normalized(), self.platforms)


@dataclass(frozen=True)
class Wishlist:
    """A loaded, validated recipe (version 1 plus wishbot's extensions)."""

    path: str
    version: int
    user: str
    cvmfs_repo: str
    output_format: str
    wishes: tuple[Wish, ...]
    ignore_errors: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = (DEFAULT_PLATFORM,)


# --- resolved images (desired state) --------------------------------------


@dataclass(frozen=True)
class Layer:
    """A layer as the manifest describes it (compressed digest and size)."""

    digest: str
    size: int
    media_type: str
    diff_id: str | None = None


@dataclass(frozen=True)
class ImageConfig:
    """What the flat and thin images need from the config blob."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    diff_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolvedImage:
    """One concrete image of a wish: wildcard expanded, one platform."""

    wish: Wish
    reference: ImageReference  # concrete: tag expanded, normalized
    platform: Platform
    manifest_digest: str
    image_id: str  # digest of the config blob
    layers: tuple[Layer, ...]
    config: ImageConfig = field(default_factory=ImageConfig)
    multiarch: bool = False  # the wish asked for more than one platform

    @property
    def compressed_size(self) -> int:
        return sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class Resolution:
    """What the registry said about one wish: images, or a problem (fail closed)."""

    wish: Wish
    images: tuple[ResolvedImage, ...] = ()
    problem: Problem | None = None

    @property
    def complete(self) -> bool:
        """True when the wish could be fully resolved (safe to schedule removals)."""
        return self.problem is None or self.problem.severity == "warning"


# --- the publisher (current state) ----------------------------------------


@dataclass(frozen=True)
class PublishedLayer:
    digest: str
    diff_id: str | None
    compressed_size: int
    unpacked_size: int
    users: frozenset[str] = frozenset()  # image ids that refer to it (origin.json backlinks)


@dataclass(frozen=True)
class PublishedImage:
    """An image the publisher serves under a human-readable path."""

    path: str  # "<registry>/<repository>:<tag>" relative to the repository root
    reference: ImageReference
    platform: Platform
    manifest_digest: str
    image_id: str
    layers: tuple[str, ...]  # layer digests, bottom to top
    updated: datetime
    thin_image: str | None = None
    unpacked_size: int = 0


@dataclass(frozen=True)
class ScheduledRemoval:
    """An image (by id) or layer (by digest) waiting for its grace period to end."""

    kind: Literal["image", "layer"]
    id: str
    scheduled: datetime
    path: str | None = None  # for images: the path it was published under


@dataclass(frozen=True)
class CurrentState:
    cvmfs_repo: str
    images: tuple[PublishedImage, ...] = ()
    layers: Mapping[str, PublishedLayer] = field(default_factory=dict)
    schedule: tuple[ScheduledRemoval, ...] = ()
    flat_images: frozenset[str] = frozenset()  # image ids present under .flat

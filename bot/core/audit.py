"""Audit a published tree: pure decisions over the facts the publisher found.

``bot.publisher.verify`` walks the tree (and, deep, re-downloads layers) and
hands a :class:`TreeFacts`; :func:`audit` says what is wrong, each
:class:`Finding` with the path and what to do. No disk, no network here.

What is checked (see ``docs/operating.md``, "Verifying a repository"):

- every public path resolves to a flat image, as a stock client sees it: a
  CernVM-FS variant symlink is expanded with each published architecture's
  ``uname -m`` value (what a client sets ``CVMFS_ARCH`` to);
- every served flat image has its Singularity files and no whiteout markers;
- ``manifest.json`` of each served path names the image it serves, and each
  of its layers is published and lists the image in its ``origin.json``;
- backlinks name images that exist; the remove schedule names what exists;
- orphans: flat images and layers nothing uses or schedules;
- deep: each layer's files equal its tar, re-downloaded and checked against
  its diffID.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from bot.core import layout
from bot.core.model import ScheduledRemoval
from bot.core.render import escape_terminal

Severity = Literal["error", "warning"]
REPORT_SCHEMA = "wishbot-verify/1"

#: what Apptainer/Singularity needs in a flat image (both converters write these)
SINGULARITY_FILES = (
    ".singularity.d/env/10-docker2singularity.sh",
    ".singularity.d/runscript",
    ".singularity.d/actions/exec",
    ".singularity.d/actions/run",
    ".singularity.d/actions/shell",
    ".singularity.d/actions/start",
    ".singularity.d/actions/test",
)

#: ``.multiarch`` name -> the ``uname -m`` a client sets ``CVMFS_ARCH`` to
CLIENT_ARCH = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "arm64:v8": "aarch64",
    "386": "i686",
    "arm": "armv7l",
    "arm:v7": "armv7l",
    "arm:v6": "armv6l",
    "arm:v5": "armv5l",
    "ppc64el": "ppc64le",
}

_VARIABLE = re.compile(r"\$\(CVMFS_ARCH(?::-[^)]*)?\)")
_MAX_HOPS = 8


@dataclass(frozen=True)
class Finding:
    check: str
    path: str
    message: str
    fix: str
    severity: Severity = "error"

    def to_json(self) -> dict[str, object]:
        return {
            "check": self.check,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
        }

    def render(self) -> str:
        """One line for a terminal (names from images are escaped)."""
        return escape_terminal(f"{self.severity}: {self.path}: {self.message} — {self.fix}")


@dataclass(frozen=True)
class FlatFacts:
    """What a flat image holds of what clients need."""

    image_id: str
    missing: tuple[str, ...] = ()  # Singularity files not there
    whiteouts: tuple[str, ...] = ()  # ``.wh.*`` names found (relative to the flat)


@dataclass(frozen=True)
class LayerFacts:
    digest: str
    has_layerfs: bool = True
    users: frozenset[str] = frozenset()  # origin.json
    diff_id: str | None = None


@dataclass(frozen=True)
class ImageMeta:
    """``.metadata/<link>/manifest.json``: the image it names and its layers."""

    image_id: str | None
    layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerCheck:
    """A deep check of one layer: its files against its re-downloaded tar."""

    digest: str
    differences: tuple[str, ...] = ()
    problem: str | None = None  # could not check (no source, download failed)
    diff_id: str | None = None  # what the re-downloaded tar hashes to


@dataclass
class TreeFacts:
    #: every symlink found: public paths and ``.multiarch/<arch>/<path>`` links -> their text
    links: dict[str, str] = field(default_factory=dict)
    public: tuple[str, ...] = ()
    flats: dict[str, FlatFacts] = field(default_factory=dict)
    layers: dict[str, LayerFacts] = field(default_factory=dict)
    #: link path -> metadata (also metadata whose link is gone)
    metadata: dict[str, ImageMeta] = field(default_factory=dict)
    schedule: tuple[ScheduledRemoval, ...] = ()
    #: image id -> layers, from image entries of the schedule
    scheduled_layers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    deep: tuple[LayerCheck, ...] = ()


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    images: int = 0
    layers: int = 0
    deep: bool = False
    deep_layers: int = 0  # layers compared with their tar

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, object]:
        return {
            "schema": REPORT_SCHEMA,
            "ok": self.ok,
            "deep": self.deep,
            "images": self.images,
            "layers": self.layers,
            "findings": [f.to_json() for f in self.findings],
        }

    def render(self) -> str:
        lines = [f.render() for f in self.findings]
        mode = "deep " if self.deep else ""
        verdict = "clean" if self.ok else f"{len(self.findings)} finding(s)"
        lines.append(f"{mode}verify: {self.images} image(s), {self.layers} layer(s): {verdict}")
        return "\n".join(lines)


# --- resolving paths as a client does -------------------------------------------


def client_arch(name: str) -> str:
    """The ``CVMFS_ARCH`` value of a client of the platform published as ``name``."""
    return CLIENT_ARCH.get(name, name.split(":", 1)[0])


def expand_arch(text: str, value: str) -> str:
    return _VARIABLE.sub(value, text)


def resolve(links: dict[str, str], path: str, arch: str | None = None) -> str | None:
    """The flat image (``.flat/xx/<hex>``) ``path`` leads to, following symlinks; None if it dangles.

    ``arch`` expands ``$(CVMFS_ARCH)`` as a client of that architecture does.
    """
    current = path
    for _ in range(_MAX_HOPS):
        text = links.get(current)
        if text is None:
            return current if _is_flat(current) else None
        if arch is not None:
            text = expand_arch(text, arch)
        if text.startswith("/") or _VARIABLE.search(text):
            return None
        current = posixpath.normpath(posixpath.join(posixpath.dirname(current), text))
        if current.startswith("../") or current == "..":
            return None
    return None


def _is_flat(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 3 and parts[0] == layout.FLAT and len(parts[2]) == 64


def image_of(flat: str) -> str:
    return f"sha256:{flat.rsplit('/', 1)[1]}"


def arch_index(facts: TreeFacts) -> dict[str, dict[str, str]]:
    """path -> {``.multiarch`` name -> link path}: the architectures each path is published for."""
    prefix = f"{layout.MULTIARCH}/"
    out: dict[str, dict[str, str]] = {}
    for link in facts.links:
        if link.startswith(prefix):
            arch, _, path = link[len(prefix) :].partition("/")
            if arch and path:
                out.setdefault(path, {})[arch] = link
    return out


# --- the checks ----------------------------------------------------------------------


def served(facts: TreeFacts) -> dict[str, str]:
    """link path (public or ``.multiarch``) -> image id, for every link that resolves."""
    out: dict[str, str] = {}
    for link in facts.links:
        flat = resolve(facts.links, link)
        if flat is not None and image_of(flat) in facts.flats:
            out[link] = image_of(flat)
    return out


def check_paths(facts: TreeFacts) -> list[Finding]:
    findings: list[Finding] = []
    index = arch_index(facts)
    for path in facts.public:
        text = facts.links.get(path, "")
        if _VARIABLE.search(text):
            findings.extend(_check_variant(facts, path, text, index.get(path, {})))
            continue
        flat = resolve(facts.links, path)
        if flat is None or image_of(flat) not in facts.flats:
            findings.append(
                Finding(
                    "dangling-path",
                    path,
                    f"the symlink ({text}) leads to nothing",
                    "re-publish it (wishbot apply) or, if the wish is gone, delete the symlink",
                )
            )
    return findings


def _check_variant(facts: TreeFacts, path: str, text: str, arches: dict[str, str]) -> list[Finding]:
    if not arches:
        return [
            Finding(
                "dangling-path",
                path,
                f"the variant symlink ({text}) has no .multiarch link for any architecture",
                "re-publish it (wishbot apply)",
            )
        ]
    findings: list[Finding] = []
    for arch in sorted(arches):
        value = client_arch(arch)
        flat = resolve(facts.links, path, value)
        if flat is None or image_of(flat) not in facts.flats:
            findings.append(
                Finding(
                    "dangling-path",
                    path,
                    f"a client with CVMFS_ARCH={value} (the {arch} image) reads "
                    f"{expand_arch(text, value)}, which leads to nothing",
                    f"re-publish it so that {layout.MULTIARCH}/{value}/{path} exists (wishbot apply)",
                )
            )
    return findings


def check_flats(
    facts: TreeFacts, in_use: Iterable[str], serving: dict[str, str] | None = None
) -> list[Finding]:
    findings: list[Finding] = []
    served_at: dict[str, list[str]] = {}
    for link, served in sorted((serving or {}).items()):
        served_at.setdefault(served, []).append(link)
    for image_id in sorted(set(in_use)):
        flat = facts.flats.get(image_id)
        if flat is None:
            continue
        where = layout.flat_dir(image_id)
        links = served_at.get(image_id, [])
        users = f" (served at {', '.join(links)})" if links else ""
        if flat.missing:
            findings.append(
                Finding(
                    "singularity",
                    where,
                    f"Apptainer/Singularity files missing{users}: " + ", ".join(flat.missing),
                    "rebuild the flat image: wishbot verify --repair",
                )
            )
        if flat.whiteouts:
            findings.append(
                Finding(
                    "whiteout",
                    where,
                    f"whiteout markers left in the flat image{users} (deleted files may show): "
                    + ", ".join(flat.whiteouts),
                    "rebuild the flat image: wishbot verify --repair",
                )
            )
    return findings


def check_metadata(facts: TreeFacts, serving: dict[str, str]) -> list[Finding]:
    findings: list[Finding] = []
    for link, image_id in sorted(serving.items()):
        if _VARIABLE.search(facts.links.get(link, "")):
            continue
        meta = facts.metadata.get(link)
        where = layout.image_metadata_dir(link)
        if meta is None or meta.image_id is None:
            findings.append(
                Finding(
                    "metadata",
                    f"{where}/manifest.json",
                    f"missing or unreadable; {link} serves {image_id} but nothing says which "
                    "layers it uses, so gc deletes no layer",
                    "rebuild the metadata: wishbot verify --repair",
                    "warning",
                )
            )
            continue
        if meta.image_id != image_id:
            findings.append(
                Finding(
                    "metadata",
                    f"{where}/manifest.json",
                    f"names {meta.image_id}, but {link} serves {image_id}",
                    "rebuild the metadata: wishbot verify --repair",
                )
            )
            continue
        findings.extend(_check_image_layers(facts, link, image_id, meta.layers))
    return findings


def _check_image_layers(
    facts: TreeFacts, link: str, image_id: str, layers: tuple[str, ...]
) -> list[Finding]:
    findings: list[Finding] = []
    for digest in dict.fromkeys(layers):
        layer = facts.layers.get(digest)
        if layer is None or not layer.has_layerfs:
            findings.append(
                Finding(
                    "dangling-layer",
                    layout.layerfs_dir(digest),
                    f"{link} uses this layer (its thin image points here), but it is not published",
                    "re-publish the image: wishbot verify --repair",
                )
            )
        elif image_id not in layer.users:
            findings.append(
                Finding(
                    "backlink",
                    f"{layout.layer_metadata_dir(digest)}/origin.json",
                    f"does not list {image_id}, which {link} serves",
                    "rewrite the backlinks: wishbot verify --repair",
                    "warning",
                )
            )
    return findings


def known_images(facts: TreeFacts, serving: dict[str, str]) -> set[str]:
    """Images that exist: served, with a flat image, or waiting in the schedule."""
    known = set(serving.values()) | set(facts.flats)
    known |= {r.id for r in facts.schedule if r.kind == "image"}
    return known


def check_backlinks(facts: TreeFacts, serving: dict[str, str]) -> list[Finding]:
    known = known_images(facts, serving)
    findings: list[Finding] = []
    for digest, layer in sorted(facts.layers.items()):
        gone = sorted(layer.users - known)
        if gone:
            findings.append(
                Finding(
                    "backlink",
                    f"{layout.layer_metadata_dir(digest)}/origin.json",
                    "names image(s) that are not published: " + ", ".join(gone),
                    "rewrite the backlinks: wishbot verify --repair",
                    "warning",
                )
            )
    return findings


def check_schedule(facts: TreeFacts) -> list[Finding]:
    findings: list[Finding] = []
    for removal in facts.schedule:
        exists = (
            removal.id in facts.flats if removal.kind == "image" else removal.id in facts.layers
        )
        if exists:
            continue
        findings.append(
            Finding(
                "schedule",
                layout.REMOVE_SCHEDULE,
                f"schedules {removal.kind} {removal.id}"
                + (f" ({removal.path})" if removal.path else "")
                + ", which is not published",
                "rebuild the metadata: wishbot verify --repair (drops the entry)",
                "warning",
            )
        )
    return findings


def used_layers(facts: TreeFacts, serving: dict[str, str]) -> set[str]:
    used: set[str] = set()
    for link in serving:
        meta = facts.metadata.get(link)
        if meta is not None:
            used.update(meta.layers)
    for layers in facts.scheduled_layers.values():
        used.update(layers)
    return used


def check_orphans(facts: TreeFacts, serving: dict[str, str]) -> list[Finding]:
    findings: list[Finding] = []
    scheduled = {(r.kind, r.id) for r in facts.schedule}
    in_use = set(serving.values())
    for image_id in sorted(facts.flats):
        if image_id not in in_use and ("image", image_id) not in scheduled:
            findings.append(
                Finding(
                    "orphan",
                    layout.flat_dir(image_id),
                    "no path serves this flat image and it is not scheduled for removal",
                    "wishbot gc deletes it after the grace period",
                    "warning",
                )
            )
    used = used_layers(facts, serving)
    for digest, layer in sorted(facts.layers.items()):
        if digest in used or ("layer", digest) in scheduled or layer.users & in_use:
            continue
        findings.append(
            Finding(
                "orphan",
                layout.layer_dir(digest),
                "no published image uses this layer and it is not scheduled for removal",
                "wishbot gc deletes it after the grace period",
                "warning",
            )
        )
    for link in sorted(set(facts.metadata) - set(facts.links)):
        findings.append(
            Finding(
                "orphan",
                layout.image_metadata_dir(link),
                "metadata of a path that does not exist",
                "delete the directory, or re-publish the path (wishbot apply)",
                "warning",
            )
        )
    return findings


def check_deep(facts: TreeFacts) -> list[Finding]:
    findings: list[Finding] = []
    for check in facts.deep:
        where = layout.layerfs_dir(check.digest)
        if check.problem:
            findings.append(
                Finding(
                    "layer-unchecked",
                    where,
                    check.problem,
                    "check the registry, run again",
                    "warning",
                )
            )
            continue
        recorded = facts.layers.get(check.digest)
        if recorded and recorded.diff_id and check.diff_id and recorded.diff_id != check.diff_id:
            findings.append(
                Finding(
                    "layer-content",
                    f"{layout.layer_metadata_dir(check.digest)}/layers.json",
                    f"records diffID {recorded.diff_id}, the layer's tar has {check.diff_id}",
                    "rebuild the metadata: wishbot verify --repair",
                )
            )
        if check.differences:
            shown = list(check.differences[:5])
            more = len(check.differences) - len(shown)
            findings.append(
                Finding(
                    "layer-content",
                    where,
                    f"the files differ from the layer's tar (diffID {check.diff_id}): "
                    + "; ".join(shown)
                    + (f"; and {more} more" if more else ""),
                    "re-publish the layer: wishbot verify --repair",
                )
            )
    return findings


def audit(facts: TreeFacts, *, deep: bool = False) -> AuditReport:
    """Every finding about the tree ``facts`` describes, in a stable order."""
    serving = served(facts)
    in_use = set(serving.values())
    findings = [
        *check_paths(facts),
        *check_flats(facts, in_use | {r.id for r in facts.schedule if r.kind == "image"}, serving),
        *check_metadata(facts, serving),
        *check_backlinks(facts, serving),
        *check_schedule(facts),
        *check_orphans(facts, serving),
        *check_deep(facts),
    ]
    return AuditReport(
        findings=findings, images=len(facts.public), layers=len(facts.layers), deep=deep
    )

"""Paths of the unpacked-images layout inside a CernVM-FS repository.

All paths are relative to the repository root and use ``/``. See
``../shared/reference/cvmfs-layout.md``::

    <registry>/<repository>:<tag>            -> ../…/.flat/<xx>/<image-id hex>
    .flat/<xx>/<image-id hex>/               flat root file system
    .layers/<xx>/<digest hex>/layerfs/       a layer's files as in its tar
    .layers/<xx>/<digest hex>/.metadata/     origin.json, layers.json
    .metadata/<registry>/<repository>:<tag>/manifest.json
    .metadata/remove-schedule.json
    .multiarch/<arch>[:<variant>]/<registry>/<repository>:<tag>
"""

from __future__ import annotations

import posixpath

from bot.core.model import Platform
from bot.core.reference import ImageReference

FLAT = ".flat"
LAYERS = ".layers"
METADATA = ".metadata"
MULTIARCH = ".multiarch"
REMOVE_SCHEDULE = f"{METADATA}/remove-schedule.json"
CATALOG_MARKER = ".cvmfscatalog"
#: the podman additional image store (opt-in, ``podman_store``); never a public path
PODMAN_STORE = "podmanStore"

#: OCI ``architecture[/variant]`` -> the ``.multiarch`` directory: what
#: ``$(CVMFS_ARCH)`` expands to on a stock client (``uname -m``). arm64/v8 is
#: plain arm64 (every arm64 is v8); 32-bit arm variants are distinct kernels.
#: Anything not listed keeps its OCI name (``arch`` or ``arch:variant``), which
#: no stock client selects but which stays unique.
CVMFS_ARCH = {
    ("amd64", None): "x86_64",
    ("arm64", None): "aarch64",
    ("arm64", "v8"): "aarch64",
    ("arm", "v7"): "armv7l",
    ("arm", "v6"): "armv6l",
    ("arm", "v5"): "armv5tel",
    ("386", None): "i686",
    ("ppc64le", None): "ppc64le",
    ("s390x", None): "s390x",
    ("riscv64", None): "riscv64",
    ("mips64le", None): "mips64",
    ("loong64", None): "loongarch64",
}
_FROM_CVMFS_ARCH: dict[str, tuple[str, str | None]] = {}
for _key, _name in CVMFS_ARCH.items():
    _FROM_CVMFS_ARCH.setdefault(_name, _key)  # aarch64 -> plain arm64
#: the default of the variant symlink: what a client without ``CVMFS_ARCH`` gets
DEFAULT_CVMFS_ARCH = "x86_64"
#: the variant symlink's marker, expanded by the client
ARCH_VARIABLE = f"$(CVMFS_ARCH:-{DEFAULT_CVMFS_ARCH})"


def hex_of(digest: str) -> str:
    """``sha256:abcd…`` -> ``abcd…`` (a bare hex string passes through)."""
    return digest.split(":", 1)[1] if ":" in digest else digest


def image_path(reference: ImageReference) -> str:
    """The human-readable path of a concrete image: ``<registry>/<repository>:<tag>``.

    Docker Hub spellings are folded so one image has one path. A reference
    with only a digest is published as ``<registry>/<repository>@sha256:…``.
    """
    ref = reference.normalized()
    if ref.tag is not None:
        return f"{ref.registry}/{ref.repository}:{ref.tag}"
    return f"{ref.registry}/{ref.repository}@{ref.digest}"


def flat_dir(image_id: str) -> str:
    h = hex_of(image_id)
    return f"{FLAT}/{h[:2]}/{h}"


def layer_dir(digest: str) -> str:
    h = hex_of(digest)
    return f"{LAYERS}/{h[:2]}/{h}"


def layerfs_dir(digest: str) -> str:
    return f"{layer_dir(digest)}/layerfs"


def layer_metadata_dir(digest: str) -> str:
    return f"{layer_dir(digest)}/{METADATA}"


def image_metadata_dir(path: str) -> str:
    return f"{METADATA}/{path}"


def arch_name(platform: Platform) -> str:
    """``.multiarch`` directory name: ``x86_64``, ``aarch64``, ``armv7l`` … (see
    :data:`CVMFS_ARCH`); an unknown one ``arch`` or ``arch:variant``."""
    name = CVMFS_ARCH.get((platform.architecture, platform.variant))
    if name is not None:
        return name
    arch = platform.architecture
    return f"{arch}:{platform.variant}" if platform.variant else arch


def platform_of(arch: str) -> Platform:
    """The platform of a ``.multiarch`` directory name (the inverse of
    :func:`arch_name`; ``aarch64`` gives plain arm64, older OCI-named trees
    such as ``amd64`` or ``arm64:v8`` read as written)."""
    if arch in _FROM_CVMFS_ARCH:
        return Platform("linux", *_FROM_CVMFS_ARCH[arch])
    name, _, variant = arch.partition(":")
    return Platform("linux", name, variant or None)


def is_variant_link(target: str) -> bool:
    """Is a symlink target a CernVM-FS variant symlink (``$(CVMFS_ARCH…)``)?
    Older trees default to ``amd64``, newer ones to ``x86_64``."""
    return "$(CVMFS_ARCH" in target


def serves_variant(path: str, target: str) -> bool:
    """Is the symlink ``path`` -> ``target`` a multi-platform path's variant
    symlink, as written or as a CernVM-FS client reads it (expanded to
    ``.multiarch/<its arch>/<path>``: a publisher's view of a repository is a
    client mount too)?"""
    if is_variant_link(target):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    parts = resolved.split("/", 2)
    return len(parts) == 3 and parts[0] == MULTIARCH and parts[2] == path


def multiarch_path(platform: Platform, path: str) -> str:
    return f"{MULTIARCH}/{arch_name(platform)}/{path}"


def relative_link(from_path: str, to_path: str) -> str:
    """The relative symlink target that makes ``from_path`` point at ``to_path``."""
    return posixpath.relpath(to_path, posixpath.dirname(from_path) or ".")


def flat_link(path: str, image_id: str) -> str:
    """Symlink target for a public path pointing at its flat image."""
    return relative_link(path, flat_dir(image_id))


def layer_url(cvmfs_repo: str, digest: str) -> str:
    """Where a thin image finds a layer: ``cvmfs://<repo>/.layers/<xx>/<hex>/layerfs``."""
    return f"cvmfs://{cvmfs_repo}/{layerfs_dir(digest)}"

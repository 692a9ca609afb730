"""Safe, streaming layer unpacking: the tar engine of the publisher.

Two ways to use a layer blob, both in ONE streaming pass that also computes
the layer's diffID (sha256 of the whole uncompressed tar stream, trailer and
padding included):

* :func:`unpack_layer` extracts the layer *as is* into its ``layerfs``
  (whiteouts ``.wh.*`` and ``.wh..wh..opq`` kept as ordinary files), and
  writes a small JSON *sidecar* (:func:`sidecar_path`) with what a directory
  tree cannot say by itself (see below);
* :func:`apply_layer` applies the layer onto a flat root file system
  (whiteouts delete, opaque markers hide lower content, markers never appear).

:func:`bot.publisher.flatten.apply_layerfs` applies an already unpacked
``layerfs`` (plus its sidecar) and gives the same tree as :func:`apply_layer`.

The stream is :mod:`bot.publisher.layerstream`; where entries go and how
they are made safely is :mod:`bot.publisher.safetree`.

Sidecar (``<layer dir>/.metadata/layerfs.json``)
------------------------------------------------
A ``layerfs`` is the layer "as in its tar", but a tree loses three facts
the flat image needs, so :func:`unpack_layer` records them::

    {"version": 1, "diff_id": "sha256:…",
     "implicit_dirs": ["usr/lib", …],   # parents the tar never listed: when applied
                                        # they follow a lower layer's symlink
                                        # instead of replacing it
     "links": [{"path": "bin/b", "target": "bin/a"}],
                                        # hardlinks to files of LOWER layers
                                        # (not writable in layerfs)
     "skipped": [{"path": "dev/null", "type": "char"}]}
                                        # device nodes / fifos skipped (not root)

Limits (:class:`Limits`) stop tar bombs: the uncompressed stream length and
the number of entries are checked while reading.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from bot.config import Config
from bot.errors import BadLayer, UnsafeLayer
from bot.publisher import xattrs
from bot.publisher.diskerrors import disk_error
from bot.publisher.layerstream import (
    CHUNK,
    HashingReader,
    Readable,
    detect_compression,
    open_layer,
)
from bot.publisher.safetree import (
    Meta,
    SafeTree,
    clean_name,
    dispatch_marker,
    is_marker,
    under_marker,
)
from bot.publisher.tarheader import BoundedTarInfo, check_header, show_name

__all__ = [
    "UNLIMITED",
    "LayerStats",
    "Limits",
    "apply_layer",
    "detect_compression",
    "open_layer",
    "sidecar_path",
    "unpack_layer",
]


@dataclass(frozen=True)
class Limits:
    """Ceilings per layer (tar bombs): ``max_bytes`` bounds both the uncompressed
    tar stream and the bytes its files take once written (sparse files count
    expanded); ``max_entries`` the number of tar entries."""

    max_bytes: int
    max_entries: int

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        """From the operator's ``max_layer_bytes`` and ``max_layer_entries``."""
        return cls(max_bytes=config.max_layer_bytes, max_entries=config.max_layer_entries)


UNLIMITED = Limits(max_bytes=1 << 62, max_entries=1 << 62)


@dataclass(frozen=True)
class LayerStats:
    """What one pass over a layer found.

    ``unpacked_size`` is the length of the uncompressed tar stream (the bytes
    the diffID covers); ``file_bytes`` the sum of regular file sizes.
    ``skipped_links`` counts hardlinks to lower layers that the layerfs could
    not hold (recorded in the sidecar); ``skipped`` names device nodes and
    fifos not created (not running as root).
    """

    diff_id: str
    unpacked_size: int
    entries: int
    file_bytes: int = 0
    skipped_links: int = 0
    skipped: tuple[str, ...] = ()
    sidecar: Path | None = None
    dropped_xattrs: tuple[str, ...] = ()


# --- the tar pass -------------------------------------------------------------


def _copier(src: Readable, room: int, refuse: Callable[[], UnsafeLayer]) -> Callable[[int], int]:
    """Copy ``src`` into a file, at most ``room`` bytes (what may still be written).

    What is *written* counts: a sparse entry of a few hundred bytes in the
    tar expands to its full size here, holes included.
    """

    def copy(fd: int) -> int:
        total = 0
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                return total
            total += len(chunk)
            if total > room:
                raise refuse()
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]

    return copy


_DEVICE_KINDS = {tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}


def _meta(member: tarfile.TarInfo) -> Meta:
    return Meta(
        mode=member.mode,
        uid=member.uid,
        gid=member.gid,
        mtime_ns=int(member.mtime * 1_000_000_000),
    )


def _run_tar(
    blob: Path, media_type: str, tree: SafeTree, *, limits: Limits, context: str
) -> tuple[str, int, int]:
    """One pass: apply every entry to ``tree``; return (diff_id, stream bytes, entries)."""
    with (
        open_layer(blob, media_type) as stream,
        HashingReader(stream, limits.max_bytes, context) as reader,
    ):
        if reader.peek(512).strip(b"\0") == b"":
            reader.drain()  # empty layer: only end-of-archive blocks (or nothing)
            return reader.diff_id(), reader.count, 0
        entries = _run_members(reader, tree, limits=limits, context=context)
        reader.drain()
    tree.finish()
    return reader.diff_id(), reader.count, entries


def _run_members(reader: HashingReader, tree: SafeTree, *, limits: Limits, context: str) -> int:
    entries = 0
    try:
        with tarfile.open(
            None,
            "r:",
            fileobj=cast(IO[bytes], reader),
            encoding="utf-8",
            errors="surrogateescape",
            tarinfo=BoundedTarInfo.for_layer(context),
        ) as tar:
            while (member := _next(tar, context)) is not None:
                # forget old headers: a layer may have millions
                tar.members.clear()  # type: ignore[attr-defined]
                entries += 1
                if entries > limits.max_entries:
                    raise UnsafeLayer(
                        f"{context}: layer has more than {limits.max_entries} entries "
                        f"(at '{show_name(member.name)}')",
                        hint="raise max_layer_entries if this image is legitimate",
                    )
                check_header(member, context)
                try:
                    _apply_member(tree, tar, member, limits)
                except OSError as exc:
                    raise disk_error(
                        exc, f"{context}: cannot write entry '{show_name(member.name)}'"
                    ) from None
    except (tarfile.TarError, EOFError) as exc:
        raise BadLayer(f"{context}: the layer is not a valid tar archive: {exc}") from None
    except (ValueError, OverflowError) as exc:  # e.g. a NUL byte inside a PAX path
        raise BadLayer(f"{context}: a tar header cannot be used: {exc}") from None
    return entries


def _next(tar: tarfile.TarFile, context: str) -> tarfile.TarInfo | None:
    """The next header; a stream that cannot be read on is a bad layer, not a crash."""
    try:
        return tar.next()
    except OSError as exc:  # e.g. a negative size sends the reader backwards
        raise BadLayer(f"{context}: the layer is not a valid tar archive: {exc}") from None


def _apply_member(
    tree: SafeTree, tar: tarfile.TarFile, member: tarfile.TarInfo, limits: Limits
) -> None:
    name = clean_name(member.name)
    if under_marker(name, flat=tree.flat):
        return
    base = name.rpartition("/")[2]
    if is_marker(base) and dispatch_marker(tree, name):
        return
    meta = _meta(member)
    attributes = xattrs.from_pax(member.pax_headers)
    if member.isdir():
        tree.directory(name, meta, attributes)
        return
    if member.isreg():
        _apply_regular(tree, tar, member, name, meta, attributes, limits)
        return
    if attributes:  # links and devices: not theirs to keep
        tree.drop_xattrs(name, [(a, "not kept on this kind of entry") for a in attributes])
    _apply_special(tree, member, name, meta)


def _apply_regular(
    tree: SafeTree,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    name: str,
    meta: Meta,
    attributes: dict[str, bytes],
    limits: Limits,
) -> None:
    """Write a regular file, within what is left of the layer's byte limit."""
    room = limits.max_bytes - tree.file_bytes
    if member.size > room:
        raise _too_big(tree, member, limits)
    src = tar.extractfile(member)
    assert src is not None
    copy = _copier(src, room, lambda: _too_big(tree, member, limits))
    tree.regular(name, meta, copy, attributes)


def _apply_special(tree: SafeTree, member: tarfile.TarInfo, name: str, meta: Meta) -> None:
    """Write a symlink, hard link or device; other types are ignored."""
    if member.issym():
        tree.symlink(name, member.linkname, meta)
    elif member.islnk():
        tree.hardlink(name, member.linkname)
    elif member.type in _DEVICE_KINDS:
        tree.device(name, _DEVICE_KINDS[member.type], meta, member.devmajor, member.devminor)
    # other types (volume labels, unknown vendor types) carry no file: ignored


def _too_big(tree: SafeTree, member: tarfile.TarInfo, limits: Limits) -> UnsafeLayer:
    sparse = " (a sparse file: its holes count)" if member.sparse else ""
    return UnsafeLayer(
        f"{tree.context}: entry '{show_name(member.name)}' is larger than the limit: "
        f"its {member.size} bytes{sparse} take the layer's files beyond {limits.max_bytes} bytes",
        hint="raise max_layer_bytes if this image is legitimate",
    )


def sidecar_path(layerfs: Path) -> Path:
    """Where :func:`unpack_layer` records what ``layerfs`` cannot hold."""
    return layerfs.parent / ".metadata" / "layerfs.json"


def recorded_diff_id(layerfs: Path) -> str | None:
    """The diffID :func:`unpack_layer` recorded in the sidecar of ``layerfs``
    (``None`` when there is no readable sidecar, e.g. a tree another tool wrote)."""
    try:
        data = json.loads(sidecar_path(layerfs).read_bytes())
    except (OSError, ValueError):
        return None
    value = data.get("diff_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def unpack_layer(
    blob: Path,
    media_type: str,
    dest: Path,
    *,
    limits: Limits,
    context: str,
    sidecar: Path | None = None,
    privileged: bool | None = None,
) -> LayerStats:
    """Extract a layer as is into ``dest`` (its layerfs) and compute its diffID.

    Whiteouts stay ordinary files. Writes the sidecar (default
    :func:`sidecar_path`). The caller compares ``diff_id`` with the config.
    """
    dest.mkdir(parents=True, exist_ok=True)
    tree = SafeTree(dest, context=context, flat=False, privileged=privileged)
    diff_id, size, entries = _run_tar(blob, media_type, tree, limits=limits, context=context)
    target = sidecar if sidecar is not None else sidecar_path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(tree.sidecar(diff_id), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, target)
    return LayerStats(
        diff_id=diff_id,
        unpacked_size=size,
        entries=entries,
        file_bytes=tree.file_bytes,
        skipped_links=len(tree.record.links),
        skipped=tuple(item["path"] for item in tree.record.skipped),
        dropped_xattrs=tree.dropped_xattrs(),
        sidecar=target,
    )


def apply_layer(
    root: Path,
    blob: Path,
    media_type: str,
    *,
    limits: Limits,
    context: str,
    privileged: bool | None = None,
) -> LayerStats:
    """Apply a layer onto the flat root file system ``root`` (OCI whiteout rules)."""
    root.mkdir(parents=True, exist_ok=True)
    tree = SafeTree(root, context=context, flat=True, privileged=privileged)
    diff_id, size, entries = _run_tar(blob, media_type, tree, limits=limits, context=context)
    return LayerStats(
        diff_id=diff_id,
        unpacked_size=size,
        entries=entries,
        file_bytes=tree.file_bytes,
        skipped=tuple(item["path"] for item in tree.record.skipped),
        dropped_xattrs=tree.dropped_xattrs(),
    )

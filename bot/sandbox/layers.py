"""Build tar layers from a small spec: files, directories, links, whiteouts.

Every entry is written exactly as given, so the same builder makes ordinary
layers and hostile ones (``../`` paths, absolute paths, links out of the
root, devices, huge files of zeros streamed without holding them in memory)::

    layer = build_layer([
        directory("etc"),
        file("etc/hostname", b"box\\n"),
        symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        hardlink("bin/sh", "bin/bash"),
        whiteout("etc/motd"),          # etc/.wh.motd
        opaque("var/cache"),           # var/cache/.wh..wh..opq
    ])

:func:`build_layer` gives the uncompressed tar; :func:`compress` gzips or
zstd-compresses it; :func:`write_layer` streams into any binary file object
(wrap it in a ``gzip.GzipFile`` to build a compressed bomb cheaply).
"""

from __future__ import annotations

import gzip
import io
import posixpath
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

Compression = Literal["gzip", "zstd", "none"]
EntryKind = Literal["file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo"]

#: A fixed modification time (2023-11-14) so that layers are reproducible.
DEFAULT_MTIME = 1_700_000_000

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

_TYPES: dict[str, bytes] = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


@dataclass(frozen=True)
class Entry:
    """One tar member. ``path`` is written verbatim (no normalisation)."""

    path: str
    kind: EntryKind = "file"
    data: bytes = b""
    zeros: int = 0  # for files: this many zero bytes after ``data`` (streamed)
    target: str = ""  # symlink or hardlink target
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""
    mtime: int = DEFAULT_MTIME
    major: int = 0
    minor: int = 0
    pax: dict[str, str] = field(default_factory=dict)  # extra PAX headers (xattrs ...)

    @property
    def size(self) -> int:
        return len(self.data) + self.zeros if self.kind == "file" else 0


def file(
    path: str,
    data: bytes | str = b"",
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    zeros: int = 0,
    mtime: int = DEFAULT_MTIME,
    pax: dict[str, str] | None = None,
) -> Entry:
    """A regular file; ``zeros`` appends that many zero bytes without building them."""
    body = data.encode() if isinstance(data, str) else data
    return Entry(
        path, "file", body, zeros=zeros, mode=mode, uid=uid, gid=gid, mtime=mtime, pax=pax or {}
    )


def directory(
    path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int = DEFAULT_MTIME
) -> Entry:
    return Entry(path, "dir", mode=mode, uid=uid, gid=gid, mtime=mtime)


def symlink(path: str, target: str, *, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, "symlink", target=target, mode=0o777, uid=uid, gid=gid)


def hardlink(path: str, target: str) -> Entry:
    """``path`` becomes another name for the earlier member ``target``."""
    return Entry(path, "hardlink", target=target)


def whiteout(path: str) -> Entry:
    """Delete ``path`` from lower layers (``dir/.wh.name``)."""
    parent, name = posixpath.split(path.rstrip("/"))
    return Entry(posixpath.join(parent, WHITEOUT_PREFIX + name), "file", mode=0o600)


def opaque(directory_path: str) -> Entry:
    """Hide everything lower layers put in ``directory_path`` (``dir/.wh..wh..opq``)."""
    return Entry(posixpath.join(directory_path.rstrip("/"), OPAQUE_MARKER), "file", mode=0o600)


def device(
    path: str, major: int, minor: int, *, kind: Literal["chardev", "blockdev"] = "chardev"
) -> Entry:
    return Entry(path, kind, mode=0o666, major=major, minor=minor)


def fifo(path: str) -> Entry:
    return Entry(path, "fifo", mode=0o644)


def with_parents(entries: Iterable[Entry], *, mode: int = 0o755) -> list[Entry]:
    """``entries`` with a directory entry added before each missing parent."""
    seen: set[str] = set()
    out: list[Entry] = []
    for entry in entries:
        clean = entry.path.strip("/")
        parts = clean.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent and parent not in seen:
                seen.add(parent)
                out.append(directory(parent, mode=mode))
        if entry.kind == "dir":
            if clean in seen:
                continue
            seen.add(clean)
        out.append(entry)
    return out


class _Zeros(io.RawIOBase):
    """``data`` followed by ``zeros`` zero bytes, read in chunks."""

    def __init__(self, data: bytes, zeros: int):
        self._data = data
        self._pos = 0
        self._total = len(data) + zeros

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        want = min(len(view), self._total - self._pos)
        if want <= 0:
            return 0
        head = 0
        if self._pos < len(self._data):
            chunk = self._data[self._pos : self._pos + want]
            view[: len(chunk)] = chunk
            head = len(chunk)
        view[head:want] = bytes(want - head)
        self._pos += want
        return want


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.type = _TYPES[entry.kind]
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname, info.gname = entry.uname, entry.gname
    info.mtime = entry.mtime
    info.size = entry.size
    if entry.kind in ("symlink", "hardlink"):
        info.linkname = entry.target
    if entry.kind in ("chardev", "blockdev"):
        info.devmajor, info.devminor = entry.major, entry.minor
    if entry.pax:
        info.pax_headers = dict(entry.pax)
    return info


def write_layer(entries: Iterable[Entry], out: BinaryIO, *, gnu: bool = False) -> None:
    """Stream a tar of ``entries`` into ``out`` (PAX format unless ``gnu``)."""
    fmt = tarfile.GNU_FORMAT if gnu else tarfile.PAX_FORMAT
    with tarfile.open(fileobj=out, mode="w|", format=fmt) as archive:
        for entry in entries:
            info = _tarinfo(entry)
            if entry.kind == "file":
                archive.addfile(info, io.BufferedReader(_Zeros(entry.data, entry.zeros)))
            else:
                archive.addfile(info)


def build_layer(entries: Iterable[Entry], *, gnu: bool = False) -> bytes:
    """The uncompressed tar of ``entries``, in memory."""
    buffer = io.BytesIO()
    write_layer(entries, buffer, gnu=gnu)
    return buffer.getvalue()


def compress(tar: bytes, compression: Compression) -> bytes:
    """Compress an uncompressed tar as a registry layer blob (reproducibly)."""
    if compression == "gzip":
        return gzip.compress(tar, compresslevel=6, mtime=0)
    if compression == "zstd":
        import zstandard

        return bytes(zstandard.ZstdCompressor(level=3).compress(tar))
    if compression == "none":
        return tar
    raise ValueError(f"unknown compression '{compression}': use gzip, zstd or none")


def gzip_bomb(path: str, size: int) -> bytes:
    """A gzip layer holding one file of ``size`` zero bytes (tiny compressed)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as stream:
        write_layer([file(path, zeros=size)], stream)  # type: ignore[arg-type]
    return buffer.getvalue()

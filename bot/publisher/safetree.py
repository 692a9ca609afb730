"""The safe tree: every entry of an untrusted layer lands inside its root.

Every entry name is cleaned lexically first (``posixpath.normpath`` of
``"/" + name``: ``..`` and absolute names are clamped to the root, as
umoci and Docker do). The parent directory is then resolved by a careful
resolver (:class:`SafeTree`) with *securejoin* semantics: it walks one
component at a time with ``lstat``; a symlink met on the way (planted by an
earlier entry or by a lower layer) is read with ``readlink`` and followed
*inside* the root (absolute targets restart at the root, ``..`` stops at
the root). The final component is never followed: every write uses
no-follow calls (``O_NOFOLLOW|O_EXCL`` opens after unlinking, ``lchown``,
``utime(follow_symlinks=False)``, ``link`` without ``AT_SYMLINK_FOLLOW``).
We are the only writer of the target tree while a layer is applied, so
this resolver is race-free for our purpose; it does not defend against a
concurrent local attacker changing the tree under us. Resolved parent
directories are cached per cleaned path; the cache is dropped whenever a
directory or a symlink is removed or replaced.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import UnsafeLayer

MAX_SYMLINK_HOPS = 40
OPAQUE = ".wh..wh..opq"
WHITEOUT = ".wh."
SIDECAR_VERSION = 1


def clean_name(name: str) -> str:
    """Entry name -> path relative to the root ('' = the root), lexically clamped."""
    return posixpath.normpath("/" + name).lstrip("/")


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


@dataclass
class Meta:
    """Metadata of one entry (from a tar header or an lstat)."""

    mode: int
    uid: int
    gid: int
    mtime_ns: int


@dataclass
class _Record:
    implicit: set[str] = field(default_factory=set)
    links: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


class SafeTree:
    """A directory we write a layer into; every name resolved inside it.

    ``flat`` selects the flat-image rules (whiteouts and opaque markers are
    applied); otherwise entries are stored as they are (layerfs).
    """

    def __init__(self, root: Path, *, context: str, flat: bool, privileged: bool | None = None):
        self.base = os.path.abspath(root)
        self.context = context
        self.flat = flat
        self.privileged = os.geteuid() == 0 if privileged is None else privileged
        self._cache: dict[str, str] = {}
        self.written: set[str] = set()  # real paths this layer wrote
        self._ancestors: set[str] = set()  # real directories above them
        self._dirs: dict[str, Meta] = {}  # explicit directory entries: metadata at the end
        self.record = _Record()
        self.file_bytes = 0

    # -- helpers
    def abs(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def refuse(self, entry: str, why: str) -> UnsafeLayer:
        return UnsafeLayer(f"{self.context}: entry '{entry}' {why}", hint="the layer is refused")

    def resolve_dir(self, path: str, *, create: bool, entry: str) -> str | None:
        """Real (symlink-free) relative path of directory ``path``, or None when missing.

        ``create`` makes missing directories (recorded as implicit).
        """
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        todo = path.split("/")[::-1] if path else []
        cur = ""
        hops = 0
        while todo:
            comp = todo.pop()
            if comp in ("", "."):
                continue
            if comp == "..":
                cur = cur.rpartition("/")[0]
                continue
            nxt = _join(cur, comp)
            try:
                st = os.lstat(self.abs(nxt))
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(self.abs(nxt), 0o755)
                os.chmod(self.abs(nxt), 0o755)
                self.record.implicit.add(nxt)
                cur = nxt
                continue
            if stat.S_ISDIR(st.st_mode):
                cur = nxt
            elif stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise self.refuse(entry, "goes through too many levels of symbolic links")
                target = os.readlink(self.abs(nxt))
                if target.startswith("/"):
                    cur = ""
                todo.extend(target.split("/")[::-1])
            else:
                if not create:
                    return None
                raise self.refuse(entry, f"needs '{nxt}' to be a directory, but it is a file")
        self._cache[path] = cur
        return cur

    def _remove(self, real: str) -> None:
        """Remove whatever is at ``real`` (never following a symlink)."""
        path = self.abs(real)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
            self._cache.clear()
        else:
            os.unlink(path)
            if stat.S_ISLNK(st.st_mode):
                self._cache.clear()

    def _mark(self, real: str) -> None:
        self.written.add(real)
        parent = real.rpartition("/")[0]
        while parent and parent not in self._ancestors:
            self._ancestors.add(parent)
            parent = parent.rpartition("/")[0]

    def _place(self, name: str) -> tuple[str, str]:
        """Resolve an entry's parent (creating it); return (real path, base name)."""
        parent, _, base = name.rpartition("/")
        real_parent = self.resolve_dir(parent, create=True, entry=name)
        assert real_parent is not None
        return _join(real_parent, base), base

    def _own(self, path: str, meta: Meta, *, fd: int | None = None) -> None:
        if not self.privileged:
            return
        if fd is not None:
            os.fchown(fd, meta.uid, meta.gid)
        else:
            os.lchown(path, meta.uid, meta.gid)

    @staticmethod
    def _times(target: int | str, meta: Meta, *, follow: bool = True) -> None:
        try:
            if isinstance(target, int):
                os.utime(target, ns=(meta.mtime_ns, meta.mtime_ns))
            else:
                os.utime(target, ns=(meta.mtime_ns, meta.mtime_ns), follow_symlinks=follow)
        except (OverflowError, ValueError, OSError):
            return  # an absurd timestamp is not worth failing the image for

    # -- entries
    def directory(self, name: str, meta: Meta) -> None:
        if name == "":
            return  # the root belongs to the publisher: "./" entries do not change it
        real, _ = self._place(name)
        path = self.abs(real)
        try:
            st = os.lstat(path)
            is_dir = stat.S_ISDIR(st.st_mode)
        except FileNotFoundError:
            is_dir = False
        if not is_dir:
            self._remove(real)
            os.mkdir(path, 0o700)
        self.record.implicit.discard(real)
        self._dirs[real] = meta
        self._mark(real)

    def regular(self, name: str, meta: Meta, copy: Callable[[int], int]) -> None:
        """Create a regular file; ``copy(fd)`` writes its content, returns bytes."""
        if name == "":
            raise self.refuse(name, "names the root directory as a file")
        real, _ = self._place(name)
        path = self.abs(real)
        self._remove(real)
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            self.file_bytes += copy(fd)
            self._own(path, meta, fd=fd)
            os.fchmod(fd, meta.mode & 0o7777)
            self._times(fd, meta)
        finally:
            os.close(fd)
        self._mark(real)

    def symlink(self, name: str, target: str, meta: Meta) -> None:
        if name == "":
            raise self.refuse(name, "names the root directory as a symlink")
        real, _ = self._place(name)
        path = self.abs(real)
        self._remove(real)
        os.symlink(target, path)
        self._own(path, meta)
        self._times(path, meta, follow=False)
        self._mark(real)

    def hardlink(self, name: str, target: str) -> None:
        """Hardlink ``name`` to the entry ``target`` (a name inside the image)."""
        if name == "":
            raise self.refuse(name, "names the root directory as a hardlink")
        clean_target = clean_name(target)
        if clean_target == "":
            raise self.refuse(name, "is a hardlink to the root directory")
        tparent, _, tbase = clean_target.rpartition("/")
        treal_parent = self.resolve_dir(tparent, create=False, entry=name)
        treal = _join(treal_parent, tbase) if treal_parent is not None else None
        st = None
        if treal is not None:
            try:
                st = os.lstat(self.abs(treal))
            except FileNotFoundError:
                st = None
        if st is None:
            if not self.flat:
                real, _ = self._place(name)
                self._remove(real)
                self.record.links.append({"path": real, "target": clean_target})
                self._mark(real)
                return
            raise self.refuse(name, f"is a hardlink to '{target}', which is not in the image")
        assert treal is not None
        if stat.S_ISDIR(st.st_mode):
            raise self.refuse(name, f"is a hardlink to the directory '{target}'")
        real, _ = self._place(name)
        if real == treal:
            self._mark(real)
            return
        self._remove(real)
        os.link(self.abs(treal), self.abs(real), follow_symlinks=False)
        self._mark(real)

    def device(self, name: str, kind: str, meta: Meta, major: int, minor: int) -> None:
        if name == "":
            raise self.refuse(name, "names the root directory as a device")
        if not self.privileged:
            self.record.skipped.append({"path": name, "type": kind})
            return
        real, _ = self._place(name)
        path = self.abs(real)
        self._remove(real)
        if kind == "fifo":
            os.mkfifo(path, 0o600)
        else:
            flag = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
            os.mknod(path, flag | 0o600, os.makedev(major, minor))
        os.lchown(path, meta.uid, meta.gid)
        os.chmod(path, meta.mode & 0o7777)
        self._times(path, meta, follow=False)
        self._mark(real)

    def whiteout(self, name: str) -> None:
        """``dir/.wh.x``: delete ``dir/x`` of lower layers (flat mode only)."""
        parent, _, base = name.rpartition("/")
        victim = base[len(WHITEOUT) :]
        if victim in ("", ".", ".."):
            raise self.refuse(name, "is a whiteout of '.' or '..' or of nothing")
        real_parent = self.resolve_dir(parent, create=False, entry=name)
        if real_parent is None:
            return
        real = _join(real_parent, victim)
        if real in self.written:
            return  # this layer's own entry: a whiteout only hides lower layers
        self._remove(real)

    def opaque(self, name: str) -> None:
        """``dir/.wh..wh..opq``: hide everything lower layers put in ``dir``."""
        parent = name.rpartition("/")[0]
        real_parent = self.resolve_dir(parent, create=False, entry=name)
        if real_parent is None:
            return
        self._hide_lower(real_parent)

    def _hide_lower(self, real_dir: str) -> None:
        with os.scandir(self.abs(real_dir)) as it:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for child, is_dir in children:
            real = _join(real_dir, child)
            if real in self.written or real in self._ancestors:
                if is_dir:
                    self._hide_lower(real)
            else:
                self._remove(real)

    def finish(self) -> None:
        """Directory metadata last, deepest first (their mtimes survive their contents)."""
        for real in sorted(self._dirs, key=lambda r: r.count("/") + (1 if r else 0), reverse=True):
            meta = self._dirs[real]
            path = self.abs(real)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            self._own(path, meta)
            os.chmod(path, meta.mode & 0o7777)
            self._times(path, meta, follow=False)
        self._dirs.clear()

    def sidecar(self, diff_id: str) -> dict[str, object]:
        implicit = sorted(
            r
            for r in self.record.implicit
            if os.path.isdir(self.abs(r)) and not os.path.islink(self.abs(r))
        )
        return {
            "version": SIDECAR_VERSION,
            "diff_id": diff_id,
            "implicit_dirs": implicit,
            "links": self.record.links,
            "skipped": self.record.skipped,
        }


def is_marker(base: str) -> bool:
    return base.startswith(WHITEOUT)


def dispatch_marker(tree: SafeTree, name: str) -> bool:
    """Handle a whiteout-family name. True when the entry is consumed.

    ``.wh..wh.*`` other than the opaque marker are aufs internals: dropped.
    In layerfs mode whiteouts are only validated (then stored as files).
    """
    base = name.rpartition("/")[2]
    if base == OPAQUE:
        if tree.flat:
            tree.opaque(name)
            return True
        return False
    if base.startswith(WHITEOUT + WHITEOUT):
        return True
    if base[len(WHITEOUT) :] in ("", ".", ".."):
        raise tree.refuse(name, "is a whiteout of '.' or '..' or of nothing")
    if tree.flat:
        tree.whiteout(name)
        return True
    return False


def under_marker(name: str, *, flat: bool) -> bool:
    """Is the entry inside a directory named like a marker?

    aufs internals (``.wh..wh.plnk/...``) are always dropped; in a flat image
    nothing below a whiteout-named directory may appear (markers never do).
    """
    prefix = WHITEOUT if flat else WHITEOUT + WHITEOUT
    return any(part.startswith(prefix) for part in name.split("/")[:-1])

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

Without root (on a CernVM-FS release manager wishbot runs as the repository
owner) the modes an image records get in the way of building it: a
directory ``0555`` of a lower layer cannot take the entries of a later one,
a directory ``0000`` cannot be searched, a file ``0000`` (``etc/shadow``)
cannot be read to copy it, a tree with such directories cannot be removed.
As umoci does in rootless mode, :class:`OwnerAccess` adds the owner bits we
need while we work (``u+rwx`` on directories, ``u+r`` on a file while it is
opened) and puts the recorded modes back afterwards, deepest first; the
final tree carries exactly the image's modes. Modes are only ever changed
with :func:`lchmod`, which never goes through a symlink. :func:`force_rmtree`
removes a tree whatever the modes inside it.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bot.errors import UnsafeLayer
from bot.publisher import xattrs
from bot.publisher.tarheader import show_name

#: extended attributes of an entry (name -> value), or None
Xattrs = Mapping[str, bytes] | None

#: what a walk finds at one path component (see SafeTree.resolve_dir)
_ComponentKind = Literal["dir", "link", "missing"]

MAX_SYMLINK_HOPS = 40
OPAQUE = ".wh..wh..opq"
WHITEOUT = ".wh."
SIDECAR_VERSION = 1


def clean_name(name: str) -> str:
    """Entry name -> path relative to the root ('' = the root), lexically clamped."""
    return posixpath.normpath("/" + name).lstrip("/")


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _depth(path: str) -> int:
    return path.count("/")


def lchmod(path: str, mode: int) -> None:
    """Set the mode of ``path`` itself; a symlink is left alone (it has no mode).

    The entry is pinned with ``O_PATH|O_NOFOLLOW`` and checked before the
    mode is set through its descriptor, so a symlink is never followed (the
    same as the C library's ``fchmodat(AT_SYMLINK_NOFOLLOW)``).
    """
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISLNK(os.fstat(fd).st_mode):
            os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


class OwnerAccess:
    """Owner access to entries whose recorded modes deny it, and its undoing.

    ``enabled`` defaults to "not running as root" (root needs none of this).
    :meth:`open_dir` makes a directory ``u+rwx`` and remembers its mode;
    :meth:`restore` puts the remembered modes back, deepest first (a parent
    stays searchable until its children are done); :meth:`forget` drops what
    was under a removed directory; :meth:`open_file` opens a file for reading
    even when its mode denies it (the mode is put back at once).
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = os.geteuid() != 0 if enabled is None else enabled
        self._saved: dict[str, int] = {}  # absolute path -> recorded mode

    def open_dir(self, path: str, mode: int, need: int = stat.S_IRWXU) -> None:
        """Give the owner ``need`` (rwx: to write) on directory ``path``.

        ``mode`` is its ``lstat`` mode; nothing changes when it has them already.
        """
        if not self.enabled or mode & need == need:
            return
        self._saved.setdefault(path, stat.S_IMODE(mode))
        lchmod(path, stat.S_IMODE(mode) | need)

    def reset(self, path: str, mode: int) -> None:
        """Directory ``path`` is to end with ``mode`` (now, or when restored)."""
        if path in self._saved:
            self._saved[path] = mode
        else:
            lchmod(path, mode)

    def forget(self, path: str) -> None:
        """``path`` (and everything below it) is gone: nothing to restore there."""
        below = path + "/"
        for saved in [p for p in self._saved if p == path or p.startswith(below)]:
            del self._saved[saved]

    def take(self) -> dict[str, int]:
        """The recorded modes (path -> mode), handed over and forgotten."""
        saved, self._saved = self._saved, {}
        return saved

    def restore(self) -> None:
        """Put every recorded mode back, deepest first."""
        saved = self.take()
        for path in sorted(saved, key=_depth, reverse=True):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                lchmod(path, saved[path])

    def open_file(self, path: str) -> int:
        """``open(path, O_RDONLY|O_NOFOLLOW)``, adding ``u+r`` for the moment it takes."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(path, flags)
        except PermissionError:
            if not self.enabled:
                raise
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_mode & stat.S_IRUSR:
                raise
        mode = stat.S_IMODE(st.st_mode)
        lchmod(path, mode | stat.S_IRUSR)
        try:
            return os.open(path, flags)
        finally:
            lchmod(path, mode)


def _open_tree(top: str) -> None:
    """Give the owner rwx on every directory of the tree ``top`` (symlinks not followed)."""
    pending = [top]
    while pending:
        path = pending.pop()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        if st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
            lchmod(path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        with os.scandir(path) as it:
            pending.extend(e.path for e in it if e.is_dir(follow_symlinks=False))


def force_rmtree(path: str | os.PathLike[str], *, ignore_errors: bool = False) -> None:
    """``shutil.rmtree``, also through directories whose mode denies the owner.

    An image's directories may be ``0555`` or ``0000``: as root that does not
    matter, as the repository owner nothing inside them can be removed. On a
    permission error the tree's directories are made ``u+rwx`` (never through
    a symlink) and the removal is done again.
    """
    try:
        try:
            shutil.rmtree(path)
        except PermissionError:
            _open_tree(os.fspath(path))
            shutil.rmtree(path)
    except OSError:
        if not ignore_errors:
            raise


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
    dropped_xattrs: list[dict[str, str]] = field(default_factory=list)


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
        self.access = OwnerAccess()  # directories opened for us, restored by finish()
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
        return UnsafeLayer(
            f"{self.context}: entry '{show_name(entry)}' {why}", hint="the layer is refused"
        )

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
            kind = self._component(nxt, create=create, entry=entry)
            if kind == "missing":
                return None
            if kind == "link":
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise self.refuse(entry, "goes through too many levels of symbolic links")
                cur = self._follow_link(nxt, cur, todo)
            else:
                cur = nxt
        self._cache[path] = cur
        return cur

    def _component(self, nxt: str, *, create: bool, entry: str) -> _ComponentKind:
        """What the walk of :meth:`resolve_dir` finds at ``nxt``.

        A directory is opened for the walk; a missing one is made (recorded as
        implicit) when ``create``, else reported missing, as is a file; a file
        where ``create`` needs a directory refuses ``entry``.
        """
        try:
            st = os.lstat(self.abs(nxt))
        except FileNotFoundError:
            if not create:
                return "missing"
            os.mkdir(self.abs(nxt), 0o755)
            os.chmod(self.abs(nxt), 0o755)
            self.record.implicit.add(nxt)
            return "dir"
        if stat.S_ISDIR(st.st_mode):
            self.access.open_dir(self.abs(nxt), st.st_mode)
            return "dir"
        if stat.S_ISLNK(st.st_mode):
            return "link"
        if not create:
            return "missing"
        raise self.refuse(entry, f"needs '{show_name(nxt)}' to be a directory, but it is a file")

    def _follow_link(self, nxt: str, cur: str, todo: list[str]) -> str:
        """Push the target of symlink ``nxt`` (in ``cur``) onto ``todo``; the walk's new position."""
        target = os.readlink(self.abs(nxt))
        todo.extend(target.split("/")[::-1])
        return "" if target.startswith("/") else cur

    def _remove(self, real: str) -> None:
        """Remove whatever is at ``real`` (never following a symlink)."""
        path = self.abs(real)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            force_rmtree(path)
            self.access.forget(path)
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
    def drop_xattrs(self, name: str, dropped: list[tuple[str, str]]) -> None:
        """Name the extended attributes of entry ``name`` that were not applied."""
        for attribute, why in dropped:
            self.record.dropped_xattrs.append({"path": name, "name": attribute, "why": why})

    def dropped_xattrs(self) -> tuple[str, ...]:
        """``path: name (why)`` for each extended attribute not applied."""
        return tuple(
            f"{show_name(d['path'])}: {show_name(d['name'])} ({d['why']})"
            for d in self.record.dropped_xattrs
        )

    def _xattrs(self, name: str, target: int | str, attributes: Xattrs) -> None:
        if attributes:
            self.drop_xattrs(name, xattrs.apply(target, attributes))

    def directory(self, name: str, meta: Meta, attributes: Xattrs = None) -> None:
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
        self._xattrs(name, path, attributes)
        self.record.implicit.discard(real)
        self._dirs[real] = meta
        self._mark(real)

    def regular(
        self, name: str, meta: Meta, copy: Callable[[int], int], attributes: Xattrs = None
    ) -> None:
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
            self._xattrs(name, fd, attributes)  # after fchown, which drops capabilities
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
        found = self._link_target(name, clean_target)
        if found is None:
            self._dangling_hardlink(name, target, clean_target)
            return
        treal, st = found
        if stat.S_ISDIR(st.st_mode):
            raise self.refuse(name, f"is a hardlink to the directory '{show_name(target)}'")
        real, _ = self._place(name)
        if real == treal:
            self._mark(real)
            return
        self._remove(real)
        os.link(self.abs(treal), self.abs(real), follow_symlinks=False)
        self._mark(real)

    def _link_target(self, name: str, clean_target: str) -> tuple[str, os.stat_result] | None:
        """Real path and status of hardlink ``name``'s target, None when not in the tree."""
        tparent, _, tbase = clean_target.rpartition("/")
        treal_parent = self.resolve_dir(tparent, create=False, entry=name)
        if treal_parent is None:
            return None
        treal = _join(treal_parent, tbase)
        try:
            return treal, os.lstat(self.abs(treal))
        except FileNotFoundError:
            return None

    def _dangling_hardlink(self, name: str, target: str, clean_target: str) -> None:
        """A hardlink to what is not (yet) in the tree: refused in a flat image; in a
        layer, recorded (a link to a lower layer's file, made when flattening)."""
        if self.flat:
            raise self.refuse(
                name, f"is a hardlink to '{show_name(target)}', which is not in the image"
            )
        real, _ = self._place(name)
        self._remove(real)
        self.record.links.append({"path": real, "target": clean_target})
        self._mark(real)

    def device(self, name: str, kind: str, meta: Meta, major: int, minor: int) -> None:
        """A device node or fifo: only fifos are ever made, and only as root.

        Character and block devices are never published: containers get
        ``/dev`` from their runtime, and a device node in the published tree
        would be raw access to the publisher's own hardware for whoever can
        reach it (a block device ``0666`` is the host's disk). They are named
        in :attr:`record` (``skipped``) instead, as without root.
        """
        if name == "":
            raise self.refuse(name, "names the root directory as a device")
        del major, minor  # a device node is never made (see above)
        if kind != "fifo" or not self.privileged:
            self.record.skipped.append({"path": name, "type": kind})
            return
        real, _ = self._place(name)
        path = self.abs(real)
        self._remove(real)
        os.mkfifo(path, 0o600)  # never more than the tar says: the mode is set below
        os.lchown(path, meta.uid, meta.gid)
        lchmod(path, meta.mode & 0o7777)
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
        if real in self.written or real in self._ancestors:
            # this layer wrote it, or wrote below it: a whiteout only hides lower
            # layers, so what they left in that directory goes and this layer's
            # entries stay; the same tree as when the whiteout comes first
            # (apply_layerfs handles markers first), whatever the entry order
            if real in self._ancestors:
                self._hide_lower(real)
                if real not in self._dirs:
                    self._as_implicit(real)
            return
        self._remove(real)

    def _as_implicit(self, real: str) -> None:
        """``real`` takes the metadata of a directory this layer made implicitly."""
        path = self.abs(real)
        self.access.reset(path, 0o755)
        if self.privileged:
            os.lchown(path, os.geteuid(), os.getegid())

    def opaque(self, name: str) -> None:
        """``dir/.wh..wh..opq``: hide everything lower layers put in ``dir``."""
        parent = name.rpartition("/")[0]
        real_parent = self.resolve_dir(parent, create=False, entry=name)
        if real_parent is None:
            return
        self._hide_lower(real_parent)

    def _hide_lower(self, real_dir: str) -> None:
        self.access.open_dir(self.abs(real_dir), os.lstat(self.abs(real_dir)).st_mode)
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
        """Directory metadata last, deepest first (their mtimes survive their contents).

        The directories this layer lists get their recorded metadata; the
        ones of lower layers that were opened for us (not root) get their
        mode back. Deepest first: a parent stays searchable until its
        children are done.
        """
        self.record.implicit = {
            r
            for r in self.record.implicit
            if os.path.isdir(self.abs(r)) and not os.path.islink(self.abs(r))
        }
        todo: dict[str, Meta | int] = {self.abs(real): meta for real, meta in self._dirs.items()}
        for path, mode in self.access.take().items():
            todo.setdefault(path, mode)
        for path in sorted(todo, key=_depth, reverse=True):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            meta = todo[path]
            if isinstance(meta, int):
                lchmod(path, meta)
                continue
            self._own(path, meta)
            lchmod(path, meta.mode & 0o7777)
            self._times(path, meta, follow=False)
        self._dirs.clear()

    def sidecar(self, diff_id: str) -> dict[str, object]:
        """What the layerfs cannot say by itself (call after :meth:`finish`)."""
        return {
            "version": SIDECAR_VERSION,
            "diff_id": diff_id,
            "implicit_dirs": sorted(self.record.implicit),
            "links": self.record.links,
            "skipped": self.record.skipped,
            "dropped_xattrs": self.record.dropped_xattrs,
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

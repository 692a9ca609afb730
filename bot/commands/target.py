"""The publisher a command names, checked before anything reads or writes it.

The rule: only ``apply`` creates a publisher tree (its first run publishes
into a new directory). Every other command needs the tree to be there: a
``local:DIR`` that does not exist is a typo or a wrong mount, and an
unmounted ``cvmfs:REPO`` would read as an empty repository — planning "add
everything" or writing an empty catalog. An existing, empty directory *is*
an empty publisher.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bot.config import Config
from bot.core import layout
from bot.errors import PublisherError, UsageError
from bot.publisher import open_publisher
from bot.publisher.backend import Publisher


def publisher_of(target: str | None, config: Config) -> Publisher:
    """``--publisher`` or the ``publisher`` setting, opened (a usage error when neither)."""
    chosen = target or config.publisher
    if not chosen:
        raise UsageError("no publisher given", hint="pass --publisher local:DIR or cvmfs:REPO")
    return open_publisher(chosen)


#: what every tree wishbot or the reference converter wrote has at its top
_LAYOUT = (layout.FLAT, layout.LAYERS, layout.METADATA, ".wishbot")


def require_tree(publisher: Publisher, *, hint: str = "") -> None:
    """The publisher's tree must exist (``hint``: what to do when a ``local:`` one does not).

    A directory that holds files but none of the layout is read as an empty
    publisher, with a warning: it is more likely the wrong directory.
    """
    root = publisher.root
    if root.is_dir():
        warn_if_foreign(root)
        return
    if publisher.cvmfs_repo:
        raise PublisherError(
            f"the CernVM-FS repository {publisher.cvmfs_repo} is not mounted: "
            f"{root} is not a directory",
            hint="check the name; on the release manager, mount it with "
            f"'cvmfs_server mount {publisher.cvmfs_repo}'; WISHBOT_CVMFS_ROOT says where "
            "repositories are mounted",
        )
    what = "is not a directory" if os.path.lexists(root) else "does not exist"
    raise UsageError(f"the publisher tree {root} {what}", hint=hint)


def warn_if_foreign(root: Path) -> None:
    """Warn when ``root`` holds something, but no published layout."""
    try:
        entries = {entry.name for entry in os.scandir(root)}
    except OSError:
        return
    if entries and not entries.intersection(_LAYOUT):
        print(
            f"wishbot: warning: {root} holds no published images (no .flat, .layers or "
            ".metadata): reading it as an empty publisher; is it the right directory?",
            file=sys.stderr,
        )


def require_mount(path: Path) -> None:
    """A read-only tree named by its path (``/cvmfs/REPO``) must be a directory."""
    if not path.is_dir():
        raise UsageError(
            f"{path} is not a directory",
            hint="name a mounted repository such as /cvmfs/unpacked.cern.ch, "
            "or local:DIR / cvmfs:REPO",
        )
    warn_if_foreign(path)


def require_writable(publisher: Publisher) -> None:
    """We must be able to write the tree (or create it): a clear error naming the path.

    A ``cvmfs:REPO`` tree is written through ``cvmfs_server``, which says itself.
    """
    if publisher.cvmfs_repo:
        return
    path = _unwritable(publisher)
    if path is None:
        return
    if path.is_dir() and os.statvfs(path).f_flag & os.ST_RDONLY:
        raise PublisherError(
            f"cannot write to the publisher tree: {path} is on a read-only file system "
            "(Read-only file system)",
            hint="remount it read-write, or name the writable tree (for CernVM-FS: cvmfs:REPO)",
        )
    raise PublisherError(
        f"cannot write to the publisher tree: {path} is not writable by this user"
        if path.is_dir()
        else f"cannot create the publisher tree {publisher.root}: {path} is not a directory",
        hint="run wishbot as the tree's owner (on a release manager: the repository owner), "
        "or fix the permissions",
    )


def _unwritable(publisher: Publisher) -> Path | None:
    """The tree's nearest existing ancestor, or its state directory, when this user
    cannot write it (None: both are writable)."""
    path = publisher.root
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    if path.is_dir() and os.access(path, os.W_OK | os.X_OK):
        state = publisher.lock_path.parent
        if not state.is_dir() or os.access(state, os.W_OK | os.X_OK):
            return None
        path = state
    return path

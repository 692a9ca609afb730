"""The publisher interface: where images are written, in transactions, under a lock.

A :class:`Publisher` has a read path (:attr:`Publisher.root`) and hands out
*transactions*: a writable view of the same tree that is published whole when
the ``with`` block ends normally and discarded when it raises. Inside a
transaction new content is written into the view, existing content is read
from :attr:`root` (for the CernVM-FS backend both are the same directory),
and :meth:`Publisher.remove` deletes a path.

Backends: ``local:DIR`` (:mod:`bot.publisher.local`) and ``cvmfs:REPO``
(:mod:`bot.publisher.cvmfs`); :func:`open_publisher` picks one by prefix.
"""

from __future__ import annotations

import errno
import fcntl
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from bot.errors import LockedError, PublisherError, UsageError


class Publisher(ABC):
    """A target tree in the unpacked layout."""

    #: how the target was named (``local:/srv/tree``, ``cvmfs:unpacked.cern.ch``)
    target: str
    #: the CernVM-FS repository name, when the backend knows it
    cvmfs_repo: str | None = None
    #: layers are published on their own before their image's transaction
    #: (:meth:`publish_layer`) instead of being written into it
    separate_layers: bool = False
    #: a flat image may start as a catalog-level copy of a published layer
    #: (:meth:`clone_transaction`); off, every flat tree is written whole
    catalog_clones: bool = False

    def __init__(self) -> None:
        self.transactions_opened = 0

    @property
    @abstractmethod
    def root(self) -> Path:
        """The published tree (read path)."""

    @property
    @abstractmethod
    def lock_path(self) -> Path:
        """The file :meth:`lock` holds an exclusive ``flock`` on."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Path]:
        """A writable view of the tree: published on success, aborted on exception."""

    def clone_transaction(self, source: str, dest: str) -> AbstractContextManager[Path]:
        """A transaction in which ``dest`` may start as a copy of the published
        directory ``source`` (a cheap catalog-level copy where the backend has
        one). The default copies nothing: the caller checks whether ``dest``
        exists in the view and builds it otherwise."""
        return self.transaction()

    def publish_layers(self, layers: list[tuple[str, Path]], dirs: list[str]) -> None:
        """Publish each staged layer directory ``(relpath, local dir)`` in a step of
        its own, entries as they are (whiteout files included), and create the
        empty directories ``dirs``. Only for backends with :attr:`separate_layers`."""
        raise PublisherError(f"{self.target} publishes layers inside the image's transaction")

    @abstractmethod
    def remove(self, view: Path, relpath: str) -> None:
        """Delete ``relpath`` (file, symlink or directory) as part of the open transaction."""

    @abstractmethod
    def recover(self) -> list[str]:
        """Finish or abort a transaction a crashed run left open; say what was done."""

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the publisher exclusively; :class:`LockedError` names the holder."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise PublisherError(f"cannot lock {self.lock_path}: {exc.strerror}") from exc
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                raise LockedError(
                    f"publisher {self.target} is in use by another wishbot run (pid {holder})",
                    hint=f"wait for it to finish; the lock is {self.lock_path}",
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def open_publisher(target: str) -> Publisher:
    """``local:DIR`` or ``cvmfs:REPO`` -> a publisher backend."""
    kind, sep, rest = target.partition(":")
    if not sep or not rest:
        raise UsageError(
            f"publisher '{target}' is not valid",
            hint="write local:DIR (a plain directory) or cvmfs:REPO (a CernVM-FS repository)",
        )
    if kind == "local":
        from bot.publisher.local import LocalPublisher

        return LocalPublisher(Path(rest))
    if kind == "cvmfs":
        from bot.publisher.cvmfs import CvmfsPublisher

        return CvmfsPublisher(rest)
    raise UsageError(
        f"publisher kind '{kind}' is unknown (in '{target}')",
        hint="write local:DIR or cvmfs:REPO",
    )

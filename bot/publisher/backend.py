"""The publisher interface: where images are written, in transactions, under a lock.

A :class:`Publisher` has a read path (:attr:`Publisher.root`) and hands out
:class:`Transaction` objects: the tree as this transaction sees it, published
whole when the ``with`` block ends normally and discarded when it raises.
Callers read through :meth:`Transaction.resolve` (the copy this transaction
wrote, else the published one) and write through the transaction's
operations (:meth:`~Transaction.write_json`, :meth:`~Transaction.symlink`,
:meth:`~Transaction.remove` …), so they never care whether the backend writes
into the live tree (``cvmfs:``) or into a staging directory (``local:``).

A backend may publish only part of the tree: it says so with its
:attr:`Publisher.scope`. A transaction may narrow that further
(``transaction(scope=...)``: what one image's transaction touches, the
subpaths a gateway backend leases for it); a write outside the transaction's
scope raises at once instead of being lost.

Backends implement :meth:`Publisher._open` (the directory a transaction
writes into) and :meth:`Publisher._remove`. They are ``local:DIR``
(:mod:`bot.publisher.local`) and ``cvmfs:REPO`` (:mod:`bot.publisher.cvmfs`);
:func:`bot.publisher.open_publisher` picks one by prefix.
"""

from __future__ import annotations

import errno
import fcntl
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bot.errors import LockedError, PublisherError
from bot.publisher.metadata import write_json


@dataclass(frozen=True)
class Scope:
    """The subpaths a publisher may write (``None``: the whole tree)."""

    prefixes: tuple[str, ...] | None = None

    def covers(self, relpath: str) -> bool:
        if self.prefixes is None:
            return True
        return any(relpath == p or relpath.startswith(p.rstrip("/") + "/") for p in self.prefixes)

    def contains(self, other: Scope) -> bool:
        """Is every path ``other`` covers covered here too?"""
        if other.prefixes is None:
            return self.prefixes is None
        return all(self.covers(p) for p in other.prefixes)

    def describe(self) -> str:
        return "the whole tree" if self.prefixes is None else ", ".join(self.prefixes) or "nothing"


EVERYTHING = Scope()


class _Unchanged(Exception):
    """Raised out of a transaction that wrote nothing, to abort it quietly."""


def check_relpath(relpath: str) -> str:
    """A path inside the tree, as the transaction operations take it."""
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise PublisherError(f"'{relpath}' is not a path inside the publisher's tree")
    return relpath


class TreeReader:
    """Read-your-writes over a stack of trees: the first that holds a path wins,
    else the published tree ``root``."""

    def __init__(self, root: Path, staged: Iterable[Path | None] = ()) -> None:
        self.root = root
        self.staged = [s for s in staged if s is not None]

    def resolve(self, relpath: str) -> Path:
        """Where to read ``relpath``: a staged copy if one was written, else the published one."""
        for base in self.staged:
            candidate = base / relpath
            if os.path.lexists(candidate):
                return candidate
        return self.root / relpath

    def exists(self, relpath: str) -> bool:
        """Is ``relpath`` there (staged or published; a dangling symlink counts)?"""
        return os.path.lexists(self.resolve(relpath))

    def is_dir(self, relpath: str) -> bool:
        path = self.resolve(relpath)
        return path.is_dir() and not path.is_symlink()


class Transaction(TreeReader):
    """One open transaction of a :class:`Publisher`: read it, write into it.

    ``txn / relpath`` (or :meth:`path`) is the writable location of
    ``relpath``, for writers of whole trees (unpacking a layer, building a flat
    image); every write is checked against the publisher's scope.
    """

    def __init__(
        self,
        publisher: Publisher,
        view: Path,
        also: Iterable[Path | None] = (),
        *,
        scope: Scope | None = None,
    ) -> None:
        super().__init__(publisher.root, [*also, view])
        self.publisher = publisher
        #: the directory this transaction writes into (the live root for cvmfs:)
        self.view = view
        #: the subpaths this transaction may write (default: the publisher's scope)
        self.scope = scope or publisher.scope
        #: something was asked for writing (:meth:`path`): a transaction that
        #: wrote nothing need not be published
        self.touched = False

    def read_first(self, staged: Path | None) -> None:
        """Read from ``staged`` (content staged for this image outside the
        transaction, e.g. layers published on their own) before anything else."""
        if staged is not None:
            self.staged.insert(0, staged)

    def path(self, relpath: str) -> Path:
        """The writable location of ``relpath``; outside the scope: :class:`PublisherError`."""
        check_relpath(relpath)
        self.touched = True
        if not self.scope.covers(relpath):
            raise PublisherError(
                f"{self.publisher.target} may not write {relpath}: "
                f"its transactions cover {self.scope.describe()}",
                hint="this publisher publishes only part of the repository; "
                "write that path with a publisher whose scope covers it",
            )
        return self.view / relpath

    def __truediv__(self, relpath: str) -> Path:
        return self.path(relpath)

    def mkdir(self, relpath: str) -> Path:
        target = self.path(relpath)
        target.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, relpath: str, data: object) -> None:
        write_json(self.path(relpath), data)

    def write_bytes(self, relpath: str, data: bytes) -> None:
        target = self.path(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def symlink(self, relpath: str, target: str) -> None:
        """Create or re-point the symlink ``relpath`` (renamed over the old one: atomic)."""
        staged = self.path(relpath)
        staged.parent.mkdir(parents=True, exist_ok=True)
        tmp = staged.with_name(f".{staged.name}.tmp-{os.getpid()}")
        if os.path.lexists(tmp):
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, staged)

    def remove(self, relpath: str) -> None:
        """Delete ``relpath`` (file, symlink or directory) with this transaction."""
        self.path(relpath)
        self.publisher._remove(self.view, relpath)


class Publisher(ABC):
    """A target tree in the unpacked layout."""

    #: how the target was named (``local:/srv/tree``, ``cvmfs:unpacked.cern.ch``)
    target: str
    #: the CernVM-FS repository name, when the backend knows it
    cvmfs_repo: str | None = None
    #: layers are published on their own before their image's transaction
    #: (:meth:`publish_layers`) instead of being written into it
    separate_layers: bool = False
    #: a flat image may start as a catalog-level copy of a published layer
    #: (:meth:`clone_transaction`); off, every flat tree is written whole
    catalog_clones: bool = False
    #: the subpaths this publisher's transactions may write
    scope: Scope = EVERYTHING
    #: transactions are leases on subpaths of a repository that other publishers
    #: write at the same time (a CernVM-FS gateway): an image goes in several
    #: small transactions, each on exactly what it writes, the public path last
    leased: bool = False
    #: a transaction that wrote nothing is published all the same (off: aborted)
    publish_unchanged: bool = True

    def __init__(self) -> None:
        self.transactions_opened = 0
        #: publisher hosts executing this run's plan at once (:meth:`share_with`)
        self.hosts = 1

    def share_with(self, hosts: int) -> None:
        """Told how many publisher hosts execute this run's plan at once
        (``apply --shard I/N``: N; else 1). A backend whose transactions can
        be narrower when others publish too chooses here (see
        :class:`~bot.publisher.gateway.GatewayPublisher`); the others only note it."""
        self.hosts = hosts

    @property
    @abstractmethod
    def root(self) -> Path:
        """The published tree (read path)."""

    @property
    @abstractmethod
    def lock_path(self) -> Path:
        """The file :meth:`lock` holds an exclusive ``flock`` on."""

    @abstractmethod
    def _open(self, clone: tuple[str, str] | None, scope: Scope) -> AbstractContextManager[Path]:
        """The backend's transaction: the directory it writes into; published when
        the block ends normally, aborted when it raises. ``clone`` is
        ``(source, dest)`` for :meth:`clone_transaction` (may be ignored);
        ``scope`` what the transaction may write (a backend that publishes the
        whole tree may ignore it; a gateway backend leases those subpaths)."""

    @abstractmethod
    def _remove(self, view: Path, relpath: str) -> None:
        """Delete ``relpath`` as part of the transaction writing into ``view``."""

    @contextmanager
    def transaction(self, scope: Scope | None = None) -> Iterator[Transaction]:
        """A :class:`Transaction`: published on success, aborted on exception;
        writing only within ``scope`` (default: the publisher's)."""
        scope = self._narrowed(scope)
        with suppress(_Unchanged), self._open(None, scope) as view:
            txn = Transaction(self, view, scope=scope)
            yield txn
            self._check_changed(txn)

    @contextmanager
    def clone_transaction(
        self, source: str, dest: str, scope: Scope | None = None
    ) -> Iterator[Transaction]:
        """A transaction in which ``dest`` may start as a copy of the published
        directory ``source`` (a cheap catalog-level copy where the backend has
        one). Where it has none, nothing is copied: the caller checks whether
        ``dest`` exists in the transaction and builds it otherwise."""
        scope = self._narrowed(scope)
        if not scope.covers(check_relpath(dest)):
            raise PublisherError(f"{self.target} may not write {dest}: outside its scope")
        with suppress(_Unchanged), self._open((source, dest), scope) as view:
            txn = Transaction(self, view, scope=scope)
            txn.touched = True  # the copy is a change of its own
            yield txn
            self._check_changed(txn)

    def _check_changed(self, txn: Transaction) -> None:
        """Abort (quietly: the raise is suppressed around the backend's
        transaction) a transaction that wrote nothing, on a backend that does
        not publish those."""
        if not txn.touched and not self.publish_unchanged:
            raise _Unchanged

    def _narrowed(self, scope: Scope | None) -> Scope:
        """A transaction's scope: within the publisher's, or an error."""
        if scope is None:
            return self.scope
        for prefix in scope.prefixes or ():
            check_relpath(prefix)
        if not self.scope.contains(scope):
            raise PublisherError(
                f"{self.target} cannot open a transaction on {scope.describe()}: "
                f"it publishes {self.scope.describe()}"
            )
        return scope

    def publish_layers(self, layers: list[tuple[str, Path]], dirs: list[str]) -> None:
        """Publish each staged layer directory ``(relpath, local dir)`` in a step of
        its own, entries as they are (whiteout files included), and create the
        empty directories ``dirs``. Only for backends with :attr:`separate_layers`."""
        raise PublisherError(f"{self.target} publishes layers inside the image's transaction")

    def remove(self, txn: Transaction, relpath: str) -> None:
        """Delete ``relpath`` as part of the open transaction ``txn``."""
        txn.remove(relpath)

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

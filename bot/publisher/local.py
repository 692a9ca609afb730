"""The layout in a plain directory, with crash-safe transactions.

A transaction writes into a staging directory inside the target
(``.wishbot/txn-*``, same file system, so renames are atomic). Commit:

1. check the staged tree against the published one (a symlink never
   replaces a non-symlink, a file never replaces a directory);
2. write the journal ``.wishbot/journal.json`` (fsynced, renamed into place):
   from here on the transaction *will* be published;
3. deletions: each path is renamed into ``.wishbot/trash-*`` (atomic) and
   then removed;
4. merge the staging tree into the target by renames, internal trees first
   (``.layers``, ``.flat``, ``.metadata``, ``.multiarch``) and the public
   symlinks last: a new directory moves in whole with one rename, an existing
   one is merged entry by entry, a symlink is re-pointed by renaming the
   staged symlink over the old one;
5. remove the journal, then the (now empty) staging directory.

Directories are removed with :func:`~bot.publisher.safetree.force_rmtree`:
images carry directories such as ``0555`` that the repository owner (not
root) could not empty otherwise.

Every step is idempotent, so :meth:`LocalPublisher.recover` rolls a journaled
transaction forward and deletes staging directories without a journal (roll
back). A crash at any instant therefore leaves only complete images visible.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.errors import PublisherError
from bot.publisher import hooks
from bot.publisher.backend import Publisher, Scope
from bot.publisher.metadata import read_json_strict, write_json
from bot.publisher.safetree import force_rmtree

STATE_DIR = ".wishbot"
JOURNAL = "journal.json"
#: merge order: content first, then metadata, then per-arch links; public tree last
INTERNAL_ORDER = (".layers", ".flat", ".metadata", ".multiarch")


class LocalPublisher(Publisher):
    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.target = f"local:{directory}"
        self._root = directory.absolute()
        self._deletes: list[str] = []

    @property
    def root(self) -> Path:
        return self._root

    @property
    def state_dir(self) -> Path:
        return self._root / STATE_DIR

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "lock"

    @property
    def journal_path(self) -> Path:
        return self.state_dir / JOURNAL

    # --- transactions ----------------------------------------------------

    @contextmanager
    def _open(self, clone: tuple[str, str] | None, scope: Scope) -> Iterator[Path]:
        # no catalog-level copies here: a clone transaction starts empty; the
        # scope is checked by the Transaction (one staging tree whatever it is)
        self._root.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(exist_ok=True)
        staging = self.state_dir / f"txn-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        self.transactions_opened += 1
        self._deletes = []
        try:
            yield staging
            self._check(staging, self._root)
        except BaseException:
            force_rmtree(staging, ignore_errors=True)
            self._deletes = []
            raise
        hooks.crash_point("commit")
        try:
            write_json(self.journal_path, {"staging": staging.name, "deletes": self._deletes})
        except BaseException:  # not journaled: not published (a full disk, a read-only tree)
            force_rmtree(staging, ignore_errors=True)
            self._deletes = []
            raise
        hooks.crash_point("journal")
        self._roll_forward(staging.name, self._deletes)
        self._deletes = []

    def _remove(self, view: Path, relpath: str) -> None:
        staged = view / relpath
        if staged.is_symlink() or staged.is_file():
            staged.unlink()
        elif staged.is_dir():
            force_rmtree(staged)
        self._deletes.append(relpath)

    def recover(self) -> list[str]:
        if not self.state_dir.is_dir():
            return []
        journal = read_json_strict(self.journal_path, "transaction journal")
        return self._finish_journaled(journal) + self._discard_leftovers()

    def _finish_journaled(self, journal: object) -> list[str]:
        """Roll the journaled transaction forward; refuse a damaged journal."""
        if isinstance(journal, dict) and isinstance(journal.get("staging"), str):
            deletes = [d for d in journal.get("deletes") or [] if isinstance(d, str)]
            self._roll_forward(journal["staging"], deletes)
            return [f"completed the interrupted transaction {journal['staging']}"]
        if journal is not None:
            # a journal is only ever renamed into place whole: one that does not
            # name its staging tree was damaged; rolling back could leave a
            # half-merged transaction visible, so stop and say so
            raise PublisherError(
                f"the transaction journal {self.journal_path} is damaged",
                hint="a commit was interrupted: finish it by hand from the txn-* directory "
                "it belongs to, or restore the tree from a backup, then remove the journal",
            )
        return []

    def _discard_leftovers(self) -> list[str]:
        """Remove staging trees, trash and temporary files an interrupted run left."""
        done: list[str] = []
        for entry in sorted(self.state_dir.iterdir()):
            if entry.name.startswith(("txn-", "trash-")) or ".tmp-" in entry.name:
                if entry.is_dir() and not entry.is_symlink():
                    force_rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                done.append(f"discarded {entry.name}")
        return done

    # --- commit machinery ---------------------------------------------------

    def _check(self, src: Path, dst: Path) -> None:
        """Refuse a commit that would replace a real file or directory wrongly."""
        for entry in os.scandir(src):
            target = dst / entry.name
            if os.path.lexists(target):
                self._check_entry(entry, target)

    def _check_entry(self, entry: os.DirEntry[str], target: Path) -> None:
        """Refuse replacing the existing ``target`` with the staged ``entry`` wrongly."""
        staged_dir = entry.is_dir(follow_symlinks=False)
        existing_link = target.is_symlink()
        existing_dir = target.is_dir() and not existing_link
        if staged_dir and existing_dir:
            self._check(Path(entry.path), target)
        elif entry.is_symlink() and not existing_link:
            raise PublisherError(
                f"{self._relative(target)} exists and is not a symlink; "
                "refusing to replace it with one",
                hint="move it away by hand if it should be published here",
            )
        elif staged_dir != existing_dir:
            raise PublisherError(
                f"{self._relative(target)}: cannot replace a "
                f"{'directory' if existing_dir else 'file'} with a "
                f"{'directory' if staged_dir else 'file'}"
            )

    def _relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self._root))
        except ValueError:
            return str(path)

    def _roll_forward(self, staging_name: str, deletes: list[str]) -> None:
        staging = self.state_dir / staging_name
        for relpath in deletes:
            self._delete(relpath)
            hooks.crash_point("delete")
        if staging.is_dir():
            for name in _merge_order({entry.name for entry in os.scandir(staging)}):
                self._merge(staging / name, self._root / name)
        self.journal_path.unlink(missing_ok=True)
        force_rmtree(staging, ignore_errors=True)

    def _delete(self, relpath: str) -> None:
        path = self._root / relpath
        if not os.path.lexists(path):
            return
        if path.is_dir() and not path.is_symlink():
            trash = self.state_dir / f"trash-{uuid.uuid4().hex[:12]}"
            os.rename(path, trash)
            force_rmtree(trash, ignore_errors=True)
        else:
            path.unlink()

    def _merge(self, src: Path, dst: Path) -> None:
        if not os.path.lexists(src):
            return
        src_is_dir = src.is_dir() and not src.is_symlink()
        if src_is_dir and dst.is_dir() and not dst.is_symlink():
            for entry in sorted(os.scandir(src), key=lambda e: (e.is_symlink(), e.name)):
                self._merge(Path(entry.path), dst / entry.name)
            src.rmdir()
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        hooks.crash_point("rename")
        os.replace(src, dst)


def _merge_order(names: set[str]) -> list[str]:
    """The order a staging tree's top-level names are merged in: the internal
    ones first (in INTERNAL_ORDER), then other dot names, then the rest."""
    order = [n for n in INTERNAL_ORDER if n in names]
    order += sorted(n for n in names if n.startswith(".") and n not in order)
    order += sorted(n for n in names if not n.startswith("."))
    return order

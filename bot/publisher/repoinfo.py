"""Which CernVM-FS repository a publisher tree is: ``.metadata/repository.json``.

A ``cvmfs:REPO`` publisher knows its name; a plain directory does not, yet
thin images and the catalog need it. ``apply`` records it in the tree, in
the first transaction that publishes an image (never in one of its own)::

    {"version": 1, "cvmfs_repo": "unpacked.cern.ch"}

The reference converter writes no such file; a tree without it simply has
no recorded name (``catalog --cvmfs-repo`` then says it). A wishlist, a
catalog or a command line naming another repository than the tree is an
error, never an empty or "no changes" plan.
"""

from __future__ import annotations

from pathlib import Path

from bot.core import layout
from bot.errors import UsageError
from bot.publisher.backend import Publisher, Transaction
from bot.publisher.metadata import read_json

REPOSITORY_INFO = f"{layout.METADATA}/repository.json"


def recorded_repository(root: Path) -> str | None:
    """The repository name recorded in the tree at ``root``, if any."""
    data = read_json(root / REPOSITORY_INFO)
    name = data.get("cvmfs_repo") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def record_repository(txn: Transaction, cvmfs_repo: str) -> None:
    """Write the record of ``cvmfs_repo`` in the transaction unless the tree has it."""
    if recorded_repository(txn.root) != cvmfs_repo:
        txn.write_json(REPOSITORY_INFO, {"version": 1, "cvmfs_repo": cvmfs_repo})


def tree_repository(publisher: Publisher) -> str | None:
    """The repository a publisher is: its backend's name, else the tree's record."""
    return publisher.cvmfs_repo or recorded_repository(publisher.root)


def check_repository(wanted: str, have: str | None, what: str, *, where: str) -> None:
    """A :class:`UsageError` naming both when ``have`` (what ``what`` is) is not ``wanted``."""
    if have and have != wanted.split("/")[0]:
        raise UsageError(
            f"the wishlist is for {wanted}, but {what} is {have}",
            where=where,
            hint="check cvmfs_repo in the wishlist, and the publisher or catalog you named",
        )

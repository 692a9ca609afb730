"""Scratch directories for downloaded layer blobs that a killed run cannot leak.

``apply`` downloads each new layer blob into ``$TMPDIR/wishbot-blobs-*`` and
removes it when the image is done. A run killed with SIGKILL (or by the OOM
killer) never gets to remove it, so every directory holds an exclusive
``flock`` on its ``.lock`` file for as long as it is in use; the kernel drops
that lock when the process dies, however it dies. Every ``apply`` (in its
recovery step) and :func:`blob_dir` remove the stale ones (:func:`clean_stale`): only directories named like ours, owned by us, that
are not symlinks, whose lock is free and that are older than a minute (a
directory created a moment ago may not have its lock file yet).
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.publisher.safetree import force_rmtree

PREFIX = "wishbot-blobs-"
LOCK = ".lock"
MIN_AGE = 60.0  # seconds: younger directories may still be being set up


@contextmanager
def blob_dir(parent: Path | None = None) -> Iterator[Path]:
    """A fresh scratch directory, locked while in use and removed afterwards."""
    base = parent or Path(tempfile.gettempdir())
    clean_stale(base)
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            os.close(fd)
    finally:
        force_rmtree(path, ignore_errors=True)  # a layer unpacked here may hold 0555 dirs


def clean_stale(base: Path, *, now: float | None = None) -> list[str]:
    """Remove the scratch directories of dead runs in ``base``; their names."""
    moment = time.time() if now is None else now
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(base) if n.startswith(PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = base / name
        if _stale(path, moment):
            force_rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def _stale(path: Path, now: float) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or now - st.st_mtime < MIN_AGE:
        return False
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return True  # never got its lock file: its run died at once
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # in use by a live run (EWOULDBLOCK)
    finally:
        os.close(fd)
    return True

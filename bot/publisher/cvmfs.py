"""A CernVM-FS repository on its release manager, driven by ``cvmfs_server``.

``cvmfs_server transaction REPO`` makes ``<cvmfs root>/REPO`` writable,
``publish`` commits, ``abort -f`` discards; one transaction at a time. The
CernVM-FS root is ``/cvmfs`` unless ``WISHBOT_CVMFS_ROOT`` says otherwise.
SIGINT and SIGTERM during a transaction abort it. The lock file lives
outside the repository, in ``WISHBOT_LOCK_DIR`` (default: the temporary
directory).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from bot.errors import PublisherError, UsageError
from bot.publisher.backend import Publisher
from bot.publisher.safetree import force_rmtree

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CvmfsPublisher(Publisher):
    def __init__(self, repo: str, *, cvmfs_root: Path | None = None) -> None:
        super().__init__()
        if not _REPO_RE.match(repo):
            raise UsageError(
                f"'{repo}' is not a CernVM-FS repository name", hint="e.g. cvmfs:unpacked.cern.ch"
            )
        self.target = f"cvmfs:{repo}"
        self.cvmfs_repo = repo
        base = cvmfs_root or Path(os.environ.get("WISHBOT_CVMFS_ROOT", "/cvmfs"))
        self._root = base / repo
        lock_dir = Path(os.environ.get("WISHBOT_LOCK_DIR") or tempfile.gettempdir())
        self._lock_path = lock_dir / f"wishbot-{repo}.lock"
        #: exists while a transaction wishbot opened is open (survives a SIGKILL)
        self.marker_path = lock_dir / f"wishbot-{repo}.transaction"

    @property
    def root(self) -> Path:
        return self._root

    @property
    def lock_path(self) -> Path:
        return self._lock_path

    def _run(self, *args: str) -> str:
        command = ["cvmfs_server", *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise PublisherError(
                "cvmfs_server is not installed here",
                hint="run wishbot on the repository's release manager (stratum 0)",
            ) from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise PublisherError(
                f"'{' '.join(command)}' failed (exit {done.returncode})"
                + (f": {detail[-1]}" if detail else "")
            )
        return done.stdout

    def in_transaction(self) -> bool:
        """Does ``cvmfs_server list`` show this repository in a transaction?"""
        for line in self._run("list").splitlines():
            words = line.split()
            if words and words[0] == self.cvmfs_repo and "transaction" in line:
                return True
        return False

    @contextmanager
    def transaction(self) -> Iterator[Path]:
        assert self.cvmfs_repo is not None
        self._run("transaction", self.cvmfs_repo)
        self.transactions_opened += 1
        self.marker_path.parent.mkdir(parents=True, exist_ok=True)
        self.marker_path.write_text(f"{os.getpid()}\n")
        restore = _abort_on_signals()
        try:
            yield self._root
        except BaseException:
            self._run("abort", "-f", self.cvmfs_repo)
            self.marker_path.unlink(missing_ok=True)
            raise
        finally:
            restore()
        self._run("publish", self.cvmfs_repo)
        self.marker_path.unlink(missing_ok=True)

    def remove(self, view: Path, relpath: str) -> None:
        path = view / relpath
        if path.is_dir() and not path.is_symlink():
            force_rmtree(path)
        elif os.path.lexists(path):
            path.unlink()

    def recover(self) -> list[str]:
        """Abort the transaction a crashed wishbot run left open.

        Fail closed: a transaction wishbot did not open (an operator's) is not
        aborted; it is an error until someone publishes or aborts it.
        """
        assert self.cvmfs_repo is not None
        if not self.in_transaction():
            self.marker_path.unlink(missing_ok=True)
            return []
        if not self.marker_path.exists():
            raise PublisherError(
                f"{self.cvmfs_repo} is in a transaction that wishbot did not open",
                hint=f"publish or abort it (cvmfs_server abort -f {self.cvmfs_repo}), then rerun",
            )
        self._run("abort", "-f", self.cvmfs_repo)
        self.marker_path.unlink(missing_ok=True)
        return [f"aborted the transaction a crashed run left open on {self.cvmfs_repo}"]


def _abort_on_signals() -> Callable[[], None]:
    """Turn SIGTERM into KeyboardInterrupt (SIGINT already is) while a transaction
    is open, so the ``with`` block unwinds and aborts it. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore

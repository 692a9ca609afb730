"""A CernVM-FS repository on its release manager, driven by ``cvmfs_server``.

``cvmfs_server transaction REPO`` makes ``<cvmfs root>/REPO`` writable,
``publish`` commits, ``abort -f`` discards; one transaction at a time. The
CernVM-FS root is ``/cvmfs`` unless ``WISHBOT_CVMFS_ROOT`` says otherwise.
SIGINT and SIGTERM during a transaction abort it. The lock file lives
outside the repository, in ``WISHBOT_LOCK_DIR`` (default: the temporary
directory).

What a real release manager does (``../shared/reference/cvmfs-server.md``)
and how this backend copes:

- a ``publish`` of the overlay treats files named ``.wh.*`` as deletion
  markers and drops them, so layers (whose whiteouts must survive) are
  never written into a transaction: each goes in with ``cvmfs_server ingest``
  from a tar stream of its verified, unpacked tree (:meth:`publish_layer`);
- a flat image built on a published layer starts as a catalog-level copy
  of it (``transaction -T /SRC=/DST``, :meth:`clone_transaction`): no file
  content is published again;
- every call runs from ``/`` with no input and a time limit
  (``WISHBOT_CVMFS_TIMEOUT`` seconds, default 1800); a publish that fails
  aborts its transaction, so the next image can still go.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import IO

from bot.core import layout
from bot.errors import PublisherError, UsageError
from bot.publisher.backend import Publisher, Scope
from bot.publisher.safetree import force_rmtree

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: exit codes of ``cvmfs_server`` (reference page, exit-code table)
EXIT_TRANSACTION_OPEN = 17
EXIT_NO_TRANSACTION = 22
DEFAULT_TIMEOUT = 1800.0
LIST_ATTEMPTS = 4


class CvmfsPublisher(Publisher):
    separate_layers = True
    catalog_clones = True

    def __init__(self, repo: str, *, cvmfs_root: Path | None = None) -> None:
        super().__init__()
        if not _REPO_RE.match(repo):
            raise UsageError(
                f"'{repo}' is not a CernVM-FS repository name", hint="e.g. cvmfs:unpacked.cern.ch"
            )
        self.target = f"cvmfs:{repo}"
        self.cvmfs_repo = repo
        self.repo = repo
        base = cvmfs_root or Path(os.environ.get("WISHBOT_CVMFS_ROOT", "/cvmfs"))
        self._root = base / repo
        lock_dir = Path(os.environ.get("WISHBOT_LOCK_DIR") or tempfile.gettempdir())
        self._lock_path = lock_dir / f"wishbot-{repo}.lock"
        #: exists while a transaction wishbot opened is open (survives a SIGKILL)
        self.marker_path = lock_dir / f"wishbot-{repo}.transaction"
        self.timeout = _timeout()
        #: ``cvmfs_server`` calls made (publishes, ingests …), for reports and benchmarks
        self.publishes = 0
        #: directories to delete with ``ingest -d`` once the transaction is published
        self._doomed: list[str] = []

    @property
    def root(self) -> Path:
        return self._root

    @property
    def lock_path(self) -> Path:
        return self._lock_path

    # --- running cvmfs_server ------------------------------------------------

    def _call(self, *args: str, feed: Callable[[IO[bytes]], None] | None = None) -> tuple[int, str]:
        """Run ``cvmfs_server ARGS`` from ``/`` with a time limit: (exit code, output).

        ``feed`` writes its standard input (else it gets none). On timeout the
        whole process group is killed (``cvmfs_server`` is a shell script with
        children).
        """
        command = ["cvmfs_server", *args]
        try:
            proc = subprocess.Popen(
                command,
                cwd="/",
                stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise PublisherError(
                "cvmfs_server is not installed here",
                hint="run wishbot on the repository's release manager (stratum 0)",
            ) from None
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(self.timeout, kill)
        timer.start()
        try:
            output = _communicate(proc, feed)
        finally:
            timer.cancel()
        if expired.is_set():
            if args[0] in ("transaction", "publish", "ingest"):
                # it may have left its transaction open: discard it (time-limited too)
                with suppress(PublisherError):
                    self._abort()
            raise PublisherError(
                f"'{' '.join(command)}' took longer than {self.timeout:g} s and was stopped",
                hint="see the repository's state with 'cvmfs_server list'; "
                "raise WISHBOT_CVMFS_TIMEOUT for very large images",
            )
        return proc.returncode, output

    def _run(self, *args: str, feed: Callable[[IO[bytes]], None] | None = None) -> str:
        code, output = self._call(*args, feed=feed)
        if code != 0:
            raise PublisherError(_failure(args, code, output))
        return output

    def _listing(self) -> str:
        """``cvmfs_server list``. It reads every repository's configuration: one
        being created or removed meanwhile makes it fail, so a failure is
        retried a few times."""
        for attempt in range(LIST_ATTEMPTS):
            code, output = self._call("list")
            if code == 0:
                break
            if attempt == LIST_ATTEMPTS - 1:
                raise PublisherError(_failure(("list",), code, output))
            time.sleep(0.5 * (attempt + 1))
        return output

    def _listed(self) -> str:
        """This repository's line of ``cvmfs_server list`` ("" when it has none)."""
        for line in self._listing().splitlines():
            words = line.split()
            if words and words[0] == self.repo:
                return line
        return ""

    def in_transaction(self) -> bool:
        """Does ``cvmfs_server list`` show this repository in a transaction?"""
        return "transaction" in self._listed()

    def through_gateway(self) -> bool:
        """Does this release manager publish through a repository gateway
        (``cvmfs_server list``: ``stratum0 / gw``)? False when it cannot tell."""
        try:
            return "/ gw" in self._listed()
        except PublisherError:
            return False

    # --- transactions ------------------------------------------------------

    def _open(self, clone: tuple[str, str] | None, scope: Scope) -> AbstractContextManager[Path]:
        """The live tree, in a ``cvmfs_server transaction``; a clone transaction
        starts with ``source`` copied to ``dest`` at catalog level
        (``transaction -T``): nothing of the content is stored again. The
        whole repository is in the transaction; the :class:`Transaction`
        refuses writes outside ``scope``."""
        if clone is None:
            return self._transaction()
        source, dest = clone
        return self._transaction("-T", f"/{source}=/{dest}")

    def _check_cwd(self) -> None:
        """A process whose current directory is in the repository makes publish
        refuse (reference page): say so before anything is opened."""
        here = os.path.realpath(os.getcwd())
        root = os.path.realpath(self._root)
        if here == root or here.startswith(root + os.sep):
            raise PublisherError(
                f"the current directory {here} is inside {self._root}: "
                "cvmfs_server refuses to publish while a process is there",
                hint="run wishbot from another directory (e.g. cd /)",
            )

    @contextmanager
    def _transaction(self, *options: str, lease: str = "") -> Iterator[Path]:
        self._check_cwd()
        self._mark_open()
        code, output = self._begin(options, lease)
        if code != 0:
            self.marker_path.unlink(missing_ok=True)
            raise self._not_opened(code, output, options, lease)
        self.transactions_opened += 1
        restore = _abort_on_signals()
        try:
            yield self._root
            self._before_publish(lease)
        except BaseException as exc:
            self._doomed = []
            self._abort_after(str(exc) or type(exc).__name__)
            raise
        finally:
            restore()
        self._publish()
        self._delete_doomed()

    def _begin(self, options: tuple[str, ...], lease: str) -> tuple[int, str]:
        """Run ``cvmfs_server transaction`` (the whole repository here)."""
        return self._call("transaction", *options, self.repo)

    def _not_opened(
        self, code: int, output: str, options: tuple[str, ...], lease: str
    ) -> PublisherError:
        """The error for a ``transaction`` that failed with exit ``code``."""
        if code == EXIT_TRANSACTION_OPEN:
            return PublisherError(
                f"{self.repo} is already in a transaction (cvmfs_server exit {code})",
                hint="another publisher or an operator holds it; "
                "wishbot aborts only the transactions it opened",
            )
        return PublisherError(_failure(("transaction", *options), code, output))

    def _before_publish(self, lease: str) -> None:
        """A last check of the open transaction before it is published (raise: aborted)."""

    def _publish(self) -> None:
        code, output = self._call("publish", self.repo)
        if code != 0:
            self._doomed = []
            # the transaction stays open after a failed publish: discard it so
            # the next image can go, and say why it failed
            message = _failure(("publish",), code, output)
            self._abort_after(message)
            raise PublisherError(message, hint="the image was not published; the next run retries")
        self.publishes += 1
        self.marker_path.unlink(missing_ok=True)

    def _abort_after(self, reason: str) -> None:
        """Abort because of ``reason``; if that fails too, say both."""
        try:
            self._abort()
        except PublisherError as failed:
            raise PublisherError(
                f"{failed.message}, after: {reason}",
                hint=f"see 'cvmfs_server list'; abort by hand: cvmfs_server abort -f {self.repo}",
            ) from None

    def _abort(self) -> None:
        code, output = self._call("abort", "-f", self.repo)
        if code not in (0, EXIT_NO_TRANSACTION):
            raise PublisherError(_failure(("abort", "-f"), code, output))
        self.marker_path.unlink(missing_ok=True)

    def _mark_open(self) -> None:
        self.marker_path.parent.mkdir(parents=True, exist_ok=True)
        self.marker_path.write_text(f"{os.getpid()}\n")

    def _remove(self, view: Path, relpath: str) -> None:
        """Delete ``relpath`` with the transaction. Layers are deleted right after
        its publish, with ``ingest -d``: removing a published whiteout file
        through the overlay makes the real publish fail (observed with 2.12)."""
        path = view / relpath
        if path.is_dir() and not path.is_symlink():
            if relpath.split("/", 1)[0] == layout.LAYERS:
                self._doomed.append(relpath)
                return
            force_rmtree(path)
        elif os.path.lexists(path):
            path.unlink()

    def _delete_doomed(self) -> None:
        doomed, self._doomed = self._doomed, []
        if doomed:
            self._check_cwd()
            self._mark_open()
            self._run("ingest", *(arg for rel in doomed for arg in ("-d", rel)), self.repo)
            self.publishes += 1
            self.marker_path.unlink(missing_ok=True)

    # --- layers --------------------------------------------------------------

    def publish_layers(self, layers: list[tuple[str, Path]], dirs: list[str]) -> None:
        """Ingest each staged layer directory (``layerfs/`` and ``.metadata/``) at its
        ``.layers/xx/<hex>``: one ``cvmfs_server ingest`` (its own transaction and
        publish) per layer, entries as they are, whiteout files included, owners
        kept. Nested catalogs: ``.layers``, ``.layers/xx`` and each ``layerfs``.
        The empty directories ``dirs`` ride along with the last layer (or go alone).
        """
        steps: list[list[_Entry]] = [self._layer_entries(rel, staged) for rel, staged in layers]
        extra = [_Entry(d.strip("/"), None) for d in dirs]
        if extra:
            if steps:
                steps[-1] += extra
            else:
                steps.append(extra)
        for entries in steps:
            self._ingest(entries)

    def _layer_entries(self, relpath: str, staged: Path) -> list[_Entry]:
        entries = [_Entry(relpath, staged)]
        parts = relpath.split("/")  # .layers, xx, hex
        for depth in (1, 2):
            marker = "/".join([*parts[:depth], layout.CATALOG_MARKER])
            if not os.path.lexists(self._root / marker):
                entries.append(_Entry(marker, None, marker=True))
        entries.append(_Entry(f"{relpath}/layerfs/{layout.CATALOG_MARKER}", None, marker=True))
        return entries

    def _ingest(self, entries: list[_Entry]) -> None:
        # ingest makes up every directory the tar does not hold, even existing
        # ones, with an unknown owner under -k (seen: nobody, which the overlay
        # then refuses to copy up). Name every ancestor, as it is or, when new,
        # owned by the running user.
        ancestors: dict[str, None] = {}
        for entry in entries:
            parts = entry.name.split("/")
            for depth in range(1, len(parts) if entry.source is None else len(parts) + 1):
                ancestors.setdefault("/".join(parts[:depth]))
        dirs = [_Entry(d, None, like=self._root / d) for d in ancestors]
        listed = set(ancestors)
        rest = [e for e in entries if e.source is not None or e.marker or e.name not in listed]
        entries = [*dirs, *rest]

        def feed(stdin: IO[bytes]) -> None:
            with tarfile.open(fileobj=stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry in entries:
                    entry.add_to(tar)

        self._check_cwd()
        self._mark_open()
        self._run("ingest", "-k", "-t", "-", "-b", "/", self.repo, feed=feed)
        self.publishes += 1
        self.marker_path.unlink(missing_ok=True)

    def recover(self) -> list[str]:
        """Abort the transaction a crashed wishbot run left open.

        Fail closed: a transaction wishbot did not open (an operator's) is not
        aborted; it is an error until someone publishes or aborts it.
        """
        if not self.in_transaction():
            self.marker_path.unlink(missing_ok=True)
            return []
        if not self.marker_path.exists():
            raise PublisherError(
                f"{self.repo} is in a transaction that wishbot did not open",
                hint=f"publish or abort it (cvmfs_server abort -f {self.repo}), then rerun",
            )
        self._abort()
        return [f"aborted the transaction a crashed run left open on {self.repo}"]


class _Entry:
    """One thing to put in an ingest tar: a local tree, an empty directory or an
    empty catalog marker, at ``name`` (relative to the repository root)."""

    def __init__(
        self, name: str, source: Path | None, *, marker: bool = False, like: Path | None = None
    ) -> None:
        self.name, self.source, self.marker = name, source, marker
        #: an existing directory whose owner, mode and time the entry keeps
        self.like = like

    def add_to(self, tar: tarfile.TarFile) -> None:
        if self.source is not None:
            for child in sorted(self.source.iterdir()):
                tar.add(child, arcname=f"{self.name}/{child.name}")
            return
        info = tarfile.TarInfo(self.name)
        info.uid, info.gid, info.mtime = os.getuid(), os.getgid(), int(time.time())
        if self.marker:
            info.mode = 0o644
        else:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            with suppress(OSError):
                found = os.lstat(self.like) if self.like is not None else None
                if found is not None and stat.S_ISDIR(found.st_mode):
                    info.uid, info.gid = found.st_uid, found.st_gid
                    info.mode, info.mtime = stat.S_IMODE(found.st_mode), int(found.st_mtime)
        tar.addfile(info)


def _timeout() -> float:
    raw = os.environ.get("WISHBOT_CVMFS_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise UsageError(
            f"WISHBOT_CVMFS_TIMEOUT='{raw}' is not a number of seconds", hint="e.g. 1800"
        ) from None
    if value <= 0:
        raise UsageError(f"WISHBOT_CVMFS_TIMEOUT={raw} must be positive", hint="e.g. 1800")
    return value


def _communicate(proc: subprocess.Popen[bytes], feed: Callable[[IO[bytes]], None] | None) -> str:
    """Feed standard input while collecting the output (no pipe dead-lock)."""
    chunks: list[bytes] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    if feed is not None:
        assert proc.stdin is not None
        try:
            feed(proc.stdin)
        except (BrokenPipeError, OSError):
            pass  # it stopped reading: its exit code says why
        finally:
            with suppress(OSError):
                proc.stdin.close()
    proc.wait()
    reader.join()
    return b"".join(chunks).decode("utf-8", "replace")


def _failure(args: tuple[str, ...], code: int, output: str) -> str:
    """What failed, with the line of the output that says why: the last one that
    names an error, else the last one (never a stack frame of a crash)."""
    lines = [
        line.strip()
        for line in output.strip().splitlines()
        if line.strip() and "[0x" not in line and not line.strip().startswith("/")
    ]
    telling = [line for line in lines if _TELLING.search(line)]
    why = (telling or lines)[-1:]
    detail = f": {why[0]}" if why else ""
    return f"'cvmfs_server {' '.join(args)}' failed (exit {code}){detail}"


_TELLING = re.compile(r"error|cannot|fail|denied|busy|not |unexpected", re.IGNORECASE)


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

"""A CernVM-FS repository published through a repository gateway, by one of
several publisher hosts at once.

A publisher configured for a gateway (``CVMFS_UPSTREAM_STORAGE=gw,…``:
``cvmfs_server list`` says ``stratum0 / gw``) opens each transaction on a
*lease*, ``cvmfs_server transaction REPO/sub/path``; publishers on disjoint
leases publish at the same time. What a real gateway does
(``../shared/reference/cvmfs-server.md``, "The gateway") and how this
backend copes:

- two leases conflict when one path is a prefix of the other: a transaction
  leases exactly what its scope declares (the common ancestor of its paths),
  so images that share nothing never wait for each other; a busy lease is
  asked for again (back-off 0.2 s to 3 s) for ``WISHBOT_GATEWAY_WAIT``
  seconds (default 600), then the step fails with
  :class:`~bot.errors.LeaseBusy`, naming the path and how to drop a lease a
  dead publisher left. Not ``transaction -t``: a transaction that waited
  inside ``cvmfs_server`` starts from the revision it saw before waiting,
  and would write a shared file back as it was before the publisher it
  waited for changed it (seen: a lost backlink);
- the lease path's parent must be published: a lease starts at the first
  directory of the path that is missing (one step creates it, with the
  catalog markers the layout wants, see :meth:`ensure_dir`);
- writes outside the lease are dropped silently at publish: before each
  publish the overlay's upper directory is checked, and a write outside the
  lease aborts the transaction with the paths named, instead of losing them;
- any refusal makes ``publish`` exit 1 with the transaction open: it is
  aborted and :class:`~bot.errors.LeaseRefused` lets the caller run the step
  again; a transaction that wrote nothing is aborted, not published;
- a flat image is built whole: a catalog-level clone (``transaction -T``)
  aborts in 2.12.0 on a lease path, and on the whole repository commits the
  copy on its own and uses up the lease;
- all this only while several hosts publish (``apply --shard I/N``, see
  :meth:`GatewayPublisher.share_with`): a run that is the only one publishes
  each image (after its layers) in one transaction on the whole repository,
  as a release manager without a gateway does;
- layers are ingested one by one, each under a lease on its own
  ``.layers/xx/<hex>``; deletions go one path per ``ingest -d`` (a gateway
  refuses several in one call);
- the publisher's view of the repository is as new as its last transaction:
  :meth:`recover` brings it up to date before a run plans.

An image is published in steps (:mod:`bot.publisher.apply`): layers, the flat
image, backlinks, metadata, the remove schedule, and last the public path.
"""

from __future__ import annotations

import os
import posixpath
import random
import socket
import tarfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import IO

import requests

from bot.core import layout
from bot.errors import LeaseBusy, LeaseRefused, PublisherError, UsageError
from bot.publisher.backend import Scope
from bot.publisher.cvmfs import EXIT_TRANSACTION_OPEN, CvmfsPublisher, _Entry, _failure

#: exit codes of ``cvmfs_server transaction`` through a gateway (reference page)
EXIT_LEASE_BUSY = 16
EXIT_NO_PARENT = 2
EXIT_PARENT_NOT_DIR = 20
DEFAULT_WAIT = 600.0
#: transactions that started from an older revision asked for again without a pause
STALE_AT_ONCE = 3
#: a lease nobody else takes (with this host and process), opened and aborted
#: to bring the view up to date
REFRESH_LEASE = ".wishbot-refresh-{host}-{pid}"


def lease_of(scope: Scope, exists: Callable[[str], bool]) -> str:
    """The lease path for a transaction on ``scope``: the common ancestor of its
    paths, shortened to the first directory that ``exists`` says is missing
    (a lease's parent must be published). ``""`` is the whole repository."""
    if scope.prefixes is None or not scope.prefixes:
        return ""
    split = [p.strip("/").split("/") for p in scope.prefixes]
    common: list[str] = []
    for parts in zip(*split, strict=False):
        if any(part != parts[0] for part in parts):
            break
        common.append(parts[0])
    for depth in range(1, len(common)):
        if not exists("/".join(common[:depth])):
            return "/".join(common[:depth])
    return "/".join(common)


def _catalog_dir(relpath: str) -> bool:
    """Directories the layout makes nested catalogs of when they are created
    (as the reference converter: ``.flat``, ``.layers`` and ``.layers/xx``)."""
    parts = relpath.split("/")
    return parts[0] in (layout.FLAT, layout.LAYERS) and (
        len(parts) == 1 or (len(parts) == 2 and parts[0] == layout.LAYERS)
    )


class GatewayPublisher(CvmfsPublisher):
    leased = True
    publish_unchanged = False
    #: flat images are built whole. In CernVM-FS 2.12.0 ``transaction -T`` on a
    #: lease path aborts (an assertion in statistics.cc), and on the whole
    #: repository it commits the copy at once, as a revision of its own, using
    #: up the lease: the transaction's publish then fails ("invalid lease"),
    #: and a half-built flat image would be left published (both seen here)
    catalog_clones = False

    def __init__(self, repo: str, *, cvmfs_root: Path | None = None) -> None:
        super().__init__(repo, cvmfs_root=cvmfs_root)
        self.wait = _seconds("WISHBOT_GATEWAY_WAIT", DEFAULT_WAIT)
        conf = _server_conf(repo, self._root.parent.parent)
        spool = self._root.parent.parent / conf.get(
            "CVMFS_SPOOL_DIR", f"/var/spool/cvmfs/{repo}"
        ).lstrip("/")
        #: the overlay's upper directory, where writes outside the lease show
        self.scratch = spool / "scratch" / "current"
        #: the read-only mount under the overlay: the revision a transaction starts from
        self.rdonly = spool / "rdonly"
        #: where the newest revision is published (``.cvmfspublished``)
        self.stratum0 = conf.get("CVMFS_STRATUM0", "")
        #: the scope of the transaction being opened, and the lease it got
        self._scope = Scope()
        self._lease = ""
        #: ``WISHBOT_GATEWAY_LEASES``: when images go in leases on paths
        self.leases = _leases_setting()
        #: until told otherwise (:meth:`share_with`), as if others publish too
        self.leased = self.leases != "repository"

    def share_with(self, hosts: int) -> None:
        """Leases on exactly what each step writes when several hosts publish
        (``apply --shard I/N``, N > 1; or ``WISHBOT_GATEWAY_LEASES=paths``).
        Alone (or ``=repository``), an image's layers are ingested as before and
        the rest of it is one transaction on the whole repository, as a
        release manager without a gateway publishes it: an image takes its
        layers' publishes and one more, instead of five more
        (``bench/gateway.py``), and it is just as safe: a lease on the whole
        repository excludes every other one."""
        super().share_with(hosts)
        self.leased = self.leases == "paths" or (self.leases == "auto" and hosts > 1)

    # --- leases ---------------------------------------------------------------

    def lease_for(self, scope: Scope) -> str:
        return lease_of(scope, lambda rel: (self._root / rel).is_dir())

    def _open(self, clone: tuple[str, str] | None, scope: Scope) -> AbstractContextManager[Path]:
        self._scope = scope
        lease = self.lease_for(scope)
        if clone is None:
            return self._transaction(lease=lease)
        source, dest = clone
        return self._transaction("-T", f"/{source}=/{dest}", lease=lease)

    def _begin(self, options: tuple[str, ...], lease: str) -> tuple[int, str]:
        """``transaction REPO/lease``, asked again while the lease is busy or the
        transaction did not start from the newest revision.

        Not ``-t``: a transaction that waited inside ``cvmfs_server`` starts
        from the revision it saw *before* waiting (seen: a backlink lost).
        And a lease granted just after its last holder published may still
        start from the revision before that publish (seen: a public path lost
        under three publishers; ``cvmfs_publish`` reads the manifest when it
        starts and asks for the lease after, repository.cc and
        repository_transaction.cc in 2.12): such a transaction is aborted and asked for
        again, at once (the newer revision is out already; after
        :data:`STALE_AT_ONCE` in a row, with the busy lease's back-off). The
        lease is worked out again before each new attempt: every
        attempt brings this publisher's view up to date, so it can be narrower.
        """
        deadline = time.monotonic() + self.wait
        pause, stale = 0.2, 0
        while True:
            self._mark_open()
            self._lease = lease
            target = f"{self.repo}/{lease}" if lease else self.repo
            code, output = self._call("transaction", *options, target)
            stale = stale + 1 if code == 0 and not self._fresh() else 0
            if stale:
                self._abort()
                code, output = EXIT_LEASE_BUSY, "busy: started from an older revision"
            if code != EXIT_LEASE_BUSY or time.monotonic() + pause > deadline:
                return code, output
            if not 0 < stale <= STALE_AT_ONCE:
                # busy (or stale again and again): back off. A stale start is
                # asked for again at once: the newer revision is out already
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 2, 3.0)
            lease = self.lease_for(self._scope)

    def _fresh(self) -> bool:
        """Does the open transaction start from the newest published revision?
        (The revision of the read-only mount against the stratum 0's
        ``.cvmfspublished``; True where either cannot be read.)"""
        try:
            mine = int(os.getxattr(self.rdonly, "user.revision"))
        except (OSError, ValueError):
            return True
        newest = published_revision(self.stratum0)
        return newest is None or mine >= newest

    def _not_opened(
        self, code: int, output: str, options: tuple[str, ...], lease: str
    ) -> PublisherError:
        lease = self._lease  # as last asked for (see _begin)
        where = f"{self.repo}/{lease}" if lease else self.repo
        if code == EXIT_LEASE_BUSY or "busy" in output.lower():
            return LeaseBusy(
                f"the gateway's lease on {where} stayed busy for {self.wait:g} s "
                "(another publisher holds it or a path above or below it)",
                hint="see who holds it with 'wishbot lease list'; a publisher that died keeps "
                "its lease until it expires: drop it with 'wishbot lease drop PATH --yes', "
                "or raise WISHBOT_GATEWAY_WAIT",
            )
        if code in (EXIT_NO_PARENT, EXIT_PARENT_NOT_DIR):
            parent = posixpath.dirname(lease) or "/"
            return LeaseRefused(
                f"cannot lease {where}: its parent {parent} is not a published directory "
                f"(cvmfs_server exit {code})",
                hint="another publisher may have removed it meanwhile; the next run retries",
            )
        if code == EXIT_TRANSACTION_OPEN:  # not ours to abort
            return super()._not_opened(code, output, options, lease)
        # a transaction that failed otherwise (seen: a crash under load) may hold
        # its lease until it expires: give it back, and let the step run again
        with suppress(PublisherError):
            self._abort()
        return LeaseRefused(
            _failure(("transaction", *options, where), code, output),
            hint="the transaction was not opened; the step is run again",
        )

    def _before_publish(self, lease: str) -> None:
        lease = self._lease  # as granted (see _begin)
        strays = stray_writes(self.scratch, lease)
        if strays:
            shown = ", ".join(strays[:5]) + (
                f" and {len(strays) - 5} more" if len(strays) > 5 else ""
            )
            raise PublisherError(
                f"wrote outside its lease {lease or '/'} on {self.repo}: {shown}; the gateway "
                "would drop those silently, so nothing of this transaction was published",
                hint="a bug in the step that wrote them: report it with this message",
            )

    def _publish(self) -> None:
        """``publish``, again while other processes' open files under the
        repository make it refuse (it stays open then), up to :attr:`wait`;
        any other refusal aborts it: :class:`LeaseRefused`."""
        code, output = self._patient("publish")
        if code == 0:
            self.publishes += 1
            self.marker_path.unlink(missing_ok=True)
            return
        self._doomed = []
        message = _failure(("publish",), code, output)
        self._abort_after(message)
        raise LeaseRefused(
            f"{message} (the gateway refused it: its lease expired or was cancelled?)",
            hint="the transaction was aborted; the step is run again",
        )

    def _patient(
        self, *args: str, feed: Callable[[IO[bytes]], None] | None = None
    ) -> tuple[int, str]:
        """``cvmfs_server ARGS REPO``, run again (back-off 0.5 s to 5 s, up to
        :attr:`wait`) while it fails for a reason that passes: a busy lease, or
        open files under ``/cvmfs/REPO``, which ``cvmfs_server`` looks for in
        every process of the machine (several publishers on one host see each
        other's)."""
        deadline = time.monotonic() + self.wait
        pause = 0.5
        while True:
            code, output = self._call(*args, self.repo, feed=feed)
            if code == 0 or not _passing(output) or time.monotonic() + pause > deadline:
                return code, output
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    # --- directories, layers, deletions --------------------------------------

    def ensure_dir(self, relpath: str) -> None:
        """Publish the directory ``relpath`` (with its missing parents, and the
        catalog markers of ``.flat``, ``.layers``, ``.layers/xx``) unless it is
        there: a small step of its own, so leases below it can be taken.
        Making ``.layers`` or ``.flat`` makes all their partitions too."""
        if (self._root / relpath).is_dir():
            return
        lease = self.lease_for(Scope((relpath,)))
        with self.transaction(scope=Scope((lease,))) as txn:
            if txn.is_dir(relpath):
                return  # another publisher made it meanwhile: nothing to publish
            parts = relpath.split("/")
            made = [
                "/".join(parts[:depth]) for depth in range(len(lease.split("/")), len(parts) + 1)
            ]
            if lease in (layout.LAYERS, layout.FLAT):
                # all 256 partitions at once: no later image waits for a lease on
                # the whole of .layers or .flat to make its own
                made += [f"{lease}/{n:02x}" for n in range(256)]
            for directory in dict.fromkeys(made):
                txn.mkdir(directory)
                marker = f"{directory}/{layout.CATALOG_MARKER}"
                if _catalog_dir(directory) and not txn.exists(marker):
                    txn.write_bytes(marker, b"")

    def publish_layers(self, layers: list[tuple[str, Path]], dirs: list[str]) -> None:
        """Each layer ingested under a lease on its own ``.layers/xx/<hex>`` (its
        partition made first where missing); the directories ``dirs`` made too."""
        for directory in dirs:
            self.ensure_dir(directory.strip("/"))
        for relpath, staged in layers:
            self.ensure_dir(posixpath.dirname(relpath))
            self._ingest_layer(relpath, staged)

    def _ingest_layer(self, relpath: str, staged: Path) -> None:
        """``ingest -t - -b .layers/xx/<hex>``: the lease is that directory."""
        entries = [_Entry(".", None, like=self._root / relpath)]
        entries += [_Entry(child.name, child) for child in sorted(staged.iterdir())]
        entries.append(_Entry(f"layerfs/{layout.CATALOG_MARKER}", None, marker=True))

        def feed(stdin: IO[bytes]) -> None:
            with tarfile.open(fileobj=stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry in entries:
                    if entry.source is not None and entry.source.is_dir():
                        tar.add(entry.source, arcname=entry.name, recursive=False)
                    entry.add_to(tar)

        self._ingest_call("-k", "-t", "-", "-b", relpath, feed=feed)

    def _delete_doomed(self) -> None:
        doomed, self._doomed = self._doomed, []
        for relpath in doomed:  # one path per call: a gateway refuses several
            self._ingest_call("-d", relpath)

    def _ingest_call(self, *args: str, feed: Callable[[IO[bytes]], None] | None = None) -> None:
        """``cvmfs_server ingest ARGS`` (its own lease, transaction and publish),
        waiting up to :attr:`wait` while the lease is busy."""
        self._check_cwd()
        self._mark_open()
        code, output = self._patient("ingest", *args, feed=feed)
        self.marker_path.unlink(missing_ok=True)
        if code == 0:
            self.publishes += 1
            return
        if "busy" in output.lower():
            raise self._not_opened(EXIT_LEASE_BUSY, output, ("ingest",), args[-1])
        raise PublisherError(_failure(("ingest", *args), code, output))

    # --- recovery -------------------------------------------------------------

    def recover(self) -> list[str]:
        """Abort what a crashed run left open (see :class:`CvmfsPublisher`), then
        bring this publisher's view up to the newest revision: a transaction
        on a lease nobody else takes, aborted."""
        done = super().recover()
        lease = REFRESH_LEASE.format(host=socket.gethostname(), pid=os.getpid())
        with self.transaction(scope=Scope((lease,))):
            pass  # wrote nothing: aborted
        return done


def _passing(output: str) -> bool:
    """Did ``cvmfs_server`` refuse for a reason that goes away by itself?"""
    text = output.lower()
    return "busy" in text or "file descriptors" in text


def stray_writes(scratch: Path, lease: str) -> list[str]:
    """Paths changed in the overlay's upper directory ``scratch`` outside ``lease``
    (written, or deleted: a whiteout device). Only the lease's ancestors are
    walked: each holds nothing but the next one down."""
    if not lease or not scratch.is_dir():
        return []
    strays: list[str] = []
    parts = lease.strip("/").split("/")
    directory = scratch
    for depth, part in enumerate(parts):
        try:
            names = os.listdir(directory)
        except OSError:
            return sorted(strays)
        prefix = "/".join(parts[:depth])
        strays += sorted(f"{prefix}/{n}" if prefix else n for n in names if n != part)
        directory = directory / part
        if not directory.is_dir() or directory.is_symlink():
            break
    return sorted(strays)


def _server_conf(repo: str, system: Path) -> dict[str, str]:
    """The repository's ``server.conf`` on the release manager whose file system
    root is ``system`` (the parent of the CernVM-FS root: ``/`` for ``/cvmfs``)."""
    try:
        text = (system / "etc/cvmfs/repositories.d" / repo / "server.conf").read_text()
    except OSError:
        return {}
    conf = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.strip().startswith("#"):
            conf[key.strip()] = value.strip().strip('"')
    return conf


def published_revision(stratum0: str) -> int | None:
    """The revision the stratum 0 publishes now (``S`` line of its
    ``.cvmfspublished``; None where it cannot be read). Read directly, never
    through a proxy, at most 64 KiB, within 10 s."""
    if not stratum0.startswith(("http://", "https://")):
        return None
    try:
        with requests.get(
            f"{stratum0}/.cvmfspublished",
            timeout=10,
            stream=True,
            proxies={"http": "", "https": ""},
            allow_redirects=False,
        ) as answer:
            if answer.status_code != 200:
                return None
            head = answer.raw.read(65536, decode_content=True)
    except requests.RequestException:
        return None
    for line in head.split(b"\n"):
        if line == b"--":
            break
        if line.startswith(b"S") and line[1:].strip().isdigit():
            return int(line[1:])
    return None


#: ``WISHBOT_GATEWAY_LEASES``: ``auto`` (leases on paths when the run is one
#: shard of several), ``paths`` (always), ``repository`` (never)
LEASE_SETTINGS = ("auto", "paths", "repository")


def _leases_setting() -> str:
    raw = os.environ.get("WISHBOT_GATEWAY_LEASES", "") or "auto"
    if raw not in LEASE_SETTINGS:
        raise UsageError(
            f"WISHBOT_GATEWAY_LEASES='{raw}' is not one of {', '.join(LEASE_SETTINGS)}",
            hint="auto (the default) leases paths when apply runs with --shard I/N, N > 1",
        )
    return raw


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise UsageError(f"{name}='{raw}' is not a number of seconds", hint="e.g. 600") from None
    if value < 0:
        raise UsageError(f"{name}={raw} must not be negative", hint="e.g. 600")
    return value

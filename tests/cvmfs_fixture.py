"""CernVM-FS repositories for tests: the fake, and a real one when the machine has it.

``cvmfs_repo`` is parametrized: ``fake`` (``tests/fake_cvmfs_server`` on plain
directories, always) and ``real`` (marker ``cvmfs``): a throwaway repository
made with the installed ``cvmfs_server`` on this machine, plus a second,
independent client mount of it over HTTP from the local Apache, as a site's
worker node would see it. The real one needs root, ``/dev/fuse``, overlayfs,
Apache and CernVM-FS 2.12 (CERN's packages); without them it is skipped with
one line saying what is missing. Facts relied on are in
``../shared/reference/cvmfs-server.md``.

The real repository is shared by the tests of one pytest worker (``mkfs``
costs seconds): tests write under paths of their own. It is removed with
``rmfs -f`` and the client unmounted at the end, also after a failure.
Repository creation and removal are serialized between workers with a lock
file (both touch the Apache configuration).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest

FAKE = Path(__file__).with_name("fake_cvmfs_server")
#: every cvmfs_server call of the fixture has a time limit
TIMEOUT = 120


class Repo(ABC):
    """A repository under test: the release manager's view and a client's."""

    kind: str
    name: str
    env: dict[str, str]

    @property
    def root(self) -> Path:
        """``/cvmfs/REPO`` on the release manager (writable in a transaction)."""
        return Path(self.env["WISHBOT_CVMFS_ROOT"]) / self.name

    @abstractmethod
    def client(self) -> Path:
        """What a client sees of the last published revision (synced now)."""
        raise NotImplementedError

    @abstractmethod
    def revision(self) -> int:
        """The revision clients see."""
        raise NotImplementedError

    def server(self, *args: str, input: bytes | None = None, cwd: str = "/") -> int:
        done = subprocess.run(
            ["cvmfs_server", *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            cwd=cwd,
            env={**os.environ, **self.env},
            timeout=TIMEOUT,
            check=False,
        )
        return done.returncode

    def catalogs(self) -> list[str]:
        """``cvmfs_server list-catalogs``: the nested catalogs' directories."""
        done = subprocess.run(
            ["cvmfs_server", "list-catalogs", self.name],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            cwd="/",
            timeout=TIMEOUT,
            check=True,
        )
        return _catalog_paths(done.stdout)


def _catalog_paths(text: str) -> list[str]:
    """Catalog paths from ``list-catalogs`` output (the fake prints bare paths;
    the real one indents a tree and may add columns)."""
    out = []
    for line in text.splitlines():
        for word in line.split():
            if word.startswith("/"):
                out.append(word.rstrip("/") or "/")
                break
    return out


class FakeRepo(Repo):
    kind = "fake"

    def __init__(self, tmp: Path, name: str) -> None:
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        (bin_dir / "cvmfs_server").symlink_to(FAKE)
        self.name = name
        self.env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "WISHBOT_CVMFS_ROOT": str(tmp / "cvmfs"),
            "FAKE_CVMFS_SPOOL": str(tmp / "spool"),
            "WISHBOT_LOCK_DIR": str(tmp / "locks"),
        }
        subprocess.run(["cvmfs_server", "mkfs", name], env={**os.environ, **self.env}, check=True)

    def client(self) -> Path:
        return Path(self.env["FAKE_CVMFS_SPOOL"]) / self.name / "published"

    def revision(self) -> int:
        return int((Path(self.env["FAKE_CVMFS_SPOOL"]) / self.name / "revision").read_text())

    def close(self) -> None:
        os.chmod(self.root, 0o755)


#: ``mkfs -u`` of a publisher of a gateway (the host and port are never dialled by the fake)
GATEWAY_UPSTREAM = "gw,/tmp,http://127.0.0.1:4929/api/v1"


class FakeGatewayRepo(Repo):
    """One repository with ``publishers`` fake publishers behind one fake gateway
    (gateway mode of ``tests/fake_cvmfs_server``): each has its own ``/cvmfs``
    and spool, all share ``FAKE_CVMFS_GATEWAY``. ``env`` is publisher 0's.
    ``create=False``: ``tmp`` already holds them (a copy of another ``tmp``: no
    path inside names ``tmp``)."""

    kind = "fake-gateway"

    def __init__(self, tmp: Path, name: str, publishers: int = 2, *, create: bool = True) -> None:
        bin_dir = tmp / "bin"
        if create:
            bin_dir.mkdir()
            (bin_dir / "cvmfs_server").symlink_to(FAKE)
        self.name = name
        self.gateway = tmp / "gateway"
        self.envs = [
            {
                "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                "WISHBOT_CVMFS_ROOT": str(tmp / f"publisher{n}" / "cvmfs"),
                "FAKE_CVMFS_SPOOL": str(tmp / f"publisher{n}" / "spool"),
                "WISHBOT_LOCK_DIR": str(tmp / f"publisher{n}" / "locks"),
                "FAKE_CVMFS_GATEWAY": str(self.gateway),
            }
            for n in range(publishers)
        ]
        self.env = self.envs[0]
        stratum0 = f"http://127.0.0.1/cvmfs/{name}"
        for env in self.envs if create else []:
            subprocess.run(
                ["cvmfs_server", "mkfs", "-w", stratum0, "-u", GATEWAY_UPSTREAM, name],
                env={**os.environ, **env},
                capture_output=True,
                check=True,
            )

    def publisher(self, n: int) -> dict[str, str]:
        """The environment of publisher ``n`` (its ``/cvmfs``, spool and the gateway)."""
        return dict(self.envs[n])

    def client(self) -> Path:
        """The gateway's published tree (what every client sees)."""
        return self.gateway / self.name / "published"

    def revision(self) -> int:
        return int((self.gateway / self.name / "revision").read_text())

    def close(self) -> None:
        for env in self.envs:
            os.chmod(Path(env["WISHBOT_CVMFS_ROOT"]) / self.name, 0o755)


def real_cvmfs_missing() -> str | None:
    """Why no real CernVM-FS can be used here (None: it can)."""
    if not shutil.which("cvmfs_server") or not shutil.which("cvmfs2"):
        return "no cvmfs_server installed (operators install CERN's packages; see README)"
    if os.geteuid() != 0:
        return "not root (a throwaway repository needs mkfs and mounts)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "no overlayfs in this kernel"
    if not shutil.which("apachectl"):
        return "no Apache (apachectl) to serve the repository"
    return None


@contextmanager
def _machine_lock(*, shared: bool = False) -> Iterator[None]:
    """Creating and removing a repository reloads Apache, which a publish of
    another repository (another pytest worker's) may not survive: those take
    this lock exclusively, each test using a real repository shares it."""
    fd = os.open("/tmp/wishbot-cvmfs-fixture.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command), capture_output=True, text=True, cwd="/", timeout=TIMEOUT, check=check
    )


def _apache_up() -> None:
    """Apache must serve before ``mkfs``/``mount`` (reference page). Started when
    nothing answers on port 80 (a pid file left by a killed Apache says nothing);
    left running (other workers may be using it)."""
    if _serving():
        return
    _run("apachectl", "start", check=False)
    for _ in range(100):
        if _serving():
            return
        time.sleep(0.1)


def _serving() -> bool:
    """Does something accept connections on 127.0.0.1:80?"""
    try:
        with socket.create_connection(("127.0.0.1", 80), timeout=1):
            return True
    except OSError:
        return False


def mount_client(tmp: Path, name: str, mount: Path, cache: Path) -> None:
    """The reference page's client of repository ``name`` at ``mount``: one that
    leaves the machine's configuration alone (its files in ``tmp``)."""
    mount.mkdir()
    cache.mkdir()
    (tmp / "sockets").mkdir()
    config = tmp / "client.conf"
    config.write_text(
        "CVMFS_SERVER_URL=http://localhost/cvmfs/@fqrn@\n"
        f"CVMFS_PUBLIC_KEY=/etc/cvmfs/keys/{name}.pub\n"
        "CVMFS_HTTP_PROXY=DIRECT\n"
        f"CVMFS_CACHE_BASE={cache}\n"
        "CVMFS_SHARED_CACHE=no\n"
        "CVMFS_USER=root\n"
        "CVMFS_CLAIM_OWNERSHIP=no\n"
        f"CVMFS_RELOAD_SOCKETS={tmp / 'sockets'}\n"
    )
    _run("cvmfs2", "-o", f"config={config},allow_other,fsname={name}", name, str(mount))


def synced_client(name: str, mount: Path, cache: Path) -> Path:
    """Remount sync: the client sees the newest revision at once (reference page)."""
    socket = cache / name / f"cvmfs_io.{name}"
    _run("cvmfs_talk", "-p", str(socket), "remount", "sync")
    return mount


class RealRepo(Repo):
    kind = "real"

    def __init__(self, tmp: Path) -> None:
        self.name = f"t{uuid.uuid4().hex[:10]}.wishbot.test"
        self.tmp = tmp
        self.mount = tmp / "client"
        self.cache = tmp / "cache"
        self.env = {"WISHBOT_CVMFS_ROOT": "/cvmfs", "WISHBOT_LOCK_DIR": str(tmp / "locks")}
        self.created = False
        self.mounted = False

    def create(self) -> None:
        with _machine_lock():
            _apache_up()
            self.created = True
            _run("cvmfs_server", "mkfs", "-o", "root", self.name)
        mount_client(self.tmp, self.name, self.mount, self.cache)
        self.mounted = True

    def client(self) -> Path:
        return synced_client(self.name, self.mount, self.cache)

    def revision(self) -> int:
        return int(os.getxattr(self.client(), "user.revision"))

    def close(self) -> None:
        if self.mounted and _run("umount", str(self.mount), check=False).returncode != 0:
            _run("umount", "-l", str(self.mount), check=False)
        if self.created:
            with _machine_lock():
                subprocess.run(
                    ["cvmfs_server", "abort", "-f", self.name],
                    capture_output=True,
                    cwd="/",
                    timeout=TIMEOUT,
                    check=False,
                )
                _run("cvmfs_server", "rmfs", "-f", self.name, check=False)


@pytest.fixture(scope="session")
def real_cvmfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRepo]:
    missing = real_cvmfs_missing()
    if missing:
        pytest.skip(f"cvmfs: {missing}")
    repo = RealRepo(tmp_path_factory.mktemp("cvmfs"))
    try:
        repo.create()
        yield repo
    finally:
        repo.close()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.cvmfs)])
def cvmfs_repo(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Repo]:
    """The fake, then the real repository (skipped with one line where there is none)."""
    with open_repo(request.param, request, tmp_path, monkeypatch) as repo:
        yield repo


@contextmanager
def open_repo(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Repo]:
    """A repository of ``kind`` (``fake`` or ``real``) with its environment set,
    checked to have no transaction left open afterwards."""
    repo: Repo
    if kind == "fake":
        repo = FakeRepo(tmp_path, f"r{uuid.uuid4().hex[:8]}.example.org")
    else:
        repo = request.getfixturevalue("real_cvmfs")
        Path(repo.env["WISHBOT_LOCK_DIR"]).mkdir(exist_ok=True)
    for key, value in repo.env.items():
        monkeypatch.setenv(key, value)
    try:
        with _machine_lock(shared=True) if repo.kind == "real" else nullcontext():
            yield repo
    finally:
        if isinstance(repo, FakeRepo):
            repo.close()
        elif subprocess.run(
            ["cvmfs_server", "abort", "-f", repo.name], capture_output=True, cwd="/", check=False
        ).returncode not in (0, 22):
            pytest.fail(f"could not abort a transaction left open on {repo.name}")

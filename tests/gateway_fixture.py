"""A real CernVM-FS repository gateway with several publishers, for tests and benchmarks.

As ``../shared/reference/cvmfs-server.md`` ("The gateway") observed it on a
machine like this one: a stratum 0 repository served by the local Apache, a
``cvmfs_gateway`` (with ``cvmfs_receiver``) on a free port of 127.0.0.1, and N
publishers of that repository, each in a mount namespace of its own (a
``sleep`` holding ``unshare -m``), made with
``cvmfs_server mkfs -w URL -u gw,TMP,GATEWAY -k KEYS``. Inside a namespace
the machine's own repository mounts are unmounted and ``/cvmfs``,
``/var/spool/cvmfs``, ``/srv/cvmfs``, ``/etc/cvmfs/repositories.d``,
``/etc/cvmfs/keys`` (a copy: ``rmfs`` deletes the repository's keys) and
``/etc/fstab`` are the publisher's own.

wishbot runs in the test process, outside those namespaces: a publisher's
environment (:meth:`Gateway.env`) puts a ``cvmfs_server`` first on ``PATH``
that runs the real one in the namespace (``nsenter -t PID -m``), and points
``WISHBOT_CVMFS_ROOT`` at the namespace's ``/cvmfs`` through
``/proc/PID/root``. A client mount of the stratum 0 over HTTP shows what a
site sees.

Everything is started by the fixture and stopped by PID; the repository is
removed with ``rmfs -f``. Skipped with one line where there is no gateway.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cvmfs_fixture import (
    TIMEOUT,
    _apache_up,
    _catalog_paths,
    _machine_lock,
    _run,
    mount_client,
    real_cvmfs_missing,
    synced_client,
)

GATEWAY_KEY = "wishbot-publisher"
#: the machine's own ``cvmfs_server``, found when this module is imported: a
#: test that puts a publisher's wrapper first on ``PATH`` (``Gateway.env``)
#: must not make a stratum 0's ``rmfs`` run in a namespace that is gone
#: (seen: a repository left behind by every run)
CVMFS_SERVER = shutil.which("cvmfs_server") or "cvmfs_server"
ADMIN_KEY = "wishbot-admin"


def gateway_missing() -> str | None:
    """Why no real gateway can be used here (None: it can)."""
    missing = real_cvmfs_missing()
    if missing:
        return missing
    for tool in ("cvmfs_gateway", "cvmfs_receiver", "unshare", "nsenter"):
        if not shutil.which(tool):
            return f"no {tool} installed (the CernVM-FS gateway comes with CERN's packages)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_HOLDER = """
awk '$2 ~ "^/(cvmfs|var/spool/cvmfs)/" {print $2}' /proc/self/mounts | sort -r |
  xargs -r -n1 umount -l
mount -t tmpfs none /etc/cvmfs/repositories.d
mount --bind "$D/keys" /etc/cvmfs/keys
mount --bind "$D/spool" /var/spool/cvmfs
mount --bind "$D/srv" /srv/cvmfs
mount --bind "$D/cvmfs" /cvmfs
mount --bind "$D/fstab" /etc/fstab
exec sleep infinity
"""


class Publisher:
    """One publisher host: a mount namespace with the repository made for the gateway."""

    def __init__(self, gateway: Gateway, number: int) -> None:
        self.gateway = gateway
        self.number = number
        self.dir = gateway.tmp / f"publisher-{number}"
        self.pid = 0
        self.holder: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for sub in ("keys", "spool", "srv", "cvmfs", "bin", "locks"):
            (self.dir / sub).mkdir(parents=True)
        shutil.copy("/etc/fstab", self.dir / "fstab")
        name = self.gateway.name
        for suffix in ("pub", "crt", "gw"):
            shutil.copy(f"/etc/cvmfs/keys/{name}.{suffix}", self.dir / "keys")
        # (cvmfs_server looks for open files under /cvmfs/REPO in every process
        # of the machine, so these publishers see each other's, which separate
        # hosts would not: the backend waits those out. A PID namespace each
        # would hide them, but its first process was seen to die under load.)
        holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-ec", _HOLDER],
            env={**os.environ, "D": str(self.dir)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.holder = holder
        self.pid = holder.pid
        for _ in range(100):  # the namespace is ready when its /cvmfs is ours
            if self._ready():
                break
            time.sleep(0.05)
        wrapper = self.dir / "bin" / "cvmfs_server"
        wrapper.write_text(f'#!/bin/sh\nexec nsenter -t {self.pid} -m {CVMFS_SERVER} "$@"\n')
        wrapper.chmod(0o755)
        upstream = f"gw,/srv/cvmfs/{name}/data/txn,{self.gateway.url}"
        self.server(
            "mkfs", "-w", f"http://127.0.0.1/cvmfs/{name}", "-u", upstream,
            "-k", "/etc/cvmfs/keys", "-o", "root", name,
        )  # fmt: skip

    def _ready(self) -> bool:
        """Is the namespace set up (its ``/etc/fstab`` is the publisher's copy)?"""
        try:
            seen = Path(f"/proc/{self.pid}/root/etc/fstab").stat().st_ino
        except OSError:
            return False
        return seen == (self.dir / "fstab").stat().st_ino

    @property
    def env(self) -> dict[str, str]:
        """The environment a wishbot run of this publisher needs."""
        return {
            "PATH": f"{self.dir / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "WISHBOT_CVMFS_ROOT": f"/proc/{self.pid}/root/cvmfs",
            "WISHBOT_LOCK_DIR": str(self.dir / "locks"),
        }

    def server(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", CVMFS_SERVER, *args],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=TIMEOUT,
            check=check,
        )

    def stop(self) -> None:
        if not self.pid:
            return
        name = self.gateway.name
        self.server("abort", "-f", name, check=False)
        self.server("rmfs", "-f", name, check=False)
        with_ns = ["nsenter", "-t", str(self.pid), "-m", "umount", "-l"]
        for mount in (f"/cvmfs/{name}", f"/var/spool/cvmfs/{name}/rdonly"):
            subprocess.run([*with_ns, mount], capture_output=True, check=False)
        os.kill(self.pid, signal.SIGKILL)
        if self.holder is not None:
            self.holder.wait(timeout=30)
        self.pid = 0


class Gateway:
    """A stratum 0 repository, its gateway and ``count`` publishers; read as a
    :class:`cvmfs_fixture.Repo` (``name``, ``env``, ``client()``, ``catalogs()``)
    through its first publisher."""

    kind = "gateway"

    def __init__(self, tmp: Path, count: int, *, lease_seconds: int = 7200) -> None:
        self.tmp = tmp
        #: the gateway's max_lease_time
        self.lease_seconds = lease_seconds
        self.name = f"g{uuid.uuid4().hex[:10]}.wishbot.test"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        self.admin_secret = uuid.uuid4().hex
        self.publishers = [Publisher(self, n + 1) for n in range(count)]
        self.gateway_pid = 0
        self.created = False
        self.client_mount = tmp / "client"
        self.cache = tmp / "cache"
        self.mounted = False

    def start(self) -> None:
        """Everything that may touch Apache's configuration (``mkfs``) under the
        machine's exclusive lock: another worker's publishes hold it shared
        (:meth:`in_use`) and would fail to download the whitelist meanwhile."""
        with _machine_lock():
            _apache_up()
            self.created = True
            _run(CVMFS_SERVER, "mkfs", "-o", "root", self.name)
            secret = uuid.uuid4().hex
            key = Path(f"/etc/cvmfs/keys/{self.name}.gw")
            key.write_text(f"plain_text {GATEWAY_KEY} {secret}\n")
            key.chmod(0o600)
            self._start_gateway(secret)
            for publisher in self.publishers:
                publisher.start()
        self._mount_client()

    def in_use(self) -> contextlib.AbstractContextManager[None]:
        """Hold while publishing: no repository is made or removed meanwhile."""
        return _machine_lock(shared=True)

    def _start_gateway(self, secret: str) -> None:
        config = self.tmp / "gateway"
        (config / "work").mkdir(parents=True)
        repos = [{"domain": self.name, "keys": [{"id": GATEWAY_KEY, "path": "/"}]}]
        keys = [
            {"type": "plain_text", "id": GATEWAY_KEY, "secret": secret},
            {"type": "plain_text", "id": ADMIN_KEY, "secret": self.admin_secret, "admin": True},
        ]
        access = {"version": 2, "repos": repos, "keys": keys}
        (config / "repo.json").write_text(json.dumps(access))
        user = {
            "max_lease_time": self.lease_seconds,
            "port": self.port,
            "num_receivers": 1,
            "receiver_path": shutil.which("cvmfs_receiver"),
            "log_level": "info",
            "work_dir": str(config / "work"),
        }
        (config / "user.json").write_text(json.dumps(user))
        pprof = free_port()
        log = (config / "gateway.log").open("w")
        proc = subprocess.Popen(
            [
                "cvmfs_gateway",
                "--user_config_file", str(config / "user.json"),
                "--access_config_file", str(config / "repo.json"),
                "--pprof_port", str(pprof), "--pprof_port_range_max", str(pprof),
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/",
        )  # fmt: skip
        log.close()
        self.gateway_pid = proc.pid
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"cvmfs_gateway did not listen on {self.port}: see {config}")

    def _mount_client(self) -> None:
        mount_client(self.tmp, self.name, self.client_mount, self.cache)
        self.mounted = True

    def client(self) -> Path:
        """What a site sees of the newest revision (remount sync)."""
        return synced_client(self.name, self.client_mount, self.cache)

    def revision(self) -> int:
        return int(os.getxattr(self.client(), "user.revision"))

    @property
    def env(self) -> dict[str, str]:
        return self.publishers[0].env

    @property
    def root(self) -> Path:
        """The first publisher's ``/cvmfs/REPO``."""
        return Path(self.env["WISHBOT_CVMFS_ROOT"]) / self.name

    def catalogs(self) -> list[str]:
        """``list-catalogs`` on the first publisher, its view brought up to date."""
        first = self.publishers[0]
        opened = first.server("transaction", f"{self.name}/.wishbot-refresh", check=False)
        first.server("abort", "-f", self.name, check=False)
        assert opened.returncode == 0, opened.stdout + opened.stderr
        return _catalog_paths(first.server("list-catalogs", self.name).stdout)

    def stop(self) -> None:
        if self.mounted and _run("umount", str(self.client_mount), check=False).returncode:
            _run("umount", "-l", str(self.client_mount), check=False)
        with _machine_lock():
            for publisher in self.publishers:
                publisher.stop()
            if self.gateway_pid:
                os.kill(self.gateway_pid, signal.SIGTERM)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.gateway_pid, 0)
            Path(f"/etc/cvmfs/keys/{self.name}.gw").unlink(missing_ok=True)
            if self.created:
                _run(CVMFS_SERVER, "abort", "-f", self.name, check=False)
                _run(CVMFS_SERVER, "rmfs", "-f", self.name, check=False)


def open_gateway(tmp: Path, count: int) -> Gateway:
    """A started :class:`Gateway` (stopped again if starting fails)."""
    gateway = Gateway(tmp, count)
    try:
        gateway.start()
    except BaseException:
        gateway.stop()
        raise
    return gateway


@pytest.fixture(scope="session")
def real_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with three publishers, shared by a worker's tests (paths of their own)."""
    missing = gateway_missing()
    if missing:
        pytest.skip(f"cvmfs gateway: {missing}")
    gateway = open_gateway(tmp_path_factory.mktemp("gateway"), 3)
    try:
        yield gateway
    finally:
        gateway.stop()

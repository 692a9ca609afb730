"""The gateway mode of tests/fake_cvmfs_server: publishers of one repository,
each publishing under a lease (``../shared/reference/cvmfs-server.md``, "The
gateway: parallel publishers of one repository"). The fake runs as a
subprocess, one environment per publisher (``FakeGatewayRepo``)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cvmfs_fixture import GATEWAY_UPSTREAM, FakeGatewayRepo

NAME = "gw.wishbot.test"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two publishers just made (``mkfs`` once per module, copied per test)."""
    tmp = tmp_path_factory.mktemp("gateway")
    repo = FakeGatewayRepo(tmp, NAME)
    yield tmp
    repo.close()


@pytest.fixture
def gw(made: Path, tmp_path: Path) -> Iterator[FakeGatewayRepo]:
    subprocess.run(["cp", "-a", f"{made}/.", str(tmp_path)], check=True)
    repo = FakeGatewayRepo(tmp_path, NAME, create=False)
    yield repo
    repo.close()


def server(
    repo: FakeGatewayRepo, n: int, *args: str, input: bytes | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # latin-1: tar bytes in, any bytes out, as text
        ["cvmfs_server", *args],
        input=input.decode("latin-1") if input is not None else None,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="latin-1",
        cwd="/",
        env={**os.environ, **repo.publisher(n), **env},
        timeout=30,
        check=False,
    )


def ok(repo: FakeGatewayRepo, n: int, *args: str, input: bytes | None = None) -> None:
    done = server(repo, n, *args, input=input)
    assert done.returncode == 0, (args, done.stdout, done.stderr)


def tree(repo: FakeGatewayRepo, n: int) -> Path:
    """Publisher ``n``'s ``/cvmfs/REPO``."""
    return Path(repo.publisher(n)["WISHBOT_CVMFS_ROOT"]) / NAME


def leases(repo: FakeGatewayRepo) -> dict[str, dict[str, object]]:
    path = repo.gateway / "leases.json"
    return json.loads(path.read_text()) if path.exists() else {}


def publish_files(repo: FakeGatewayRepo, n: int, lease: str, files: dict[str, str]) -> None:
    """Publisher ``n`` writes ``files`` (relative to the repository) under ``lease``."""
    ok(repo, n, "transaction", f"{NAME}/{lease}" if lease else NAME)
    for rel, text in files.items():
        (tree(repo, n) / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree(repo, n) / rel).write_text(text)
    ok(repo, n, "publish", NAME)


def tar_of(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_mkfs_makes_publishers_of_one_gateway(gw: FakeGatewayRepo, tmp_path: Path) -> None:
    alone = {**os.environ, **gw.publisher(0), "FAKE_CVMFS_SPOOL": str(tmp_path / "other-spool")}
    del alone["FAKE_CVMFS_GATEWAY"]
    done = subprocess.run(
        ["cvmfs_server", "mkfs", "-u", GATEWAY_UPSTREAM, "other.wishbot.test"],
        capture_output=True,
        text=True,
        env=alone,
        check=False,
    )
    assert done.returncode == 1 and "FAKE_CVMFS_GATEWAY" in done.stderr
    assert not (tmp_path / "other-spool").exists()

    assert server(gw, 0, "list").stdout == f"{NAME} (stratum0 / gw)\n"
    ok(gw, 0, "transaction", f"{NAME}/a")
    assert server(gw, 0, "list").stdout == f"{NAME} (stratum0 / gw - in transaction)\n"
    assert server(gw, 1, "list").stdout == f"{NAME} (stratum0 / gw)\n"
    assert gw.revision() == 1 and gw.client().is_dir()


def test_disjoint_leases_open_together_and_both_land(gw: FakeGatewayRepo) -> None:
    ok(gw, 0, "transaction", f"{NAME}/a")
    ok(gw, 1, "transaction", f"{NAME}/b/")  # a trailing slash is fine
    table = leases(gw)
    assert set(table) == {f"{NAME}/a", f"{NAME}/b"}
    assert table[f"{NAME}/a"]["publisher"] == gw.publisher(0)["FAKE_CVMFS_SPOOL"]
    assert abs(float(str(table[f"{NAME}/b"]["expires"])) - time.time() - 7200) < 60
    (tree(gw, 0) / "a").mkdir()
    (tree(gw, 0) / "a" / "f").write_text("from 0")
    (tree(gw, 1) / "b").mkdir()
    (tree(gw, 1) / "b" / "g").write_text("from 1")
    ok(gw, 0, "publish", NAME)
    ok(gw, 1, "publish", NAME)
    assert (gw.client() / "a" / "f").read_text() == "from 0"
    assert (gw.client() / "b" / "g").read_text() == "from 1"
    assert gw.revision() == 3 and leases(gw) == {}
    # a publisher's /cvmfs is the newest revision after its publish, read-only
    assert (tree(gw, 1) / "a" / "f").exists() and (tree(gw, 1) / "b" / "g").exists()
    assert (tree(gw, 1).stat().st_mode & 0o777) == 0o555


def test_concurrent_publishes_all_land(tmp_path: Path) -> None:
    gw = FakeGatewayRepo(tmp_path, NAME, publishers=3)
    for n, lease in ((0, "a"), (1, "b"), (2, "c")):
        ok(gw, n, "transaction", f"{NAME}/{lease}")
        (tree(gw, n) / lease).mkdir()
        (tree(gw, n) / lease / "f").write_bytes(os.urandom(4096))
    running = [
        subprocess.Popen(
            ["cvmfs_server", "publish", NAME],
            cwd="/",
            env={**os.environ, **gw.publisher(n)},
            stdout=subprocess.DEVNULL,
        )
        for n in range(3)
    ]
    assert [p.wait(timeout=30) for p in running] == [0, 0, 0]
    assert sorted(p.name for p in gw.client().iterdir()) == ["a", "b", "c"]
    assert gw.revision() == 4
    gw.close()


def test_prefix_conflicts_exit_16(gw: FakeGatewayRepo) -> None:
    ok(gw, 0, "transaction", f"{NAME}/a")
    for wanted in ("a/", "a/b/c", ""):
        done = server(gw, 1, "transaction", f"{NAME}/{wanted}" if wanted else NAME)
        assert done.returncode == 16, wanted
        assert "Path busy. Time remaining = 1h59m" in done.stdout
        assert "CernVM-FS transaction error: lease path busy" in done.stderr
    ok(gw, 1, "transaction", f"{NAME}/ab")  # a prefix of the name, not of the path
    assert set(leases(gw)) == {f"{NAME}/a", f"{NAME}/ab"}


def test_whole_repository_lease_blocks_every_path(gw: FakeGatewayRepo) -> None:
    ok(gw, 0, "transaction", NAME)
    assert set(leases(gw)) == {f"{NAME}/"}
    assert server(gw, 1, "transaction", f"{NAME}/anything").returncode == 16
    ok(gw, 0, "abort", "-f", NAME)
    ok(gw, 1, "transaction", f"{NAME}/anything")


def test_one_transaction_per_publisher(gw: FakeGatewayRepo) -> None:
    ok(gw, 0, "transaction", f"{NAME}/a")
    assert server(gw, 0, "transaction", f"{NAME}/b").returncode == 17
    assert set(leases(gw)) == {f"{NAME}/a"}


def test_retry_gets_the_lease_when_the_holder_publishes(gw: FakeGatewayRepo) -> None:
    ok(gw, 0, "transaction", f"{NAME}/a")
    waiting = subprocess.Popen(
        ["cvmfs_server", "transaction", "-t", "2", f"{NAME}/a/b"],
        cwd="/",
        env={**os.environ, **gw.publisher(1)},
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.2)
    (tree(gw, 0) / "a").mkdir()  # the parent of a/b must be published
    ok(gw, 0, "publish", NAME)
    out, _ = waiting.communicate(timeout=10)
    assert waiting.returncode == 0, out
    assert "repository busy, retrying" in out
    assert set(leases(gw)) == {f"{NAME}/a/b"}


def test_retry_gives_up_after_its_time(gw: FakeGatewayRepo) -> None:
    ok(gw, 0, "transaction", f"{NAME}/a")
    started = time.monotonic()
    done = server(gw, 1, "transaction", "-t", "0.3", f"{NAME}/a")
    assert done.returncode == 16 and "repository busy, retrying" in done.stdout
    assert time.monotonic() - started < 5


def test_the_lease_parent_must_be_a_published_directory(gw: FakeGatewayRepo) -> None:
    publish_files(gw, 0, "", {"file": "x", "dir/inner": "y"})
    os.symlink("dir", gw.client() / "link")
    done = server(gw, 0, "transaction", f"{NAME}/missing/sub")
    assert done.returncode == 2
    assert "cannot open transaction on non-existing path /missing" in done.stderr
    done = server(gw, 0, "transaction", f"{NAME}/file/sub")
    assert done.returncode == 20 and "which is not a directory" in done.stderr
    assert server(gw, 0, "transaction", f"{NAME}/link/sub").returncode == 20  # no symlink followed
    assert leases(gw) == {}
    assert not (Path(gw.publisher(0)["FAKE_CVMFS_SPOOL"]) / NAME / "in_transaction.lock").exists()
    ok(gw, 0, "transaction", f"{NAME}/dir/new/")  # the lease path itself need not exist


def test_only_the_lease_is_published(gw: FakeGatewayRepo) -> None:
    publish_files(gw, 0, "", {"a/old": "1", "a/gone": "2", "b/keep": "3", "c/keep": "4"})
    ok(gw, 0, "transaction", f"{NAME}/a")
    work = tree(gw, 0)
    (work / "a" / "new").write_text("4")
    (work / "a" / "old").write_text("changed")
    (work / "a" / ".wh.gone").write_text("")  # a deletion marker, never published
    (work / "outside").write_text("dropped")
    (work / "b" / ".wh.keep").write_text("")  # outside the lease: dropped too
    (work / "c" / "keep").unlink()  # a deletion outside the lease: dropped
    ok(gw, 0, "publish", NAME)
    assert sorted(p.name for p in (gw.client() / "a").iterdir()) == ["new", "old"]
    assert (gw.client() / "a" / "old").read_text() == "changed"
    assert sorted(p.name for p in (gw.client() / "b").iterdir()) == ["keep"]
    assert (gw.client() / "c" / "keep").read_text() == "4"
    assert not (gw.client() / "outside").exists()
    assert not (work / "outside").exists() and (work / "c" / "keep").exists()
    assert gw.revision() == 3


def test_removing_the_lease_path_removes_it(gw: FakeGatewayRepo) -> None:
    publish_files(gw, 0, "", {"images/x/f": "1", "images/y/f": "2"})
    ok(gw, 1, "transaction", f"{NAME}/images/x")
    subprocess.run(["rm", "-r", str(tree(gw, 1) / "images" / "x")], check=True)
    ok(gw, 1, "publish", NAME)
    assert [p.name for p in (gw.client() / "images").iterdir()] == ["y"]


def test_transaction_brings_the_publisher_up_to_date(gw: FakeGatewayRepo) -> None:
    assert not (tree(gw, 1) / "a").exists()
    publish_files(gw, 0, "a", {"a/f": "new"})
    assert not (tree(gw, 1) / "a").exists()  # publisher 1 still sees its old revision
    ok(gw, 1, "transaction", f"{NAME}/b")
    assert (tree(gw, 1) / "a" / "f").read_text() == "new"


def test_an_expired_lease_frees_the_path_and_cannot_be_published(gw: FakeGatewayRepo) -> None:
    done = server(gw, 0, "transaction", f"{NAME}/a", FAKE_GATEWAY_LEASE_SECONDS="0.3")
    assert done.returncode == 0
    (tree(gw, 0) / "a").mkdir()
    (tree(gw, 0) / "a" / "late").write_text("too late")
    time.sleep(0.4)
    ok(gw, 1, "transaction", f"{NAME}/a")  # no longer blocks others
    done = server(gw, 0, "publish", NAME)
    assert done.returncode == 1, done.stdout
    assert f"{NAME} (stratum0 / gw - in transaction)" in server(gw, 0, "list").stdout
    assert (tree(gw, 0) / "a" / "late").exists() and not (gw.client() / "a").exists()
    ok(gw, 0, "abort", "-f", NAME)  # exit 0 though its lease is gone
    assert set(leases(gw)) == {f"{NAME}/a"}  # the other publisher's lease stays
    assert leases(gw)[f"{NAME}/a"]["publisher"] == gw.publisher(1)["FAKE_CVMFS_SPOOL"]
    ok(gw, 1, "publish", NAME)
    assert server(gw, 0, "abort", "-f", NAME).returncode == 22


def test_a_cancelled_lease_cannot_be_published(gw: FakeGatewayRepo) -> None:
    ok(gw, 0, "transaction", f"{NAME}/a")
    fd = os.open(gw.gateway / "gateway.lock", os.O_RDWR)
    try:  # what the gateway's admin API does (the documented format)
        fcntl.flock(fd, fcntl.LOCK_EX)
        (gw.gateway / "leases.json").write_text("{}")
    finally:
        os.close(fd)
    assert server(gw, 0, "publish", NAME).returncode == 1
    assert "in transaction" in server(gw, 0, "list").stdout
    ok(gw, 0, "abort", "-f", NAME)


def test_a_killed_holder_keeps_its_lease(gw: FakeGatewayRepo) -> None:
    holder = subprocess.Popen(
        ["sh", "-c", f"cvmfs_server transaction {NAME}/a && exec sleep 60"],
        cwd="/",
        env={**os.environ, **gw.publisher(0)},
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        if leases(gw):
            break
        time.sleep(0.05)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    done = server(gw, 1, "transaction", f"{NAME}/a/b")
    assert done.returncode == 16 and "Time remaining = 1h59m" in done.stdout


def test_ingest_takes_a_lease(gw: FakeGatewayRepo) -> None:
    done = server(gw, 0, "ingest", "-t", "-", "-b", "layers/l1", NAME, input=tar_of({"f": b"1"}))
    assert done.returncode == 1 and "non-existing path /layers" in done.stderr
    assert not leases(gw) and gw.revision() == 1
    publish_files(gw, 0, "layers", {"layers/.keep": ""})
    ok(gw, 0, "ingest", "-t", "-", "-b", "layers/l1", NAME, input=tar_of({"f": b"1"}))
    assert (gw.client() / "layers" / "l1" / "f").read_bytes() == b"1"
    ok(gw, 1, "transaction", f"{NAME}/layers/l2")
    done = server(gw, 0, "ingest", "-t", "-", "-b", "layers/l2", NAME, input=tar_of({}))
    assert done.returncode == 1 and "Impossible to start a transaction" in done.stderr
    ok(gw, 0, "ingest", "-d", "layers/l1/f", NAME)
    assert not (gw.client() / "layers" / "l1" / "f").exists()
    assert set(leases(gw)) == {f"{NAME}/layers/l2"}
    assert server(gw, 0, "ingest", "-d", "layers/l2", NAME).returncode == 1  # busy


def test_ingest_refuses_what_a_gateway_cannot_do(gw: FakeGatewayRepo) -> None:
    done = server(gw, 0, "ingest", "-d", "a", "-d", "b", NAME)
    assert done.returncode == 1
    assert "Could not delete multiple paths using a gateway" in done.stderr
    done = server(gw, 0, "ingest", "-t", "-", "-b", "x", "-d", "a", NAME, input=tar_of({}))
    assert done.returncode == 1
    assert "Could not delete and add a file in the same transaction" in done.stderr
    assert not leases(gw)

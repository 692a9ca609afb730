"""The publisher contract: what every backend promises, run against each one here.

Backends: ``local:`` (a plain directory), ``cvmfs:`` with the fake
``cvmfs_server`` (``tests/fake_cvmfs_server``) alone and as a publisher of
its fake gateway, ``cvmfs:`` with the real
``cvmfs_server`` and ``cvmfs:`` of a publisher of a real repository gateway
(marker ``cvmfs``; skipped with one line where they are not installed). A new backend adds itself to :func:`backend` and gets every test.

The promises (``bot.publisher.backend``): a transaction is published whole when
its block ends and not at all when it raises; inside it, reads see its own
writes; symlinks are created and re-pointed, paths removed; a write outside the
backend's scope is refused at once; a transaction a killed run left open is
found and aborted by ``recover``; the lock is exclusive.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cvmfs_fixture import FakeGatewayRepo, Repo, open_repo
from gateway_fixture import Gateway

from bot.errors import LockedError, PublisherError
from bot.publisher import open_publisher
from bot.publisher.backend import Publisher, Scope
from bot.publisher.metadata import read_json


@dataclass
class Backend:
    """A backend under test: how to name it, and what its readers see."""

    target: str
    #: the tree a reader sees after a publish (a client mount for CernVM-FS)
    published: Path | None = None
    repo: Repo | None = None

    def open(self) -> Publisher:
        return open_publisher(self.target)

    def seen(self) -> Path:
        """What readers see now (synced for a real CernVM-FS client)."""
        if self.repo is not None:
            return self.repo.client()
        assert self.published is not None
        return self.published


@pytest.fixture(
    params=[
        "local",
        "cvmfs-fake",
        "cvmfs-gateway-fake",
        pytest.param("cvmfs-real", marks=pytest.mark.cvmfs),
        pytest.param("cvmfs-gateway", marks=pytest.mark.cvmfs),
    ]
)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    if request.param == "local":
        yield Backend(f"local:{tmp_path / 'tree'}", published=tmp_path / "tree")
        return
    if request.param == "cvmfs-gateway-fake":
        fake = FakeGatewayRepo(tmp_path, f"g{uuid.uuid4().hex[:8]}.example.org")
        for key, value in fake.env.items():
            monkeypatch.setenv(key, value)
        try:
            yield Backend(f"cvmfs:{fake.name}", repo=fake)
        finally:
            fake.close()
        return
    if request.param == "cvmfs-gateway":
        gateway: Gateway = request.getfixturevalue("real_gateway")
        for key, value in gateway.publishers[0].env.items():
            monkeypatch.setenv(key, value)
        with gateway.in_use():
            yield Backend(f"cvmfs:{gateway.name}", repo=gateway)  # type: ignore[arg-type]
        return
    kind = request.param.removeprefix("cvmfs-")
    with open_repo(kind, request, tmp_path, monkeypatch) as repo:
        yield Backend(f"cvmfs:{repo.name}", repo=repo)


@pytest.fixture
def area() -> str:
    """A directory of this test's own (a real repository is shared by a worker's tests)."""
    return f"contract-{uuid.uuid4().hex[:10]}"


def test_a_transaction_is_published_whole(backend: Backend, area: str) -> None:
    pub = backend.open()
    with pub.transaction() as txn:
        txn.mkdir(f"{area}/dir/empty")
        txn.write_bytes(f"{area}/dir/file", b"content")
        txn.write_json(f"{area}/meta.json", {"version": 1})
        txn.symlink(f"{area}/link", "dir/file")
        assert not (backend.seen() / area).exists()  # nothing visible before the publish
    seen = backend.seen() / area
    assert (seen / "dir" / "file").read_bytes() == b"content"
    assert (seen / "dir" / "empty").is_dir()
    assert read_json(seen / "meta.json") == {"version": 1}
    assert os.readlink(seen / "link") == "dir/file"
    assert (seen / "link").read_bytes() == b"content"


def test_an_aborted_transaction_leaves_nothing(backend: Backend, area: str) -> None:
    pub = backend.open()
    with pub.transaction() as txn:
        txn.write_bytes(f"{area}/kept", b"1")
    with pytest.raises(RuntimeError, match="midway"), pub.transaction() as txn:
        txn.write_bytes(f"{area}/kept", b"2")
        txn.write_bytes(f"{area}/new", b"x")
        txn.remove(f"{area}/kept")
        raise RuntimeError("midway")
    assert (pub.root / area / "kept").read_bytes() == b"1"
    assert not (pub.root / area / "new").exists()
    assert sorted(os.listdir(backend.seen() / area)) == ["kept"]
    assert (backend.seen() / area / "kept").read_bytes() == b"1"
    assert pub.recover() == []  # nothing left open
    with pub.transaction() as txn:  # and the next transaction goes
        txn.write_bytes(f"{area}/after", b"y")
    assert (backend.seen() / area / "after").read_bytes() == b"y"


def test_reads_see_the_transactions_own_writes(backend: Backend, area: str) -> None:
    pub = backend.open()
    with pub.transaction() as txn:
        txn.write_bytes(f"{area}/old", b"published")
    with pub.transaction() as txn:
        assert txn.resolve(f"{area}/old").read_bytes() == b"published"
        assert txn.exists(f"{area}/old") and not txn.exists(f"{area}/new")
        txn.write_bytes(f"{area}/old", b"rewritten")
        txn.write_json(f"{area}/new", [1, 2])
        assert txn.resolve(f"{area}/old").read_bytes() == b"rewritten"
        assert read_json(txn.resolve(f"{area}/new")) == [1, 2]
        assert txn.exists(f"{area}/new") and txn.is_dir(area)
        assert (backend.seen() / area / "old").read_bytes() == b"published"
    assert (backend.seen() / area / "old").read_bytes() == b"rewritten"


def test_symlinks_are_created_and_repointed(backend: Backend, area: str) -> None:
    pub = backend.open()
    with pub.transaction() as txn:
        txn.write_bytes(f"{area}/one", b"1")
        txn.write_bytes(f"{area}/two", b"2")
        txn.symlink(f"{area}/current", "one")
        txn.symlink(f"{area}/dangling", "nowhere")
    assert (backend.seen() / area / "current").read_bytes() == b"1"
    assert os.readlink(backend.seen() / area / "dangling") == "nowhere"
    with pub.transaction() as txn:
        txn.symlink(f"{area}/current", "two")
        assert os.readlink(txn.resolve(f"{area}/current")) == "two"
    assert os.readlink(backend.seen() / area / "current") == "two"
    assert (backend.seen() / area / "current").read_bytes() == b"2"


def test_removals_are_published_with_the_transaction(backend: Backend, area: str) -> None:
    pub = backend.open()
    with pub.transaction() as txn:
        txn.write_bytes(f"{area}/file", b"f")
        txn.write_bytes(f"{area}/tree/deep/file", b"d")
        txn.symlink(f"{area}/link", "file")
        txn.write_bytes(f"{area}/stays", b"s")
    with pub.transaction() as txn:
        for name in ("file", "tree", "link", "never-there"):
            pub.remove(txn, f"{area}/{name}")
    assert sorted(os.listdir(backend.seen() / area)) == ["stays"]


def test_writes_outside_the_scope_are_refused_at_once(backend: Backend, area: str) -> None:
    pub = backend.open()
    with pub.transaction() as txn:
        txn.write_bytes(f"{area}/outside/file", b"o")
    pub.scope = Scope((f"{area}/mine",))
    with pub.transaction() as txn:
        txn.write_bytes(f"{area}/mine/file", b"m")
        txn.symlink(f"{area}/mine/link", "file")
        txn.mkdir(f"{area}/mine/dir")
        for write in (
            lambda: txn.write_bytes(f"{area}/other", b"x"),
            lambda: txn.write_json(f"{area}/mine-not", {}),
            lambda: txn.symlink(f"{area}/link", "mine/file"),
            lambda: txn.mkdir(f"{area}/dir"),
            lambda: txn.remove(f"{area}/outside/file"),
            lambda: txn / f"{area}/outside/other",
        ):
            with pytest.raises(PublisherError, match="may not write"):
                write()
        assert txn.resolve(f"{area}/outside/file").read_bytes() == b"o"  # reads are not scoped
    for bad in ("/etc/passwd", f"{area}/mine/../../x", ""):
        with pytest.raises(PublisherError), pub.transaction() as txn:
            txn.write_bytes(bad, b"x")
    clone = pub.clone_transaction(f"{area}/mine/dir", f"{area}/clone")
    with pytest.raises(PublisherError, match="outside its scope"), clone:
        pytest.fail("cloned outside the scope")
    seen = backend.seen() / area
    assert sorted(os.listdir(seen)) == ["mine", "outside"]
    assert sorted(os.listdir(seen / "mine")) == ["dir", "file", "link"]
    assert sorted(os.listdir(seen / "outside")) == ["file"]


def test_a_transaction_may_narrow_the_scope_never_widen_it(backend: Backend, area: str) -> None:
    pub = backend.open()
    with pub.transaction(scope=Scope((f"{area}/one", f"{area}/two"))) as txn:
        txn.write_bytes(f"{area}/one/file", b"1")
        txn.symlink(f"{area}/two/link", "../one/file")
        with pytest.raises(PublisherError, match="may not write"):
            txn.write_bytes(f"{area}/three/file", b"3")
    assert (backend.seen() / area / "two" / "link").read_bytes() == b"1"
    with pub.transaction(scope=Scope((f"{area}/one",))) as txn:  # a later one is not bound
        assert txn.scope.covers(f"{area}/one/x") and not txn.scope.covers(f"{area}/two")
    pub.scope = Scope((f"{area}/one",))
    for wider in (Scope((f"{area}/two",)), Scope()):
        opening = pub.transaction(scope=wider)
        with pytest.raises(PublisherError, match="cannot open a transaction"), opening:
            pytest.fail(f"a transaction on {wider.describe()} of a publisher of {area}/one")
    assert sorted(os.listdir(backend.seen() / area)) == ["one", "two"]


_HOLDER = """
import sys, time
from bot.publisher import open_publisher
pub = open_publisher(sys.argv[1])
with pub.transaction() as txn:
    txn.write_bytes(sys.argv[2], b"half")
    print("ready", flush=True)
    time.sleep(60)
"""


def test_a_killed_run_is_recovered(backend: Backend, area: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, backend.target, f"{area}/half"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
        cwd="/",
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait(timeout=20)
    proc.stdout.close()
    pub = backend.open()
    done = pub.recover()
    assert done, "recover found nothing of the killed run's transaction"
    assert pub.recover() == []
    assert not (backend.seen() / area / "half").exists()
    with pub.transaction() as txn:
        txn.write_bytes(f"{area}/whole", b"w")
    assert sorted(os.listdir(backend.seen() / area)) == ["whole"]


def test_the_lock_is_exclusive(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    with first.lock(), pytest.raises(LockedError, match=f"pid {os.getpid()}"), second.lock():
        pytest.fail("two holders of one lock")
    with second.lock():  # released when its holder is done
        pass

"""The local publisher: transactions, lock, crash recovery; state reading."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from publisher_fakes import digest, publish_image, unpublish

from bot.core import layout
from bot.errors import LockedError, PublisherError, UsageError
from bot.publisher import open_publisher
from bot.publisher.cvmfs import CvmfsPublisher
from bot.publisher.local import LocalPublisher
from bot.publisher.state import read_state

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_open_publisher_picks_backend(tmp_path: Path) -> None:
    assert isinstance(open_publisher(f"local:{tmp_path}"), LocalPublisher)
    assert isinstance(open_publisher("cvmfs:unpacked.cern.ch"), CvmfsPublisher)
    for bad in ("nowhere", "ftp:x", "local:", "cvmfs:../etc"):
        with pytest.raises(UsageError):
            open_publisher(bad)


def test_transaction_publishes_on_success(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "tree")
    with pub.transaction() as view:
        (view / ".flat" / "ab").mkdir(parents=True)
        (view / ".flat" / "ab" / "file").write_text("x")
        (view / "reg.io" / "a").mkdir(parents=True)
        os.symlink("../../.flat/ab", view / "reg.io" / "a" / "b:1")
        assert not (pub.root / ".flat").exists()  # nothing visible before commit
    assert (pub.root / "reg.io/a/b:1/file").read_text() == "x"
    assert os.readlink(pub.root / "reg.io/a/b:1") == "../../.flat/ab"
    assert [p.name for p in (pub.root / ".wishbot").iterdir()] == []


def test_transaction_aborts_on_exception(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "tree")
    with pytest.raises(RuntimeError), pub.transaction() as view:
        (view / "reg.io").mkdir()
        (view / "reg.io" / "x").write_text("half")
        raise RuntimeError("boom")
    assert not (pub.root / "reg.io").exists()
    assert list((pub.root / ".wishbot").iterdir()) == []


def test_symlink_never_replaces_a_real_directory(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "tree")
    (pub.root / "reg.io" / "a" / "b:1").mkdir(parents=True)
    (pub.root / "reg.io" / "a" / "b:1" / "keep").write_text("mine")
    with pytest.raises(PublisherError, match="not a symlink"), pub.transaction() as view:
        (view / "reg.io" / "a").mkdir(parents=True)
        os.symlink("elsewhere", view / "reg.io" / "a" / "b:1")
    assert (pub.root / "reg.io/a/b:1/keep").read_text() == "mine"


def test_repoint_and_remove(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "tree")
    publish_image(pub, "reg.io/a/b:1", digest("i1"), [digest("l1")], NOW)
    publish_image(pub, "reg.io/a/b:1", digest("i2"), [digest("l1"), digest("l2")], NOW)
    state = read_state(pub.root, "repo")
    assert [(i.path, i.image_id) for i in state.images] == [("reg.io/a/b:1", digest("i2"))]
    assert state.images[0].layers == (digest("l1"), digest("l2"))
    assert state.layers[digest("l1")].users == {digest("i1"), digest("i2")}
    assert [(s.kind, s.id) for s in state.schedule] == [("image", digest("i1"))]
    assert state.flat_images == {digest("i1"), digest("i2")}
    unpublish(pub, "reg.io/a/b:1", NOW)
    state = read_state(pub.root, "repo")
    # the removed path serves on (retiring) until gc; both images are scheduled
    assert [(i.path, i.image_id) for i in state.images] == [("reg.io/a/b:1", digest("i2"))]
    assert {(s.id, s.path) for s in state.schedule} == {
        (digest("i1"), "reg.io/a/b:1"),
        (digest("i2"), "reg.io/a/b:1"),
    }


def test_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "tree")
    other = LocalPublisher(tmp_path / "tree")
    with pub.lock(), pytest.raises(LockedError, match=f"pid {os.getpid()}"), other.lock():
        pytest.fail("the lock was taken twice")
    with other.lock():  # released
        assert other.lock_path.read_text().strip() == str(os.getpid())


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from bot.publisher.local import LocalPublisher
        with LocalPublisher(Path({str(tree)!r})).lock():
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"pid {proc.pid}"), LocalPublisher(tree).lock():
            pytest.fail("the lock was taken twice")
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


_CRASHER = """
import os, sys
from pathlib import Path
from bot.publisher.local import LocalPublisher
pub = LocalPublisher(Path(sys.argv[1]))
with pub.transaction() as view:
    for name in ("aa", "bb", "cc"):
        d = view / ".flat" / name / ("f" * 64)
        d.mkdir(parents=True)
        (d / "content").write_text(name)
    (view / "reg.io" / "a").mkdir(parents=True)
    os.symlink("../../.flat/cc/" + "f" * 64, view / "reg.io" / "a" / "b:1")
    pub.remove(view, "old")
"""


@pytest.mark.parametrize(
    ("crash_at", "visible_after_recover"),
    [("commit", False), ("journal", True), ("delete", True), ("rename:2", True)],
)
def test_crash_during_commit_recovers(
    tmp_path: Path, crash_at: str, visible_after_recover: bool
) -> None:
    tree = tmp_path / "tree"
    (tree / "old").mkdir(parents=True)
    env = {**os.environ, "WISHBOT_TEST_CRASH_AT": crash_at}
    done = subprocess.run([sys.executable, "-c", _CRASHER, str(tree)], env=env, check=False)
    assert done.returncode == -9
    link = tree / "reg.io/a/b:1"
    # whatever is visible is complete: the symlink only ever points at a full image
    if link.is_symlink():
        assert (link / "content").read_text() == "cc"
    pub = LocalPublisher(tree)
    assert pub.recover()
    assert link.is_symlink() is visible_after_recover
    assert (tree / "old").exists() is not visible_after_recover
    if visible_after_recover:
        assert (link / "content").read_text() == "cc"
        assert (tree / ".flat/aa" / ("f" * 64) / "content").read_text() == "aa"
    assert sorted(p.name for p in (tree / ".wishbot").iterdir()) == []
    assert pub.recover() == []


def test_read_state_tolerates_foreign_trees(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    image = "a" * 64
    (root / ".flat" / "aa" / image).mkdir(parents=True)
    (root / "reg.io" / "lib").mkdir(parents=True)
    os.symlink(f"../../.flat/aa/{image}", root / "reg.io/lib/x:1")  # no metadata at all
    (root / "reg.io/lib/legacy:1").mkdir()  # a legacy real directory: not descended
    (root / "reg.io/lib/legacy:1/inner").mkdir()
    os.symlink("/etc", root / "reg.io/lib/legacy:1/inner/evil:2")
    (root / ".metadata").mkdir()
    (root / ".layers" / "bb" / ("b" * 64) / "layerfs").mkdir(parents=True)
    state = read_state(root, "repo")
    assert [(i.path, i.image_id, i.layers) for i in state.images] == [
        ("reg.io/lib/x:1", f"sha256:{image}", ())
    ]
    assert state.schedule == ()
    assert set(state.layers) == {f"sha256:{'b' * 64}"}
    assert state.layers[f"sha256:{'b' * 64}"].users == frozenset()
    # but a damaged remove schedule is never read as empty (its images would leak)
    (root / ".metadata/remove-schedule.json").write_text("{not json")
    with pytest.raises(PublisherError, match=r"the remove schedule .* cannot be read"):
        read_state(root, "repo")


def test_read_state_multiarch(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    path = "reg.io/lib/x:1"
    for arch, ident in (("amd64", "a" * 64), ("arm64:v8", "b" * 64)):
        (root / ".flat" / ident[:2] / ident).mkdir(parents=True)
        link = root / layout.MULTIARCH / arch / path
        link.parent.mkdir(parents=True)
        os.symlink(layout.flat_link(f"{layout.MULTIARCH}/{arch}/{path}", ident), link)
    (root / "reg.io/lib").mkdir(parents=True)
    os.symlink("../../.multiarch/$(CVMFS_ARCH:-amd64)/reg.io/lib/x:1", root / path)
    state = read_state(root, "repo")
    assert sorted((i.path, str(i.platform), i.image_id[-2:]) for i in state.images) == [
        ("reg.io/lib/x:1", "linux/amd64", "aa"),
        ("reg.io/lib/x:1", "linux/arm64/v8", "bb"),
    ]

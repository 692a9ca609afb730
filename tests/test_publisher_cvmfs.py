"""The cvmfs_server backend, driven against tests/fake_cvmfs_server (a real subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from publisher_fakes import digest, publish_image

from bot.errors import PublisherError
from bot.publisher.backend import open_publisher
from bot.publisher.cvmfs import CvmfsPublisher
from bot.publisher.gc import collect
from bot.publisher.state import read_state

FAKE = Path(__file__).with_name("fake_cvmfs_server")
REPO = "unpacked.example.org"


@pytest.fixture
def cvmfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cvmfs_server").symlink_to(FAKE)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "WISHBOT_CVMFS_ROOT": str(tmp_path / "cvmfs"),
        "FAKE_CVMFS_SPOOL": str(tmp_path / "spool"),
        "WISHBOT_LOCK_DIR": str(tmp_path / "locks"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    subprocess.run(["cvmfs_server", "mkfs", REPO], check=True)
    yield env
    os.chmod(tmp_path / "cvmfs" / REPO, 0o755)


def _published(env: dict[str, str]) -> Path:
    return Path(env["FAKE_CVMFS_SPOOL"]) / REPO / "published"


def test_publish_makes_changes_visible(cvmfs: dict[str, str]) -> None:
    pub = open_publisher(f"cvmfs:{REPO}")
    assert isinstance(pub, CvmfsPublisher) and not pub.in_transaction()
    with pub.transaction() as view:
        assert pub.in_transaction()
        (view / "hello").write_text("world")
    assert not pub.in_transaction()
    assert (_published(cvmfs) / "hello").read_text() == "world"
    assert (pub.root / "hello").read_text() == "world"


def test_exception_aborts_and_discards(cvmfs: dict[str, str]) -> None:
    pub = CvmfsPublisher(REPO)
    with pub.transaction() as view:
        (view / "kept").write_text("1")
    with pytest.raises(ValueError), pub.transaction() as view:
        (view / "kept").write_text("2")
        (view / "new").write_text("x")
        raise ValueError("fail")
    assert not pub.in_transaction()
    assert (pub.root / "kept").read_text() == "1"
    assert not (pub.root / "new").exists()


def test_only_one_transaction_at_a_time(cvmfs: dict[str, str]) -> None:
    pub = CvmfsPublisher(REPO)
    subprocess.run(["cvmfs_server", "transaction", REPO], check=True)
    with pytest.raises(PublisherError, match="already in a transaction"), pub.transaction():
        pytest.fail("a second transaction was opened")
    # an operator's transaction is never aborted behind their back
    with pytest.raises(PublisherError, match="did not open"):
        pub.recover()
    assert pub.in_transaction()
    subprocess.run(["cvmfs_server", "abort", "-f", REPO], check=True)
    assert pub.recover() == []


_HOLDER = """
import sys, time
from bot.publisher.cvmfs import CvmfsPublisher
pub = CvmfsPublisher(sys.argv[1])
with pub.transaction() as view:
    (view / "partial").write_text("half")
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_aborts_open_transaction(cvmfs: dict[str, str], signum: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, REPO], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signum)
    proc.wait(timeout=20)
    pub = CvmfsPublisher(REPO)
    assert not pub.in_transaction()
    assert not (pub.root / "partial").exists()


def test_recover_after_kill(cvmfs: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, REPO], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait(timeout=20)
    pub = CvmfsPublisher(REPO)
    assert pub.in_transaction()  # SIGKILL cannot be caught: left open
    assert pub.marker_path.exists()
    assert pub.recover() == [f"aborted the transaction a crashed run left open on {REPO}"]
    assert not pub.marker_path.exists()
    assert not pub.in_transaction() and not (pub.root / "partial").exists()


def test_ingest_and_list(cvmfs: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("ingested")
    tar = subprocess.run(["tar", "-c", "-C", str(src), "."], capture_output=True, check=True)
    subprocess.run(
        ["cvmfs_server", "ingest", "--catalog", "-t", "-", "-b", "some/dir", REPO],
        input=tar.stdout,
        check=True,
    )
    root = Path(cvmfs["WISHBOT_CVMFS_ROOT"]) / REPO
    assert (root / "some/dir/f").read_text() == "ingested"
    assert (root / "some/dir/.cvmfscatalog").exists()
    subprocess.run(["cvmfs_server", "ingest", "--delete", "some/dir", REPO], check=True)
    assert not (root / "some/dir").exists()
    listing = subprocess.run(["cvmfs_server", "list"], capture_output=True, text=True, check=True)
    assert listing.stdout.strip() == f"{REPO} (stratum0 / local)"


def test_images_and_gc_through_cvmfs(cvmfs: dict[str, str]) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    pub = CvmfsPublisher(REPO)
    publish_image(pub, "reg.io/a/b:1", digest("i1"), [digest("l1")], now)
    publish_image(pub, "reg.io/a/b:1", digest("i2"), [digest("l2")], now)
    state = read_state(pub.root, REPO)
    assert [i.image_id for i in state.images] == [digest("i2")]
    report = collect(pub, now + timedelta(days=31), grace_days=30, max_deletions=10)
    assert report.deleted_images == [(digest("i1"), "reg.io/a/b:1")]
    assert report.deleted_layers == [digest("l1")]
    assert read_state(_published(cvmfs), REPO).flat_images == {digest("i2")}


def test_lock_lives_outside_the_repository(cvmfs: dict[str, str]) -> None:
    pub = CvmfsPublisher(REPO)
    with pub.lock():
        assert pub.lock_path.parent == Path(cvmfs["WISHBOT_LOCK_DIR"])
    assert not (pub.root / ".wishbot").exists()


def test_missing_cvmfs_server_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PublisherError, match="cvmfs_server is not installed"):
        CvmfsPublisher(REPO).recover()


def test_fake_server_docstring_matches_commands() -> None:
    text = FAKE.read_text()
    for command in ("transaction", "publish", "abort -f", "ingest", "list"):
        assert f"``{command}" in textwrap.dedent(text)

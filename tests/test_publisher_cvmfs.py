"""The cvmfs_server backend, against tests/fake_cvmfs_server and a real CernVM-FS.

Every behaviour test runs twice (``cvmfs_repo``): against the fake, and
against a real repository with an independent client mount where CernVM-FS is
installed (marker ``cvmfs``; skipped with one line otherwise). What a client
sees is read through ``repo.client()``. Facts: ``../shared/reference/cvmfs-server.md``.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cvmfs_fixture import FAKE, FakeRepo, Repo
from publisher_fakes import digest, publish_image

from bot.core import layout
from bot.errors import PublisherError
from bot.publisher import open_publisher
from bot.publisher.cvmfs import CvmfsPublisher
from bot.publisher.gc import collect
from bot.publisher.safetree import force_rmtree
from bot.publisher.state import read_state


def _unique() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def _tar(entries: list[tuple[str, bytes | str | None]]) -> bytes:
    """A tar: ``(name, bytes)`` a file, ``(name, None)`` a directory, ``(name, "=target")``
    a hardlink to target."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(data, str):
                info.type, info.linkname = tarfile.LNKTYPE, data[1:]
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_publish_makes_changes_visible(cvmfs_repo: Repo) -> None:
    pub = open_publisher(f"cvmfs:{cvmfs_repo.name}")
    assert isinstance(pub, CvmfsPublisher) and not pub.in_transaction()
    name = _unique()
    with pub.transaction() as view:
        assert pub.in_transaction()
        (view / name).write_text("world")
    assert not pub.in_transaction()
    assert (cvmfs_repo.client() / name).read_text() == "world"
    assert (pub.root / name).read_text() == "world"


def test_exception_aborts_and_discards(cvmfs_repo: Repo) -> None:
    pub = CvmfsPublisher(cvmfs_repo.name)
    kept, new = _unique(), _unique()
    with pub.transaction() as view:
        (view / kept).write_text("1")
    with pytest.raises(ValueError), pub.transaction() as view:
        (view / kept).write_text("2")
        (view / new).write_text("x")
        raise ValueError("fail")
    assert not pub.in_transaction()
    assert (pub.root / kept).read_text() == "1"
    assert not (pub.root / new).exists()
    assert (cvmfs_repo.client() / kept).read_text() == "1"


def test_exit_codes(cvmfs_repo: Repo) -> None:
    """The exit-code table of the reference page."""
    name = cvmfs_repo.name
    assert cvmfs_repo.server("publish", name) == 1  # no transaction
    assert cvmfs_repo.server("abort", "-f", name) == 22  # no transaction
    assert cvmfs_repo.server("transaction", f"no-such-{name}") == 1
    assert cvmfs_repo.server("transaction", name) == 0
    assert cvmfs_repo.server("transaction", name) == 17
    assert cvmfs_repo.server("ingest", "-t", "-", "-b", "x", name, input=_tar([])) == 1
    assert cvmfs_repo.server("abort", name, input=b"n\n") == 4
    assert cvmfs_repo.server("abort", name, input=b"") == 0  # end of input: yes
    assert cvmfs_repo.server("abort", "-f", name) == 22


def test_only_one_transaction_at_a_time(cvmfs_repo: Repo) -> None:
    pub = CvmfsPublisher(cvmfs_repo.name)
    assert cvmfs_repo.server("transaction", cvmfs_repo.name) == 0
    with pytest.raises(PublisherError, match="already in a transaction"), pub.transaction():
        pytest.fail("a second transaction was opened")
    # an operator's transaction is never aborted behind their back
    with pytest.raises(PublisherError, match="did not open"):
        pub.recover()
    assert pub.in_transaction()
    assert cvmfs_repo.server("abort", "-f", cvmfs_repo.name) == 0
    assert pub.recover() == []


def test_current_directory_inside_the_repository(
    cvmfs_repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """publish and abort refuse inside /cvmfs/REPO (exit 1, still open); so does
    publish while any process (wishbot itself) has its current directory there:
    the backend calls cvmfs_server from / and refuses up front with a clear error."""
    name = cvmfs_repo.name
    assert cvmfs_repo.server("transaction", name) == 0
    assert cvmfs_repo.server("publish", name, cwd=str(cvmfs_repo.root)) == 1
    assert cvmfs_repo.server("abort", "-f", name, cwd=str(cvmfs_repo.root)) == 1
    assert cvmfs_repo.server("abort", "-f", name) == 0
    pub = CvmfsPublisher(name)
    monkeypatch.chdir(cvmfs_repo.root)
    with pytest.raises(PublisherError, match="current directory"), pub.transaction():
        pytest.fail("opened a transaction that cannot be published")
    monkeypatch.chdir("/")
    assert not pub.in_transaction()
    file = _unique()
    with pub.transaction() as view:
        (view / file).write_text("from /")
    assert (cvmfs_repo.client() / file).read_text() == "from /"


def test_failed_publish_aborts_and_the_next_goes(cvmfs_repo: Repo) -> None:
    """A file held open under /cvmfs/REPO makes publish give up ("aborted.", exit 1,
    transaction left open): the backend aborts it, so the next image can go."""
    pub = CvmfsPublisher(cvmfs_repo.name)
    held, later = _unique(), _unique()
    handle = None
    try:
        with pytest.raises(PublisherError, match="publish"), pub.transaction() as view:
            (view / held).write_text("held open")
            handle = open(view / held)  # noqa: SIM115
    finally:
        if handle is not None:
            handle.close()
    assert not pub.in_transaction()
    assert not os.path.lexists(cvmfs_repo.client() / held)
    with pub.transaction() as view:
        (view / later).write_text("next")
    assert (cvmfs_repo.client() / later).read_text() == "next"


def test_whiteout_names_are_dropped_by_publish(cvmfs_repo: Repo) -> None:
    """Files named .wh.* written in a transaction are deletion markers, never published."""
    pub = CvmfsPublisher(cvmfs_repo.name)
    top = _unique()
    with pub.transaction() as view:
        (view / top).mkdir()
        (view / top / "victim").write_text("published")
    with pub.transaction() as view:
        (view / top / ".wh.victim").write_text("")
        (view / top / ".wh.nothing").write_text("")
        (view / top / "kept").write_text("yes")
    client = cvmfs_repo.client() / top
    assert sorted(os.listdir(client)) == ["kept"]


def test_ingest_keeps_whiteouts_and_splits_hardlinks(cvmfs_repo: Repo) -> None:
    name, base = cvmfs_repo.name, _unique()
    tar = _tar(
        [
            ("d", None),
            ("d/.wh.gone", b""),
            ("d/.wh..wh..opq", b""),
            ("d/a", b"same"),
            ("d/b", "=d/a"),
        ]
    )
    assert cvmfs_repo.server("ingest", "--catalog", "-t", "-", "-b", base, name, input=tar) == 0
    client = cvmfs_repo.client() / base
    assert sorted(os.listdir(client / "d")) == [".wh..wh..opq", ".wh.gone", "a", "b"]
    assert (client / "d/b").read_bytes() == b"same"
    assert os.lstat(client / "d/a").st_nlink == os.lstat(client / "d/b").st_nlink == 1
    assert f"/{base}" in cvmfs_repo.catalogs()
    assert cvmfs_repo.server("ingest", "-d", base, name) == 0
    assert not os.path.lexists(cvmfs_repo.client() / base)


def test_publish_layers_keeps_whiteouts_in_nested_catalogs(
    cvmfs_repo: Repo, tmp_path: Path
) -> None:
    pub = CvmfsPublisher(cvmfs_repo.name)
    layer = digest(_unique())
    staged = tmp_path / "staged"
    (staged / "layerfs/etc").mkdir(parents=True)
    (staged / "layerfs/etc/.wh.passwd").write_text("")
    (staged / "layerfs/etc/.wh..wh..opq").write_text("")
    (staged / "layerfs/etc/hosts").write_text("127.0.0.1 localhost\n")
    (staged / ".metadata").mkdir()
    (staged / ".metadata/layers.json").write_text("{}")
    partition = f".flat/{_unique()[:2]}"
    pub.publish_layers([(layout.layer_dir(layer), staged)], [partition])
    assert not pub.in_transaction()
    client = cvmfs_repo.client()
    fs = client / layout.layerfs_dir(layer)
    assert sorted(os.listdir(fs / "etc")) == [".wh..wh..opq", ".wh.passwd", "hosts"]
    assert (client / layout.layer_metadata_dir(layer) / "layers.json").read_text() == "{}"
    assert (client / partition).is_dir()
    catalogs = cvmfs_repo.catalogs()
    xx = posixpath_dirname(layout.layer_dir(layer))
    for directory in (layout.LAYERS, xx, layout.layerfs_dir(layer)):
        assert f"/{directory}" in catalogs


def test_layers_with_whiteouts_are_deleted_after_the_transaction(
    cvmfs_repo: Repo, tmp_path: Path
) -> None:
    """Removing a tree with published whiteout files through the overlay makes publish fail
    (observed), so the backend deletes layers with ``ingest -d`` after the publish."""
    pub = CvmfsPublisher(cvmfs_repo.name)
    layer = digest(_unique())
    staged = tmp_path / "staged"
    (staged / "layerfs/etc").mkdir(parents=True)
    (staged / "layerfs/etc/.wh.passwd").write_text("")
    pub.publish_layers([(layout.layer_dir(layer), staged)], [])
    with pytest.raises(PublisherError, match="publish"), pub.transaction() as view:
        force_rmtree(view / layout.layerfs_dir(layer) / "etc")
    assert not pub.in_transaction()
    assert (cvmfs_repo.client() / layout.layerfs_dir(layer) / "etc/.wh.passwd").exists()
    flat = f"{layout.FLAT}/{_unique()}"
    with pub.transaction() as view:
        (view / flat).mkdir(parents=True)
    with pub.transaction() as view:
        pub.remove(view, layout.layer_dir(layer))
        pub.remove(view, flat)
    client = cvmfs_repo.client()
    assert not os.path.lexists(client / layout.layer_dir(layer))
    assert not os.path.lexists(client / flat)
    assert not pub.in_transaction()


def posixpath_dirname(path: str) -> str:
    return path.rsplit("/", 1)[0]


def test_clone_transaction_copies_a_published_tree(cvmfs_repo: Repo) -> None:
    pub = CvmfsPublisher(cvmfs_repo.name)
    src, dst = _unique(), _unique()
    with pub.transaction() as view:
        (view / src / "sub").mkdir(parents=True)
        (view / src / "sub/file").write_text("content")
        (view / src / ".cvmfscatalog").touch()
    with pub.clone_transaction(src, dst) as view:
        assert (view / dst / "sub/file").read_text() == "content"
        (view / dst / "added").write_text("new")
    client = cvmfs_repo.client()
    assert (client / dst / "sub/file").read_text() == "content"
    assert (client / dst / "added").read_text() == "new"
    assert not (client / src / "added").exists()
    assert f"/{dst}" in cvmfs_repo.catalogs()
    # a destination that exists cannot be cloned into: no transaction is left open
    with pytest.raises(PublisherError), pub.clone_transaction(src, dst):
        pytest.fail("cloned over an existing directory")
    assert not pub.in_transaction()


_HOLDER = """
import sys, time
from bot.publisher.cvmfs import CvmfsPublisher
pub = CvmfsPublisher(sys.argv[1])
with pub.transaction() as view:
    (view / sys.argv[2]).write_text("half")
    print("ready", flush=True)
    time.sleep(60)
"""


def _holder(repo: Repo, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, repo.name, name],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
        cwd="/",
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_aborts_open_transaction(cvmfs_repo: Repo, signum: int) -> None:
    partial = _unique()
    proc = _holder(cvmfs_repo, partial)
    proc.send_signal(signum)
    proc.wait(timeout=60)
    pub = CvmfsPublisher(cvmfs_repo.name)
    assert not pub.in_transaction()
    assert not (pub.root / partial).exists()


def test_recover_after_kill(cvmfs_repo: Repo) -> None:
    partial = _unique()
    proc = _holder(cvmfs_repo, partial)
    proc.kill()
    proc.wait(timeout=20)
    pub = CvmfsPublisher(cvmfs_repo.name)
    assert pub.in_transaction()  # SIGKILL cannot be caught: left open
    assert pub.marker_path.exists()
    assert pub.recover() == [
        f"aborted the transaction a crashed run left open on {cvmfs_repo.name}"
    ]
    assert not pub.marker_path.exists()
    assert not pub.in_transaction() and not (pub.root / partial).exists()


def test_images_and_gc_through_cvmfs(cvmfs_repo: Repo) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    pub = CvmfsPublisher(cvmfs_repo.name)
    path = f"reg.io/{_unique()}/b:1"
    i1, i2, l1, l2 = (digest(f"{path}{n}") for n in ("i1", "i2", "l1", "l2"))
    publish_image(pub, path, i1, [l1], now)
    publish_image(pub, path, i2, [l2], now)
    state = read_state(pub.root, cvmfs_repo.name)
    assert [i.image_id for i in state.images if i.path == path] == [i2]
    report = collect(pub, now + timedelta(days=31), grace_days=30, max_deletions=10)
    assert report.deleted_images == [(i1, path)]
    assert report.deleted_layers == [l1]
    assert i2 in read_state(cvmfs_repo.client(), cvmfs_repo.name).flat_images


# --- the backend alone (no repository needed) ----------------------------------


def test_every_call_has_a_time_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cvmfs_server").write_text("#!/bin/sh\nsleep 30\n")
    (tmp_path / "cvmfs_server").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("WISHBOT_CVMFS_TIMEOUT", "0.5")
    monkeypatch.setenv("WISHBOT_LOCK_DIR", str(tmp_path))
    with pytest.raises(PublisherError, match=r"took longer than 0.5 s"):
        CvmfsPublisher("unpacked.example.org").recover()


def test_a_publish_over_its_time_limit_is_stopped_and_aborted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = FakeRepo(tmp_path, "slow.example.org")
    slow = tmp_path / "slow-bin"
    slow.mkdir()
    (slow / "cvmfs_server").write_text(
        f'#!/bin/sh\n[ "$1" = publish ] && sleep 30\nexec {FAKE} "$@"\n'
    )
    (slow / "cvmfs_server").chmod(0o755)
    for key, value in repo.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{slow}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("WISHBOT_CVMFS_TIMEOUT", "3")
    pub = CvmfsPublisher(repo.name)
    with pytest.raises(PublisherError, match="took longer than 3 s"), pub.transaction() as view:
        (view / "late").write_text("x")
    assert not pub.in_transaction() and not (repo.client() / "late").exists()
    repo.close()


def test_lock_lives_outside_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WISHBOT_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("WISHBOT_CVMFS_ROOT", str(tmp_path / "cvmfs"))
    pub = CvmfsPublisher("unpacked.example.org")
    with pub.lock():
        assert pub.lock_path.parent == tmp_path / "locks"
    assert not (tmp_path / "cvmfs").exists()


def test_missing_cvmfs_server_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PublisherError, match="cvmfs_server is not installed"):
        CvmfsPublisher("unpacked.example.org").recover()


def test_fake_server_docstring_matches_commands() -> None:
    text = FAKE.read_text()
    for command in ("transaction", "publish", "abort -f", "ingest", "list", "list-catalogs"):
        assert f"``{command}" in textwrap.dedent(text)

"""The publisher's disk and crashes (issue 10): clear errors, nothing half-written.

A full disk (a 1 MiB tmpfs), a read-only target, a directory the publisher
may not write, a run killed with SIGKILL, damaged metadata, configs whose
diffIDs are missing or contradict a published layer: each is a clear wishbot
error on the image it concerns (or on the command), never a traceback, and
the other images of the run are still published.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_util import run_apply, write_wishlist
from tarspec import E, build_tar

from bot.core import layout
from bot.errors import PublisherError
from bot.publisher.local import LocalPublisher
from bot.publisher.metadata import write_json
from bot.publisher.scratch import LOCK, PREFIX, blob_dir, clean_stale
from bot.sandbox.image_builder import (
    Pusher,
    compress,
    image_config,
    manifest_body,
    push_image,
    sha256,
)
from bot.sandbox.registry_server import LocalRegistry

SMALL = build_tar([E("etc/", "dir"), E("etc/os-release", data=b"ID=small\n")])
BIG = build_tar([E("data", data=os.urandom(2 << 20))])  # 2 MiB: more than the tmpfs holds


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (we are root in the tests); skipped where mounting is impossible."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def leftovers(tree: Path) -> list[str]:
    """Staging, trash and half-written temporary files anywhere in the tree."""
    found = []
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            if name.startswith(("txn-", "trash-")) or ".tmp-" in name:
                found.append(os.path.relpath(os.path.join(dirpath, name), tree))
    return found


def wishbot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )


def wish_for(registry: LocalRegistry, repo: str, tmp_path: Path, *tags: str) -> Path:
    """Push a small image for each tag; a wishlist asking for them."""
    for tag in tags:
        push_image(registry.url, repo, tag, [SMALL], cmd=["/bin/sh"])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, *(f"{repo}:{tag}" for tag in tags))
    return wishlist


# --- a full disk ----------------------------------------------------------------


def test_full_disk_fails_one_image_clearly_and_the_others_publish(
    registry: LocalRegistry, unique_repo: str, small_disk: Path, tmp_path: Path
) -> None:
    for tag, layers in (("a", [SMALL]), ("b", [SMALL, BIG]), ("c", [SMALL])):
        push_image(registry.url, unique_repo, tag, layers, cmd=["/bin/sh"])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, f"{unique_repo}:a", f"{unique_repo}:b", f"{unique_repo}:c")
    tree = small_disk / "tree"
    report = run_apply(registry, wishlist, tree, thin=False)
    by_tag = {r.path.rsplit(":", 1)[1]: r for r in report.results}
    assert by_tag["a"].ok and by_tag["c"].ok
    assert not by_tag["b"].ok
    assert "No space left on device" in by_tag["b"].message
    assert "the disk is full" in by_tag["b"].message
    assert "Traceback" not in by_tag["b"].message
    assert not os.path.lexists(tree / registry.host / f"{unique_repo}:b")
    assert (tree / registry.host / f"{unique_repo}:c" / "etc/os-release").is_file()
    assert leftovers(tree) == []


def test_full_disk_while_journaling_publishes_nothing(small_disk: Path) -> None:
    tree = small_disk / "tree"
    publisher = LocalPublisher(tree)
    filler = small_disk / "filler"
    with pytest.raises(OSError) as caught, publisher.transaction() as view:
        (view / "img").mkdir()
        (view / "img" / "f").write_text("staged\n")
        with open(filler, "wb") as handle:  # the disk fills up before the commit
            try:
                while True:
                    handle.write(b"\0" * 65536)
            except OSError:
                pass
    assert caught.value.errno == errno.ENOSPC
    assert not os.path.lexists(tree / "img")  # nothing half-published
    assert not publisher.journal_path.exists()
    assert leftovers(tree) == []
    filler.unlink()
    assert publisher.recover() == []


def test_full_disk_while_writing_metadata_leaves_no_temporary_file(small_disk: Path) -> None:
    target = small_disk / ".metadata" / "remove-schedule.json"
    write_json(target, [])
    with pytest.raises(OSError, match="No space left"):
        write_json(target, [{"pad": "x" * (2 << 20)}])
    assert json.loads(target.read_text()) == []  # the old file, whole
    assert sorted(os.listdir(target.parent)) == ["remove-schedule.json"]


# --- a read-only target, a directory that is not ours ---------------------------------


def test_read_only_target_is_a_clear_error(
    registry: LocalRegistry, unique_repo: str, small_disk: Path, tmp_path: Path
) -> None:
    wishlist = wish_for(registry, unique_repo, tmp_path, "a")
    tree = small_disk / "tree"
    assert run_apply(registry, wishlist, tree, thin=False).ok
    write_wishlist(wishlist, registry, f"{unique_repo}:a", f"{unique_repo}:b")
    push_image(registry.url, unique_repo, "b", [SMALL], cmd=["/bin/sh"])
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = wishbot(
        *("apply", str(wishlist), "--publisher", f"local:{tree}", "--no-thin"),
        env={"WISHBOT_INSECURE_REGISTRIES": registry.host, "WISHBOT_BACKOFF": "0.01"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "wishbot: error: " in done.stderr
    assert "Read-only file system" in done.stderr
    assert str(tree) in done.stderr  # the tree, refused before anything is resolved
    assert "remount it read-write" in done.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_directory_not_ours_is_a_clear_error(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path.parent, 0o755)
    done = subprocess.run(
        [
            *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
            *(sys.executable, "-m", "bot", "gc", "--publisher", f"local:{tree}"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    if "Permission denied" in done.stderr and "bot" not in done.stderr:
        pytest.skip("the unprivileged user cannot reach the test directory")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "Permission denied" in done.stderr and str(tree) in done.stderr
    assert "fix the owner or mode" in done.stderr


# --- damaged metadata ------------------------------------------------------------


def test_damaged_remove_schedule_is_never_overwritten(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    wishlist = wish_for(registry, unique_repo, tmp_path, "a")
    tree = tmp_path / "tree"
    assert run_apply(registry, wishlist, tree, thin=False).ok
    push_image(registry.url, unique_repo, "b", [SMALL], cmd=["/bin/sh"])
    write_wishlist(wishlist, registry, f"{unique_repo}:b")  # a goes: it would be scheduled
    schedule = tree / layout.REMOVE_SCHEDULE
    schedule.parent.mkdir(parents=True, exist_ok=True)
    schedule.write_text('[{"schemaVersion": 2, "config": {"digest": "sha256:')  # truncated
    done = wishbot(
        *("apply", str(wishlist), "--publisher", f"local:{tree}", "--no-thin"),
        env={"WISHBOT_INSECURE_REGISTRIES": registry.host, "WISHBOT_BACKOFF": "0.01"},
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"the remove schedule {schedule} cannot be read" in done.stderr
    assert "restore it from a backup or repair the JSON by hand" in done.stderr
    assert schedule.read_text().endswith('"sha256:')  # untouched
    gc = wishbot("gc", "--publisher", f"local:{tree}")
    assert gc.returncode == 1 and "Traceback" not in gc.stderr
    assert "cannot be read" in gc.stderr
    assert schedule.read_text().endswith('"sha256:')


def test_damaged_journal_stops_recovery(tmp_path: Path) -> None:
    publisher = LocalPublisher(tmp_path / "tree")
    publisher.state_dir.mkdir(parents=True)
    publisher.journal_path.write_text('{"staging": "txn-')
    with pytest.raises(PublisherError, match=r"transaction journal .* cannot be read"):
        publisher.recover()
    publisher.journal_path.write_text('{"other": 1}')
    with pytest.raises(PublisherError, match=r"transaction journal .* is damaged"):
        publisher.recover()


# --- diffIDs ---------------------------------------------------------------------


def push_with_diff_ids(
    registry: LocalRegistry, repo: str, tag: str, layers: list[bytes], diff_ids: list[str]
) -> None:
    """An image whose config lists ``diff_ids`` (right or wrong) for ``layers`` (gzip)."""
    pusher = Pusher(registry.url, None, True)
    rows = []
    for tar in layers:
        blob = compress(tar, "gzip")  # as push_image does: the same blob digests
        rows.append(
            (
                pusher.push_blob(repo, blob),
                len(blob),
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        )
    config = image_config(diff_ids, cmd=["/bin/sh"])
    config_digest = pusher.push_blob(repo, config)
    body, media_type = manifest_body(config_digest, len(config), rows)
    pusher.push_manifest(repo, tag, body, media_type)


def test_config_without_diff_ids_is_refused(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    push_with_diff_ids(registry, unique_repo, "none", [SMALL], [])
    push_image(registry.url, unique_repo, "good", [SMALL], cmd=["/bin/sh"])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, f"{unique_repo}:none", f"{unique_repo}:good")
    report = run_apply(registry, wishlist, tmp_path / "tree", thin=False)
    by_tag = {r.path.rsplit(":", 1)[1]: r for r in report.results}
    assert by_tag["good"].ok
    assert not by_tag["none"].ok
    assert "lists 0 diffIDs (rootfs.diff_ids) for 1 layers" in by_tag["none"].message


def test_published_layer_must_match_the_configs_diff_id(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    push_image(registry.url, unique_repo, "first", [SMALL], cmd=["/bin/sh"])
    wishlist = tmp_path / "wishlist.yaml"
    tree = tmp_path / "tree"
    write_wishlist(wishlist, registry, f"{unique_repo}:first")
    assert run_apply(registry, wishlist, tree, thin=False).ok
    # the same compressed layer, but a config that claims other content for it
    lie = sha256(b"something else")
    push_with_diff_ids(registry, unique_repo, "liar", [SMALL], [lie])
    write_wishlist(wishlist, registry, f"{unique_repo}:first", f"{unique_repo}:liar")
    report = run_apply(registry, wishlist, tree, thin=False)
    (result,) = report.results
    assert not result.ok
    assert "is published with diffID" in result.message and lie in result.message
    assert not os.path.lexists(tree / registry.host / f"{unique_repo}:liar")


# --- scratch space of killed runs --------------------------------------------------

HOLD = """
import sys, time, os, signal
from pathlib import Path
from bot.publisher.scratch import blob_dir
with blob_dir(Path(sys.argv[1])) as tmp:
    (tmp / "blob").write_bytes(b"x" * 4096)
    print(tmp, flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)
"""


def age(path: Path, seconds: float = 600) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_scratch_of_a_killed_run_is_cleaned_and_a_live_one_kept(tmp_path: Path) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", HOLD, str(tmp_path), "kill"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL
    dead = Path(killed.stdout.strip())
    assert dead.is_dir() and (dead / "blob").exists()  # what a SIGKILL leaves
    live = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), "hold"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert live.stdout is not None
        busy = Path(live.stdout.readline().strip())
        young = tmp_path / f"{PREFIX}young"
        young.mkdir()  # just created by a run that has not locked it yet
        foreign = tmp_path / f"{PREFIX}foreign"
        foreign.mkdir()
        (foreign / LOCK).touch()
        os.chown(foreign, 65534, 65534)  # another user's
        link = tmp_path / f"{PREFIX}link"
        link.symlink_to(dead)
        for path in (dead, busy, foreign):
            age(path)
        assert clean_stale(tmp_path) == [dead.name]
        assert not dead.exists()
        assert busy.is_dir() and young.is_dir() and foreign.is_dir() and link.is_symlink()
    finally:
        live.kill()  # by its PID: the one we started
        live.wait()
    age(busy)
    with blob_dir(tmp_path) as mine:
        assert not busy.exists()  # its holder is dead now
        assert mine.is_dir()
    assert not mine.exists()


def test_apply_killed_mid_download_leaves_no_scratch_for_ever(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    wishlist = wish_for(registry, unique_repo, tmp_path, "a")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        "WISHBOT_INSECURE_REGISTRIES": registry.host,
        "WISHBOT_BACKOFF": "0.01",
        "TMPDIR": str(scratch),
    }
    args = ("apply", str(wishlist), "--publisher", f"local:{tmp_path / 'tree'}", "--no-thin")
    crashed = wishbot(*args, env={**env, "WISHBOT_TEST_CRASH_AT": "downloaded"})
    assert crashed.returncode == -signal.SIGKILL
    (left,) = [p for p in scratch.iterdir() if p.name.startswith(PREFIX)]
    age(left)
    done = wishbot(*args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p for p in scratch.iterdir() if p.name.startswith(PREFIX)] == []

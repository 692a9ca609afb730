"""The publisher as a non-root user (the repository owner on a release manager).

The tests run as root, so the engine runs in a subprocess as uid/gid 65534
(``setpriv``) on a directory that user owns. Image modes that deny the owner
(a file 0000 such as ``etc/shadow``, directories 0555 or 0000 that a later
layer writes into) must neither stop the conversion nor survive as anything
but the image's own modes, and gc and the local backend must delete such trees.
Trees built as root are the oracle: the unprivileged ones must be identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.core import layout
from bot.publisher.flatten import apply_layerfs
from bot.publisher.safetree import force_rmtree
from bot.publisher.unpack import UNLIMITED, apply_layer, unpack_layer
from bot.sandbox.image_builder import push_image
from bot.sandbox.layers import (
    build_layer,
    directory,
    file,
    hardlink,
    opaque,
    symlink,
    whiteout,
)
from bot.sandbox.registry_server import LocalRegistry

NOBODY = 65534
SETPRIV = shutil.which("setpriv")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None,
    reason="needs root and setpriv (util-linux) to run the engine as an unprivileged user",
)

# Layer 1: the modes real images have (CentOS/RHEL: etc/shadow 0000, sudo 4111),
# read-only and sealed directories, a hardlink to a 0000 file.
LOWER = build_layer(
    [
        directory("etc"),
        file("etc/shadow", "root:*::\n", mode=0o000),
        hardlink("etc/shadow-", "etc/shadow"),
        directory("usr", mode=0o755),
        directory("usr/bin", mode=0o755),
        file("usr/bin/sudo", "#!/bin/sh\n", mode=0o4111),
        file("usr/bin/wonly", "w\n", mode=0o200),
        directory("ro", mode=0o555),
        file("ro/a", "a\n"),
        file("ro/old", "old\n"),
        directory("ro/sub", mode=0o555),
        file("ro/sub/x", "x\n"),
        directory("ro/opq", mode=0o555),
        file("ro/opq/lower", "lower\n"),
        directory("ro/opq/deep", mode=0o500),
        file("ro/opq/deep/f", "f\n"),
        directory("sealed", mode=0o000),
        file("sealed/f", "f\n", mode=0o000),
        directory("gone", mode=0o555),
        directory("gone/deep", mode=0o555),
        file("gone/deep/f", "f\n"),
        directory("noexec", mode=0o644),
        file("noexec/f", "f\n"),
    ]
)
# Layer 2 writes into all of them: new files, whiteouts, an opaque directory,
# a directory replaced by a file, a hardlink to the lower 0000 file.
UPPER = build_layer(
    [
        file("ro/b", "b\n"),
        whiteout("ro/old"),
        file("ro/sub/y", "y\n", mode=0o000),
        opaque("ro/opq"),
        file("ro/opq/new", "new\n"),
        file("gone", "now a file\n", mode=0o444),
        hardlink("ro/shadow-link", "etc/shadow"),
        file("sealed/g", "g\n"),
        whiteout("sealed/f"),
        file("noexec/g", "g\n"),
        symlink("ro/sub/up", "../../etc/shadow"),
    ]
)
# Layer 3 lists a read-only directory again (explicit metadata wins) and
# writes below a lower 0555 directory it does not list.
TOP = build_layer(
    [
        directory("ro", mode=0o550),
        file("ro/c", "c\n"),
        file("ro/sub/z", "z\n"),
        whiteout("usr/bin/wonly"),
    ]
)
LAYERS = [LOWER, UPPER, TOP]

EXPECTED_MODES = {
    "etc/shadow": 0o000,
    "etc/shadow-": 0o000,
    "usr/bin/sudo": 0o4111,
    "ro": 0o550,
    "ro/a": 0o644,
    "ro/b": 0o644,
    "ro/c": 0o644,
    "ro/sub": 0o555,
    "ro/sub/y": 0o000,
    "ro/sub/z": 0o644,
    "ro/opq": 0o555,
    "ro/opq/new": 0o644,
    "sealed": 0o000,
    "sealed/g": 0o644,
    "gone": 0o444,
    "noexec": 0o644,
    "noexec/g": 0o644,
}
ABSENT = ("ro/old", "ro/opq/lower", "ro/opq/deep", "sealed/f", "usr/bin/wonly")


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A fresh directory owned by the unprivileged user.

    Not below ``tmp_path``: pytest's base directory is private to root (0700),
    so the user could not reach it. ``mkdtemp`` gives a unique name per test
    (safe under xdist); it is removed afterwards.
    """
    work = Path(tempfile.mkdtemp(prefix="wishbot-nonroot-"))
    os.chmod(work, 0o755)
    os.chown(work, NOBODY, NOBODY)
    try:
        yield work
    finally:
        force_rmtree(work, ignore_errors=True)


def run_as_nobody(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert SETPRIV is not None
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "PYTHONDONTWRITEBYTECODE": "1",
        **(env or {}),
    }
    return subprocess.run(
        [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def python_as_nobody(code: str, cwd: Path, *args: str) -> str:
    done = run_as_nobody([sys.executable, "-c", code, *args], cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def write_layers(work: Path) -> list[Path]:
    paths = []
    for n, data in enumerate(LAYERS):
        path = work / f"layer{n}.tar"
        path.write_bytes(data)
        os.chown(path, NOBODY, NOBODY)
        paths.append(path)
    return paths


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry below ``root`` -> type, exact mode and content (read as root)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            mode = f"{stat.S_IMODE(st.st_mode):o}"
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = f"dir:{mode}"
            else:
                data = Path(path).read_bytes()
                out[rel] = f"file:{mode}:{st.st_nlink}:{hashlib.sha256(data).hexdigest()}"
    return out


def owned_by(root: Path, uid: int) -> bool:
    return all(
        os.lstat(os.path.join(d, n)).st_uid == uid
        for d, dirs, files in os.walk(root)
        for n in dirs + files
    )


BUILD = """
import json, sys
from pathlib import Path
from bot.publisher.flatten import apply_layerfs
from bot.publisher.unpack import UNLIMITED, apply_layer, unpack_layer

work = Path(sys.argv[1])
layers = [Path(p) for p in sys.argv[2:]]
for n, blob in enumerate(layers):
    apply_layer(work / "direct", blob, "tar", limits=UNLIMITED, context=f"layer {n}")
stats = []
for n, blob in enumerate(layers):
    layerfs = work / f"layer{n}" / "layerfs"
    layerfs.mkdir(parents=True)
    s = unpack_layer(blob, "tar", layerfs, limits=UNLIMITED, context=f"layer {n}")
    stats.append({"diff_id": s.diff_id, "links": s.skipped_links})
for n in range(len(layers)):
    apply_layerfs(work / "fromfs", work / f"layer{n}" / "layerfs", context=f"layerfs {n}")
print(json.dumps(stats))
"""


def build_as_root(work: Path, layers: list[Path]) -> None:
    """The oracle: the same calls as ``BUILD``, as root (no ownership applied)."""
    for blob in layers:
        apply_layer(work / "direct", blob, "tar", limits=UNLIMITED, context="x", privileged=False)
    for n, blob in enumerate(layers):
        layerfs = work / f"layer{n}" / "layerfs"
        layerfs.mkdir(parents=True)
        unpack_layer(blob, "tar", layerfs, limits=UNLIMITED, context="x", privileged=False)
    for n in range(len(layers)):
        apply_layerfs(
            work / "fromfs", work / f"layer{n}" / "layerfs", context="x", privileged=False
        )


def test_hostile_modes_convert_without_root_to_the_same_trees_as_root(
    nobody_dir: Path, tmp_path: Path
) -> None:
    blobs = write_layers(nobody_dir)
    stats = json.loads(python_as_nobody(BUILD, nobody_dir, str(nobody_dir), *map(str, blobs)))
    assert [s["links"] for s in stats] == [0, 1, 0]  # ro/shadow-link -> a lower-layer file
    build_as_root(tmp_path, blobs)

    direct, fromfs = nobody_dir / "direct", nobody_dir / "fromfs"
    digest = tree_digest(direct)
    # both ways give the same tree, and the same as root builds
    assert digest == tree_digest(fromfs)
    assert digest == tree_digest(tmp_path / "direct")
    assert tree_digest(tmp_path / "fromfs") == digest
    # exactly the image's modes at the end, nothing opened left behind
    for flat in (direct, fromfs):
        for rel, mode in EXPECTED_MODES.items():
            assert stat.S_IMODE(os.lstat(flat / rel).st_mode) == mode, (flat, rel)
        for rel in ABSENT:
            assert not os.path.lexists(flat / rel), (flat, rel)
        assert stat.S_ISREG(os.lstat(flat / "gone").st_mode)
        assert (flat / "gone").read_text() == "now a file\n"
        # hardlinks to the 0000 file: same inode, same content
        shadow = os.lstat(flat / "etc/shadow")
        for other in ("etc/shadow-", "ro/shadow-link"):
            assert os.lstat(flat / other).st_ino == shadow.st_ino
        assert (flat / "ro/shadow-link").read_text() == "root:*::\n"
        assert os.readlink(flat / "ro/sub/up") == "../../etc/shadow"
        assert owned_by(flat, NOBODY)
    # the layerfs keep their modes too, also after apply_layerfs read them
    for n in range(3):
        mine = nobody_dir / f"layer{n}"
        assert tree_digest(mine) == tree_digest(tmp_path / f"layer{n}")
        assert json.loads((mine / ".metadata/layerfs.json").read_text()) == json.loads(
            (tmp_path / f"layer{n}" / ".metadata/layerfs.json").read_text()
        )
    assert stat.S_IMODE(os.lstat(nobody_dir / "layer0/layerfs/sealed").st_mode) == 0
    assert stat.S_IMODE(os.lstat(nobody_dir / "layer0/layerfs/etc/shadow").st_mode) == 0
    assert stat.S_IMODE(os.lstat(nobody_dir / "layer0/layerfs/noexec").st_mode) == 0o644


REMOVE = """
import sys
from pathlib import Path
from bot.publisher.safetree import force_rmtree
force_rmtree(Path(sys.argv[1]))
"""


def test_force_rmtree_removes_sealed_trees_and_never_follows_symlinks(
    nobody_dir: Path, tmp_path: Path
) -> None:
    blobs = write_layers(nobody_dir)
    python_as_nobody(BUILD, nobody_dir, str(nobody_dir), *map(str, blobs))
    # a directory outside, sealed, reached only through a symlink in the tree
    outside = nobody_dir / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "inner" / "keep").write_text("keep\n")
    os.chmod(outside / "inner", 0o555)
    for path in (outside, outside / "inner", outside / "inner" / "keep"):
        os.chown(path, NOBODY, NOBODY)
    os.symlink(outside, nobody_dir / "direct/ro/sub/outside-link")
    plain = run_as_nobody(
        [sys.executable, "-c", "import shutil,sys; shutil.rmtree(sys.argv[1])", "fromfs"],
        nobody_dir,
    )
    assert plain.returncode != 0 and "Permission denied" in plain.stderr  # the failure we fix
    for tree in ("direct", "fromfs", "layer0", "layer1"):
        python_as_nobody(REMOVE, nobody_dir, str(nobody_dir / tree))
        assert not os.path.lexists(nobody_dir / tree)
    # the symlinked directory was neither removed nor opened
    assert (outside / "inner" / "keep").read_text() == "keep\n"
    assert stat.S_IMODE(os.lstat(outside / "inner").st_mode) == 0o555


LOCAL = """
import json, sys
from pathlib import Path
from bot.publisher.local import LocalPublisher
from bot.publisher.unpack import UNLIMITED, apply_layer

root, blobs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
pub = LocalPublisher(root)

def build(view, rel):
    for blob in blobs:
        apply_layer(view / rel, blob, "tar", limits=UNLIMITED, context="t")

out = {}
with pub.transaction() as view:
    build(view, "img/a")
    build(view, "img/b")
out["published"] = sorted(p.name for p in (root / "img").iterdir())
try:
    with pub.transaction() as view:
        build(view, "img/c")
        raise RuntimeError("abort on purpose")
except RuntimeError as exc:
    out["aborted"] = str(exc)
out["after_abort"] = sorted(p.name for p in pub.state_dir.iterdir())
with pub.transaction() as view:
    pub.remove(view, "img/a")
out["after_remove"] = sorted(p.name for p in (root / "img").iterdir())
# a crashed transaction left a staging tree behind: recover discards it
leftover = pub.state_dir / "txn-crashed"
build(leftover, "img/d")
out["recovered"] = pub.recover()
out["state"] = sorted(p.name for p in pub.state_dir.iterdir())
print(json.dumps(out))
"""


def test_local_backend_removes_aborts_and_recovers_without_root(nobody_dir: Path) -> None:
    blobs = write_layers(nobody_dir)
    root = nobody_dir / "publisher"
    out = json.loads(python_as_nobody(LOCAL, nobody_dir, str(root), *map(str, blobs)))
    assert out["published"] == ["a", "b"]
    assert out["aborted"] == "abort on purpose"
    assert out["after_abort"] == []  # the half-built image of the aborted transaction is gone
    assert out["after_remove"] == ["b"]
    assert out["recovered"] == ["discarded txn-crashed"]
    assert out["state"] == []
    assert stat.S_IMODE(os.lstat(root / "img/b/sealed").st_mode) == 0
    assert stat.S_IMODE(os.lstat(root / "img/b/ro").st_mode) == 0o550


def test_wishbot_apply_and_gc_end_to_end_without_root(
    registry: LocalRegistry, unique_repo: str, nobody_dir: Path
) -> None:
    pushed = push_image(registry.url, unique_repo, "1", LAYERS, cmd=["/bin/sh"])
    tree = nobody_dir / "publisher"
    wishlist = nobody_dir / "wishlist.yaml"
    head = (
        "version: 1\nuser: t\ncvmfs_repo: 'unpacked.example.org'\n"
        f"output_format: '{registry.host}/thin/$(image)'\n"
    )
    wishlist.write_text(head + f"input:\n  - '{registry.host}/{unique_repo}:1'\n")
    env = {"WISHBOT_INSECURE_REGISTRIES": registry.host, "WISHBOT_BACKOFF": "0.01"}
    wishbot = [sys.executable, "-m", "bot"]
    publisher = ("--publisher", f"local:{tree}")

    done = run_as_nobody(
        [
            *wishbot,
            "apply",
            str(wishlist),
            *publisher,
            "--now",
            "2025-03-01T00:00:00Z",
            "--no-thin",
        ],
        nobody_dir,
        env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    link = tree / f"{registry.host}/{unique_repo}:1"
    flat = tree / layout.flat_dir(pushed.config_digest)
    assert link.resolve() == flat.resolve()
    for rel, mode in EXPECTED_MODES.items():
        assert stat.S_IMODE(os.lstat(flat / rel).st_mode) == mode, rel
    assert (flat / ".singularity.d/runscript").is_file()
    assert (
        stat.S_IMODE(
            os.lstat(tree / layout.layerfs_dir(pushed.layer_digests[0]) / "sealed").st_mode
        )
        == 0
    )
    assert owned_by(tree, NOBODY)

    # the wish goes away: the path serves until gc deletes it with image and layers
    wishlist.write_text(head + "input: []\n")
    done = run_as_nobody(
        [
            *wishbot,
            "apply",
            str(wishlist),
            *publisher,
            "--now",
            "2025-03-02T00:00:00Z",
            "--no-thin",
        ],
        nobody_dir,
        env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert link.resolve() == flat.resolve() and flat.is_dir()  # retiring, still served
    done = run_as_nobody(
        [*wishbot, "gc", *publisher, "--now", "2025-06-01T00:00:00Z", "--format", "json"],
        nobody_dir,
        env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [d["id"] for d in report["deleted_images"]] == [pushed.config_digest]
    assert [d["path"] for d in report["deleted_paths"]] == [f"{registry.host}/{unique_repo}:1"]
    assert not os.path.lexists(link) and not flat.exists()
    assert not (tree / layout.image_metadata_dir(f"{registry.host}/{unique_repo}:1")).exists()
    assert sorted(report["deleted_layers"]) == sorted(set(pushed.layer_digests))
    assert not os.path.lexists(flat)
    for digest in pushed.layer_digests:
        assert not os.path.lexists(tree / layout.layer_dir(digest))
    leftovers = [n for n in os.listdir(tree / ".wishbot") if n.startswith(("txn-", "trash-"))]
    assert leftovers == []


FAIL_MIDWAY = """
import sys
from pathlib import Path
from bot.errors import WishbotError
from bot.publisher.flatten import apply_layerfs

work = Path(sys.argv[1])
try:
    apply_layerfs(work / "flat", work / "layer" / "layerfs", context="t")
except WishbotError as exc:
    print(exc)
"""


def test_apply_layerfs_puts_the_layerfs_modes_back_when_it_fails(nobody_dir: Path) -> None:
    layerfs = nobody_dir / "layer" / "layerfs"
    (layerfs / "a").mkdir(parents=True)
    (layerfs / "a" / "f").write_text("f\n")
    (layerfs / "b" / "c").mkdir(parents=True)
    (nobody_dir / "layer" / ".metadata").mkdir()
    sidecar = {"version": 1, "diff_id": "sha256:0", "implicit_dirs": ["b"], "links": []}
    (nobody_dir / "layer" / ".metadata" / "layerfs.json").write_text(json.dumps(sidecar))
    (nobody_dir / "flat").mkdir()
    (nobody_dir / "flat" / "b").write_text("a file where the layer needs a directory\n")
    for dirpath, dirnames, filenames in os.walk(nobody_dir):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), NOBODY, NOBODY)
    os.chmod(layerfs / "a" / "f", 0o000)
    os.chmod(layerfs / "a", 0o000)  # opened for the walk before "b" fails
    out = python_as_nobody(FAIL_MIDWAY, nobody_dir, str(nobody_dir))
    assert "needs 'b' to be a directory" in out
    assert stat.S_IMODE(os.lstat(layerfs / "a").st_mode) == 0o000
    assert stat.S_IMODE(os.lstat(layerfs / "a" / "f").st_mode) == 0o000


def ctimes(root: Path) -> dict[str, tuple[int, int]]:
    """path -> (mode, ctime): a chmod, even one put back, changes the ctime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_ctime_ns)
    return out


def test_flat_image_from_a_published_layer_never_changes_its_modes(
    registry: LocalRegistry, unique_repo: str, nobody_dir: Path
) -> None:
    """A second image on the same (sealed) base layer, as the repository owner.

    Reading the published layerfs as it is would need ``u+rx`` on its ``0000``
    directories, i.e. changing the live tree outside any transaction; the
    blob is unpacked again into scratch space instead. Neither a normal run
    nor one killed while building the flat image changes a mode (or even the
    ctime) of the published layer.
    """
    first = push_image(registry.url, unique_repo, "1", LAYERS, cmd=["/bin/sh"])
    extra = build_layer([file("app/x", "x\n")])
    second = push_image(registry.url, unique_repo, "2", [LOWER, extra], cmd=["/bin/sh"])
    tree = nobody_dir / "publisher"
    wishlist = nobody_dir / "wishlist.yaml"
    head = (
        "version: 1\nuser: t\ncvmfs_repo: 'unpacked.example.org'\n"
        f"output_format: '{registry.host}/thin/$(image)'\ninput:\n"
        f"  - '{registry.host}/{unique_repo}:1'\n"
    )
    scratch = nobody_dir / "tmp"
    scratch.mkdir()
    os.chown(scratch, NOBODY, NOBODY)
    env = {
        "WISHBOT_INSECURE_REGISTRIES": registry.host,
        "WISHBOT_BACKOFF": "0.01",
        "TMPDIR": str(scratch),
    }
    apply = [sys.executable, "-m", "bot", "apply", str(wishlist), "--publisher", f"local:{tree}"]
    apply += ["--no-thin", "--now", "2025-03-01T00:00:00Z"]
    wishlist.write_text(head)
    done = run_as_nobody(apply, nobody_dir, env)
    assert done.returncode == 0, done.stdout + done.stderr
    base = tree / layout.layerfs_dir(first.layer_digests[0])
    before = ctimes(base)
    assert stat.S_IMODE(before["sealed"][0]) == 0

    wishlist.write_text(head + f"  - '{registry.host}/{unique_repo}:2'\n")
    crashed = run_as_nobody(apply, nobody_dir, {**env, "WISHBOT_TEST_CRASH_AT": "flat-layer"})
    assert crashed.returncode != 0
    assert ctimes(base) == before
    done = run_as_nobody(apply, nobody_dir, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "unpacking its blob again" in done.stderr
    assert ctimes(base) == before
    flat = tree / layout.flat_dir(second.config_digest)
    assert stat.S_IMODE(os.lstat(flat / "sealed").st_mode) == 0
    assert stat.S_IMODE(os.lstat(flat / "etc/shadow").st_mode) == 0
    assert (flat / "app/x").is_file()
    assert tree_digest(flat / "ro") == tree_digest(base / "ro")
    # the scratch copy (with its 0000 and 0555 directories) is removed; only the
    # killed run's is left, until a later run finds it stale
    (left,) = scratch.iterdir()
    then = time.time() - 600
    os.utime(left, (then, then))
    wishlist.write_text(head)
    done = run_as_nobody(apply, nobody_dir, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(scratch.iterdir()) == []

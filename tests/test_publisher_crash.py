"""Crash safety: SIGKILL ``wishbot apply`` at many points, then run it again.

After every crash each public symlink must resolve to a complete flat image
(identical to the one an uninterrupted run builds), and the next run must
converge to the same tree as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.publisher.state import public_links
from bot.sandbox.image_builder import push_image
from bot.sandbox.layers import build_layer, file, hardlink, symlink, whiteout, with_parents
from bot.sandbox.registry_server import LocalRegistry

NOW = "2025-03-01T00:00:00Z"
LAYERS = [
    build_layer(
        with_parents(
            [file(f"usr/share/doc/f{n}.txt", f"file {n}\n" * 50) for n in range(40)]
            + [file("usr/bin/tool", "#!/bin/sh\n", mode=0o755), symlink("bin", "usr/bin")]
        )
    ),
    build_layer([whiteout("usr/share/doc/f3.txt"), hardlink("usr/bin/tool2", "usr/bin/tool")]),
]
SECOND = build_layer(with_parents([file("opt/app/readme", "second\n")]))


@dataclass(frozen=True)
class Setup:
    registry: LocalRegistry
    wishlist: Path
    reference: Path  # the tree of an uninterrupted run


def tree_digest(root: Path, below: str = "") -> dict[str, str]:
    """Every entry (but wishbot's own state) -> type + content, comparable across runs."""
    out: dict[str, str] = {}
    base = root / below if below else root
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".wishbot" or rel_dir.startswith(".wishbot/"):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel == ".wishbot":
                continue
            st = os.lstat(path)
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
            elif os.path.isdir(path):
                out[rel] = f"dir:{st.st_mode & 0o7777:o}"
            else:
                data = Path(path).read_bytes()
                out[rel] = f"file:{st.st_mode & 0o7777:o}:{hashlib.sha256(data).hexdigest()}"
    return out


def run_wishbot(setup_env: dict[str, str], wishlist: Path, tree: Path, crash: str | None) -> int:
    env = {**os.environ, **setup_env}
    env.pop("WISHBOT_TEST_CRASH_AT", None)
    if crash:
        env["WISHBOT_TEST_CRASH_AT"] = crash
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bot", "apply", str(wishlist)),
            *("--publisher", f"local:{tree}", "--now", NOW, "--no-thin"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if crash is None:
        assert done.returncode == 0, done.stderr
    return done.returncode


def _env(registry: LocalRegistry) -> dict[str, str]:
    return {"WISHBOT_INSECURE_REGISTRIES": registry.host, "WISHBOT_BACKOFF": "0.01"}


@pytest.fixture(scope="module")
def setup(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("crash")
    repo = f"crash/{base.name.lower()}"
    push_image(registry.url, repo, "1", LAYERS, cmd=["/bin/sh"])
    push_image(registry.url, repo, "2", [LAYERS[0], SECOND])
    wishlist = base / "wishlist.yaml"
    wishlist.write_text(
        "version: 1\nuser: t\ncvmfs_repo: 'unpacked.example.org'\n"
        f"output_format: '{registry.host}/thin/$(image)'\n"
        f"input:\n  - '{registry.host}/{repo}:1'\n  - '{registry.host}/{repo}:2'\n"
    )
    reference = base / "reference"
    run_wishbot(_env(registry), wishlist, reference, None)
    yield Setup(registry, wishlist, reference)


def check_crash_then_resume(setup: Setup, tree: Path, crash: str) -> None:
    code = run_wishbot(_env(setup.registry), setup.wishlist, tree, crash)
    assert code == -9, f"the run did not reach crash point {crash}"
    expected = tree_digest(setup.reference)
    # only complete images are visible
    if tree.exists():
        for path, _target in public_links(tree):
            flat = os.path.relpath(os.path.realpath(tree / path), tree)
            assert flat.startswith(".flat/"), path
            assert tree_digest(tree, flat) == {
                k: v for k, v in expected.items() if k.startswith(flat + "/")
            }, f"{path} is visible but incomplete after a crash at {crash}"
    run_wishbot(_env(setup.registry), setup.wishlist, tree, None)
    assert tree_digest(tree) == expected


QUICK = ["downloaded", "flat-layer:2", "image-written", "journal", "rename:5"]
MANY = [
    *(f"downloaded:{n}" for n in (1, 2, 3)),
    *(f"layer:{n}" for n in (1, 2, 3)),
    *(f"flat-layer:{n}" for n in (1, 2, 3, 4)),
    "linked",
    "linked:2",
    "image-written:2",
    "commit",
    "commit:2",
    "journal:2",
    *(f"rename:{n}" for n in (1, 2, 3, 4, 6, 7, 8, 9)),
]


@pytest.mark.parametrize("crash", QUICK)
def test_crash_leaves_only_complete_images(setup: Setup, tmp_path: Path, crash: str) -> None:
    check_crash_then_resume(setup, tmp_path / "tree", crash)


@pytest.mark.slow
@pytest.mark.parametrize("crash", MANY)
def test_crash_at_many_points(setup: Setup, tmp_path: Path, crash: str) -> None:
    check_crash_then_resume(setup, tmp_path / "tree", crash)


def test_second_crash_during_recovery_still_converges(setup: Setup, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    assert run_wishbot(_env(setup.registry), setup.wishlist, tree, "journal") == -9
    # recovery rolls the journaled transaction forward; crash in the middle of that too
    assert run_wishbot(_env(setup.registry), setup.wishlist, tree, "rename:2") == -9
    run_wishbot(_env(setup.registry), setup.wishlist, tree, None)
    assert tree_digest(tree) == tree_digest(setup.reference)


# --- gc deleting a retiring path (a wish removed from the wishlist) -------------

GC_NOW = "2025-04-15T00:00:00Z"  # after the 30-day grace period of the removal at NOW


@dataclass(frozen=True)
class GcSetup:
    retiring: Path  # :2 removed from the wishlist, its path still served
    reference: Path  # the same after an uninterrupted gc
    path: str  # the retiring public path


def run_gc(setup_env: dict[str, str], tree: Path, crash: str | None) -> int:
    env = {**os.environ, **setup_env}
    env.pop("WISHBOT_TEST_CRASH_AT", None)
    if crash:
        env["WISHBOT_TEST_CRASH_AT"] = crash
    done = subprocess.run(
        [sys.executable, "-m", "bot", "gc", "--publisher", f"local:{tree}", "--now", GC_NOW],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if crash is None:
        assert done.returncode == 0, done.stderr
    return done.returncode


@pytest.fixture(scope="module")
def gc_setup(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> GcSetup:
    base = tmp_path_factory.mktemp("gc-crash")
    text = setup.wishlist.read_text()
    kept = base / "kept.yaml"
    removed_line = next(line for line in text.splitlines() if line.endswith(":2'"))
    kept.write_text(text.replace(removed_line + "\n", ""))
    retiring = base / "retiring"
    shutil.copytree(setup.reference, retiring, symlinks=True)
    run_wishbot(_env(setup.registry), kept, retiring, None)
    path = removed_line.strip().removeprefix("- '").removesuffix("'")
    assert (retiring / path).resolve().is_dir()  # removed, still served
    reference = base / "reference"
    shutil.copytree(retiring, reference, symlinks=True)
    run_gc(_env(setup.registry), reference, None)
    assert not os.path.lexists(reference / path)
    return GcSetup(retiring, reference, path)


def check_gc_crash_then_resume(
    gc_setup: GcSetup, env: dict[str, str], tree: Path, crash: str
) -> None:
    shutil.copytree(gc_setup.retiring, tree, symlinks=True)
    assert run_gc(env, tree, crash) == -9, f"gc did not reach crash point {crash}"
    expected = tree_digest(gc_setup.retiring)
    for path, _target in public_links(tree):
        flat = os.path.relpath(os.path.realpath(tree / path), tree)
        assert flat.startswith(".flat/"), f"{path} dangles after a gc crash at {crash}"
        assert tree_digest(tree, flat) == {
            k: v for k, v in expected.items() if k.startswith(flat + "/")
        }, f"{path} is visible but incomplete after a gc crash at {crash}"
    run_gc(env, tree, None)
    assert tree_digest(tree) == tree_digest(gc_setup.reference)


@pytest.mark.parametrize("crash", ["journal", "delete:1"])
def test_gc_crash_leaves_no_dangling_path(
    setup: Setup, gc_setup: GcSetup, tmp_path: Path, crash: str
) -> None:
    check_gc_crash_then_resume(gc_setup, _env(setup.registry), tmp_path / "tree", crash)


@pytest.mark.slow
@pytest.mark.parametrize("crash", ["commit", "delete:2", "delete:3", "delete:4", "rename:1"])
def test_gc_crash_at_many_points(
    setup: Setup, gc_setup: GcSetup, tmp_path: Path, crash: str
) -> None:
    check_gc_crash_then_resume(gc_setup, _env(setup.registry), tmp_path / "tree", crash)

"""The podman additional image store: published with real images, read by real podman."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import apply_util
import pytest
from apply_util import NOW, REPO, write_wishlist

from bot.config import Config
from bot.core import layout
from bot.errors import PublisherError
from bot.publisher import podman
from bot.publisher.apply import ApplyReport
from bot.publisher.backend import Transaction
from bot.publisher.gc import collect
from bot.publisher.local import LocalPublisher
from bot.publisher.state import read_state
from bot.sandbox.image_builder import PushedImage, push_image, push_index
from bot.sandbox.layers import build_layer, file, with_parents
from bot.sandbox.registry_server import LocalRegistry

BASE = build_layer(with_parents([file("etc/os-release", "ID=test\n"), file("bin/sh", "#!\n")]))
APP = build_layer(with_parents([file("app/hello.txt", "hi\n")]))
OTHER = build_layer(with_parents([file("app/hello.txt", "other\n")]))
NEWER = build_layer(with_parents([file("app/hello.txt", "hello again\n")]))
PODMAN = shutil.which("podman")


def run_apply(
    registry: LocalRegistry,
    wishlist: Path,
    tree: Path,
    *,
    now: datetime = NOW,
    podman_store: bool = True,
) -> ApplyReport:
    report = apply_util.run_apply(
        registry, wishlist, tree, now=now, thin=False, podman_store=podman_store
    )
    assert report.ok, report.to_json()
    return report


@pytest.fixture
def podman_home() -> Iterator[Path]:
    """podman's own (empty) store; short, as podman refuses a run root over 50 characters."""
    home = Path(tempfile.mkdtemp(prefix="wbp-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def podman_cmd(tmp: Path, tree: Path, *args: str) -> Any:
    """Run podman with a private, empty store in ``tmp`` and ``tree``'s store as an image store."""
    assert PODMAN is not None
    command = [
        PODMAN,
        "--root",
        str(tmp / "podman-root"),
        "--runroot",
        str(tmp / "podman-run"),
        "--storage-driver",
        "overlay",
        "--storage-opt",
        f"overlay.imagestore={tree / layout.PODMAN_STORE}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return json.loads(done.stdout)


def snapshot(directory: Path) -> dict[str, tuple[str, bytes, int]]:
    out: dict[str, tuple[str, bytes, int]] = {}
    for top, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(top, name)
            rel = str(path.relative_to(directory))
            info = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path).encode(), info.st_mtime_ns)
            elif path.is_file():
                out[rel] = ("file", path.read_bytes(), info.st_mtime_ns)
            else:
                out[rel] = ("dir", b"", 0)
    return out


def by_id(listing: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["Id"]: item for item in listing}


needs_podman = pytest.mark.skipif(PODMAN is None, reason="podman is not installed (Debian: podman)")


@needs_podman
def test_podman_lists_inspects_moves_and_forgets_published_images(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path, podman_home: Path
) -> None:
    first = push_image(registry.url, unique_repo, "1.0", [BASE, APP], cmd=["/bin/sh"])
    second = push_image(
        registry.url, f"{unique_repo}/other", "2.0", [BASE, OTHER], media="oci", env=("A=1",)
    )
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, f"{unique_repo}:1.0", f"{unique_repo}/other:2.0")
    tree = tmp_path / "tree"
    run_apply(registry, wishlist, tree)
    paths = {
        first.config_digest: f"{registry.host}/{unique_repo}:1.0",
        second.config_digest: f"{registry.host}/{unique_repo}/other:2.0",
    }

    published = snapshot(tree / layout.PODMAN_STORE)
    listing = by_id(podman_cmd(podman_home, tree, "images", "--format", "json"))
    assert set(listing) == {layout.hex_of(d) for d in paths}
    for image_id, path in paths.items():
        item = listing[layout.hex_of(image_id)]
        assert item["Names"] == [path]
        assert item["ReadOnly"] is True
    pushed: dict[str, PushedImage] = {first.config_digest: first, second.config_digest: second}
    for image_id, path in paths.items():
        (info,) = podman_cmd(podman_home, tree, "image", "inspect", path)
        assert info["Id"] == layout.hex_of(image_id)
        assert info["Digest"] == pushed[image_id].manifest_digest
        assert info["RepoTags"] == [path]
        assert info["RootFS"]["Layers"] == list(pushed[image_id].diff_ids)
        # the image's root file system is the flat image, through a relative symlink
        upper = Path(info["GraphDriver"]["Data"]["UpperDir"])
        assert not os.readlink(upper).startswith("/")
        assert upper.resolve() == (tree / layout.flat_dir(image_id)).resolve()
        assert (upper / "etc/os-release").read_text() == "ID=test\n"
    (info,) = podman_cmd(podman_home, tree, "image", "inspect", paths[first.config_digest])
    assert info["Config"]["Cmd"] == ["/bin/sh"]
    assert (upper / "app/hello.txt").read_text() == "other\n"
    # podman only read the store (on CernVM-FS it is read-only)
    assert snapshot(tree / layout.PODMAN_STORE) == published
    # the store is not mistaken for published images
    state = read_state(tree, REPO)
    assert sorted(i.path for i in state.images) == sorted(paths.values())

    # a second apply changes nothing
    before = snapshot(tree / layout.PODMAN_STORE)
    report = run_apply(registry, wishlist, tree)
    assert report.transactions == 0
    assert snapshot(tree / layout.PODMAN_STORE) == before

    # the tag moves: the name goes to the new image, the old one waits nameless
    moved = push_image(registry.url, unique_repo, "1.0", [BASE, NEWER])
    run_apply(registry, wishlist, tree, now=NOW + timedelta(days=1))
    listing = by_id(podman_cmd(podman_home, tree, "images", "--format", "json"))
    assert listing[layout.hex_of(moved.config_digest)]["Names"] == [paths[first.config_digest]]
    assert listing[layout.hex_of(first.config_digest)].get("Names") in (None, [])
    assert len(listing) == 3

    # gc deletes the old image and its store entries, in the same transaction
    gone = collect(LocalPublisher(tree), NOW + timedelta(days=40), grace_days=30, max_deletions=9)
    assert [i for i, _ in gone.deleted_images] == [first.config_digest]
    listing = by_id(podman_cmd(podman_home, tree, "images", "--format", "json"))
    assert set(listing) == {layout.hex_of(moved.config_digest), layout.hex_of(second.config_digest)}
    old_layer = podman.flat_layer_id(first.config_digest)
    store = tree / layout.PODMAN_STORE
    assert not (store / "overlay" / old_layer).exists()
    assert not (store / "overlay-images" / layout.hex_of(first.config_digest)).exists()
    links = {os.readlink(p) for p in (store / "overlay/l").iterdir()}
    assert f"../{old_layer}/diff" not in links and len(links) == 2
    layers = json.loads((store / "overlay-layers/layers.json").read_text())
    assert {e["id"] for e in layers} == {
        podman.flat_layer_id(moved.config_digest),
        podman.flat_layer_id(second.config_digest),
    }


def test_disabled_by_default_writes_no_store(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    assert Config().podman_store is False
    assert Config.load({"WISHBOT_PODMAN_STORE": "yes"}).podman_store is True
    push_image(registry.url, unique_repo, "1.0", [BASE, APP])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, f"{unique_repo}:1.0")
    tree = tmp_path / "tree"
    run_apply(registry, wishlist, tree, podman_store=False)
    assert (tree / registry.host / f"{unique_repo}:1.0").is_symlink()
    assert not (tree / layout.PODMAN_STORE).exists()
    # a moved tag, then gc, on a tree without a store: still without one
    push_image(registry.url, unique_repo, "1.0", [BASE, NEWER])
    run_apply(registry, wishlist, tree, podman_store=False, now=NOW + timedelta(days=1))
    gone = collect(LocalPublisher(tree), NOW + timedelta(days=40), grace_days=30, max_deletions=9)
    assert len(gone.deleted_images) == 1
    assert not (tree / layout.PODMAN_STORE).exists()


def test_retired_path_loses_its_name_and_the_store_entries_go_with_it(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    kept = push_image(registry.url, unique_repo, "1.0", [BASE, APP])
    dropped = push_image(registry.url, unique_repo, "2.0", [BASE, OTHER])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, f"{unique_repo}:1.0", f"{unique_repo}:2.0")
    tree = tmp_path / "tree"
    run_apply(registry, wishlist, tree)
    write_wishlist(wishlist, registry, f"{unique_repo}:1.0")
    run_apply(registry, wishlist, tree, now=NOW + timedelta(days=1))
    images_json = tree / podman.IMAGES_JSON
    # retiring: still served, still named
    names = {e["id"]: e["names"] for e in json.loads(images_json.read_text())}
    assert names[layout.hex_of(dropped.config_digest)] == [f"{registry.host}/{unique_repo}:2.0"]
    collect(LocalPublisher(tree), NOW + timedelta(days=40), grace_days=30, max_deletions=9)
    entries = json.loads(images_json.read_text())
    assert [e["id"] for e in entries] == [layout.hex_of(kept.config_digest)]
    assert entries[0]["names"] == [f"{registry.host}/{unique_repo}:1.0"]
    assert not (tree / layout.flat_dir(dropped.config_digest)).exists()


def test_a_malformed_images_json_is_never_overwritten(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    push_image(registry.url, unique_repo, "1.0", [BASE, APP])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, f"{unique_repo}:1.0")
    tree = tmp_path / "tree"
    (tree / podman.IMAGES).mkdir(parents=True)
    (tree / podman.IMAGES_JSON).write_text("{not json")
    report = apply_util.run_apply(registry, wishlist, tree, thin=False, podman_store=True)
    assert not report.ok
    assert "refusing to overwrite" in report.results[0].message
    assert (tree / podman.IMAGES_JSON).read_text() == "{not json"
    # the image's transaction was aborted whole: nothing half-published
    assert not (tree / registry.host).exists()


def test_store_names_and_big_data_file_names() -> None:
    digest = "sha256:" + "ab" * 32
    assert podman.big_data_name("manifest") == "manifest"
    assert podman.big_data_name(digest) == "=" + base64.b64encode(digest.encode()).decode()
    assert podman.big_data_name("manifest-" + digest).startswith("=")
    layer = podman.flat_layer_id(digest)
    assert layer == podman.flat_layer_id("ab" * 32) and len(layer) == 64
    short = podman.link_id(layer)
    assert len(short) == 26 and set(short) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert short == podman.link_id(layer) != podman.link_id(podman.flat_layer_id("ef" * 32))
    entries = [{"id": "a", "names": ["r/x:1", "r/x:2"], "extra": 1}]
    merged = podman.merge_image(entries, {"id": "b", "names": ["r/x:1"]})
    assert merged == [{"id": "a", "names": ["r/x:2"], "extra": 1}, {"id": "b", "names": ["r/x:1"]}]
    again = podman.merge_image(merged, {"id": "a", "names": ["r/x:3"], "layer": "l"})
    assert again[0] == {"id": "a", "names": ["r/x:2", "r/x:3"], "extra": 1, "layer": "l"}
    assert podman.drop_images(again, {"b"}, {"r/x:2"}) == [
        {"id": "a", "names": ["r/x:3"], "extra": 1, "layer": "l"}
    ]


def test_add_image_refuses_a_missing_flat_image(tmp_path: Path) -> None:
    entry = podman.StoreImage(
        image_id="sha256:" + "cd" * 32,
        manifest_digest="sha256:" + "ef" * 32,
        manifest=b"{}",
        config=b"{}",
        name="r.example/x:1",
        size=0,
        created=NOW,
    )
    view = tmp_path / "view"
    view.mkdir()
    with pytest.raises(PublisherError, match="is not published"):
        podman.add_image(Transaction(LocalPublisher(tmp_path / "root"), view), entry)
    assert list(view.iterdir()) == []


@needs_podman
def test_multiplatform_wish_names_the_amd64_image_and_lists_the_others_by_id(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path, podman_home: Path
) -> None:
    index = push_index(
        registry.url, unique_repo, "1.0", {"linux/amd64": [BASE], "linux/arm64/v8": [APP]}
    )
    wishlist = tmp_path / "wishlist.yaml"
    wishlist.write_text(
        "\n".join(
            [
                "version: 1",
                "user: tester",
                f"cvmfs_repo: '{REPO}'",
                f"output_format: '{registry.host}/thin/$(image)'",
                "input:",
                f"  - image: '{registry.host}/{unique_repo}:1.0'",
                "    platforms: [linux/amd64, linux/arm64/v8]",
            ]
        )
        + "\n"
    )
    tree = tmp_path / "tree"
    run_apply(registry, wishlist, tree)
    amd64 = layout.hex_of(index.image_for("linux/amd64").config_digest)
    arm64 = layout.hex_of(index.image_for("linux/arm64/v8").config_digest)
    listing = by_id(podman_cmd(podman_home, tree, "images", "--format", "json"))
    assert set(listing) == {amd64, arm64}
    assert listing[amd64]["Names"] == [f"{registry.host}/{unique_repo}:1.0"]
    assert listing[arm64].get("Names") in (None, [])
    (info,) = podman_cmd(podman_home, tree, "image", "inspect", arm64)
    assert info["Architecture"] == "arm64"
    assert (Path(info["GraphDriver"]["Data"]["UpperDir"]) / "app/hello.txt").read_text() == "hi\n"

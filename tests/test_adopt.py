"""Taking over a repository the reference converter (DUCC) wrote: plan, add, move a tag,
collect garbage, and both tools can still read the result."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import ducc_tree
import pytest
from apply_util import NOW, REPO, run_apply, write_wishlist
from registry_util import client_for

from bot.cli import main
from bot.commands.adopt import renamed_paths
from bot.core import layout
from bot.core.plan import Plan, make_plan
from bot.core.recipe import load_wishlist
from bot.core.schemas import schema_errors
from bot.publisher import adopt
from bot.publisher.gc import collect
from bot.publisher.local import LocalPublisher
from bot.publisher.metadata import (
    FOREIGN_LAYER,
    ImageRecord,
    LayerInfo,
    manifest_summary,
    read_schedule,
)
from bot.publisher.repair import Repairer
from bot.publisher.state import read_state
from bot.publisher.unpack import UNLIMITED
from bot.publisher.verify import verify
from bot.sandbox.image_builder import PushedImage, push_image
from bot.sandbox.layers import build_layer, file, symlink, whiteout, with_parents
from bot.sandbox.registry_server import LocalRegistry

BASE = build_layer(
    with_parents(
        [
            file("etc/os-release", "ID=ducc\n"),
            file("usr/bin/tool", "#!/bin/sh\necho tool\n", mode=0o755),
            symlink("bin", "usr/bin"),
        ]
    )
)
TOP = build_layer([whiteout("etc/os-release"), file("app/hello.txt", "hi\n")])
LEGACY = build_layer([file("app/legacy.txt", "old\n")])
STALE = build_layer([file("app/stale.txt", "stale\n")])
NEW = build_layer([file("app/new.txt", "new\n")])
MOVED = build_layer([file("app/hello.txt", "moved\n")])


def _ducc_repository(
    registry: LocalRegistry, repo: str, tmp_path: Path
) -> tuple[Path, dict[str, PushedImage]]:
    """DUCC converted repo:1.0 twice (its tag moved; the old image is in the remove
    schedule) and repo:legacy."""
    tree = tmp_path / "tree"
    work = tmp_path / "ducc-work"
    host = registry.host
    images = {
        "stale": push_image(registry.url, repo, "1.0", [BASE, STALE], cmd=["/bin/sh"]),
    }
    ducc_tree.convert(tree, f"{host}/{repo}:1.0", images["stale"], [BASE, STALE], work)
    images["one"] = push_image(registry.url, repo, "1.0", [BASE, TOP], cmd=["/bin/sh"])
    ducc_tree.convert(tree, f"{host}/{repo}:1.0", images["one"], [BASE, TOP], work)
    ducc_tree.schedule(tree, [images["stale"]])
    images["legacy"] = push_image(registry.url, repo, "legacy", [BASE, LEGACY], cmd=["/bin/sh"])
    ducc_tree.convert(tree, f"{host}/{repo}:legacy", images["legacy"], [BASE, LEGACY], work)
    return tree, images


def _plan(registry: LocalRegistry, wishlist: Path, tree: Path, now: datetime = NOW) -> Plan:
    loaded, problems = load_wishlist(wishlist.read_bytes(), str(wishlist))
    assert loaded is not None, problems
    with client_for(registry.host) as client:
        resolutions = client.resolve_all(loaded.wishes)
    return make_plan(loaded.wishes, resolutions, read_state(tree, REPO), now, cvmfs_repo=REPO)


def test_the_builder_writes_what_ducc_reads(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    tree, images = _ducc_repository(registry, unique_repo, tmp_path)
    ducc_tree.ducc_can_read(tree)
    manifest = tree / ".metadata" / f"{registry.host}/{unique_repo}:1.0" / "manifest.json"
    assert manifest.read_bytes().startswith(b'{"SchemaVersion":2,')
    assert (tree / ".chains" / ".cvmfscatalog").exists()
    assert len(list((tree / ".chains").glob("*/*/.cvmfscatalog"))) == 4  # BASE, then one per image
    # wishbot reads DUCC's spelling
    record = ImageRecord.from_json(json.loads(manifest.read_bytes()), manifest.parent.name)
    assert record is not None and record.image_id == images["one"].config_digest
    base = images["one"].layer_digests[0]
    info_path = tree / layout.layer_metadata_dir(base) / "layers.json"
    info = LayerInfo.from_json(json.loads(info_path.read_bytes()), base)
    assert info.diff_id == images["one"].diff_ids[0]
    (entry,) = read_schedule(tree / layout.REMOVE_SCHEDULE)
    assert entry.removal.id == images["stale"].config_digest
    assert entry.layers == images["stale"].layer_digests


def test_adopting_a_ducc_repository(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    tree, images = _ducc_repository(registry, unique_repo, tmp_path)
    host = registry.host
    chains_before = sorted(p.name for p in (tree / ".chains").glob("*/*"))
    base = images["one"].layer_digests[0]
    base_inode = (tree / layout.layerfs_dir(base) / "usr/bin/tool").stat().st_ino
    assert verify(tree).ok, verify(tree).render()  # DUCC's tree is clean as it is

    # plan: what DUCC converted is unchanged, only the new wish is added
    images["new"] = push_image(registry.url, unique_repo, "2.0", [BASE, NEW], cmd=["/bin/sh"])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(
        wishlist, registry, f"{unique_repo}:1.0", f"{unique_repo}:legacy", f"{unique_repo}:2.0"
    )
    plan = _plan(registry, wishlist, tree)
    actions = sorted((c.path, c.action) for c in plan.images)
    assert actions == [
        (f"{host}/{unique_repo}:1.0", "unchanged"),
        (f"{host}/{unique_repo}:2.0", "add"),
        (f"{host}/{unique_repo}:legacy", "unchanged"),
    ]

    # add: a new image on DUCC's BASE layer; BASE is checked against its tar, not re-published
    report = run_apply(registry, wishlist, tree)
    assert report.ok, report.to_json()
    assert [r.path for r in report.results] == [f"{host}/{unique_repo}:2.0"]
    assert report.downloaded_layers == 2  # NEW, and BASE once for its sidecar
    assert (tree / layout.layerfs_dir(base) / "usr/bin/tool").stat().st_ino == base_inode
    assert (tree / adopt.sidecar_relpath(base)).exists()
    new_flat = tree / f"{host}/{unique_repo}:2.0"
    assert (new_flat / "app/new.txt").read_text() == "new\n"
    assert (new_flat / "etc/os-release").read_text() == "ID=ducc\n"
    assert not (tree / f"{host}/{unique_repo}:1.0" / "etc/os-release").exists()
    assert run_apply(registry, wishlist, tree).results == []  # converged

    # move a tag and drop a wish
    images["moved"] = push_image(registry.url, unique_repo, "1.0", [BASE, MOVED], cmd=["/bin/sh"])
    write_wishlist(wishlist, registry, f"{unique_repo}:1.0", f"{unique_repo}:2.0")
    later = NOW + timedelta(days=1)
    report = run_apply(registry, wishlist, tree, now=later)
    assert report.ok, report.to_json()
    assert sorted((r.path, r.action) for r in report.results) == [
        (f"{host}/{unique_repo}:1.0", "update"),
        (f"{host}/{unique_repo}:legacy", "remove"),
    ]
    assert report.downloaded_layers == 1  # MOVED only: BASE has its sidecar now
    assert (tree / f"{host}/{unique_repo}:1.0" / "app/hello.txt").read_text() == "moved\n"
    assert verify(tree).ok, verify(tree).render()
    _both_tools_read_it(tree)

    # garbage collection after the grace period
    gone = collect(LocalPublisher(tree), NOW + timedelta(days=60), grace_days=30, max_deletions=20)
    assert sorted(i for i, _ in gone.deleted_images) == sorted(
        [images["stale"].config_digest, images["one"].config_digest, images["legacy"].config_digest]
    )
    assert sorted(gone.deleted_layers) == sorted(
        [
            images["stale"].layer_digests[1],
            images["one"].layer_digests[1],
            images["legacy"].layer_digests[1],
        ]
    )
    assert not os.path.lexists(tree / f"{host}/{unique_repo}:legacy")
    assert sorted(p.name for p in (tree / ".chains").glob("*/*")) == chains_before  # left alone
    # DUCC's podman store: the deleted images are gone from it, nothing in it dangles
    store = tree / "podmanStore"
    listed = {e["id"] for e in json.loads((store / "overlay-images/images.json").read_bytes())}
    assert layout.hex_of(images["one"].config_digest) not in listed
    assert all(diff.exists() for diff in store.glob("overlay/*/diff"))
    report_after = verify(tree)
    assert report_after.ok, report_after.render()
    _both_tools_read_it(tree)


def _both_tools_read_it(tree: Path) -> None:
    ducc_tree.ducc_can_read(tree)
    state = read_state(tree, REPO)
    flats, layers = ducc_tree.ducc_gc_keeps(tree)
    for image in state.images:
        # DUCC's gc keeps every served flat image and its layers ...
        assert layout.flat_dir(image.image_id) in flats
        assert {layout.layer_dir(d) for d in image.layers} <= layers
        # ... and DUCC's "already converted" check matches what is served
        manifest = json.loads((tree / ".metadata" / image.path / "manifest.json").read_bytes())
        assert ducc_tree.read_manifest(manifest)["Config"]["Digest"] == image.image_id


def test_adopt_command_dry_run_then_apply(
    registry: LocalRegistry,
    unique_repo: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree, _images = _ducc_repository(registry, unique_repo, tmp_path)
    push_image(registry.url, unique_repo, "2.0", [BASE, NEW], cmd=["/bin/sh"])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, f"{unique_repo}:1.0", f"{unique_repo}:2.0")
    monkeypatch.setenv("WISHBOT_INSECURE_REGISTRIES", registry.host)
    args = ["adopt", str(wishlist), "--publisher", f"local:{tree}", "--now", NOW.isoformat()]
    before = sorted(str(p) for p in tree.rglob("*"))
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 image manifests in DUCC's spelling" in out
    assert "4 layers without wishbot's sidecar" in out
    assert f"{unique_repo}:legacy" in out and "remove" in out
    assert f"{unique_repo}:2.0" in out and "add" in out
    assert sorted(str(p) for p in tree.rglob("*")) == before  # a dry run changes nothing
    assert main([*args, "--format", "json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert schema_errors(done, "adopt.schema.json") == []
    assert schema_errors(done["plan"], "plan.schema.json") == []
    assert schema_errors(done["verify"], "verify.schema.json") == []
    assert done["applied"]["ok"] and done["verify"]["ok"]
    assert os.path.lexists(tree / f"{registry.host}/{unique_repo}:2.0")


def test_ducc_layer_that_does_not_match_its_tar_is_not_built_upon(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    tree, images = _ducc_repository(registry, unique_repo, tmp_path)
    base = images["one"].layer_digests[0]
    (tree / layout.layerfs_dir(base) / "usr/bin/tool").write_text("tampered\n")
    push_image(registry.url, unique_repo, "2.0", [BASE, NEW], cmd=["/bin/sh"])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(
        wishlist, registry, f"{unique_repo}:2.0", f"{unique_repo}:1.0", f"{unique_repo}:legacy"
    )
    report = run_apply(registry, wishlist, tree)
    (failed,) = report.failures
    assert "usr/bin/tool: content differs" in failed.message
    assert not os.path.lexists(tree / f"{registry.host}/{unique_repo}:2.0")
    assert not (tree / adopt.sidecar_relpath(base)).exists()


def test_repair_rebuilds_a_ducc_flat_image_that_lost_its_singularity_files(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    """What happened on unpacked.cern.ch: DUCC shipped flat images without them."""
    tree, images = _ducc_repository(registry, unique_repo, tmp_path)
    with client_for(registry.host) as client:
        download = lambda ref, d, s, dest: client.download_blob(ref, d, s, dest)  # noqa: E731
        deep = verify(tree, download=download)  # DUCC's layers match their tars ...
        stale = images["stale"].layer_digests[1]  # ... but for one DUCC scheduled without a path
        assert [(f.check, f.path) for f in deep.findings] == [
            ("layer-unchecked", layout.layerfs_dir(stale))
        ]
        flat = tree / layout.flat_dir(images["legacy"].config_digest)
        shutil.rmtree(flat / ".singularity.d")
        report = verify(tree)
        assert [f.check for f in report.findings] == ["singularity"]
        assert f"{unique_repo}:legacy" in report.findings[0].message
        (repair,) = Repairer(LocalPublisher(tree), client, UNLIMITED).run(report.findings)
    assert repair.done, repair.message
    assert (flat / ".singularity.d/runscript").is_file()
    assert (flat / "app/legacy.txt").read_text() == "old\n"
    assert verify(tree).ok
    ducc_tree.ducc_can_read(tree)


def test_adopt_names_paths_that_move_to_the_normal_spelling() -> None:
    plan = SimpleNamespace(
        images=[
            SimpleNamespace(action="remove", path="docker.io/library/centos:7"),
            SimpleNamespace(action="add", path="registry.hub.docker.com/library/centos:7"),
            SimpleNamespace(action="remove", path="quay.io/org/gone:1"),
        ]
    )
    assert renamed_paths(plan) == [
        ("docker.io/library/centos:7", "registry.hub.docker.com/library/centos:7")
    ]


def test_foreign_layers_are_not_expected_in_the_tree() -> None:
    """DUCC skips foreign (Windows) layers: they are never published."""
    manifest = {
        "SchemaVersion": 2,
        "Config": {"Digest": "sha256:" + "a" * 64},
        "Layers": [
            {"MediaType": FOREIGN_LAYER, "Digest": "sha256:" + "b" * 64},
            {
                "MediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "Digest": "sha256:" + "c" * 64,
            },
        ],
    }
    assert manifest_summary(manifest) == ("sha256:" + "a" * 64, ("sha256:" + "c" * 64,))

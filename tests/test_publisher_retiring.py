"""A removed wish keeps its public path until gc: real registry, real layers, local publisher.

Grid jobs name images by path; the grace period protects them: ``apply`` of a
removal leaves the path serving the same image, ``gc`` deletes path, image and
unused layers together after the grace period.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from publisher_fakes import digest, publish_image, unpublish
from registry_util import client_for

from bot.config import Config
from bot.core import layout
from bot.core.plan import Plan
from bot.core.recipe import load_wishlist
from bot.publisher.apply import ApplyReport
from bot.publisher.converge import converge
from bot.publisher.gc import collect
from bot.publisher.local import LocalPublisher
from bot.publisher.state import read_state, scan
from bot.sandbox.image_builder import push_image, push_index
from bot.sandbox.layers import build_layer, file, with_parents
from bot.sandbox.registry_server import LocalRegistry

NOW = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
REPO = "unpacked.example.org"
BASE = build_layer(with_parents([file("etc/os-release", "ID=test\n")]))
KEEP = build_layer([file("app/keep.txt", "keep\n")])
GONE = build_layer([file("app/gone.txt", "gone\n")])
REBUILT = build_layer([file("app/gone.txt", "gone, rebuilt\n")])


def _wishlist(path: Path, registry: LocalRegistry, *inputs: str) -> Path:
    lines = [
        "version: 1",
        "user: tester",
        f"cvmfs_repo: '{REPO}'",
        f"output_format: '{registry.host}/thin/$(image)'",
        "input:" if inputs else "input: []",
        *[f"  - '{registry.host}/{text}'" for text in inputs],
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _apply(
    registry: LocalRegistry, wishlist: Path, tree: Path, now: datetime
) -> tuple[Plan, ApplyReport]:
    loaded, problems = load_wishlist(wishlist.read_bytes(), str(wishlist))
    assert loaded is not None, problems
    config = Config(insecure_registries=(registry.host,), thin=False, backoff=0.01)
    with client_for(registry.host) as client:
        return converge(loaded, LocalPublisher(tree), client, config=config, now=now)


def _rows(plan: Plan) -> set[tuple[str, str]]:
    return {(c.action, c.path) for c in plan.images}


def test_a_removed_path_serves_until_gc_deletes_it_with_image_and_layers(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    push_image(registry.url, unique_repo, "keep", [BASE, KEEP])
    gone = push_image(registry.url, unique_repo, "gone", [BASE, GONE])
    both = _wishlist(tmp_path / "both.yaml", registry, f"{unique_repo}:keep", f"{unique_repo}:gone")
    one = _wishlist(tmp_path / "one.yaml", registry, f"{unique_repo}:keep")
    tree = tmp_path / "tree"
    path = f"{registry.host}/{unique_repo}:gone"
    flat = tree / layout.flat_dir(gone.config_digest)
    assert _apply(registry, both, tree, NOW)[1].ok

    plan, report = _apply(registry, one, tree, NOW)
    assert ("remove", path) in _rows(plan) and report.ok
    assert [(r.action, r.path) for r in report.results] == [("remove", path)]
    # the path still serves the very same image, with its metadata
    assert (tree / path).resolve() == flat.resolve()
    assert (tree / path / "app/gone.txt").read_text() == "gone\n"
    assert (tree / layout.image_metadata_dir(path) / "manifest.json").is_file()
    state = read_state(tree, REPO)
    assert [(s.kind, s.id, s.path, s.scheduled) for s in state.schedule] == [
        ("image", gone.config_digest, path, NOW)
    ]

    # a later run: no second remove row, no transaction, the date is not reset
    plan, report = _apply(registry, one, tree, NOW + 10 * DAY)
    assert _rows(plan) == {("unchanged", f"{registry.host}/{unique_repo}:keep")}
    assert report.results == [] and report.transactions == 0
    assert read_state(tree, REPO).schedule == state.schedule

    pub = LocalPublisher(tree)
    early = collect(pub, NOW + 29 * DAY, grace_days=30, max_deletions=10)
    assert early.deleted_paths == [] and early.deleted_images == []
    assert (tree / path / "app/gone.txt").is_file()

    done = collect(pub, NOW + 30 * DAY, grace_days=30, max_deletions=10)
    assert done.deleted_paths == [(gone.config_digest, path)]
    assert done.deleted_images == [(gone.config_digest, path)]
    assert done.deleted_layers == [gone.layer_digests[1]]  # BASE is still used by keep
    assert not os.path.lexists(tree / path) and not flat.exists()
    assert not (tree / layout.image_metadata_dir(path)).exists()
    assert not (tree / layout.layer_dir(gone.layer_digests[1])).exists()
    assert (tree / f"{registry.host}/{unique_repo}:keep/app/keep.txt").read_text() == "keep\n"
    assert read_state(tree, REPO).schedule == ()
    assert "gc: deleted 1 retiring path(s), 1 image(s) and 1 layer(s)" in done.render()
    # and the next plan is clean
    plan, report = _apply(registry, one, tree, NOW + 31 * DAY)
    assert not plan.has_changes and report.transactions == 0


def test_wished_again_within_grace_keeps_the_image_and_clears_the_schedule(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    push_image(registry.url, unique_repo, "keep", [BASE, KEEP])
    gone = push_image(registry.url, unique_repo, "gone", [BASE, GONE])
    both = _wishlist(tmp_path / "both.yaml", registry, f"{unique_repo}:keep", f"{unique_repo}:gone")
    one = _wishlist(tmp_path / "one.yaml", registry, f"{unique_repo}:keep")
    tree = tmp_path / "tree"
    path = f"{registry.host}/{unique_repo}:gone"
    _apply(registry, both, tree, NOW)
    _apply(registry, one, tree, NOW)

    plan, report = _apply(registry, both, tree, NOW + 5 * DAY)
    assert ("unchanged", path) in _rows(plan) and not plan.has_changes
    assert plan.unscheduled == (gone.config_digest,)
    assert [(r.action, r.path, r.ok) for r in report.results] == [("unchanged", path, True)]
    assert report.downloaded_layers == 0 and report.transactions == 1
    assert read_state(tree, REPO).schedule == ()
    assert (tree / path).resolve() == (tree / layout.flat_dir(gone.config_digest)).resolve()
    pub = LocalPublisher(tree)
    late = collect(pub, NOW + 100 * DAY, grace_days=30, max_deletions=10)
    assert late.deleted_paths == [] and late.deleted_images == [] and late.deleted_layers == []
    assert (tree / path / "app/gone.txt").is_file()

    # removed once more: a fresh grace period starts
    _apply(registry, one, tree, NOW + 101 * DAY)
    (entry,) = read_state(tree, REPO).schedule
    assert (entry.path, entry.scheduled) == (path, NOW + 101 * DAY)


def test_wished_again_after_the_tag_moved_is_an_update(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    gone = push_image(registry.url, unique_repo, "gone", [BASE, GONE])
    both = _wishlist(tmp_path / "both.yaml", registry, f"{unique_repo}:gone")
    none = _wishlist(tmp_path / "none.yaml", registry)
    tree = tmp_path / "tree"
    path = f"{registry.host}/{unique_repo}:gone"
    _apply(registry, both, tree, NOW)
    _apply(registry, none, tree, NOW)
    rebuilt = push_image(registry.url, unique_repo, "gone", [BASE, REBUILT])

    plan, report = _apply(registry, both, tree, NOW + 5 * DAY)
    (row,) = plan.images
    assert (row.action, row.path) == ("update", path)
    assert row.eligible == NOW + 35 * DAY  # served until now: its grace starts now
    assert report.ok and report.downloaded_layers == 1
    assert (tree / path / "app/gone.txt").read_text() == "gone, rebuilt\n"
    state = read_state(tree, REPO)
    assert [(s.id, s.path, s.scheduled) for s in state.schedule] == [
        (gone.config_digest, path, NOW + 5 * DAY)
    ]
    early = collect(LocalPublisher(tree), NOW + 34 * DAY, grace_days=30, max_deletions=10)
    assert early.deleted_images == [] and early.deleted_paths == []
    done = collect(LocalPublisher(tree), NOW + 35 * DAY, grace_days=30, max_deletions=10)
    assert done.deleted_paths == []  # the path is live: only the old image goes
    assert done.deleted_images == [(gone.config_digest, path)]
    assert (tree / path).resolve() == (tree / layout.flat_dir(rebuilt.config_digest)).resolve()


def test_a_removed_multiplatform_wish_keeps_its_variant_symlink_until_gc(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    index = push_index(
        registry.url, unique_repo, "1.0", {"linux/amd64": [BASE, KEEP], "linux/arm64": [GONE]}
    )
    wishlist = tmp_path / "multi.yaml"
    wishlist.write_text(
        f"version: 1\nuser: t\ncvmfs_repo: '{REPO}'\n"
        f"output_format: '{registry.host}/thin/$(image)'\ninput:\n"
        f"  - image: '{registry.host}/{unique_repo}:1.0'\n"
        "    platforms: [linux/amd64, linux/arm64]\n"
    )
    none = _wishlist(tmp_path / "none.yaml", registry)
    tree = tmp_path / "tree"
    path = f"{registry.host}/{unique_repo}:1.0"
    assert _apply(registry, wishlist, tree, NOW)[1].ok
    arch_links = {arch: f".multiarch/{arch}/{path}" for arch in ("x86_64", "aarch64")}

    plan, report = _apply(registry, none, tree, NOW)
    assert [c.action for c in plan.images] == ["remove", "remove"] and report.ok
    assert "$(CVMFS_ARCH:-x86_64)" in os.readlink(tree / path)
    for arch, platform in (("x86_64", "linux/amd64"), ("aarch64", "linux/arm64")):
        image_id = index.image_for(platform).config_digest
        assert os.path.realpath(tree / arch_links[arch]).endswith(layout.hex_of(image_id))
    assert (tree / arch_links["x86_64"] / "app/keep.txt").is_file()
    assert {(s.id, s.path) for s in read_state(tree, REPO).schedule} == {
        (index.image_for("linux/amd64").config_digest, path),
        (index.image_for("linux/arm64").config_digest, path),
    }
    plan, report = _apply(registry, none, tree, NOW + DAY)
    assert plan.images == () and report.transactions == 0

    done = collect(LocalPublisher(tree), NOW + 31 * DAY, grace_days=30, max_deletions=10)
    assert sorted(p for _i, p in done.deleted_paths) == [path, path]
    assert len(done.deleted_images) == 2
    assert not os.path.lexists(tree / path)
    for link in arch_links.values():
        assert not os.path.lexists(tree / link)
        assert not (tree / layout.image_metadata_dir(link)).exists()
    assert scan(tree).flats == set() and scan(tree).layers == {}


# --- gc rules on fake images (no registry) ------------------------------------

L1, L2 = digest("l1"), digest("l2")
I1, I2 = digest("i1"), digest("i2")


def test_a_retiring_path_goes_but_its_image_stays_for_a_live_path(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "t")
    publish_image(pub, "reg.io/a/b:1", I1, [L1], NOW)
    publish_image(pub, "reg.io/a/b:2", I1, [L1], NOW)  # the same image under a second tag
    unpublish(pub, "reg.io/a/b:1", NOW)
    early = collect(pub, NOW + 29 * DAY, grace_days=30, max_deletions=10)
    assert early.transactions == 0 and (pub.root / "reg.io/a/b:1").is_symlink()
    done = collect(pub, NOW + 30 * DAY, grace_days=30, max_deletions=10)
    assert done.deleted_paths == [(I1, "reg.io/a/b:1")] and done.deleted_images == []
    assert not os.path.lexists(pub.root / "reg.io/a/b:1")
    assert (pub.root / "reg.io/a/b:2").resolve().is_dir() and scan(pub.root).schedule == []
    assert L1 in scan(pub.root).layers


def test_an_image_retiring_at_two_paths_goes_with_the_last(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "t")
    publish_image(pub, "reg.io/a/b:1", I1, [L1], NOW)
    publish_image(pub, "reg.io/a/b:2", I1, [L1], NOW)
    unpublish(pub, "reg.io/a/b:1", NOW)
    unpublish(pub, "reg.io/a/b:2", NOW + 10 * DAY)
    first = collect(pub, NOW + 30 * DAY, grace_days=30, max_deletions=10)
    assert first.deleted_paths == [(I1, "reg.io/a/b:1")] and first.deleted_images == []
    assert (pub.root / "reg.io/a/b:2").resolve().is_dir()
    assert [(e.removal.path, e.removal.scheduled) for e in scan(pub.root).schedule] == [
        ("reg.io/a/b:2", NOW + 10 * DAY)
    ]
    second = collect(pub, NOW + 40 * DAY, grace_days=30, max_deletions=10)
    assert second.deleted_paths == [(I1, "reg.io/a/b:2")]
    assert second.deleted_images == [(I1, "reg.io/a/b:2")] and second.deleted_layers == [L1]
    assert scan(pub.root).flats == set() and scan(pub.root).links == {}


def test_an_image_moved_away_from_one_path_waits_for_every_entry(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "t")
    publish_image(pub, "reg.io/a/b:1", I1, [L1], NOW)
    publish_image(pub, "reg.io/a/b:2", I1, [L1], NOW)
    unpublish(pub, "reg.io/a/b:2", NOW)  # retiring, deleted after day 30
    publish_image(pub, "reg.io/a/b:1", I2, [L2], NOW + 20 * DAY)  # tag 1 moves on day 20
    report = collect(pub, NOW + 35 * DAY, grace_days=30, max_deletions=10)
    # tag 2's path goes on day 30, but jobs that resolved tag 1 get until day 50
    assert report.deleted_paths == [(I1, "reg.io/a/b:2")] and report.deleted_images == []
    assert (pub.root / layout.flat_dir(I1)).is_dir()
    later = collect(pub, NOW + 50 * DAY, grace_days=30, max_deletions=10)
    assert later.deleted_images == [(I1, "reg.io/a/b:1")] and later.deleted_layers == [L1]


def test_a_retiring_path_and_its_image_are_one_deletion_for_the_cap(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "t")
    publish_image(pub, "reg.io/a/b:1", I1, [L1], NOW)
    publish_image(pub, "reg.io/a/b:2", I2, [L2], NOW)
    unpublish(pub, "reg.io/a/b:1", NOW)
    unpublish(pub, "reg.io/a/b:2", NOW)
    first = collect(pub, NOW + 40 * DAY, grace_days=30, max_deletions=1)
    assert len(first.deleted_paths) == 1 and len(first.deleted_images) == 1
    assert first.deleted_layers == [] and first.capped == 2  # one path, one layer wait
    (left,) = scan(pub.root).links
    assert (pub.root / left).resolve().is_dir()  # the other is still complete
    second = collect(pub, NOW + 40 * DAY, grace_days=30, max_deletions=10)
    assert len(second.deleted_paths) == 1 and len(second.deleted_layers) == 2
    assert scan(pub.root).flats == set() and scan(pub.root).layers == {}

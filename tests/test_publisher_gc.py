"""Garbage collection on a real local publisher tree."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from publisher_fakes import digest, publish_image, unpublish

from bot.core import layout
from bot.publisher.gc import collect
from bot.publisher.local import LocalPublisher
from bot.publisher.state import scan

NOW = datetime(2025, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
L1, L2, L3 = digest("l1"), digest("l2"), digest("l3")
I1, I2, I3 = digest("i1"), digest("i2"), digest("i3")


def _exists(pub: LocalPublisher, relpath: str) -> bool:
    return (pub.root / relpath).exists()


def test_moved_tag_waits_for_grace_then_goes(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "t")
    publish_image(pub, "reg.io/a/b:1", I1, [L1, L2], NOW)
    publish_image(pub, "reg.io/a/b:1", I2, [L1, L3], NOW)  # tag moved; L2 only in I1

    early = collect(pub, NOW + 29 * DAY, grace_days=30, max_deletions=10)
    assert early.deleted_images == [] and early.deleted_layers == []
    assert _exists(pub, layout.flat_dir(I1)) and _exists(pub, layout.layer_dir(L2))

    dry = collect(pub, NOW + 31 * DAY, grace_days=30, max_deletions=10, dry_run=True)
    assert dry.deleted_images == [(I1, "reg.io/a/b:1")] and dry.deleted_layers == [L2]
    assert _exists(pub, layout.flat_dir(I1)) and dry.transactions == 0

    done = collect(pub, NOW + 31 * DAY, grace_days=30, max_deletions=10)
    assert done.deleted_images == [(I1, "reg.io/a/b:1")]
    assert done.deleted_layers == [L2]  # inherits the image's grace: gone in the same run
    assert not _exists(pub, layout.flat_dir(I1)) and not _exists(pub, layout.layer_dir(L2))
    assert _exists(pub, layout.flat_dir(I2)) and _exists(pub, layout.layer_dir(L1))
    assert scan(pub.root).layers[L1].users == {I2}  # backlink of the deleted image dropped
    assert os.path.realpath(pub.root / "reg.io/a/b:1").endswith(layout.hex_of(I2))

    again = collect(pub, NOW + 32 * DAY, grace_days=30, max_deletions=10)
    assert again.transactions == 0 and not again.deleted_images


def test_never_deletes_an_image_a_symlink_points_at(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "t")
    publish_image(pub, "reg.io/a/b:1", I1, [L1], NOW)
    publish_image(pub, "reg.io/a/b:2", I1, [L1], NOW)  # the same image under a second tag
    publish_image(pub, "reg.io/a/b:1", I2, [L2], NOW)  # tag 1 moves: I1 scheduled
    report = collect(pub, NOW + 100 * DAY, grace_days=30, max_deletions=10)
    assert report.deleted_images == [] and report.deleted_layers == []
    assert _exists(pub, layout.flat_dir(I1))
    assert not [e for e in scan(pub.root).schedule if e.removal.id == I1]  # live again


def test_cap_limits_deletions_per_run(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "t")
    for n in range(4):
        publish_image(pub, f"reg.io/a/b:{n}", digest(f"img{n}"), [digest(f"lay{n}")], NOW)
        unpublish(pub, f"reg.io/a/b:{n}", NOW)
    first = collect(pub, NOW + 40 * DAY, grace_days=30, max_deletions=3)
    assert len(first.deleted_images) + len(first.deleted_layers) == 3 and first.capped == 4
    second = collect(pub, NOW + 40 * DAY, grace_days=30, max_deletions=100)
    assert len(second.deleted_images) + len(second.deleted_layers) == 5
    assert scan(pub.root).flats == set() and scan(pub.root).layers == {}


def test_no_layer_deleted_when_an_image_has_no_metadata(tmp_path: Path) -> None:
    pub = LocalPublisher(tmp_path / "t")
    publish_image(pub, "reg.io/a/b:1", I1, [L1], NOW)
    publish_image(pub, "reg.io/a/b:2", I3, [L3], NOW)
    os.remove(pub.root / layout.image_metadata_dir("reg.io/a/b:2") / "manifest.json")
    os.remove(pub.root / layout.layer_metadata_dir(L3) / "origin.json")
    unpublish(pub, "reg.io/a/b:1", NOW)
    report = collect(pub, NOW + 60 * DAY, grace_days=30, max_deletions=10)
    assert report.deleted_images == [(I1, "reg.io/a/b:1")]
    assert report.deleted_layers == [] and report.warnings
    assert _exists(pub, layout.layer_dir(L1)) and _exists(pub, layout.layer_dir(L3))


# --- property: random histories never delete anything in use or in grace ---------

TAGS = ["reg.io/a/b:1", "reg.io/a/b:2", "reg.io/c/d:1"]
IMAGES = {
    digest(f"img{n}"): [digest(f"lay{k}") for k in layers]
    for n, layers in enumerate([(0,), (0, 1), (1, 2), (3,), (2, 3, 4)])
}

op = st.one_of(
    # add, move a tag, or wish a retiring path again
    st.tuples(st.just("publish"), st.sampled_from(TAGS), st.sampled_from(sorted(IMAGES))),
    # the wish leaves the wishlist: the path retires (serves on until gc)
    st.tuples(st.just("remove"), st.sampled_from(TAGS), st.just("")),
    st.tuples(st.just("gc"), st.integers(min_value=0, max_value=45), st.integers(1, 6)),
)


def _target(pub: LocalPublisher, path: str) -> str | None:
    link = pub.root / path
    return f"sha256:{os.readlink(link).rsplit('/', 1)[-1]}" if link.is_symlink() else None


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(op, min_size=1, max_size=16))
def test_gc_never_deletes_what_is_used_or_in_grace(
    tmp_path_factory: object, ops: list[tuple[str, object, object]]
) -> None:
    import tempfile

    grace = timedelta(days=30)
    with tempfile.TemporaryDirectory() as tmp:
        pub = LocalPublisher(Path(tmp) / "t")
        now = NOW
        unused_since: dict[str, datetime] = {}  # image id -> when it last lost its symlinks
        live: dict[str, str] = {}  # wished path -> image id
        retiring: dict[str, tuple[str, datetime]] = {}  # removed path -> (image id, since)
        for kind, a, b in ops:
            if kind == "publish":
                assert isinstance(a, str) and isinstance(b, str)
                publish_image(pub, a, b, IMAGES[b], now)
                live[a] = b
                retiring.pop(a, None)
            elif kind == "remove":
                assert isinstance(a, str)
                if a in live:  # a retiring path is not removed again (no second row)
                    unpublish(pub, a, now)
                    retiring[a] = (live.pop(a), now)
            else:
                assert isinstance(a, int) and isinstance(b, int)
                now += timedelta(days=a)
                collect(pub, now, grace_days=30, max_deletions=b)
            found = scan(pub.root)
            pointed = set(found.links.values())
            for image_id in IMAGES:
                if image_id in pointed:
                    unused_since.pop(image_id, None)
                elif image_id in found.flats:
                    unused_since.setdefault(image_id, now)
            # 1. every served image is complete: flat and all its layers are there
            for link, image_id in found.links.items():
                assert (pub.root / link).resolve().is_dir(), link
                for layer in IMAGES[image_id]:
                    assert (pub.root / layout.layerfs_dir(layer)).is_dir()
            # 2. a wished path always serves its image
            for path, image_id in live.items():
                assert _target(pub, path) == image_id, path
            # 3. a retiring path serves its image until gc deletes both, never
            #    before its grace period is over
            for path, (image_id, since) in list(retiring.items()):
                target = _target(pub, path)
                if target is None:
                    assert now - since >= grace, path
                    # gc deleted the path; the image went with it unless something
                    # else still holds it (another path, another schedule entry)
                    held = image_id in pointed or any(
                        e.removal.id == image_id for e in found.schedule
                    )
                    assert held or image_id not in found.flats, path
                    del retiring[path]
                else:
                    assert target == image_id and (pub.root / path).resolve().is_dir()
            # 4. an image unused for less than the grace period is still there,
            #    and so are its layers (thin images may point at them)
            for image_id, since in unused_since.items():
                if now - since < grace:
                    assert image_id in found.flats
                    for layer in IMAGES[image_id]:
                        assert layer in found.layers
            unused_since = {i: s for i, s in unused_since.items() if i in found.flats}

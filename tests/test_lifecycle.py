"""The lifecycle rules (retiring paths, grace periods, the schedule) on their own."""

from __future__ import annotations

from datetime import timedelta

from plan_samples import EARLIER, NOW, published, resolved, state, wish

from bot.core.lifecycle import (
    deletion_date,
    grace_end,
    is_retiring,
    public_path,
    retires_at,
    retiring,
    serving,
    serving_key,
    taken_off_schedule,
)
from bot.core.model import ScheduledRemoval

GONE = resolved(wish("quay.io/org/gone:1"), None, "gone", ["base", "gone"])
MOVED = resolved(wish("quay.io/org/moved:1"), None, "moved-new", ["base", "new"])
OLD_ID = "sha256:" + "0" * 64


def test_public_path_drops_the_multiarch_twin() -> None:
    assert public_path(".multiarch/arm64/quay.io/org/app:1") == "quay.io/org/app:1"
    assert public_path("quay.io/org/app:1") == "quay.io/org/app:1"
    assert public_path(".multiarch/arm64") == ".multiarch/arm64"  # no path after the arch
    assert serving_key(".multiarch/arm64/a/b:1", "id") == ("a/b:1", "id")


def test_grace_ends_grace_days_after_scheduling() -> None:
    removal = ScheduledRemoval("image", OLD_ID, EARLIER, path="quay.io/org/moved:1")
    assert grace_end(EARLIER, 30) == EARLIER + timedelta(days=30)
    assert deletion_date(removal, 30) == EARLIER + timedelta(days=30)


def test_a_path_retires_only_while_it_serves_its_scheduled_image() -> None:
    retiring_entry = ScheduledRemoval("image", GONE.image_id, EARLIER, path="quay.io/org/gone:1")
    later = ScheduledRemoval("image", GONE.image_id, NOW, path="quay.io/org/gone:1")
    # the old image of a moved tag: its path serves another image now
    moved = ScheduledRemoval("image", OLD_ID, EARLIER, path="quay.io/org/moved:1")
    layer = ScheduledRemoval("layer", "sha256:" + "1" * 64, EARLIER)
    current = state([published(GONE), published(MOVED)], [later, retiring_entry, moved, layer])
    paths = retiring(current)
    assert paths == {("quay.io/org/gone:1", GONE.image_id): EARLIER}  # the earliest entry
    assert is_retiring(current.images[0], paths) and not is_retiring(current.images[1], paths)
    assert serving(retiring_entry, paths) and not serving(moved, paths)
    assert not serving(layer, paths)
    assert retires_at(current.images[0], paths, 30) == EARLIER + timedelta(days=30)
    assert retires_at(current.images[1], paths, 30) is None


def test_what_a_change_uses_again_leaves_the_schedule() -> None:
    schedule = [
        ScheduledRemoval("image", "img-a", EARLIER, path="r/a:1"),
        ScheduledRemoval("image", "img-b", EARLIER, path="r/b:1"),
        ScheduledRemoval("image", "img-c", EARLIER, path="r/c:1"),
        ScheduledRemoval("layer", "layer-x", EARLIER),
        ScheduledRemoval("layer", "layer-y", EARLIER),
    ]
    taken = taken_off_schedule(
        schedule,
        staying_images={"img-a", "img-b"},
        staying_layers={"layer-y"},
        still_retiring={("r/b:1", "img-b")},  # its path goes at gc, whoever uses the image
    )
    assert taken == ("img-a", "layer-y")

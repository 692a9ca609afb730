"""The plan and retiring paths: a removed wish serves on until gc (pure core, no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from plan_samples import EARLIER, NOW, REPO, published, resolution, resolved, state, wish

from bot.core.model import CurrentState, ScheduledRemoval
from bot.core.plan import make_plan, retiring
from bot.core.reference import parse
from bot.core.render import render_json, render_markdown
from bot.core.schemas import schema_errors

KEEP = wish("quay.io/org/keep:1")
GONE = wish("quay.io/org/gone:1", line=2)
KEEP_IMAGE = resolved(KEEP, None, "keep", ["base", "keep"])
GONE_IMAGE = resolved(GONE, None, "gone", ["base", "gone"])
GONE_PATH = "quay.io/org/gone:1"


def _retiring_state(since: datetime = EARLIER) -> CurrentState:
    removal = ScheduledRemoval("image", GONE_IMAGE.image_id, since, path=GONE_PATH)
    return state([published(KEEP_IMAGE), published(GONE_IMAGE)], [removal])


def test_removal_row_says_the_path_serves_until_the_deletion_date() -> None:
    current = state([published(KEEP_IMAGE), published(GONE_IMAGE)])
    plan = make_plan([KEEP], [resolution(KEEP, KEEP_IMAGE)], current, NOW, cvmfs_repo=REPO)
    (row,) = [c for c in plan.images if c.action == "remove"]
    deadline = NOW + timedelta(days=30)
    assert row.path == GONE_PATH and row.retires == deadline and row.eligible == deadline
    markdown = render_markdown(plan)
    assert f"1 removed path keeps working until {deadline:%Y-%m-%d}, then it is deleted" in markdown
    data = render_json(plan)
    assert schema_errors(data, "plan.schema.json") == []
    images = data["images"]
    assert isinstance(images, list)
    assert [i["retires"] for i in images if i["action"] == "remove"] == ["2026-03-31T12:00:00Z"]


def test_a_retiring_path_gets_no_second_remove_row() -> None:
    current = _retiring_state()
    assert retiring(current) == {(GONE_PATH, GONE_IMAGE.image_id): EARLIER}
    plan = make_plan([KEEP], [resolution(KEEP, KEEP_IMAGE)], current, NOW, cvmfs_repo=REPO)
    assert [(c.action, c.path) for c in plan.images] == [("unchanged", "quay.io/org/keep:1")]
    assert not plan.has_changes and plan.unscheduled == () and plan.layers == ()
    # the merge-request view of removing it again (already gone from the wishlist)
    base = make_plan([KEEP], [], current, NOW, cvmfs_repo=REPO, removed=[GONE])
    assert base.images == () and base.unscheduled == ()


def test_a_retiring_path_wished_again_is_unchanged_and_unscheduled() -> None:
    current = _retiring_state()
    wishes = [KEEP, GONE]
    resolutions = [resolution(KEEP, KEEP_IMAGE), resolution(GONE, GONE_IMAGE)]
    plan = make_plan(wishes, resolutions, current, NOW, cvmfs_repo=REPO)
    assert {(c.action, c.path) for c in plan.images} == {
        ("unchanged", "quay.io/org/keep:1"),
        ("unchanged", GONE_PATH),
    }
    assert plan.unscheduled == (GONE_IMAGE.image_id,)
    assert plan.layers_to_ingest == 0 and plan.download_bytes == 0


def test_a_retiring_path_wished_again_after_the_tag_moved_is_an_update() -> None:
    current = _retiring_state()
    rebuilt = resolved(GONE, None, "gone-2", ["base", "gone-2"])
    wishes = [KEEP, GONE]
    resolutions = [resolution(KEEP, KEEP_IMAGE), resolution(GONE, rebuilt)]
    plan = make_plan(wishes, resolutions, current, NOW, cvmfs_repo=REPO)
    (row,) = [c for c in plan.images if c.action == "update"]
    assert row.old is not None and row.old.image_id == GONE_IMAGE.image_id
    # a move like any other: the path served the old image until now
    assert row.eligible == NOW + timedelta(days=30) and row.retires is None
    assert plan.unscheduled == ()


def test_an_entry_for_a_moved_tag_is_not_a_retiring_path() -> None:
    # the schedule names the path, but the path serves another image now
    moved = ScheduledRemoval("image", GONE_IMAGE.image_id, EARLIER, path="quay.io/org/keep:1")
    current = state([published(KEEP_IMAGE)], [moved])
    assert retiring(current) == {}
    plan = make_plan([], [], current, NOW, cvmfs_repo=REPO)
    assert [(c.action, c.path) for c in plan.images] == [("remove", "quay.io/org/keep:1")]


def test_an_image_retiring_at_one_path_and_wished_at_another_stays_scheduled_there() -> None:
    # the same image under two tags; tag "old" retires, tag "1" is wished again
    other = published(GONE_IMAGE)
    old_path = "quay.io/org/gone:old"
    at_old = replace(other, path=old_path, reference=parse(old_path))
    removal = ScheduledRemoval("image", GONE_IMAGE.image_id, EARLIER, path=old_path)
    current = state([published(KEEP_IMAGE), at_old], [removal])
    plan = make_plan(
        [KEEP, GONE],
        [resolution(KEEP, KEEP_IMAGE), resolution(GONE, GONE_IMAGE)],
        current,
        NOW,
        cvmfs_repo=REPO,
    )
    assert {(c.action, c.path) for c in plan.images} == {
        ("unchanged", "quay.io/org/keep:1"),
        ("add", GONE_PATH),
    }
    # "old" is still retiring: its entry is not cancelled by the image being used again
    assert plan.unscheduled == ()

"""make_plan on hand-written cases: add, update, remove, fail closed, shared layers, base view."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from plan_samples import (
    EARLIER,
    NOW,
    REPO,
    digest,
    failed,
    published,
    resolution,
    resolved,
    state,
    wish,
)

from bot.core.model import Platform, Problem, ScheduledRemoval
from bot.core.plan import ImageChange, Plan, make_plan, public_path

GRACE = NOW + timedelta(days=30)
ARM = Platform("linux", "arm64", "v8")


def actions(plan: Plan) -> list[tuple[str, str]]:
    return [(c.action, c.path) for c in plan.images]


def row(plan: Plan, path: str) -> ImageChange:
    return next(c for c in plan.images if c.path == path)


def test_first_plan_adds_every_image_and_ingests_each_layer_once() -> None:
    a, b = wish("centos:7", 1), wish("quay.io/org/tool:1.0", 2)
    ra = resolved(a, None, "centos7", ["base", "centos"])
    rb = resolved(b, None, "tool", ["base", "tool"], size=500)
    plan = make_plan(
        [a, b], [resolution(a, ra), resolution(b, rb)], state([]), NOW, cvmfs_repo=REPO
    )

    assert actions(plan) == [
        ("add", "quay.io/org/tool:1.0"),
        ("add", "registry.hub.docker.com/library/centos:7"),
    ]
    assert plan.layers_to_ingest == 3
    # "base" is shared: counted for the first image in path order only
    assert row(plan, "quay.io/org/tool:1.0").new_layers == (
        digest("layer:base"),
        digest("layer:tool"),
    )
    assert row(plan, "registry.hub.docker.com/library/centos:7").new_layers == (
        digest("layer:centos"),
    )
    assert plan.download_bytes == 500 + 500 + 10_000_000  # base and tool from quay first
    assert plan.download_bytes == sum(c.download_bytes for c in plan.images)
    base = next(layer for layer in plan.layers if layer.digest == digest("layer:base"))
    assert (base.action, base.users) == ("ingest", 2)
    assert not plan.has_errors


def test_same_image_is_unchanged_and_nothing_is_ingested() -> None:
    a = wish("centos:7")
    ra = resolved(a, None, "centos7", ["base", "centos"])
    plan = make_plan([a], [resolution(a, ra)], state([published(ra)]), NOW, cvmfs_repo=REPO)
    assert actions(plan) == [("unchanged", "registry.hub.docker.com/library/centos:7")]
    assert plan.layers == ()
    assert not plan.has_changes


def test_moved_tag_updates_and_schedules_old_image_and_its_private_layers() -> None:
    a = wish("centos:7")
    old = resolved(a, None, "centos7-old", ["base", "old-top"])
    new = resolved(a, None, "centos7-new", ["base", "new-top"])
    plan = make_plan([a], [resolution(a, new)], state([published(old)]), NOW, cvmfs_repo=REPO)

    change = row(plan, "registry.hub.docker.com/library/centos:7")
    assert change.action == "update"
    assert change.old is not None and change.old.image_id == old.image_id
    assert change.eligible == GRACE
    assert change.new_layers == (digest("layer:new-top"),)
    by_digest = {layer.digest: layer for layer in plan.layers}
    assert by_digest[digest("layer:base")].action == "shared"
    assert by_digest[digest("layer:new-top")].action == "ingest"
    assert by_digest[digest("layer:old-top")].action == "schedule"
    assert by_digest[digest("layer:old-top")].eligible == GRACE
    assert plan.images_scheduled == 1 and plan.layers_scheduled == 1


def test_old_image_still_used_by_another_path_is_not_scheduled() -> None:
    a, b = wish("centos:7", 1), wish("centos:latest", 2)
    shared = resolved(a, None, "centos7", ["base"])
    also = resolved(b, None, "centos7", ["base"])  # same image id under another tag
    new = resolved(a, None, "centos7-new", ["other"])
    current = state([published(shared), published(also)])
    plan = make_plan(
        [a, b], [resolution(a, new), resolution(b, also)], current, NOW, cvmfs_repo=REPO
    )
    change = row(plan, "registry.hub.docker.com/library/centos:7")
    assert change.action == "update" and change.eligible is None
    assert plan.layers_scheduled == 0
    assert plan.images_scheduled == 0


def test_image_no_wish_wants_is_removed() -> None:
    a, gone = wish("centos:7", 1), wish("centos:6", 2)
    ra = resolved(a, None, "centos7", ["base"])
    rg = resolved(gone, None, "centos6", ["base", "six"])
    plan = make_plan(
        [a], [resolution(a, ra)], state([published(ra), published(rg)]), NOW, cvmfs_repo=REPO
    )
    assert actions(plan) == [
        ("remove", "registry.hub.docker.com/library/centos:6"),
        ("unchanged", "registry.hub.docker.com/library/centos:7"),
    ]
    assert row(plan, "registry.hub.docker.com/library/centos:6").eligible == GRACE
    assert [(layer.action, layer.digest) for layer in plan.layers] == [
        ("schedule", digest("layer:six"))
    ]


def test_fail_closed_unresolved_wildcard_protects_all_its_tags() -> None:
    glob = wish("atlas/analysisbase:21.2.1*", 3)
    other = wish("atlas/analysisbase:22.0", 4)
    t1 = resolved(glob, "21.2.10", "ab-21.2.10", ["ab1"])
    t2 = resolved(glob, "21.2.11", "ab-21.2.11", ["ab2"])
    t3 = resolved(other, None, "ab-22", ["ab3"])
    current = state([published(t1), published(t2), published(t3)])
    plan = make_plan([glob], [failed(glob)], current, NOW, cvmfs_repo=REPO)

    # 21.2.1* tags are untouched; 22.0 is not covered by the glob and goes
    assert ("remove", "registry.hub.docker.com/atlas/analysisbase:22.0") in actions(plan)
    assert not any(c.action == "remove" and "21.2.1" in c.path for c in plan.images)
    kept = [c.path for c in plan.images if c.action == "unchanged"]
    assert kept == [
        "registry.hub.docker.com/atlas/analysisbase:21.2.10",
        "registry.hub.docker.com/atlas/analysisbase:21.2.11",
    ]
    errors = [c for c in plan.images if c.action == "error"]
    assert [c.path for c in errors] == ["registry.hub.docker.com/atlas/analysisbase:21.2.1*"]
    assert errors[0].problem is not None and errors[0].problem.code == "unavailable"
    assert plan.has_errors
    scheduled = {layer.digest for layer in plan.layers if layer.action == "schedule"}
    assert scheduled == {digest("layer:ab3")}


def test_wish_without_any_resolution_is_an_error_and_protects() -> None:
    a = wish("centos:7")
    ra = resolved(a, None, "centos7", ["base"])
    plan = make_plan([a], [], state([published(ra)]), NOW, cvmfs_repo=REPO)
    assert [c.action for c in plan.images] == ["error", "unchanged"]  # kept, shown as kept
    assert plan.problems[0].code == "unresolved"
    assert plan.layers_scheduled == 0


def test_partial_resolution_adds_new_paths_but_never_updates_old_ones() -> None:
    glob = wish("org/app:1.*")
    old = resolved(glob, "1.0", "app-1.0-old", ["a"])
    moved = resolved(glob, "1.0", "app-1.0-new", ["b"])
    fresh = resolved(glob, "1.1", "app-1.1", ["c"])
    res = failed(glob)
    res = type(res)(res.wish, (moved, fresh), res.problem)
    plan = make_plan([glob], [res], state([published(old)]), NOW, cvmfs_repo=REPO)
    assert row(plan, "registry.hub.docker.com/org/app:1.1").action == "add"
    kept = row(plan, "registry.hub.docker.com/org/app:1.0")
    assert kept.action == "unchanged" and kept.eligible is None
    assert kept.old is not None and kept.old.image_id == old.image_id
    assert plan.layers_scheduled == 0


def test_warning_resolution_is_complete() -> None:
    a = wish("centos:7")
    ra = resolved(a, None, "centos7", ["base"])
    warning = Problem("warning", "ignored error", a.location, code="ignored")
    res = type(resolution(a, ra))(a, (ra,), warning)
    gone = resolved(wish("centos:6"), None, "centos6", ["six"])
    plan = make_plan([a], [res], state([published(gone)]), NOW, cvmfs_repo=REPO)
    assert ("remove", "registry.hub.docker.com/library/centos:6") in actions(plan)
    assert not plan.has_errors and plan.warnings == (warning,)


def test_multiarch_rows_are_keyed_by_path_and_platform() -> None:
    w = wish("org/multi:1", platforms=(Platform("linux", "amd64"), ARM))
    amd = resolved(w, None, "multi-amd", ["amd"])
    arm = resolved(w, None, "multi-arm", ["arm"], platform=ARM)
    # the publisher reported the amd64 tree under its .multiarch twin
    current_amd = published(amd)
    current_amd = type(current_amd)(
        **{**current_amd.__dict__, "path": ".multiarch/amd64/" + current_amd.path}
    )
    plan = make_plan([w], [resolution(w, amd, arm)], state([current_amd]), NOW, cvmfs_repo=REPO)
    assert [(c.action, c.path, str(c.platform)) for c in plan.images] == [
        ("unchanged", "registry.hub.docker.com/org/multi:1", "linux/amd64"),
        ("add", "registry.hub.docker.com/org/multi:1", "linux/arm64/v8"),
    ]
    # .multiarch names are what $(CVMFS_ARCH) expands to on a client (uname -m)
    assert plan.images[1].published_path == ".multiarch/aarch64/registry.hub.docker.com/org/multi:1"
    assert public_path(".multiarch/arm64:v8/quay.io/a/b:1") == "quay.io/a/b:1"


def test_already_scheduled_layer_is_not_scheduled_again() -> None:
    a = wish("centos:6")
    gone = resolved(a, None, "centos6", ["six"])
    pending = ScheduledRemoval("layer", digest("layer:six"), EARLIER)
    plan = make_plan([], [], state([published(gone)], [pending]), NOW, cvmfs_repo=REPO)
    assert plan.images_removed == 1
    assert plan.layers_scheduled == 0


def test_base_view_lists_only_changed_wishes_and_removes_removed_ones() -> None:
    keep, changed, dropped = wish("centos:7", 1), wish("org/app:2", 2), wish("org/old:1", 3)
    rk = resolved(keep, None, "centos7", ["base"])
    rc = resolved(changed, None, "app2", ["base", "app"])
    rd = resolved(dropped, None, "old1", ["base", "old"])
    current = state([published(rk), published(rd)])
    plan = make_plan(
        [keep, changed],
        [resolution(changed, rc)],
        current,
        NOW,
        cvmfs_repo=REPO,
        removed=[dropped],
    )
    assert plan.base
    assert actions(plan) == [
        ("add", "registry.hub.docker.com/org/app:2"),
        ("remove", "registry.hub.docker.com/org/old:1"),
    ]
    by_digest = {layer.digest: layer.action for layer in plan.layers}
    assert by_digest == {
        digest("layer:base"): "shared",
        digest("layer:app"): "ingest",
        digest("layer:old"): "schedule",
    }
    base = next(layer for layer in plan.layers if layer.digest == digest("layer:base"))
    assert base.users == 2  # centos7 stays (unlisted) and app2 arrives


def test_base_view_keeps_image_another_wish_still_covers() -> None:
    glob, single = wish("org/app:*", 1), wish("org/app:1", 2)
    r1 = resolved(single, None, "app1", ["a"])
    plan = make_plan([glob], [], state([published(r1)]), NOW, cvmfs_repo=REPO, removed=[single])
    assert plan.images == ()
    assert not plan.has_errors


def test_validation_problems_are_carried_and_totals_match_rows() -> None:
    bad = Problem("error", "unknown key 'inptu'", wish("x:1").location, code="unknown-key")
    plan = make_plan([], [], state([]), NOW, cvmfs_repo=REPO, problems=[bad])
    assert plan.problems == (bad,) and plan.has_errors
    assert plan.images_added == plan.images_removed == plan.layers_to_ingest == 0


def test_scheduled_image_and_layer_wanted_again_are_unscheduled() -> None:
    a = wish("centos:7")
    back = resolved(a, None, "centos7", ["base", "top"])
    schedule = [
        ScheduledRemoval("image", back.image_id, EARLIER, path="x"),
        ScheduledRemoval("layer", digest("layer:top"), EARLIER),
        ScheduledRemoval("layer", digest("layer:unrelated"), EARLIER),
    ]
    current = state([], schedule)
    current = replace(current, layers={**state([published(back)]).layers})
    plan = make_plan([a], [resolution(a, back)], current, NOW, cvmfs_repo=REPO)
    assert plan.images_added == 1 and plan.layers_to_ingest == 0
    assert plan.unscheduled == tuple(sorted([back.image_id, digest("layer:top")]))


def test_base_view_updates_a_path_a_changed_wish_resolved_afresh() -> None:
    pinned, glob = wish("org/app:1", 1), wish("org/app:*", 2)
    old = resolved(pinned, None, "app1-old", ["a"])
    new = resolved(glob, "1", "app1-new", ["b"])
    plan = make_plan(
        [pinned, glob],
        [resolution(glob, new)],
        state([published(old)]),
        NOW,
        cvmfs_repo=REPO,
        removed=[],
    )
    assert actions(plan) == [("update", "registry.hub.docker.com/org/app:1")]


def test_large_base_plan_is_fast() -> None:
    import time

    wishes = [wish(f"quay.io/org{i % 40}/img{i}:1", i) for i in range(5000)]
    images = [resolved(w, None, f"img{i}", [f"l{i}", "shared"]) for i, w in enumerate(wishes)]
    current = state([published(image) for image in images])
    start = time.perf_counter()
    plan = make_plan(wishes[1:], [], current, NOW, cvmfs_repo=REPO, removed=[wishes[0]])
    assert time.perf_counter() - start < 3
    assert actions(plan) == [("remove", "quay.io/org0/img0:1")]
    assert [layer.digest for layer in plan.layers] == [digest("layer:l0")]

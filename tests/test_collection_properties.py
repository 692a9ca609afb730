"""Property tests of gc's decision (decide_collection) over small random published trees.

Whatever the tree, the schedule, the date, the grace period and the cap: a
served image is never deleted, nor a layer that a kept image uses; nothing
goes before its grace period is over; no more than the cap goes; no layer goes
while a served image does not list its layers; and no schedule entry is lost
without its reason (deleted, or used again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.collection import Collection, Scheduled, TreeFacts, decide_collection
from bot.core.lifecycle import grace_end, public_path
from bot.core.model import ScheduledRemoval

NOW = datetime(2025, 6, 1, tzinfo=UTC)
IMAGES = tuple(f"sha256:{c * 64}" for c in "abcd")
LAYERS = tuple(f"sha256:{c * 64}" for c in "012345")
PATHS = ("r.io/a:1", "r.io/b:1", "r.io/c:1", "r.io/d:2")
ARCHES = ("x86_64", "aarch64")


@dataclass(frozen=True)
class Case:
    facts: TreeFacts
    grace_days: int
    cap: int

    def decide(self) -> Collection:
        return decide_collection(
            self.facts, NOW, grace_days=self.grace_days, max_deletions=self.cap
        )


dates = st.integers(min_value=0, max_value=20).map(lambda days: NOW - timedelta(days=days))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    contents = {
        image: tuple(draw(st.lists(st.sampled_from(LAYERS), min_size=1, max_size=3, unique=True)))
        for image in IMAGES
    }
    links: dict[str, str] = {}
    for path in draw(st.lists(st.sampled_from(PATHS), unique=True, max_size=4)):
        if draw(st.booleans()):
            links[path] = draw(st.sampled_from(IMAGES))
        else:  # a multi-platform path: served by its .multiarch links
            for arch in draw(st.lists(st.sampled_from(ARCHES), min_size=1, unique=True)):
                links[f".multiarch/{arch}/{path}"] = draw(st.sampled_from(IMAGES))
    flats = frozenset(draw(st.lists(st.sampled_from(IMAGES), unique=True))) | set(links.values())
    unknown = frozenset(i for i in set(links.values()) if draw(st.integers(0, 9)) == 0)
    image_layers = {i: contents[i] for i in flats if i not in unknown}
    layer_users: dict[str, frozenset[str]] = {}
    for layer in LAYERS:
        users = {i for i in flats if layer in contents[i]}
        listed = draw(st.booleans())
        if users or listed:  # an unused layer, or one with stale backlinks
            layer_users[layer] = frozenset(u for u in users if draw(st.integers(0, 5)) > 0)
    schedule: list[Scheduled] = []
    for link in draw(st.lists(st.sampled_from(sorted(links)), unique=True)) if links else []:
        # a retiring path: removed from the wishlist, it still serves its image
        removal = ScheduledRemoval("image", links[link], draw(dates), public_path(link))
        schedule.append(Scheduled(removal, contents[links[link]]))
    for _ in range(draw(st.integers(0, 6))):
        image = draw(st.sampled_from(IMAGES))
        named = draw(st.sampled_from((None, *PATHS)))
        removal = ScheduledRemoval("image", image, draw(dates), named)
        schedule.append(Scheduled(removal, contents[image]))
    for layer in draw(st.lists(st.sampled_from(LAYERS), unique=True, max_size=3)):
        schedule.append(Scheduled(ScheduledRemoval("layer", layer, draw(dates))))
    facts = TreeFacts(
        links=links,
        image_layers=image_layers,
        unknown_layers=unknown,
        layer_users=layer_users,
        schedule=tuple(schedule),
        flats=flats,
    )
    return Case(facts, draw(st.integers(0, 10)), draw(st.integers(-1, 6)))


def _due(case: Case, when: datetime) -> bool:
    return grace_end(when, case.grace_days) <= NOW


def _kept_images(case: Case, out: Collection) -> set[str]:
    published = set(case.facts.flats) | set(case.facts.links.values())
    return published - {i for i, _ in out.deleted_images}


@settings(max_examples=300, deadline=None)
@given(cases())
def test_a_served_image_is_never_deleted(case: Case) -> None:
    out = case.decide()
    remaining = {i for link, i in case.facts.links.items() if link not in out.gone_links}
    assert not remaining & {i for i, _ in out.deleted_images}
    # only links of retiring paths whose grace period is over go
    for link in out.gone_links:
        image = case.facts.links[link]
        assert any(
            e.removal.kind == "image"
            and e.removal.id == image
            and public_path(e.removal.path or "") == public_path(link)
            and _due(case, e.removal.scheduled)
            for e in case.facts.schedule
        ), link


@settings(max_examples=300, deadline=None)
@given(cases())
def test_a_layer_a_kept_image_uses_is_never_deleted(case: Case) -> None:
    out = case.decide()
    kept = _kept_images(case, out)
    deleted = set(out.deleted_layers)
    for image in kept:
        assert not deleted & set(case.facts.image_layers.get(image, ())), image
    for layer in deleted:
        assert not case.facts.layer_users.get(layer, frozenset()) & kept, layer
    for entry in out.schedule:  # an image still scheduled keeps its layers
        if entry.removal.kind == "image":
            assert not deleted & set(entry.layers)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_nothing_goes_before_its_grace_period_is_over(case: Case) -> None:
    out = case.decide()
    for image, _path in out.deleted_images:
        for entry in case.facts.schedule:
            if entry.removal.kind == "image" and entry.removal.id == image:
                assert _due(case, entry.removal.scheduled), image
    for layer in out.deleted_layers:
        entries = [e for e in case.facts.schedule if e.removal.id == layer]
        if entries:
            assert all(_due(case, e.removal.scheduled) for e in entries), layer
        else:  # first found unused now: due at once only without a grace period,
            # or inheriting the date of the deleted image that used it last
            inherited = [
                d for u, d in out.image_dates.items() if u in case.facts.layer_users[layer]
            ]
            assert case.grace_days == 0 or (inherited and _due(case, max(inherited))), layer


@settings(max_examples=300, deadline=None)
@given(cases())
def test_no_more_than_the_cap_goes(case: Case) -> None:
    out = case.decide()
    assert out.spent <= max(0, case.cap)
    assert len(out.deleted_paths) + len(out.deleted_layers) <= out.spent
    retired_images = {i for i, _ in out.deleted_paths}
    alone = [i for i, _ in out.deleted_images if i not in retired_images]
    assert len(out.deleted_paths) + len(alone) + len(out.deleted_layers) == out.spent
    if case.cap <= 0:
        assert not (out.deleted_paths or out.deleted_images or out.deleted_layers)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_no_layer_goes_while_a_served_image_does_not_list_its_layers(case: Case) -> None:
    out = case.decide()
    if case.facts.unknown_layers & _kept_images(case, out):
        assert out.deleted_layers == []
        assert out.warnings


@settings(max_examples=300, deadline=None)
@given(cases())
def test_no_schedule_entry_is_lost_without_its_reason(case: Case) -> None:
    out = case.decide()
    left = {(e.removal.kind, e.removal.id, e.removal.path) for e in out.schedule}
    gone_images = {i for i, _ in out.deleted_images}
    retired = set(out.deleted_paths)
    served = set(case.facts.links.values())
    for entry in case.facts.schedule:
        r = entry.removal
        if (r.kind, r.id, r.path) in left:
            continue
        if r.kind == "image":
            assert (
                r.id in gone_images
                or (r.id, public_path(r.path or "")) in retired
                or r.id in served  # used again (live), or served by a path that goes later
            ), r
        else:
            assert (
                r.id in out.deleted_layers
                or r.id not in case.facts.layer_users  # the layer is gone already
                or out.dropped  # used again
            ), r

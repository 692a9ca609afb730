"""Property tests of make_plan over small random worlds of registries, wishes and publishers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from plan_samples import NOW, REPO, failed, published, resolution, resolved, state, wish

from bot.core.model import CurrentState, PublishedImage, Resolution, Wish
from bot.core.plan import Plan, make_plan, wish_covers

REPOS = ("org/a", "org/b", "org/c")
TAGS = ("1", "2", "10")
LAYERS = tuple(f"l{i}" for i in range(6))

# A registry: (repository, tag) -> image name; an image name -> its layers.
Registry = dict[tuple[str, str], str]


@dataclass(frozen=True)
class World:
    registry: Registry
    contents: dict[str, tuple[str, ...]]

    def resolve(self, w: Wish) -> Resolution:
        ref = w.reference.normalized()
        repo = ref.repository.removeprefix("library/")
        images = []
        for (r, tag), name in sorted(self.registry.items()):
            if r == repo and ref.matches_tag(tag):
                images.append(resolved(w, tag, name, self.contents[name]))
        return resolution(w, *images)


image_names = st.sampled_from(("red", "green", "blue", "cyan", "pink"))


@st.composite
def worlds(draw: st.DrawFn) -> World:
    contents = {
        name: tuple(draw(st.lists(st.sampled_from(LAYERS), min_size=1, max_size=3, unique=True)))
        for name in ("red", "green", "blue", "cyan", "pink")
    }
    keys = draw(
        st.lists(st.tuples(st.sampled_from(REPOS), st.sampled_from(TAGS)), unique=True, max_size=6)
    )
    return World({key: draw(image_names) for key in keys}, contents)


wish_texts = st.tuples(st.sampled_from(REPOS), st.sampled_from((*TAGS, "1*", "*"))).map(
    lambda rt: f"{rt[0]}:{rt[1]}"
)


def wishes_of(texts: Sequence[str]) -> list[Wish]:
    return [wish(text, line) for line, text in enumerate(dict.fromkeys(texts), start=1)]


def publish(world: World, wishes: Sequence[Wish]) -> CurrentState:
    """The publisher after a perfect apply of ``wishes`` (no schedule kept)."""
    images: dict[str, PublishedImage] = {}
    for w in wishes:
        for image in world.resolve(w).images:
            images.setdefault(published(image).path, published(image))
    return state(list(images.values()))


def staying_layers(plan: Plan, current: CurrentState) -> set[str]:
    gone = {id(c.old) for c in plan.images if c.action in ("update", "remove")}
    layers = {d for image in current.images if id(image) not in gone for d in image.layers}
    for change in plan.images:
        if change.new is not None and change.action in ("add", "update", "unchanged"):
            layers |= {layer.digest for layer in change.new.layers}
    return layers


def check_totals(plan: Plan) -> None:
    assert plan.images_added == sum(c.action == "add" for c in plan.images)
    assert plan.images_removed == sum(c.action == "remove" for c in plan.images)
    assert plan.layers_to_ingest == sum(len(c.new_layers) for c in plan.images)
    assert plan.download_bytes == sum(c.download_bytes for c in plan.images)
    brought = [d for c in plan.images for d in c.new_layers]
    assert len(brought) == len(set(brought))  # each new layer counted once
    assert set(brought) == {layer.digest for layer in plan.layers if layer.action == "ingest"}
    keys = [(c.path, str(c.platform)) for c in plan.images]
    assert keys == sorted(keys)


@settings(max_examples=150, deadline=None)
@given(worlds(), st.lists(wish_texts, max_size=4))
def test_current_equal_to_desired_is_all_unchanged(world: World, texts: list[str]) -> None:
    wishes = wishes_of(texts)
    current = publish(world, wishes)
    plan = make_plan(wishes, [world.resolve(w) for w in wishes], current, NOW, cvmfs_repo=REPO)
    assert {c.action for c in plan.images} <= {"unchanged"}
    assert len(plan.images) == len(current.images)
    assert plan.layers == ()
    check_totals(plan)


@settings(max_examples=150, deadline=None)
@given(worlds(), st.lists(wish_texts, max_size=3), wish_texts)
def test_adding_then_removing_a_wish_schedules_exactly_what_was_added(
    world: World, texts: list[str], extra: str
) -> None:
    wishes = wishes_of(texts)
    if extra in {w.text for w in wishes}:
        return
    grown = [*wishes, wish(extra, 99)]
    before = publish(world, wishes)
    added = make_plan(grown, [world.resolve(w) for w in grown], before, NOW, cvmfs_repo=REPO)
    check_totals(added)
    after = publish(world, grown)
    back = make_plan(wishes, [world.resolve(w) for w in wishes], after, NOW, cvmfs_repo=REPO)
    check_totals(back)

    assert {c.path for c in back.images if c.action == "remove"} == {
        c.path for c in added.images if c.action == "add"
    }
    old_ids = {image.image_id for image in before.images}
    new_ids = {c.new.image_id for c in added.images if c.action == "add" and c.new}
    assert {c.old.image_id for c in back.images if c.scheduled and c.old} == new_ids - old_ids
    assert {layer.digest for layer in back.layers if layer.action == "schedule"} == {
        layer.digest for layer in added.layers if layer.action == "ingest"
    }


@settings(max_examples=200, deadline=None)
@given(
    worlds(),
    worlds(),
    st.lists(wish_texts, max_size=4),
    st.lists(wish_texts, max_size=3),
    st.sets(st.integers(0, 3), max_size=2),
)
def test_used_layers_never_scheduled_and_unresolved_wishes_never_remove(
    world: World,
    past: World,
    texts: list[str],
    past_texts: list[str],
    failing: set[int],
) -> None:
    wishes = wishes_of(texts)
    current = publish(past, wishes_of(past_texts))  # published from an older registry state
    resolutions = [failed(w) if i in failing else world.resolve(w) for i, w in enumerate(wishes)]
    plan = make_plan(wishes, resolutions, current, NOW, cvmfs_repo=REPO)
    check_totals(plan)

    scheduled = {layer.digest for layer in plan.layers if layer.action == "schedule"}
    assert not scheduled & staying_layers(plan, current)

    broken = [w for i, w in enumerate(wishes) if i in failing]
    for change in plan.images:
        if change.action in ("update", "remove") and change.old is not None:
            assert not any(wish_covers(w, change.old) for w in broken)
    covered = {
        d
        for image in current.images
        if any(wish_covers(w, image) for w in broken)
        for d in image.layers
    }
    assert not scheduled & covered
    assert plan.has_errors == bool(broken)
    assert sum(c.action == "error" for c in plan.images) == len(broken)

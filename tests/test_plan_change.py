"""The one "plan a change" use case: what is resolved, what is read, in each view."""

from __future__ import annotations

from collections.abc import Sequence

from plan_samples import NOW, REPO, published, resolution, resolved, state

from bot.core.model import CurrentState, Resolution, Wish
from bot.core.recipe import load_wishlist
from bot.runtime.plan_change import StateReader, plan_change

HEAD = f"""version: 1
user: someone
cvmfs_repo: {REPO}
output_format: registry.example.org/unpacked/$(image)
input:
  - quay.io/org/keep:1
  - quay.io/org/new:1
"""
BASE = HEAD.replace("  - quay.io/org/new:1\n", "  - quay.io/org/gone:1\n")


class Registry:
    """Resolves every wish to one image; remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolve(self, wishes: Sequence[Wish]) -> list[Resolution]:
        self.asked += [w.text for w in wishes]
        return [resolution(w, resolved(w, None, w.text, ["base", w.text])) for w in wishes]


def _current(reads: list[str], current: CurrentState) -> StateReader:
    def read(cvmfs_repo: str) -> CurrentState:
        reads.append(cvmfs_repo)
        return current

    return read


def test_the_change_view_resolves_only_new_wishes_and_removes_what_the_change_drops() -> None:
    head, _ = load_wishlist(HEAD.encode(), "w.yaml")
    base, _ = load_wishlist(BASE.encode(), "w.yaml")
    assert head is not None and base is not None
    gone = next(w for w in base.wishes if w.text == "quay.io/org/gone:1")
    current = state([published(resolved(gone, None, "gone", ["base", "gone"]))])
    registry, reads = Registry(), list[str]()
    change = plan_change(
        head,
        [],
        current=_current(reads, current),
        resolve=registry.resolve,
        now=NOW,
        grace_days=30,
        base=base,
    )
    assert registry.asked == ["quay.io/org/new:1"] and reads == [REPO]
    assert [w.text for w in change.resolved] == ["quay.io/org/new:1"]
    assert {(c.action, c.path) for c in change.plan.images} == {
        ("add", "quay.io/org/new:1"),
        ("remove", "quay.io/org/gone:1"),
    }
    assert change.plan.base and change.registry_problems == []


def test_the_whole_view_resolves_every_wish() -> None:
    head, _ = load_wishlist(HEAD.encode(), "w.yaml")
    registry, reads = Registry(), list[str]()
    change = plan_change(
        head,
        [],
        current=_current(reads, CurrentState(REPO)),
        resolve=registry.resolve,
        now=NOW,
        grace_days=30,
        whole=True,
    )
    assert registry.asked == ["quay.io/org/keep:1", "quay.io/org/new:1"]
    assert change.plan.images_added == 2 and not change.plan.base


def test_a_wishlist_that_did_not_load_reads_and_resolves_nothing() -> None:
    wishlist, problems = load_wishlist(b"version: 2\n", "w.yaml")
    assert wishlist is None and problems
    registry, reads = Registry(), list[str]()
    change = plan_change(
        wishlist,
        problems,
        current=_current(reads, CurrentState(REPO)),
        resolve=registry.resolve,
        now=NOW,
        grace_days=30,
    )
    assert registry.asked == [] and reads == []
    assert change.plan.has_errors and change.plan.images == () and change.resolved == ()

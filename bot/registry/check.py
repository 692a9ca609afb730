"""Check a wishlist's images against their registries (for validate and CI).

:func:`check_wishes` resolves wishes and collects the problems;
:func:`check_wishlist` is what ``wishbot validate --check-registry`` does with
one wishlist: it picks the wishes to check (all of them, or with a base only
the new and changed ones, so that a broken image elsewhere never fails
someone else's merge request) and applies ``ignoreErrors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.model import Problem, Resolution, Wish, Wishlist
from bot.core.recipe import apply_ignore_errors, diff_wishlists
from bot.registry.client import RegistryClient


def check_wishes(
    client: RegistryClient, wishes: Sequence[Wish]
) -> tuple[list[Resolution], list[Problem]]:
    """Resolve every wish (concurrently); the resolutions in input order and
    the problems found, one per wish that could not be fully resolved."""
    resolutions = client.resolve_all(wishes)
    problems = [r.problem for r in resolutions if r.problem is not None]
    return resolutions, problems


@dataclass(frozen=True)
class RegistryCheck:
    """The outcome of checking one wishlist's images in their registries."""

    checked: tuple[Wish, ...]  # the wishes that were resolved
    resolutions: tuple[Resolution, ...]  # in the order of ``checked``
    problems: tuple[Problem, ...]  # ``ignoreErrors`` applied: ignored errors are warnings

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def unavailable(self) -> tuple[Problem, ...]:
        """Errors that say "could not check right now", not "does not exist"."""
        return tuple(p for p in self.errors if p.code == "unavailable")

    @property
    def images(self) -> int:
        """Concrete images found (wildcards and platforms expanded)."""
        return sum(len(r.images) for r in self.resolutions)


def wishes_to_check(wishlist: Wishlist, base: Wishlist | None = None) -> tuple[Wish, ...]:
    """Every wish, or with ``base`` only those new or changed relative to it.

    A change of a setting that affects every wish (``cvmfs_repo``,
    ``output_format``, ``platforms``) makes every wish count as changed.
    """
    return diff_wishlists(base, wishlist).added


def check_wishlist(
    client: RegistryClient, wishlist: Wishlist, base: Wishlist | None = None
) -> RegistryCheck:
    """Resolve the wishes :func:`wishes_to_check` picks; problems at each wish's line:col."""
    wishes = wishes_to_check(wishlist, base)
    resolutions, problems = check_wishes(client, wishes)
    return RegistryCheck(
        checked=wishes,
        resolutions=tuple(resolutions),
        problems=tuple(apply_ignore_errors(problems, wishlist)),
    )

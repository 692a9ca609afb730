"""Check a wishlist's images against their registries (for validate and CI)."""

from __future__ import annotations

from collections.abc import Sequence

from bot.core.model import Problem, Resolution, Wish
from bot.registry.client import RegistryClient


def check_wishes(
    client: RegistryClient, wishes: Sequence[Wish]
) -> tuple[list[Resolution], list[Problem]]:
    """Resolve every wish (concurrently); the resolutions in input order and
    the problems found, one per wish that could not be fully resolved."""
    resolutions = client.resolve_all(wishes)
    problems = [r.problem for r in resolutions if r.problem is not None]
    return resolutions, problems

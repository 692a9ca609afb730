"""What the reference converter (cvmfs ``ducc``) can read of a wishlist.

``ducc`` parses a recipe into a struct whose ``input`` is a list of strings
(cvmfs/cvmfs ``ducc/lib/recipe.go``: ``Input []string`` read with
``yaml.Unmarshal``): one per-image mapping entry (``- image: …``) makes the
whole recipe unreadable for it. Keys it does not know (``platforms:`` at the
top level) are ignored by that unmarshalling, so a recipe that keeps its
platforms at the top level stays readable by both tools.
"""

from __future__ import annotations

from typing import Any

from bot.core.model import Location, Problem
from bot.core.safeyaml import YamlProblem, load_document

CODE = "not-ducc-compatible"


def reference_converter_problems(data: bytes, path: str) -> list[Problem]:
    """An error for every input item the reference converter cannot read."""
    try:
        document, positions = load_document(data)
    except YamlProblem:
        return []  # the ordinary validation reports it
    items: Any = document.get("input") if isinstance(document, dict) else None
    if not isinstance(items, list):
        return []
    problems = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        line, column = positions.of_value(("input", index))
        problems.append(
            Problem(
                "error",
                f"input item {index + 1} is a mapping (image, platforms): the reference "
                "converter (cvmfs ducc) reads input as a list of text and refuses the "
                "whole recipe",
                Location(path, line, column),
                CODE,
                hint="write the reference as a plain line and give the platforms at the top "
                "level (platforms: [...]), which ducc ignores; or drop --ducc-compatible "
                "if only wishbot reads this recipe",
                image=str(item.get("image", "")) or None,
            )
        )
    return problems

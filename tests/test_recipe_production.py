"""All 40 real recipes of unpacked.cern.ch validate unchanged; duplicates are warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from bot.core.recipe import load_wishlist

#: ../shared beside the checkout (as CI lays it out)
HISTORY = Path(__file__).resolve().parents[2] / "shared" / "data" / "unpacked-recipe-history"
RECIPES = sorted(HISTORY.glob("*.yaml"))

pytestmark = pytest.mark.skipif(not RECIPES, reason="production recipe history not available")

#: the duplicated inputs of each version (line of the second copy, image)
PYBDSF = "https://registry.hub.docker.com/stimela/pybdsf:1.6.6"
WLCG = "https://gitlab-p4n.aip.de:5005/compute4punch/container-stacks/wlcg-wn:latest"


def expected_duplicates(version: int) -> set[str]:
    found = set()
    if version >= 15:
        found.add(PYBDSF)
    if 29 <= version <= 39:
        found.add(WLCG)
    return found


def test_there_are_forty_recipes() -> None:
    assert len(RECIPES) == 40


def test_all_recipes_validate_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *map(str, RECIPES)]) == 0
    out = capsys.readouterr()
    assert "error" not in out.out
    assert "40 valid files" in out.err


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name[:2] for p in RECIPES])
def test_recipe_loads_with_expected_duplicate_warnings(recipe: Path) -> None:
    data = recipe.read_bytes()
    wishlist, problems = load_wishlist(data, recipe.name)
    assert wishlist is not None
    assert all(p.severity == "warning" and p.code == "duplicate" for p in problems)
    version = int(recipe.name[:2])
    assert {p.image for p in problems} == expected_duplicates(version)
    inputs = [line for line in data.decode().splitlines() if line.lstrip().startswith("- ")]
    assert len(wishlist.wishes) == len(inputs) - len(problems)
    assert wishlist.cvmfs_repo == "unpacked.cern.ch"
    assert wishlist.user == "cvmfsunpacker"
    for problem in problems:
        # the warning sits on the second copy and names the first one's line
        line = data.decode().splitlines()[problem.location.line - 1]
        assert problem.image is not None and problem.image in line
        assert problem.location.column == 7  # 4-space list indentation, after "- "
        assert "listed twice: on line" in problem.message


def test_quirks_are_accepted() -> None:
    last = RECIPES[-1]
    data = last.read_bytes()
    assert not data.endswith(b"\n") or any(not p.read_bytes().endswith(b"\n") for p in RECIPES)
    wishlist, _ = load_wishlist(data, last.name)
    assert wishlist is not None
    texts = {wish.text for wish in wishlist.wishes}
    assert "https://ghcr.io/watonomous/actions-runner-image:*" in texts
    assert "https://ghcr.io/dluitz/bonn-comp-phys-c--dev:main" in texts
    wildcard = next(w for w in wishlist.wishes if w.reference.is_wildcard)
    assert wildcard.reference.tag == "*"
    ported = [w for w in wishlist.wishes if w.reference.registry == "gitlab-p4n.aip.de:5005"]
    assert ported and all(w.location.column == 7 for w in ported)

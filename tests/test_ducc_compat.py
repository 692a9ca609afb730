"""``validate --ducc-compatible``: what the reference converter cannot read
(per-image mapping entries) is an error at its line; top-level platforms and
the production recipes are fine."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main

HISTORY = Path(__file__).resolve().parents[2] / "shared" / "data" / "unpacked-recipe-history"

HEAD = """version: 1
user: tester
cvmfs_repo: 'unpacked.example.org'
output_format: 'registry.example.org/thin/$(image)'
"""


def test_mapping_entries_are_refused_at_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "wishlist.yaml"
    recipe.write_text(
        HEAD + "input:\n  - 'docker.io/library/alpine:3.19'\n"
        "  - image: 'ghcr.io/org/tool:1.0'\n    platforms: [linux/arm64]\n"
    )
    assert main(["validate", str(recipe)]) == 0  # wishbot reads it
    capsys.readouterr()
    assert main(["validate", "--ducc-compatible", str(recipe)]) == 1
    out = capsys.readouterr().out
    assert f"{recipe}:7:5: error: input item 2 is a mapping" in out
    assert "platforms: [...]" in out  # what to do instead


def test_top_level_platforms_stay_readable_by_the_reference_converter(tmp_path: Path) -> None:
    recipe = tmp_path / "wishlist.yaml"
    recipe.write_text(
        HEAD + "platforms: [linux/amd64, linux/arm64]\n"
        "input:\n  - 'docker.io/library/alpine:3.19'\n"
    )
    assert main(["validate", "--ducc-compatible", str(recipe)]) == 0


@pytest.mark.skipif(not HISTORY.is_dir(), reason="production recipe history not available")
def test_the_production_recipes_are_ducc_compatible() -> None:
    recipes = sorted(str(p) for p in HISTORY.glob("*.yaml"))
    assert recipes and main(["validate", "--ducc-compatible", *recipes]) == 0

"""Renderings of a plan: golden Markdown/JSON, schema, Markdown validity, size budget, text table."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from golden_check import check_golden
from markdown_it import MarkdownIt
from plan_samples import NOW, REPO, digest, realistic_plan_inputs, resolution, resolved, wish

from bot.core.comment import headline
from bot.core.model import CurrentState
from bot.core.plan import Plan, make_plan
from bot.core.render import (
    MARKER,
    human_size,
    render_json,
    render_markdown,
    render_text,
    verdict,
)
from bot.core.schemas import schema_errors


def markdown() -> MarkdownIt:
    """CommonMark + GFM tables + raw HTML, as forges render comments (before sanitising)."""
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def realistic() -> Plan:
    wishes, resolutions, current, problems = realistic_plan_inputs()
    return make_plan(
        wishes, resolutions, current, NOW, cvmfs_repo="unpacked.cern.ch", problems=problems
    )


def many_images(count: int) -> Plan:
    resolutions = []
    for i in range(count):
        w = wish(f"registry.example.org/group{i % 50}/image{i}:v{i}", i + 1)
        image = resolved(w, None, f"img{i}", [f"base{i % 7}", f"mid{i}", f"top{i}"])
        resolutions.append(resolution(w, image))
    wishes = [r.wish for r in resolutions]
    return make_plan(wishes, resolutions, CurrentState(REPO), NOW, cvmfs_repo=REPO)


def table_shapes(html: str) -> list[int]:
    """Cells per row of every table, to prove no row gained or lost a column."""
    return [
        len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)
    ]


def test_golden_markdown_and_json() -> None:
    plan = realistic()
    check_golden("plan.md", render_markdown(plan))
    check_golden("plan.json", json.dumps(render_json(plan), indent=2, ensure_ascii=False) + "\n")
    check_golden("plan.txt", render_text(plan))


def test_markdown_shape() -> None:
    plan = realistic()
    text = render_markdown(plan)
    assert text.splitlines()[0] == MARKER
    assert text.count(MARKER) == 1
    assert headline(plan) in text  # the comment's verdict; verdict() stays the JSON's
    assert verdict(plan).startswith("❌ 1 problem — otherwise: 3 images to add, 1 image to update")
    assert headline(plan).startswith("❌ 1 problem to fix before this can be published")
    html = markdown().render(text)
    # images (every row with digests) and the two layer tables are folded away
    assert html.count("<details>") == html.count("</details>") == 3
    shapes = table_shapes(html)
    assert set(shapes) == {5}  # wish, image and layer tables, every row complete
    assert "wishlist.yaml:5:5" in html  # problems say where
    assert "try again later" in html  # ... and what to do
    assert "1 image unchanged" in html


def test_verdict_when_nothing_changes_and_on_success() -> None:
    w = wish("centos:7")
    image = resolved(w, None, "c7", ["a", "b"], size=650_000_000)
    plan = make_plan([w], [resolution(w, image)], CurrentState(REPO), NOW, cvmfs_repo=REPO)
    assert verdict(plan) == "✅ 1 image to add, 2 layers (1.3 GB) to ingest"
    empty = make_plan([], [], CurrentState(REPO), NOW, cvmfs_repo=REPO)
    assert verdict(empty) == "✅ No changes"


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1_300_000_000, "1.3 GB"),
        (153_400_000, "153 MB"),
    ],
)
def test_human_size_is_decimal(size: int, text: str) -> None:
    assert human_size(size) == text


def test_json_validates_against_schema_and_totals_agree() -> None:
    plan = realistic()
    data: dict[str, Any] = render_json(plan)
    assert schema_errors(data, "plan.schema.json") == []
    assert data["schema"] == "wishbot-plan/1"
    totals = data["totals"]
    assert totals["download_bytes"] == sum(row["download_bytes"] for row in data["images"])
    assert totals["layers_to_ingest"] == sum(1 for r in data["layers"] if r["action"] == "ingest")
    assert totals["has_errors"] is True
    arm = next(r for r in data["images"] if r["platform"] == "linux/arm64/v8")
    assert arm["published_path"].startswith(".multiarch/aarch64/nvcr.io/")  # uname -m


def test_schema_rejects_a_broken_plan() -> None:
    data: dict[str, Any] = render_json(realistic())
    data["images"][0]["action"] = "explode"
    del data["totals"]["has_errors"]
    errors = schema_errors(data, "plan.schema.json")
    assert any("explode" in e for e in errors) and any("has_errors" in e for e in errors)


def test_five_thousand_images_stay_inside_the_budget() -> None:
    plan = many_images(5000)
    text = render_markdown(plan)
    assert len(text) <= 60000
    assert "✂️ Cut to fit the comment size" in text
    # 5,000 wishes of one image each: the wish table is cut first
    assert "wishes" in text and "not shown" in text
    assert text.count("<details>") == text.count("</details>")
    html = markdown().render(text)
    assert html.count("<details>") == html.count("</details>")
    assert set(table_shapes(html)) <= {5, 6}
    assert "✅ Applying the wishlist adds 5,000 images" in html  # the verdict always survives


@pytest.mark.parametrize("budget", [1200, 2500, 6000, 20000])
def test_any_budget_leaves_valid_markdown(budget: int) -> None:
    text = render_markdown(many_images(300), budget=budget)
    assert len(text) <= budget
    html = markdown().render(text)
    assert html.count("<details>") == html.count("</details>")
    assert len(set(table_shapes(html))) <= 2
    assert "Cut to fit" in text


def test_small_plan_is_not_cut() -> None:
    text = render_markdown(realistic())
    assert "Cut to fit" not in text
    assert digest("layer:cuda-arm") in text


def test_text_table_lists_every_row() -> None:
    plan = realistic()
    text = render_text(plan)
    lines = text.splitlines()
    assert lines[0] == verdict(plan)
    assert sum(
        1 for line in lines if line.startswith(("add", "update", "remove", "error", "unchanged"))
    ) == len(plan.images)

"""The comments people read, as golden files: registry down, a 40-tag wildcard,
ignoreErrors, a removal, publication and its failure. Each is also rendered the
way forges render Markdown and checked for shape (one row per wish, no code
names in the text, short digests in tables)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from browser import chromium, dump_dom, forge_page
from golden_check import GOLDEN, check_golden
from markdown_it import MarkdownIt
from plan_samples import (
    NOW,
    REPO,
    failed,
    published,
    realistic_plan_inputs,
    resolution,
    resolved,
    state,
    wish,
)

from bot.core.comment import (
    CommentLinks,
    headline,
    publish_comment,
    render_markdown,
)
from bot.core.model import CurrentState, Problem, Wishlist
from bot.core.plan import Plan, ignoring_errors, make_plan

LINKS = CommentLinks(
    commit="4f1c2a9e8b7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b",
    job_url="https://gitlab.example.org/unpacked/wishlist/-/jobs/4711",
    catalog_url="https://gitlab.example.org/unpacked/wishlist/-/blob/main/CATALOG.md",
    docs_url="https://gitlab.example.org/unpacked/wishlist/-/blob/main/README.md",
)
INTERNAL_CODES = ("unavailable", "not-found", "unauthorized", "unresolved", "many-tags")


def markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def table_rows(html: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", html, re.S)


def check_comment(name: str, plan: Plan) -> str:
    text = render_markdown(plan, title="wishbot plan for this change", links=LINKS)
    check_golden(name, text)
    html = markdown().render(text)
    shapes = {len(re.findall(r"<t[hd][ >]", row)) for row in table_rows(html)}
    assert shapes <= {5}, shapes  # every row of every table complete
    visible = re.sub(r"<code>.*?</code>", "", html)
    for code in INTERNAL_CODES:
        assert f"`{code}`" not in text and f"{code} at" not in visible, code
    assert "wishbot plan --json" not in text and "wishbot plan --format json" in text
    assert "`4f1c2a9e8b7d`" in text  # the head commit
    assert not re.search(r"\| [^|]*sha256:[0-9a-f]{64}[^|]*\|", text)  # no full digest in a table
    assert "\\*" not in html and "\\_" not in html  # no stray escapes where people read
    return text


def unavailable(w_text: str, line: int) -> tuple:
    w = wish(w_text, line)
    resolution_ = failed(w, "unavailable")
    assert resolution_.problem is not None
    problem = replace(
        resolution_.problem,
        message=f"{w.reference}: could not check: the registry registry.example.org is "
        "unavailable (HTTP 503; 5 attempts)",
        hint="try again later; nothing was concluded about the image",
    )
    return w, replace(resolution_, problem=problem)


def test_registry_down_is_one_line_and_a_warning_not_a_broken_image() -> None:
    pairs = [unavailable(f"registry.example.org/hep/tool{i}:1.{i}", 3 + i) for i in range(17)]
    wishes = [w for w, _r in pairs]
    plan = make_plan(wishes, [r for _w, r in pairs], CurrentState(REPO), NOW, cvmfs_repo=REPO)
    text = check_comment("comment-registry-down.md", plan)
    assert headline(plan).startswith("⚠️ Could not check 17 images right now")
    problems = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(problems) == 1 and "17 images" in problems[0]
    assert "❌" not in text


def test_wildcard_of_forty_tags_is_one_row_with_its_count() -> None:
    w = wish("registry.example.org/atlas/analysisbase:21.2.*", 4)
    images = [resolved(w, f"21.2.{i}", f"ab{i}", ["ab-os", f"ab-sw{i}"]) for i in range(40)]
    plan = make_plan([w], [resolution(w, *images)], CurrentState(REPO), NOW, cvmfs_repo=REPO)
    text = check_comment("comment-wildcard.md", plan)
    wish_rows = [line for line in text.splitlines() if line.startswith("| 4 |")]
    assert len(wish_rows) == 1
    assert "40 tags: ➕ 40 to add" in wish_rows[0] and "… and 34 more" in wish_rows[0]
    assert "`registry.example.org/atlas/analysisbase:21.2.*`" in wish_rows[0]


def test_ignored_error_is_a_warning_everywhere() -> None:
    good = wish("registry.example.org/hep/app:1", 3)
    flaky = wish("https://quay.io/flaky/tool:2", 4)
    broken = failed(flaky, "not-found")
    assert broken.problem is not None
    broken = replace(
        broken,
        problem=replace(
            broken.problem,
            message="quay.io/flaky/tool:2: no such image",
            hint="check the tag",
            image=flaky.text,
        ),
    )
    image = resolved(good, None, "app1", ["base", "app"])
    plan = make_plan(
        [good, flaky], [resolution(good, image), broken], CurrentState(REPO), NOW, cvmfs_repo=REPO
    )
    assert plan.has_errors
    wishlist = Wishlist(
        "wishlist.yaml",
        1,
        "u",
        REPO,
        "x",
        (good, flaky),
        ignore_errors=("https://quay.io/flaky/*",),
    )
    relaxed = ignoring_errors(plan, wishlist)
    assert not relaxed.has_errors  # plan's exit code 0, statuses success
    assert relaxed.images == tuple(
        replace(c, problem=relaxed.problems[0] if c.problem else None) for c in plan.images
    )  # the rows stay as planned (fail closed)
    text = check_comment("comment-ignored.md", relaxed)
    assert headline(relaxed).startswith("✅ Applying the wishlist adds 1 image")
    assert headline(relaxed).endswith("; 1 warning")
    assert "❌" not in text and "ignoreErrors" in text


def test_removal_shows_what_goes_and_until_when() -> None:
    gone = wish("registry.example.org/old/tool:0.*", 7)
    olds = [resolved(gone, f"0.{i}", f"tool0{i}", [f"tool-{i}"]) for i in range(3)]
    single = wish("quay.io/old/one:1", 8)
    one = resolved(single, None, "one", ["one-base"])
    current = state([*(published(o) for o in olds), published(one)])
    plan = make_plan([], [], current, NOW, cvmfs_repo=REPO, removed=[gone, single])
    text = check_comment("comment-removal.md", plan)
    assert headline(plan).startswith("✅ Merging this change removes 4 paths")
    assert "3 tags: ➖ 3 to remove, served until 2026-03-31" in text
    assert "4 layers (40 MB) deleted after 30 days" in text


def test_publish_comment_success_and_failure() -> None:
    paths = (
        f"/cvmfs/{REPO}/registry.example.org/hep/app:1",
        f"/cvmfs/{REPO}/registry.example.org/hep/app:2",
    )
    ok = publish_comment(
        LINKS.commit,
        ok=True,
        description="2 images published",
        published=paths,
        failure=None,
        retried=False,
        links=LINKS,
    )
    check_golden("publish.md", ok)
    assert ok.splitlines()[1].startswith("### ✅")
    assert "<details>" not in ok  # the paths are not hidden
    assert f"apptainer exec {paths[0]} " in ok
    assert "[catalog](" in ok
    failure = publish_comment(
        LINKS.commit,
        ok=False,
        description="1 image published, 1 failed",
        published=paths[:1],
        failure="1 image not published: registry.example.org/hep/app:2: [x](javascript:1) # h",
        retried=True,
        links=LINKS,
    )
    check_golden("publish-failure.md", failure)
    assert failure.splitlines()[1].startswith("### ❌")
    html = markdown().render(failure)
    assert '<a href="javascript' not in html and "<h1" not in html


def test_cut_comment_names_a_command_that_exists() -> None:
    w = wish("registry.example.org/big/app:*", 1)
    images = [resolved(w, f"v{i}", f"a{i}", [f"l{i}"]) for i in range(400)]
    plan = make_plan([w], [resolution(w, *images)], CurrentState(REPO), NOW, cvmfs_repo=REPO)
    text = render_markdown(plan, budget=8000, links=LINKS)
    assert len(text) <= 8000
    assert "Run `wishbot plan --format json` for the full plan." in text
    assert text.count("<details>") == text.count("</details>")


def test_problem_lines_say_where_and_what_to_do_without_codes() -> None:
    w = wish("registry.example.org/hep/app:1", 9)
    problem = Problem(
        "error",
        "registry.example.org/hep/app:1: access refused",
        w.location,
        code="unauthorized",
        hint="ask for read access",
        image=w.text,
    )
    plan = make_plan(
        [w], [replace(failed(w), problem=problem)], CurrentState(REPO), NOW, cvmfs_repo=REPO
    )
    text = render_markdown(plan, links=LINKS)
    (line,) = [line for line in text.splitlines() if line.startswith("- ❌")]
    assert line == (
        "- ❌ **wishlist.yaml:9:5** `registry.example.org/hep/app:1`: access refused"
        " → ask for read access"
    )


#: opens every <details>, then records how far the widest table overflows its column
WIDTH_PROBE = """<script>
document.querySelectorAll("details").forEach(function (d) { d.open = true; });
var worst = 0;
document.querySelectorAll("table").forEach(function (t) {
  worst = Math.max(worst, t.scrollWidth - t.clientWidth);
});
document.body.setAttribute("data-overflow", String(worst));
document.body.setAttribute("data-tables", String(document.querySelectorAll("table").length));
</script>"""


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (make deps installs it)")
def test_comment_tables_fit_a_900_px_comment(tmp_path: Path) -> None:
    """Rendered as a forge renders it (tables scroll inside the comment when too wide):
    no table of the realistic, wildcard, registry-down or removal comment needs to."""
    wishes, resolutions, current, problems = realistic_plan_inputs()
    realistic = make_plan(
        wishes, resolutions, current, NOW, cvmfs_repo="unpacked.cern.ch", problems=problems
    )
    comments = [render_markdown(realistic, links=LINKS)]
    comments += [
        (GOLDEN / name).read_text(encoding="utf-8")
        for name in ("comment-wildcard.md", "comment-registry-down.md", "comment-removal.md")
    ]
    page = tmp_path / "comments.html"
    html = forge_page("\n\n<hr>\n\n".join(comments), "plan", width=900)  # one browser run
    page.write_text(html.replace("</body>", WIDTH_PROBE + "</body>"), encoding="utf-8")
    dom = dump_dom(page.as_uri(), tmp_path / "profile", width=1000)
    overflow = re.search(r'data-overflow="(\d+)"', dom)
    tables = re.search(r'data-tables="(\d+)"', dom)
    assert overflow and tables, dom[-500:]
    assert int(tables.group(1)) >= 4 + 6  # each comment's wish table, images and layers
    assert int(overflow.group(1)) == 0, overflow.group(1)

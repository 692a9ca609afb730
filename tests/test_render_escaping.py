"""Hostile wishlist and registry text must come out of every rendering as inert text."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

import pytest
from markdown_it import MarkdownIt
from plan_samples import NOW, failed, published, resolution, resolved, state, wish

from bot.core.catalog import catalog_markdown
from bot.core.comment import PUBLISH_MARKER, error_comment, publish_comment
from bot.core.model import Problem
from bot.core.plan import Plan, make_plan
from bot.core.reference import ImageReference
from bot.core.render import escape_markdown, render_markdown, render_text

HOSTILE = [
    "<script>alert(1)</script>",
    "@everyone",
    "[click](javascript:alert(1))",
    "](javascript:alert(2))",
    "a|b|c",
    "`code` ``x``",
    "<!-- hidden",
    "line1\nline2\r\n# heading",
    "<img src=x onerror=alert(1)>",
    "#1234 !56 ~label %milestone $snippet",
    "**bold** _em_ ~~strike~~",
    "\x1b[31mred\x1b[0m",
    "\u202eevil\u202c",
    "\u061cevil\u2066x\u2069\u200e\u200f\u200b\ufeff",
    "&lt;script&gt;",
    "https://evil.example/phish www.evil.example",
]
JOINED = " ".join(HOSTILE)


def markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def hostile_plan() -> Plan:
    w = wish("registry.example.org/org/app:1", 1)
    w = replace(w, text=JOINED)
    hostile_ref = ImageReference("registry.example.org", "org/<script>|x", tag="@everyone|`]")
    image = resolved(w, "1", "app", ["a", "b"])
    image = replace(image, reference=hostile_ref)
    other = resolved(wish("registry.example.org/org/gone:1"), None, "gone", ["c"])
    gone = replace(published(other), reference=hostile_ref, path=JOINED)
    bad = wish("registry.example.org/org/broken:1", 2)
    broken = failed(bad)
    assert broken.problem is not None
    broken = replace(
        broken, problem=replace(broken.problem, message=JOINED, hint=JOINED, image=JOINED)
    )
    problem = Problem("error", JOINED, replace(w.location, path=JOINED), code=JOINED, hint=JOINED)
    return make_plan(
        [w, bad],
        [resolution(w, image), broken],
        state([gone]),
        NOW,
        cvmfs_repo="unpacked|<b>x</b>",
        problems=[problem],
    )


def assert_inert(html: str, allowed_comments: int = 0) -> None:
    assert "<script" not in html
    assert "<img" not in html
    assert "<b>" not in html and "<strong>bold" not in html and "<em>em" not in html
    assert "<del>" not in html and "<s>" not in html
    assert not re.search(r"href=[\"']?javascript:", html, re.I)
    for tag in re.findall(r"<a [^>]*>", html):  # only our own anchors and in-page links
        assert re.fullmatch(r'<a (id="[a-z0-9-]+"|href="#[a-z0-9-]+")>', tag), tag
    assert html.count("<!--") == allowed_comments
    assert not re.search(r"<h\d>heading", html)  # "# heading" after a newline stays text
    # a word joiner keeps forges from mentioning; inside code (names and paths, shown as
    # typed so they can be copied) forges never make mentions or references
    outside_code = re.sub(r"<code[^>]*>.*?</code>", "", html, flags=re.S)
    assert "@everyone" not in outside_code
    assert "#1234" not in outside_code and "!56" not in outside_code
    assert "~label" not in outside_code
    # no bare URL a forge would turn into a link (GFM autolinks)
    assert "https://evil" not in outside_code and "www.evil" not in outside_code
    assert "\x1b" not in html and "\u202e" not in html and "\u061c" not in html
    assert "<code>code</code>" not in html


def table_shapes(html: str) -> set[int]:
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    return {len(re.findall(r"<t[hd][ >]", row)) for row in rows}


def test_plan_markdown_is_inert() -> None:
    plan = hostile_plan()
    text = render_markdown(plan, title=JOINED)
    assert text.splitlines()[0] == "<!-- wishbot:plan -->"
    html = markdown().render(text)
    assert_inert(html, allowed_comments=1)
    assert table_shapes(html) <= {6, 5}
    # the hostile text is still there, readable, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "javascript:alert(1)" in html


def test_catalog_markdown_is_inert() -> None:
    plan = hostile_plan()
    current = state([c.old for c in plan.images if c.old is not None])
    current = replace(current, cvmfs_repo=JOINED)
    html = markdown().render(catalog_markdown(current, grace_days=30))
    assert_inert(html)
    assert len(table_shapes(html)) == 1


@pytest.mark.parametrize("text", HOSTILE)
def test_each_hostile_string_alone(text: str) -> None:
    html = markdown().render(
        f"| {escape_markdown(text)} | x |\n| --- | --- |\n| {escape_markdown(text)} | y |\n"
    )
    assert_inert(html)
    assert table_shapes(html) == {2}


def test_terminal_text_has_no_escape_sequences_or_line_breaks() -> None:
    plan = hostile_plan()
    text = render_text(plan)
    assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
    rows = [line for line in text.splitlines() if line.startswith(("add", "remove", "error"))]
    assert len(rows) == plan.images_added + plan.images_removed + plan.images_failed


def _invisible(text: str) -> set[str]:
    """Format characters (bidi controls, zero widths ...) other than our word joiner."""
    return {ch for ch in text if unicodedata.category(ch) == "Cf" and ch != "\u2060"}


def test_publish_and_error_comments_use_the_one_escaper() -> None:
    """Registry-controlled text in the publish and error comments renders no link,
    heading, list or mention, and no bidi control survives (issue 10)."""
    body = publish_comment(
        "ab" * 20,
        ok=False,
        description=JOINED,
        published=(JOINED, "/cvmfs/r/x:1"),
        failure=JOINED,
        retried=False,
    )
    error = error_comment(PUBLISH_MARKER, "publish", JOINED, True)
    for text in (body, error):
        html = markdown().render(text)
        assert_inert(html, allowed_comments=1)
        assert "<h1" not in html and "<h2" not in html
        assert html.count("<li>") == (2 if text is body else 0)  # only our own list
        assert not _invisible(text)


def test_every_rendering_drops_invisible_format_characters() -> None:
    plan = hostile_plan()
    current = state([c.old for c in plan.images if c.old is not None])
    for text in (
        render_markdown(plan, title=JOINED),
        render_text(plan),
        catalog_markdown(replace(current, cvmfs_repo=JOINED), grace_days=30),
    ):
        assert not _invisible(text)

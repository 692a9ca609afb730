"""The HTML catalog: golden file, escaping, and a real browser (Debian's Chromium, headless):
the search filters as you type and from ``?q=``, and nothing overflows at 1,000 px."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import chromium, dump_dom
from golden_check import check_golden
from test_catalog_render import realistic_state

from bot.core.catalog_html import catalog_html

HOSTILE = "<script>alert(1)</script>\"' onmouseover=x \u202eevil\u061c"
NEEDS_CHROMIUM = pytest.mark.skipif(
    chromium() is None, reason="chromium is not installed (make deps installs it)"
)

#: appended to a copy of the page: types into the search box, then records what the
#: browser sees (visible rows, widths) as attributes that --dump-dom shows
PROBE = """<script>
(function () {
  var box = document.getElementById("q");
  box.value = "CENTOS";
  box.dispatchEvent(new Event("input"));
  var visible = Array.prototype.filter.call(
    document.querySelectorAll("tr[data-search]"), function (r) { return !r.hidden; });
  var root = document.documentElement;
  document.body.setAttribute("data-typed-visible", String(visible.length));
  document.body.setAttribute("data-scroll-width", String(root.scrollWidth));
  document.body.setAttribute("data-client-width", String(root.clientWidth));
  var widest = 0;
  document.querySelectorAll("table").forEach(function (t) {
    widest = Math.max(widest, t.getBoundingClientRect().right);
  });
  document.body.setAttribute("data-table-right", String(Math.ceil(widest)));
})();
</script>"""


class _Rows(HTMLParser):
    """Catalog rows of a dumped DOM: their search text and whether they are hidden."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, bool]] = []
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "tr" and "data-search" in values:
            self.rows.append((values["data-search"] or "", "hidden" in values))
        if tag == "body":
            self.body = values


def attribute_names(html: str) -> set[str]:
    names: set[str] = set()

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            names.update(name for name, _value in attrs)

    Collect().feed(html)
    return names


def parse(dom: str) -> _Rows:
    rows = _Rows()
    rows.feed(dom)
    return rows


def test_golden_html_is_deterministic_and_self_contained() -> None:
    current = realistic_state()
    page = catalog_html(current, grace_days=30)
    check_golden("catalog.html", page)
    shuffled = replace(current, images=current.images[::-1], schedule=current.schedule[::-1])
    assert catalog_html(shuffled, grace_days=30) == page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no external assets
    assert "<link" not in page and "@import" not in page
    assert "default-src 'none'" in page  # and the page forbids them
    assert "⏳ removed from the wishlist, deleted after 2026-02-15" in page


def test_hostile_text_is_escaped_everywhere() -> None:
    current = realistic_state()
    image = replace(current.images[0], thin_image=HOSTILE)
    page = catalog_html(
        replace(current, cvmfs_repo=HOSTILE, images=(image, *current.images[1:])), grace_days=30
    )
    assert "<script>alert" not in page
    assert not any(name.startswith("on") for name in attribute_names(page))  # no handlers
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\u202e" not in page and "\u061c" not in page
    assert page.count("<script>") == 1  # only the page's own


@NEEDS_CHROMIUM
def test_search_filters_in_a_real_browser(tmp_path: Path) -> None:
    page = tmp_path / "catalog.html"
    page.write_text(catalog_html(realistic_state(), grace_days=30), encoding="utf-8")
    profile = tmp_path / "profile"
    everything = parse(dump_dom(page.as_uri(), profile))
    assert len(everything.rows) == 5 and not any(hidden for _text, hidden in everything.rows)

    # ?q= fills the box and filters: every word must match (case-insensitive)
    found = parse(dump_dom(page.as_uri() + "?q=cuda%20ARM64", profile))
    assert [(("nvidia/cuda" in text), hidden) for text, hidden in found.rows].count(
        (True, False)
    ) == 1
    assert sum(1 for _text, hidden in found.rows if not hidden) == 1
    removed = parse(dump_dom(page.as_uri() + "?q=removed", profile))
    (shown,) = [text for text, hidden in removed.rows if not hidden]
    assert "athena" in shown


@NEEDS_CHROMIUM
def test_typing_filters_and_nothing_overflows_at_1000_px(tmp_path: Path) -> None:
    page = tmp_path / "catalog.html"
    html = catalog_html(realistic_state(), grace_days=30)
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    body = parse(dump_dom(page.as_uri(), tmp_path / "profile", width=1000)).body
    assert body["data-typed-visible"] == "2"  # centos7 and centos8
    scroll, client = int(body["data-scroll-width"] or 0), int(body["data-client-width"] or 0)
    assert 900 <= client <= 1000
    assert scroll <= client, body  # no horizontal scroll bar
    assert int(body["data-table-right"] or 0) <= client

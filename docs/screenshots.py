"""Regenerate the screenshots in docs/: ``make screenshots`` (or ``python docs/screenshots.py``).

The plan and publish comments are rendered the way a forge renders Markdown
(CommonMark + tables + raw HTML, by markdown-it-py) with GitHub-like CSS in a
900 px comment column; the catalog page and CATALOG.md at a 1,000 px window.
Headless Chromium takes the pictures (tests/browser.py). The inputs are the
sample plans and catalog of the golden tests, so the pictures show what the
tests check.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import dump_dom, forge_page, screenshot  # noqa: E402
from plan_samples import NOW, realistic_plan_inputs  # noqa: E402
from test_catalog_render import realistic_state  # noqa: E402
from test_comment_golden import LINKS  # noqa: E402

from bot.core import dashboard  # noqa: E402
from bot.core.catalog import catalog_markdown  # noqa: E402
from bot.core.catalog_html import catalog_html  # noqa: E402
from bot.core.commands import Command, help_text, refusal_text  # noqa: E402
from bot.core.comment import publish_comment, render_markdown  # noqa: E402
from bot.core.plan import make_plan  # noqa: E402

HEIGHT_PROBE = (
    "<script>document.body.setAttribute('data-height',"
    "String(Math.ceil(document.documentElement.scrollHeight)));</script>"
)


def shoot(html: str, name: str, width: int, work: Path) -> Path:
    """Screenshot ``html`` at ``width`` px, as tall as the page is."""
    page = work / f"{name}.html"
    page.write_text(html.replace("</body>", HEIGHT_PROBE + "</body>"), encoding="utf-8")
    dom = dump_dom(page.as_uri(), work / "profile", width=width, height=600)
    marker = 'data-height="'
    start = dom.index(marker) + len(marker)
    height = int(dom[start : dom.index('"', start)]) + 16
    page.write_text(html, encoding="utf-8")
    output = DOCS / f"{name}.png"
    screenshot(page.as_uri(), output, work / "profile", width, min(height, 4000))
    return output


def task_boxes(html: str) -> str:
    """GFM task-list items as forges show them (markdown-it's CommonMark has none)."""
    for mark, checked in (("[ ] ", ""), ("[x] ", " checked")):
        html = html.replace(
            f"<li>{mark}", f'<li class="task"><input type="checkbox" disabled{checked}> '
        )
    return html.replace(
        '<ul>\n<li class="task">', '<ul style="list-style:none">\n<li class="task">'
    )


def dashboard_sample() -> str:
    state = dashboard.DashboardState(
        failing=(
            dashboard.FailingWish(
                "/cvmfs/unpacked.cern.ch/nvcr.io/nvidia/cuda:12.2.0-runtime-ubuntu22.04",
                "nvcr.io answered 503 Service Unavailable (3 attempts)",
                "2026-11-28",
            ),
            dashboard.FailingWish(
                "/cvmfs/unpacked.cern.ch/ghcr.io/example/analysis:*",
                "the tag list cannot be read: 401 Unauthorized",
                "2026-11-30",
            ),
        ),
        retiring=(
            dashboard.RetiringImage(
                "/cvmfs/unpacked.cern.ch/registry.hub.docker.com/library/centos:centos6",
                "2026-12-30",
            ),
        ),
        last_publication=dashboard.Publication(
            LINKS.commit, "failed: 2 images not published", "2026-11-30 09:12 UTC"
        ),
        queue=("1 queued", "1 running"),
    )
    return dashboard.render(state, dashboard.GITHUB_BODY_CHARS)


def command_replies() -> str:
    return (
        help_text("write", "aply")
        + "\n---\n\n"
        + refusal_text(Command("retry"), "mallory", "write")
        + "\n"
    )


def main() -> int:
    wishes, resolutions, current, problems = realistic_plan_inputs()
    plan = make_plan(
        wishes, resolutions, current, NOW, cvmfs_repo="unpacked.cern.ch", problems=problems
    )
    comment = render_markdown(plan, title="wishbot plan for this change", links=LINKS)
    published = publish_comment(
        LINKS.commit,
        ok=True,
        description="2 images published",
        published=(
            "/cvmfs/unpacked.cern.ch/registry.hub.docker.com/library/centos:centos7",
            "/cvmfs/unpacked.cern.ch/nvcr.io/nvidia/cuda:12.2.0-runtime-ubuntu22.04",
        ),
        failure=None,
        retried=False,
        links=LINKS,
    )
    catalog = realistic_state()
    with tempfile.TemporaryDirectory(prefix="wishbot-screenshots-") as tmp:
        work = Path(tmp)
        outputs = [
            shoot(forge_page(comment, "plan"), "comment", 930, work),
            shoot(
                forge_page((ROOT / "tests/golden/comment-registry-down.md").read_text(), "plan"),
                "comment-registry-down",
                930,
                work,
            ),
            shoot(forge_page(published, "after the merge"), "publish-comment", 930, work),
            shoot(
                task_boxes(forge_page(dashboard_sample(), "dashboard issue")),
                "dashboard",
                930,
                work,
            ),
            shoot(
                forge_page(command_replies(), "replies to commands"), "command-replies", 930, work
            ),
            shoot(catalog_html(catalog, grace_days=30), "catalog-page", 1000, work),
            shoot(
                forge_page(catalog_markdown(catalog, grace_days=30), "CATALOG.md", 980),
                "catalog-md",
                1010,
                work,
            ),
        ]
    for output in outputs:
        print(f"wrote {output.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The dashboard issue: one Markdown body the bot keeps current, and the boxes ticked in it.

The bot finds its issue by :data:`MARKER` at the start of a body it wrote
itself, and edits it in place. The body stays within the forge's limit:
GitLab descriptions are at most 1 megabyte (1,048,576;
https://docs.gitlab.com/ee/development/issuable-like-models.html "Important
text fields"), GitHub issue bodies at most 65,536 characters (the REST API
answers 422 "body is too long (maximum is 65536 characters)").

Maintainers act by ticking a box: ``retry <wish>`` or ``re-plan everything``.
:func:`ticked` compares the body before and after an edit and returns only the
boxes that went from unticked to ticked and that the bot rendered (a box
typed by hand or pasted from elsewhere is never acted on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from bot.core.text import code_span, cut, escape_markdown, plural

MARKER = "<!-- wishbot:dashboard -->"
TITLE = "wishbot dashboard"
GITLAB_DESCRIPTION_CHARS = 1_048_576
GITHUB_BODY_CHARS = 65_536
REPLAN_LABEL = "re-plan everything"
#: longest line read as a box (the bot renders a wish in at most ~600 characters)
MAX_BOX_LINE = 2000
#: one ``- [ ] label`` / ``- [x] label`` line (GFM task list items; also ``*`` bullets)
_BOX_RE = re.compile(r"^\s*[-*] \[([ xX])\] (.+?)\s*$")
_RETRY_RE = re.compile(r"^retry (`+) ?(.+?) ?\1(?!`)")


@dataclass(frozen=True)
class FailingWish:
    wish: str
    why: str
    since: str  # ISO date or time, as the state says


@dataclass(frozen=True)
class RetiringImage:
    image: str
    removal: str  # the date it will be removed


@dataclass(frozen=True)
class Publication:
    sha: str
    result: str  # "success", "failed: ..." ...
    when: str


@dataclass(frozen=True)
class DashboardState:
    failing: tuple[FailingWish, ...] = ()
    retiring: tuple[RetiringImage, ...] = ()
    last_publication: Publication | None = None
    queue: tuple[str, ...] = ()


ActionKind = Literal["retry", "replan"]


@dataclass(frozen=True)
class DashboardAction:
    kind: ActionKind
    wish: str = ""


@dataclass
class _Body:
    limit: int
    lines: list[str] = field(default_factory=list)
    left_out: int = 0

    def add(self, line: str) -> None:
        size = sum(len(x) + 1 for x in self.lines) + len(line) + 1
        if size > self.limit - 200:
            self.left_out += 1
            return
        self.lines.append(line)


def retry_label(wish: str) -> str:
    return f"retry {code_span(cut(wish, 200))}"


def render(state: DashboardState, limit: int) -> str:
    """The dashboard issue body, marker first, at most ``limit`` characters."""
    body = _Body(limit)
    body.add(MARKER)
    body.add(f"## {TITLE}")
    body.add("")
    body.add("Tick a box to act; the bot updates this issue, edits here are overwritten.")
    body.add("")
    body.add(f"- [ ] {REPLAN_LABEL}")
    body.add("")
    body.add(f"### Failing or not checkable ({len(state.failing)})")
    for wish in state.failing:
        body.add(
            f"- [ ] {retry_label(wish.wish)}: {escape_markdown(cut(wish.why, 300))}"
            f" (since {escape_markdown(wish.since)})"
        )
    if not state.failing:
        body.add("Nothing failing.")
    body.add("")
    body.add(f"### Waiting for removal ({len(state.retiring)})")
    for image in state.retiring:
        body.add(
            f"- {code_span(cut(image.image, 300))}: removed on {escape_markdown(image.removal)}"
        )
    if not state.retiring:
        body.add("Nothing waiting.")
    body.add("")
    body.add("### Last publication")
    body.add(_publication(state.last_publication))
    body.add("")
    body.add("### Queue")
    for job in state.queue:
        body.add(f"- {escape_markdown(cut(job, 200))}")
    if not state.queue:
        body.add("Empty.")
    text = "\n".join(body.lines) + "\n"
    if body.left_out:
        text += f"\n_({plural(body.left_out, 'line')} left out: the issue's size limit)_\n"
    return text


def _publication(publication: Publication | None) -> str:
    if publication is None:
        return "None yet."
    return (
        f"{code_span(publication.sha[:12])}: {escape_markdown(cut(publication.result, 300))}"
        f" ({escape_markdown(publication.when)})"
    )


def boxes(body: str) -> dict[str, bool]:
    """Every task-list box of a body: its label and whether it is ticked."""
    found: dict[str, bool] = {}
    for line in body.splitlines():
        if len(line) > MAX_BOX_LINE:  # the bot's lines are short; bounds the regex work
            continue
        match = _BOX_RE.match(line)
        if match:
            found[_label(match.group(2))] = match.group(1) != " "
    return found


def _label(text: str) -> str:
    """A box's label: the text, or just ``retry `wish``` without the reason after it."""
    retry = _RETRY_RE.match(text)
    return retry.group(0) if retry else text


def box_action(text: str) -> DashboardAction | None:
    """The action of a box's text (after ``- [ ] ``), None when it is not one of ours."""
    return _action(_label(text))


def _action(label: str) -> DashboardAction | None:
    if label == REPLAN_LABEL:
        return DashboardAction("replan")
    match = _RETRY_RE.match(label)
    if match:
        return DashboardAction("retry", match.group(2).replace("\\|", "|"))
    return None


def ticked(before: str, after: str) -> list[DashboardAction]:
    """The actions whose box went from unticked (in ``before``, the bot's body) to ticked.

    Both bodies must be the bot's dashboard (start with the marker); a box not
    unticked in ``before`` (absent, or already ticked) is never acted on.
    """
    if not before.startswith(MARKER) or not after.startswith(MARKER):
        return []
    old = boxes(before)
    actions: list[DashboardAction] = []
    for label, checked in boxes(after).items():
        if checked and old.get(label) is False:
            action = _action(label)
            if action is not None and action not in actions:
                actions.append(action)
    return actions


# --- the state, from what the bot knows ---------------------------------------

#: "3 images not published: a: why; b: why" (bot.runtime.pipeline's failure text)
_NOT_PUBLISHED_RE = re.compile(r"^\d[\d,]* images? not published: (.*)$", re.DOTALL)
_FAILING_LINE_RE = re.compile(
    r"^\s*[-*] \[[ xX]\] retry (`+) ?(.+?) ?\1(?!`): .* \(since (.+)\)\s*$"
)
MAX_FAILING = 200


def failing_from(failure: str, since: str, before: str = "") -> tuple[FailingWish, ...]:
    """The wishes a publication's failure text names; ``since`` is now, or the date the
    previous dashboard body (``before``) already gave a wish that still fails."""
    match = _NOT_PUBLISHED_RE.match(failure.strip())
    if not match:
        return (FailingWish("the whole wishlist", failure, since),) if failure else ()
    previous = previous_since(before)
    found: list[FailingWish] = []
    for part in match.group(1).split("; ")[:MAX_FAILING]:
        wish, _, why = part.partition(": ")
        found.append(FailingWish(wish, why or "failed", previous.get(wish, since)))
    return tuple(found)


def previous_since(body: str) -> dict[str, str]:
    """wish -> since, from a dashboard body the bot rendered."""
    found: dict[str, str] = {}
    for line in body.splitlines():
        if len(line) > MAX_BOX_LINE:
            continue
        match = _FAILING_LINE_RE.match(line)
        if match:
            found[match.group(2).replace("\\|", "|")] = match.group(3)
    return found


def retiring_from(catalog: object) -> tuple[RetiringImage, ...]:
    """The removals a ``catalog.json`` (``wishbot-catalog/1``) schedules, with their dates."""
    if not isinstance(catalog, dict) or not isinstance(catalog.get("schedule"), list):
        return ()
    found: list[RetiringImage] = []
    for item in catalog["schedule"]:
        if isinstance(item, dict) and item.get("kind") == "image":
            what = str(item.get("path") or item.get("id") or "")
            found.append(RetiringImage(what, str(item.get("deletion") or "")[:10]))
    return tuple(found)

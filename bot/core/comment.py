"""The comments people read on a merge request: the plan, the publication, a failure.

The plan comment answers the requester ("will my image be published, and what
does it cost?") and the maintainer ("what does merging add and remove?"): a
verdict line first, one short line per problem (its line and what to do; a
registry that is down is one line, not one per image), one table row per wish
(a wildcard grouped with its count), every image with its digests folded away
in ``<details>``, and a footer with links and how to re-run.

Untrusted text goes through :mod:`bot.core.text` only: names and paths as code
spans (never a link, a mention or a stray backslash), everything else through
:func:`~bot.core.text.escape_markdown`. The comment keeps inside a character
budget: beyond it rows are cut, every block is closed and a line names what
was left out and the command that shows everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bot.core.model import Problem, Wish
from bot.core.plan import ImageChange, LayerChange, Plan
from bot.core.reference import ReferenceError, parse
from bot.core.text import (
    clean,
    code_span,
    cut,
    escape_markdown,
    human_size,
    is_digest,
    join_words,
    plural,
    short_digest,
)

#: the markers of the bot's two comments: one comment per marker and merge request
PLAN_MARKER = "<!-- wishbot:plan -->"
MARKER = PLAN_MARKER
PUBLISH_MARKER = "<!-- wishbot:publish -->"
DEFAULT_TITLE = "wishbot plan"
FULL_PLAN_COMMAND = "wishbot plan --format json"
#: tags named in a wildcard's row before "and N more"
TAGS_SHOWN = 6
_URL_RE = re.compile(r"^https?://[^\s<>()\[\]`\"']+$")


@dataclass(frozen=True)
class CommentLinks:
    """What the comment can link to and say (all optional; empty means unknown)."""

    commit: str = ""  # the head commit the plan is for
    job_url: str = ""  # the CI job or pipeline that wrote the comment
    catalog_url: str = ""  # CATALOG.md (or the HTML catalog) of the wishlist repository
    docs_url: str = ""  # the operator's documentation for requesters


def safe_url(url: str) -> str:
    """``url`` when it is a plain http(s) URL safe to put in a Markdown link, else ""."""
    return url if _URL_RE.match(url or "") else ""


def _link(text: str, url: str) -> str:
    url = safe_url(url)
    return f"[{text}]({url})" if url else ""


def commit_code(sha: str) -> str:
    """The first 12 hex digits of a commit as code ("" when it is not a hex sha)."""
    return f"`{sha[:12]}`" if re.fullmatch(r"[0-9a-f]{7,64}", sha or "") else ""


def digest_code(digest: str | None) -> str:
    """A short digest (12 hex) as code; the full ones are listed in ``<details>``."""
    if not digest:
        return ""
    if is_digest(digest):
        return f"`{short_digest(digest).removeprefix('sha256:')}`"
    return code_span(digest)


# --- the budget -----------------------------------------------------------------


@dataclass
class _Budget:
    """Appends lines while they fit; remembers what had to be cut."""

    limit: int
    used: int = 0
    lines: list[str] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)
    reserve: int = 700  # kept free for closing tags, the footer and the "cut" note

    def add(self, line: str) -> bool:
        cost = len(line) + 1
        if self.used + cost + self.reserve > self.limit:
            return False
        self.lines.append(line)
        self.used += cost
        return True

    def force(self, line: str) -> None:
        self.lines.append(line)
        self.used += len(line) + 1


def _section(
    budget: _Budget,
    header: list[str],
    rows: Iterable[str],
    footer: list[str],
    what: Callable[[int], str],
) -> bool:
    """Write a block (header, rows, footer); cut rows that do not fit. False when cut."""
    rows = list(rows)
    closing = sum(len(line) + 1 for line in footer)
    opening = sum(len(line) + 1 for line in header) + (len(rows[0]) + 1 if rows else 0)
    if budget.used + opening + closing + budget.reserve > budget.limit:
        budget.cut.append(what(len(rows)))  # not even the header and one row fit
        return False
    for line in header:
        budget.force(line)
    budget.reserve += closing
    try:
        for index, row in enumerate(rows):
            if not budget.add(row):
                budget.cut.append(what(len(rows) - index))
                break
    finally:
        budget.reserve -= closing
    for line in footer:
        budget.force(line)
    return not budget.cut


# --- problems -------------------------------------------------------------------


def could_not_check(problem: Problem) -> bool:
    """True for "could not check right now" (the registry did not answer), not a broken image."""
    return problem.code == "unavailable"


def _icon(problem: Problem) -> str:
    if problem.severity == "error" and not could_not_check(problem):
        return "❌"
    return "⚠️"


def _where(problem: Problem) -> str:
    """``wishlist.yaml:7:5``, as ``validate`` and editors say it."""
    return escape_markdown(problem.location)


def _plain_message(problem: Problem) -> str:
    """The message without the image name it repeats (the line shows it once)."""
    message = clean(problem.message)
    names = [problem.image or ""]
    try:
        ref = parse(problem.image or "")
        names += [str(ref), str(ref.normalized()), ref.url]
    except ReferenceError:
        pass
    for name in sorted(filter(None, names), key=len, reverse=True):
        if message.startswith(f"{name}: "):
            message = message[len(name) + 2 :]
            break
    return message.removeprefix("could not check: ")


def _problem_line(problem: Problem) -> str:
    text = f"- {_icon(problem)} **{_where(problem)}**"
    if problem.image:
        text += f" {code_span(problem.image)}"
    text += f": {escape_markdown(_plain_message(problem))}"
    if problem.hint:
        text += f" → {escape_markdown(problem.hint)}"
    return text


def _registry(problem: Problem) -> str:
    try:
        return parse(problem.image or "").normalized().registry
    except ReferenceError:
        return ""


def _lines_of(problems: Sequence[Problem]) -> str:
    numbers = sorted({p.location.line for p in problems if p.location.line})
    if not numbers:
        return ""
    return f"line{'s' if len(numbers) > 1 else ''} {line_ranges(numbers)}"


def line_ranges(numbers: Sequence[int], shown: int = 6) -> str:
    """``3–19, 22, 30–31`` (sorted numbers; at most ``shown`` ranges, then "and N more")."""
    ranges: list[list[int]] = []
    for number in numbers:
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    words = [f"{a}–{b}" if b > a else str(a) for a, b in ranges[:shown]]
    more = f" and {len(ranges) - shown} more" if len(ranges) > shown else ""
    return ", ".join(words) + more


def _unchecked_line(registry: str, problems: Sequence[Problem]) -> str:
    """One line for every image a registry did not answer for."""
    first = problems[0]
    where = _lines_of(problems)
    text = (
        f"- ⚠️ **Could not check {plural(len(problems), 'image')} on {code_span(registry)} "
        f"right now**"
    )
    if where:
        text += f" ({where})"
    text += f": {escape_markdown(_plain_message(first))}"
    return text + " → re-run later; nothing was concluded about these images"


def problem_lines(problems: Sequence[Problem]) -> list[str]:
    """One line per problem; a registry that did not answer for several images is one line."""
    by_registry: dict[str, list[Problem]] = {}
    for problem in problems:
        if could_not_check(problem) and problem.image:
            by_registry.setdefault(_registry(problem), []).append(problem)
    lines: list[str] = []
    done: set[str] = set()
    for problem in problems:
        group = by_registry.get(_registry(problem), []) if could_not_check(problem) else []
        if len(group) < 2:
            lines.append(_problem_line(problem))
            continue
        registry = _registry(problem)
        if registry not in done:
            done.add(registry)
            lines.append(_unchecked_line(registry, group))
    return lines


# --- the verdict ----------------------------------------------------------------


def effect(plan: Plan) -> str:
    """What executing the plan does, as a verb phrase: ``adds 3 images, removes 1 path``."""
    parts: list[str] = []
    if plan.images_added:
        parts.append(f"adds {plural(plan.images_added, 'image')}")
    if plan.images_updated:
        parts.append(f"updates {plural(plan.images_updated, 'image')}")
    if plan.images_removed:
        parts.append(f"removes {plural(plan.images_removed, 'path')}")
    text = join_words(parts)
    if plan.download_bytes:
        text += f" ({human_size(plan.download_bytes)} to download)"
    return text


def _trouble(broken: list[Problem], unchecked: list[Problem], effect: str) -> str:
    """❌ problems to fix (and images not checked), or ⚠️ images not checked right now;
    then what the change would do otherwise."""
    otherwise = f" — otherwise {effect}" if effect else ""
    if not broken:
        return (
            f"⚠️ Could not check {plural(len(unchecked), 'image')} right now: re-run later"
            f"{otherwise}"
        )
    text = f"❌ {plural(len(broken), 'problem')} to fix before this can be published"
    if unchecked:
        text += f", {plural(len(unchecked), 'image')} not checked"
    return text + otherwise


def headline(plan: Plan) -> str:
    """The verdict line: ✅ publishable, ⚠️ could not check right now, ❌ something to fix."""
    broken = [p for p in plan.errors if not could_not_check(p)]
    unchecked = [p for p in plan.errors if could_not_check(p)]
    doing = "Merging this change" if plan.base else "Applying the wishlist"
    what = effect(plan)
    if broken or unchecked:
        return _trouble(broken, unchecked, f"{doing.lower()} {what}" if what else "")
    return _good(plan, f"{doing} {what}" if what else "")


def _good(plan: Plan, effect: str) -> str:
    """✅ what the change does (or no changes), and how many warnings."""
    text = f"✅ {effect}" if effect else "✅ No changes to the publisher"
    if plan.warnings:
        text += f"; {plural(len(plan.warnings), 'warning')}"
    return text


def _going(plan: Plan) -> list[str]:
    """What goes to the remove schedule: old images, layers (and their size)."""
    going = []
    if plan.images_scheduled:
        going.append(plural(plan.images_scheduled, "old image"))
    if plan.layers_scheduled:
        going.append(
            f"{plural(plan.layers_scheduled, 'layer')} ({human_size(plan.bytes_scheduled)})"
        )
    return going


def _retiring_part(plan: Plan) -> str:
    """Until when removed paths keep working ("" when nothing is removed)."""
    retires = next((c.retires for c in plan.images if c.retires is not None), None)
    if retires is None:
        return ""
    one = plan.images_removed == 1
    return (
        f"{plural(plan.images_removed, 'removed path')} keep{'s' if one else ''} working "
        f"until {retires:%Y-%m-%d}, then {'it is' if one else 'they are'} deleted"
    )


def _cost_line(plan: Plan) -> str:
    parts: list[str] = []
    if plan.layers_to_ingest:
        parts.append(
            f"{plural(plan.layers_to_ingest, 'new layer')} ({human_size(plan.download_bytes)}) "
            "to download and publish"
        )
    going = _going(plan)
    if going:
        parts.append(f"{join_words(going)} deleted after {plan.grace_days} days")
    retiring = _retiring_part(plan)
    if retiring:
        parts.append(retiring)
    if plan.unscheduled:
        parts.append(f"{plural(len(plan.unscheduled), 'scheduled deletion')} cancelled")
    if plan.images_unchanged:
        parts.append(f"{plural(plan.images_unchanged, 'image')} unchanged")
    return "Cost: " + "; ".join(parts) + "." if parts else ""


# --- one row per wish -----------------------------------------------------------


@dataclass
class _Group:
    """The rows of one wish, or of one removed repository."""

    wish: Wish | None
    name: str  # what the row shows: the wish as written, or the removed repository
    changes: list[ImageChange] = field(default_factory=list)
    folded: int = 0  # wishes a registry did not answer for, shown as this one row

    @property
    def paths(self) -> list[str]:
        return sorted({c.path for c in self.changes})

    def count(self, action: str) -> int:
        return len({c.path for c in self.changes if c.action == action})


def _display(text: str) -> str:
    """A wish as written, without the ``https://`` the recipe format asks for."""
    return re.sub(r"^https?://", "", text.strip())


def _groups(plan: Plan) -> list[_Group]:
    groups: dict[object, _Group] = {}
    for change in plan.images:
        if change.wish is not None:
            key: object = change.wish
            name = _display(change.wish.text or str(change.wish.reference))
        else:
            key = ("removed", change.reference.normalized().name, change.action)
            name = change.reference.normalized().name if change.action == "remove" else change.path
        groups.setdefault(key, _Group(change.wish, name)).changes.append(change)
    ordered = sorted(
        _fold_unchecked(list(groups.values())),
        key=lambda g: (g.wish is None, g.wish.location.line if g.wish else 0, g.name),
    )
    return [g for g in ordered if any(c.action != "unchanged" for c in g.changes)]


def _unchecked(group: _Group) -> str:
    """The registry of a wish that could not be checked at all ("" otherwise)."""
    if group.wish is None or not group.changes:
        return ""
    problems = [c.problem for c in group.changes]
    if all(c.action == "error" for c in group.changes) and all(
        p is not None and p.severity == "error" and could_not_check(p) for p in problems
    ):
        return group.wish.reference.normalized().registry
    return ""


def _fold_unchecked(groups: list[_Group]) -> list[_Group]:
    """Wishes a registry did not answer for: one row per registry, not one per wish."""
    by_registry: dict[str, list[_Group]] = {}
    for group in groups:
        registry = _unchecked(group)
        if registry:
            by_registry.setdefault(registry, []).append(group)
    folded = [g for g in groups if len(by_registry.get(_unchecked(g), ())) < 2]
    for registry, members in by_registry.items():
        if len(members) < 2:
            continue
        first = members[0]
        name = f"{plural(len(members), 'wish', 'wishes')} on {registry}"
        merged = _Group(first.wish, name, [c for g in members for c in g.changes])
        merged.folded = len(members)
        folded.append(merged)
    return folded


_ACTION = {
    "add": "➕ add",
    "update": "🔄 update",
    "remove": "➖ remove",
    "unchanged": "unchanged",
}
_COUNTED = {
    "add": "➕ {n} to add",
    "update": "🔄 {n} to update",
    "remove": "➖ {n} to remove",
    "unchanged": "{n} unchanged",
}


def natural_key(text: str) -> list[tuple[int, int | str]]:
    """Sort ``1.2`` before ``1.10``: digits compare as numbers."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]


def _tag_of(change: ImageChange) -> str:
    ref = change.reference
    return ref.tag or short_digest(ref.digest).removeprefix("sha256:") or change.path


def _error_cell(change: ImageChange) -> str:
    problem = change.problem
    if problem is None:
        return "❌ not published"
    if problem.severity == "warning":
        return "⚠️ not published (error ignored)"
    if could_not_check(problem):
        return "⚠️ not checked right now"
    return "❌ not published (see the problem above)"


def _single_cell(changes: Sequence[ImageChange]) -> str:
    """One path (one or more platforms): the action and, for one platform, its digests."""
    change = changes[0]
    if change.action == "error":
        return _error_cell(change)
    text = _ACTION[change.action]
    if len(changes) == 1:
        new = change.new.manifest_digest if change.new else None
        old = change.old.manifest_digest if change.old else None
        if change.action == "update":
            text += f" {digest_code(old)} → {digest_code(new)}"
        elif new or old:
            text += f" {digest_code(new or old)}"
    return text + _when(change)


def _when(change: ImageChange) -> str:
    """When a removed path or a replaced image goes (the cost line says it in full)."""
    if change.retires is not None:
        return f", served until {change.retires:%Y-%m-%d}"
    if change.eligible is not None:
        return f", old one kept until {change.eligible:%Y-%m-%d}"
    return ""


def _tags_shown(group: _Group) -> str:
    """The first :data:`TAGS_SHOWN` tags that change (natural order), and how many more."""
    tags = sorted(
        {_tag_of(c) for c in group.changes if c.action in ("add", "update", "remove")},
        key=natural_key,
    )
    shown = " ".join(code_span(tag) for tag in tags[:TAGS_SHOWN])
    if len(tags) > TAGS_SHOWN:
        shown += f" … and {len(tags) - TAGS_SHOWN} more"
    return shown


def _wildcard_cell(group: _Group) -> str:
    counts = [
        template.format(n=group.count(action))
        for action, template in _COUNTED.items()
        if group.count(action)
    ]
    errors = [c for c in group.changes if c.action == "error"]
    if errors:
        counts.insert(0, _error_cell(errors[0]))
    shown = _tags_shown(group)
    text = f"{plural(len(group.paths), 'tag')}: " + ", ".join(counts)
    when = next((_when(c) for c in group.changes if c.retires or c.eligible), "")
    return text + when + (f"<br>{shown}" if shown else "")


def _folded_row(group: _Group) -> str:
    lines = sorted({c.wish.location.line for c in group.changes if c.wish})
    where = line_ranges(lines, 2) if lines else "—"
    return f"| {where} | {escape_markdown(group.name)} | ⚠️ not checked right now | — | — |"


def _change_cell(group: _Group) -> str:
    changes = [c for c in group.changes if c.action != "unchanged"] or group.changes
    if len({c.path for c in changes}) == 1 and len(group.paths) == 1:
        return _single_cell(changes)
    return _wildcard_cell(group)


def _group_row(group: _Group) -> str:
    if group.folded:
        return _folded_row(group)
    change_cell = _change_cell(group)
    platforms = sorted({str(c.platform) for c in group.changes if c.platform is not None})
    download = sum(c.download_bytes for c in group.changes)
    line = str(group.wish.location.line) if group.wish and group.wish.location.line else "—"
    cells = [
        line,
        code_span(group.name),
        change_cell,
        escape_markdown(", ".join(platforms)) if platforms else "—",
        human_size(download) if download else "—",
    ]
    return "| " + " | ".join(cells) + " |"


# --- details: every image and layer ---------------------------------------------


def _image_row(change: ImageChange) -> str:
    new = change.new.manifest_digest if change.new else None
    old = change.old.manifest_digest if change.old else None
    if change.action == "error":
        action = _error_cell(change)
    else:
        action = _ACTION[change.action] + _when(change)
    digest = f"{digest_code(old)} → {digest_code(new)}" if change.action == "update" else ""
    digest = digest or digest_code(new or old)
    platform = change.platform
    cells = [
        code_span(change.path),
        escape_markdown(platform) if platform else "—",
        action,
        digest or "—",
        _download(change),
    ]
    return "| " + " | ".join(cells) + " |"


def _download(change: ImageChange) -> str:
    """``2.4 GB`` and, below, how many new layers that is."""
    if not change.download_bytes:
        return "—"
    return f"{human_size(change.download_bytes)}<br>{plural(len(change.new_layers), 'layer')}"


def _layer_row(layer: LayerChange) -> str:
    # unpacked size: unknown until the layer is unpacked (registries know the compressed size)
    unpacked = human_size(layer.unpacked_size) if layer.unpacked_size is not None else "—"
    when = f"{layer.eligible:%Y-%m-%d}" if layer.eligible else "—"
    cells = [digest_code(layer.digest), human_size(layer.compressed_size), unpacked]
    return "| " + " | ".join([*cells, str(layer.users), when]) + " |"


def _full_digests(digests: Iterable[str | None]) -> str:
    """Full digests as code spans on one wrapping line (copyable; tables keep short ones)."""
    unique = sorted({d for d in digests if d and is_digest(d)})
    return "Full digests: " + " ".join(f"`{d}`" for d in unique) if unique else ""


_IMAGE_HEADER = [
    "| Path | Platform | Change | Digest | Download |",
    "| :--- | :--- | :--- | :--- | ---: |",
]
_LAYER_HEADER = [
    "| Layer | Compressed | Unpacked | Images using it | Deleted after |",
    "| :--- | ---: | ---: | ---: | :--- |",
]


def _details_images(out: _Budget, plan: Plan) -> None:
    shown = [c for c in plan.images if c.action not in ("unchanged", "error")]
    if not shown:
        return
    digests = [c.new.manifest_digest for c in shown if c.new] + [
        c.old.manifest_digest for c in shown if c.old
    ]
    summary = f"<details><summary>Every image: {plural(len(shown), 'row')} with digests</summary>"
    full = _full_digests(digests)
    _section(
        out,
        [summary, "", *_IMAGE_HEADER],
        (_image_row(c) for c in shown),
        ["", *([full, ""] if full else []), "</details>", ""],
        lambda n: plural(n, "image row"),
    )


def _details_layers(out: _Budget, plan: Plan, action: str, title: str, size: int) -> None:
    layers = [layer for layer in plan.layers if layer.action == action]
    if not layers:
        return
    summary = (
        f"<details><summary>{plural(len(layers), 'layer')} {title} ({human_size(size)})</summary>"
    )
    full = _full_digests(layer.digest for layer in layers)
    _section(
        out,
        [summary, "", *_LAYER_HEADER],
        (_layer_row(layer) for layer in layers),
        ["", *([full, ""] if full else []), "</details>", ""],
        lambda n: f"{plural(n, 'layer')} {title}",
    )


# --- the comment ----------------------------------------------------------------


def _meta_line(plan: Plan, links: CommentLinks) -> str:
    parts = []
    commit = commit_code(links.commit)
    if commit:
        parts.append(f"commit {commit}")
    if plan.cvmfs_repo:
        parts.append(f"repository {code_span(plan.cvmfs_repo)}")
    parts.append("changed wishes only" if plan.base else "the whole wishlist")
    parts.append(f"planned {plan.now:%Y-%m-%d %H:%M} UTC")
    return " · ".join(parts)


def _footer(links: CommentLinks, cut: Sequence[str]) -> list[str]:
    lines = ["---"]
    if cut:
        lines += [
            f"✂️ Cut to fit the comment size: {', '.join(cut)} not shown. "
            f"Run `{FULL_PLAN_COMMAND}` for the full plan.",
            "",
        ]
    rerun = "push a commit, or re-run the job" if safe_url(links.job_url) else "push a commit"
    tail = _links_line(links)
    parts = [
        f"🔁 Updated on every push; to plan again, {rerun}",
        f"full plan: `{FULL_PLAN_COMMAND}`",
    ]
    if tail:
        parts.append(tail)
    text = "<sub>" + " · ".join(parts)
    return [*lines, text + "</sub>"]


def render_markdown(
    plan: Plan,
    *,
    budget: int = 60000,
    title: str = DEFAULT_TITLE,
    links: CommentLinks | None = None,
) -> str:
    """The merge-request comment (within ``budget`` characters)."""
    links = links or CommentLinks()
    out = _Budget(limit=budget)
    out.force(MARKER)
    out.force(f"### {escape_markdown(title)}")
    out.force("")
    out.force(f"**{headline(plan)}**")
    out.force("")
    cost = _cost_line(plan)
    out.force(_meta_line(plan, links) + ("  " if cost else ""))
    if cost:
        out.force(cost)
    out.force("")
    if plan.problems:
        _section(
            out,
            ["#### What needs attention", ""],
            problem_lines(plan.problems),
            [""],
            lambda n: plural(n, "problem"),
        )
    groups = _groups(plan)
    if groups:
        _section(
            out,
            [
                "#### What merging does" if plan.base else "#### What applying does",
                "",
                "| Line | Wish | Change | Platforms | Download |",
                "| ---: | :--- | :--- | :--- | ---: |",
            ],
            (_group_row(g) for g in groups),
            [""],
            lambda n: plural(n, "wish", "wishes"),
        )
    _details_images(out, plan)
    _details_layers(out, plan, "ingest", "to download", plan.download_bytes)
    _details_layers(out, plan, "schedule", "deleted after the grace period", plan.bytes_scheduled)
    for line in _footer(links, out.cut):
        out.force(line)
    return "\n".join(out.lines).rstrip("\n") + "\n"


# --- the publish comment and failures ---------------------------------------------

#: published paths listed in the publish comment (the catalog lists every one)
PATHS_SHOWN = 30


def _links_line(links: CommentLinks) -> str:
    found = [
        _link(text, url)
        for text, url in (
            ("job log", links.job_url),
            ("catalog", links.catalog_url),
            ("how wishbot works", links.docs_url),
        )
    ]
    return " · ".join(link for link in found if link)


def _outcome_lines(sha: str, ok: bool, description: str, failure: str | None) -> list[str]:
    if ok:
        return [f"### ✅ wishbot published {sha}".rstrip(), "", escape_markdown(description)]
    lines = [
        f"### ❌ wishbot could not publish {sha}".rstrip(),
        "",
        escape_markdown(cut(failure or description, 2000)),
    ]
    if description and failure:
        lines += ["", f"Done anyway: {escape_markdown(description)}."]
    return lines


def _ready_lines(published: Sequence[str]) -> list[str]:
    """The paths people run (the first :data:`PATHS_SHOWN`), and how to run one."""
    lines = ["", f"**{plural(len(published), 'path')} ready to run:**", ""]
    lines += [f"- {code_span(path)}" for path in published[:PATHS_SHOWN]]
    if len(published) > PATHS_SHOWN:
        lines.append(f"- … and {len(published) - PATHS_SHOWN} more (see the catalog)")
    return [
        *lines,
        "",
        "Run one (the CernVM-FS client mounts `/cvmfs` on demand):",
        "",
        "```sh",
        f"apptainer exec {_shell_word(published[0])} cat /etc/os-release",
        "```",
    ]


def publish_comment(
    commit: str,
    *,
    ok: bool,
    description: str,
    published: Sequence[str],
    failure: str | None,
    retried: bool,
    links: CommentLinks | None = None,
) -> str:
    """What a merge published: ✅ or ❌ first, the paths people run, how to run one."""
    links = links or CommentLinks()
    sha = commit_code(commit)
    lines = [PUBLISH_MARKER, *_outcome_lines(sha, ok, description, failure)]
    if published:
        lines += _ready_lines(published)
    lines.append("")
    if not ok:
        lines.append("wishbot will retry." if retried else "Push again or re-run the job to retry.")
        lines.append("")
    tail = _links_line(links)
    if tail:
        lines.append(f"<sub>{tail}</sub>")
    return "\n".join(lines).rstrip("\n") + "\n"


def _shell_word(path: str) -> str:
    """A path for a shell command line inside a code block (quoted unless plainly safe)."""
    path = clean(path).replace("`", "'")
    if re.fullmatch(r"[A-Za-z0-9._:/@+-]+", path):
        return path
    return "'" + path.replace("'", "'\\''") + "'"


def error_comment(marker: str, what: str, failure: str, retried: bool) -> str:
    """A comment saying wishbot could not do ``what``, why, and what happens next."""
    lines = [
        marker,
        f"### ❌ wishbot could not {escape_markdown(what)}",
        "",
        escape_markdown(cut(failure, 2000)),
        "",
        "wishbot will retry; nothing was published from this failed attempt."
        if retried
        else "Push a new commit (or re-run the job) to try again.",
    ]
    return "\n".join(lines) + "\n"


def missing_wishlist_comment(path: str, links: CommentLinks) -> str:
    """The plan comment when the merge request deletes (or never had) the wishlist."""
    at = commit_code(links.commit)
    return (
        f"{MARKER}\n### ❌ wishbot: no wishlist\n\n"
        f"{code_span(path)} does not exist{f' at {at}' if at else ''}; "
        "a merge request must keep the wishlist file.\n"
    )

"""Renderings of a :class:`~bot.core.plan.Plan`: Markdown comment, versioned JSON, terminal text.

Everything that comes from a wishlist or a registry is untrusted and goes
through :func:`escape_markdown` (or :func:`escape_terminal` for the text
table) before it reaches the output. The Markdown comment keeps inside a
character budget: beyond it, detail is cut, every open ``<details>`` and table
is closed, and a line says what was left out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.core.model import Problem
from bot.core.plan import ImageChange, LayerChange, Plan

MARKER = "<!-- wishbot:plan -->"
PLAN_SCHEMA = "wishbot-plan/1"
DEFAULT_TITLE = "wishbot plan"

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
#: ASCII punctuation that starts inline markup in CommonMark, GFM or GitLab Flavored Markdown
#: (untrusted text never starts a line, so block markers such as ``1.`` or ``-`` are inert)
_MARKDOWN_SPECIALS = frozenset("\\`*_{}[]()!|~^$%")
#: sigils forges turn into mentions and references (@user, #12, !3, ~label, %milestone, $snippet)
_REFERENCE_SIGILS = frozenset("@#!~%$&")
_WORD_JOINER = "\u2060"
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


# --- sizes and escaping -----------------------------------------------------


def human_size(size: int) -> str:
    """Decimal units, three significant digits at most: ``512 B``, ``1.3 GB``, ``153 MB``."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.5 or unit == "PB":
            return f"{value:.1f} {unit}" if value < 9.95 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def _clean_char(ch: str) -> str:
    if ch in "\n\r\t\v\f":
        return " "
    if ch in _BIDI_CONTROLS:
        return ""
    if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn"):
        return "\ufffd"
    return ch


def escape_markdown(text: object) -> str:
    """Untrusted text as inert Markdown: no markup, HTML, links, mentions or cell breaks.

    Newlines and control characters become spaces or U+FFFD, HTML
    specials become entities, Markdown punctuation is backslash-escaped
    (``|`` included, so tables keep their shape), and a word joiner after
    ``@`` / ``#`` / ``!`` ... keeps forges from making mentions or links.
    """
    out: list[str] = []
    for ch in str(text):
        ch = _clean_char(ch)
        if not ch:
            continue
        if ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == "&":
            out.append("&amp;")
        elif ch in _REFERENCE_SIGILS:
            out.append(f"\\{ch}{_WORD_JOINER}" if ch != "&" else "&amp;")
        elif ch in _MARKDOWN_SPECIALS:
            out.append(f"\\{ch}")
        else:
            out.append(ch)
    return "".join(out)


def escape_terminal(text: object) -> str:
    """Untrusted text for a terminal: no escape sequences, no line breaks."""
    return "".join(_clean_char(ch) for ch in str(text))


def short_digest(digest: str | None, length: int = 12) -> str:
    """``sha256:0123456789ab`` (escaped when it does not look like a digest)."""
    if not digest:
        return ""
    if _DIGEST_RE.match(digest):
        return digest[: len("sha256:") + length]
    return escape_markdown(digest)


def _code(digest: str | None, length: int = 12) -> str:
    if digest and _DIGEST_RE.match(digest):
        return f"`{digest[: len('sha256:') + length]}`"
    return escape_markdown(digest or "")


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 image``, ``2 images``; ``many`` for irregular plurals (``registries``)."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


# --- the verdict --------------------------------------------------------------


def summary_parts(plan: Plan) -> list[str]:
    """Counted phrases for the verdict line: ``2 images to add``, ``14 layers (1.3 GB) to ingest``."""
    parts: list[str] = []
    if plan.images_added:
        parts.append(f"{plural(plan.images_added, 'image')} to add")
    if plan.images_updated:
        parts.append(f"{plural(plan.images_updated, 'image')} to update")
    if plan.layers_to_ingest:
        size = human_size(plan.download_bytes)
        parts.append(f"{plural(plan.layers_to_ingest, 'layer')} ({size}) to ingest")
    if plan.images_removed:
        parts.append(f"{plural(plan.images_removed, 'path')} to remove")
    if plan.images_scheduled:
        parts.append(f"{plural(plan.images_scheduled, 'image')} scheduled for removal")
    if plan.layers_scheduled:
        parts.append(f"{plural(plan.layers_scheduled, 'layer')} scheduled for removal")
    if plan.unscheduled:
        parts.append(f"{plural(len(plan.unscheduled), 'scheduled removal')} cancelled")
    return parts


def verdict(plan: Plan) -> str:
    """One line: ✅ what will happen, or ❌ how many problems stop it."""
    parts = summary_parts(plan)
    errors = len(plan.errors) or plan.images_failed
    warnings = len(plan.warnings)
    if errors:
        text = f"❌ {plural(errors, 'problem')}"
        if parts:
            text += " — otherwise: " + ", ".join(parts)
        return text
    if parts:
        text = "✅ " + ", ".join(parts)
    else:
        text = "✅ No changes"
        if plan.images_unchanged:
            text += f": {plural(plan.images_unchanged, 'image')} unchanged"
    if warnings:
        text += f" ({plural(warnings, 'warning')})"
    return text


# --- Markdown -----------------------------------------------------------------


@dataclass
class _Budget:
    """Appends lines while they fit; remembers what had to be cut."""

    limit: int
    used: int = 0
    lines: list[str] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)
    reserve: int = 400  # kept free for closing tags and the "cut" note

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


def _image_row(change: ImageChange) -> str:
    platform = change.platform
    new = change.new
    old = change.old
    if change.action == "update" and new is not None and old is not None:
        digest = f"{_code(old.manifest_digest)} → {_code(new.manifest_digest)}"
    elif new is not None:
        digest = _code(new.manifest_digest)
    elif old is not None:
        digest = _code(old.manifest_digest)
    else:
        digest = ""
    action = _ACTION_LABEL[change.action]
    if change.retires is not None:
        action += f" (the path keeps working until {change.retires:%Y-%m-%d}, then it is deleted)"
    elif change.eligible is not None:
        action += f" (delete after {change.eligible:%Y-%m-%d})"
    if change.problem is not None:
        action += f": {escape_markdown(change.problem.message)}"
    size = human_size(change.download_bytes) if change.download_bytes else ""
    new_layers = str(len(change.new_layers)) if change.new_layers else ""
    cells = [
        escape_markdown(change.path),
        action,
        digest,
        escape_markdown(platform) if platform else "",
        new_layers,
        size,
    ]
    return "| " + " | ".join(cells) + " |"


_ACTION_LABEL = {
    "add": "➕ add",
    "update": "🔄 update",
    "remove": "➖ remove",
    "unchanged": "unchanged",
    "error": "❌ error",
}


def _problem_line(problem: Problem) -> str:
    where = escape_markdown(problem.location)
    icon = "❌" if problem.severity == "error" else "⚠️"
    code = f"`{problem.code}`" if _CODE_RE.match(problem.code) else escape_markdown(problem.code)
    text = f"- {icon} {code} at {where}: {escape_markdown(problem.message)}"
    if problem.image:
        text += f" (image {escape_markdown(problem.image)})"
    if problem.hint:
        text += f" — {escape_markdown(problem.hint)}"
    return text


def _layer_row(layer: LayerChange) -> str:
    digest = _code(layer.digest, 64)
    size = human_size(layer.compressed_size)
    # unknown until the layer is unpacked (registries only know the compressed size)
    unpacked = human_size(layer.unpacked_size) if layer.unpacked_size is not None else "—"
    when = f"{layer.eligible:%Y-%m-%d}" if layer.eligible else ""
    return f"| {digest} | {size} | {unpacked} | {layer.users} | {when} |"


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


def render_markdown(plan: Plan, *, budget: int = 60000, title: str = DEFAULT_TITLE) -> str:
    """The merge-request comment: marker, verdict, problems, images, layers (within ``budget``)."""
    out = _Budget(limit=budget)
    out.force(MARKER)
    out.force(f"### {escape_markdown(title)}")
    out.force("")
    out.force(f"**{verdict(plan)}**")
    out.force("")
    scope = "changed wishes only" if plan.base else "the whole wishlist"
    out.force(
        f"CernVM-FS repository {escape_markdown(plan.cvmfs_repo)} · {scope} · "
        f"grace period {plan.grace_days} days · planned {plan.now:%Y-%m-%d %H:%M} UTC"
    )
    out.force("")

    if plan.problems:
        _section(
            out,
            ["#### Problems", ""],
            (_problem_line(p) for p in plan.problems),
            [""],
            lambda n: plural(n, "problem"),
        )

    shown = [c for c in plan.images if c.action != "unchanged"]
    if shown:
        _section(
            out,
            [
                "#### Images",
                "",
                "| Image | Action | Digest | Platform | New layers | Download |",
                "| --- | --- | --- | --- | ---: | ---: |",
            ],
            (_image_row(c) for c in shown),
            [""],
            lambda n: plural(n, "image row"),
        )
    if plan.images_unchanged:
        out.add(f"{plural(plan.images_unchanged, 'image')} unchanged.")
        out.add("")

    layer_header = [
        "| Layer | Compressed | Unpacked | Users after | Delete after |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    ingest = [layer for layer in plan.layers if layer.action == "ingest"]
    if ingest:
        summary = (
            f"<details><summary>{plural(len(ingest), 'layer')} to ingest "
            f"({human_size(plan.download_bytes)})</summary>"
        )
        _section(
            out,
            [summary, "", *layer_header],
            (_layer_row(layer) for layer in ingest),
            ["", "</details>", ""],
            lambda n: f"{plural(n, 'layer')} to ingest",
        )
    scheduled = [layer for layer in plan.layers if layer.action == "schedule"]
    if scheduled:
        summary = (
            f"<details><summary>{plural(len(scheduled), 'layer')} scheduled for removal "
            f"({human_size(plan.bytes_scheduled)})</summary>"
        )
        _section(
            out,
            [summary, "", *layer_header],
            (_layer_row(layer) for layer in scheduled),
            ["", "</details>", ""],
            lambda n: f"{plural(n, 'layer')} scheduled for removal",
        )

    if out.cut:
        out.force(
            f"✂️ Cut to fit the comment size: {', '.join(out.cut)} not shown. "
            "Run `wishbot plan --json` for the full plan."
        )
    return "\n".join(out.lines).rstrip("\n") + "\n"


# --- JSON -----------------------------------------------------------------------


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with ``Z`` (naive datetimes are taken as UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _image_json(change: ImageChange) -> dict[str, object]:
    new = change.new
    old = change.old
    wish = change.wish
    platform = change.platform
    return {
        "action": change.action,
        "path": change.path,
        "published_path": change.published_path,
        "reference": str(change.reference),
        "platform": str(platform) if platform else None,
        "multiarch": change.multiarch,
        "wish": (
            {
                "reference": str(wish.reference),
                "text": wish.text,
                "path": wish.location.path,
                "line": wish.location.line,
                "column": wish.location.column,
            }
            if wish is not None
            else None
        ),
        "new": (
            {
                "manifest_digest": new.manifest_digest,
                "image_id": new.image_id,
                "layers": [
                    {"digest": layer.digest, "size": layer.size, "media_type": layer.media_type}
                    for layer in new.layers
                ],
                "compressed_size": new.compressed_size,
            }
            if new is not None
            else None
        ),
        "old": (
            {
                "manifest_digest": old.manifest_digest,
                "image_id": old.image_id,
                "layers": list(old.layers),
                "updated": iso(old.updated),
            }
            if old is not None
            else None
        ),
        "new_layers": list(change.new_layers),
        "download_bytes": change.download_bytes,
        "eligible": iso(change.eligible),
        "retires": iso(change.retires),
        "problem": change.problem.to_json() if change.problem else None,
    }


def _layer_json(layer: LayerChange) -> dict[str, object]:
    return {
        "action": layer.action,
        "digest": layer.digest,
        "compressed_size": layer.compressed_size,
        "unpacked_size": layer.unpacked_size,
        "users": layer.users,
        "eligible": iso(layer.eligible),
    }


def render_json(plan: Plan) -> dict[str, object]:
    """The plan as stable, versioned JSON (``schemas/plan.schema.json``)."""
    return {
        "schema": PLAN_SCHEMA,
        "cvmfs_repo": plan.cvmfs_repo,
        "now": iso(plan.now),
        "grace_days": plan.grace_days,
        "base": plan.base,
        "verdict": verdict(plan),
        "totals": {
            "images_added": plan.images_added,
            "images_updated": plan.images_updated,
            "images_removed": plan.images_removed,
            "images_unchanged": plan.images_unchanged,
            "images_failed": plan.images_failed,
            "images_scheduled": plan.images_scheduled,
            "layers_to_ingest": plan.layers_to_ingest,
            "download_bytes": plan.download_bytes,
            "layers_scheduled": plan.layers_scheduled,
            "has_errors": plan.has_errors,
        },
        "problems": [p.to_json() for p in plan.problems],
        "images": [_image_json(c) for c in plan.images],
        "layers": [_layer_json(layer) for layer in plan.layers],
        "unscheduled": list(plan.unscheduled),
    }


# --- terminal text --------------------------------------------------------------


def render_text(plan: Plan) -> str:
    """A compact table for a terminal (control characters neutralised)."""
    lines = [escape_terminal(verdict(plan))]
    for problem in plan.problems:
        lines.append(escape_terminal(f"  {problem}"))
    rows = [("ACTION", "IMAGE", "PLATFORM", "DIGEST", "NEW", "DOWNLOAD")]
    for change in plan.images:
        digest = change.new.manifest_digest if change.new else None
        if digest is None and change.old is not None:
            digest = change.old.manifest_digest
        platform = change.platform
        action: str = change.action
        when = change.retires or change.eligible
        if when is not None:
            action += f" (gc {when:%Y-%m-%d})"
        rows.append(
            (
                action,
                escape_terminal(change.path),
                escape_terminal(platform) if platform else "-",
                escape_terminal(short_digest(digest)) if digest else "-",
                str(len(change.new_layers)) if change.new_layers else "-",
                human_size(change.download_bytes) if change.download_bytes else "-",
            )
        )
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines.append("")
        for row in rows:
            lines.append(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
    return "\n".join(lines) + "\n"

"""Renderings of a :class:`~bot.core.plan.Plan`: versioned JSON, terminal text, the verdict.

The Markdown comment lives in :mod:`bot.core.comment` (re-exported here);
escaping, sizes and plurals in :mod:`bot.core.text`. Everything that comes
from a wishlist or a registry goes through :func:`escape_terminal` before it
reaches the text table.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.core.comment import DEFAULT_TITLE, MARKER, CommentLinks, render_markdown
from bot.core.plan import ImageChange, LayerChange, Plan
from bot.core.text import escape_markdown, escape_terminal, human_size, plural, short_digest

PLAN_SCHEMA = "wishbot-plan/1"

__all__ = [
    "DEFAULT_TITLE",
    "MARKER",
    "CommentLinks",
    "escape_markdown",
    "escape_terminal",
    "human_size",
    "plural",
    "render_markdown",
    "short_digest",
]


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
    errors = len(plan.errors) or int(plan.has_errors)
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
    rows += [_text_row(change) for change in plan.images]
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


def _text_row(change: ImageChange) -> tuple[str, str, str, str, str, str]:
    digest = change.new.manifest_digest if change.new else None
    if digest is None and change.old is not None:
        digest = change.old.manifest_digest
    platform = change.platform
    action: str = change.action
    when = change.retires or change.eligible
    if when is not None:
        action += f" (gc {when:%Y-%m-%d})"
    return (
        action,
        escape_terminal(change.path),
        escape_terminal(platform) if platform else "-",
        escape_terminal(short_digest(digest)) if digest else "-",
        str(len(change.new_layers)) if change.new_layers else "-",
        human_size(change.download_bytes) if change.download_bytes else "-",
    )

"""Text for people, in one place: escaping (Markdown, HTML, terminal), sizes, plurals, cutting.

Everything wishbot renders from untrusted text (wishlists, registries, the
publisher's tree, error messages that quote them) goes through this module.
:func:`clean` is the first step of every escaper: line breaks become spaces,
control characters U+FFFD, and every invisible format character (Unicode
category ``Cf``: the bidi controls U+061C, U+200E/F, U+202A–E, U+2066–9, zero
widths, soft hyphens, tag characters) is dropped, so what a reader sees is
what the text says.
"""

from __future__ import annotations

import re
import unicodedata

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
#: ASCII punctuation that starts inline markup in CommonMark, GFM or GitLab Flavored Markdown
#: (untrusted text never starts a line, so block markers such as ``1.`` or ``-`` are inert)
_MARKDOWN_SPECIALS = frozenset("\\`*_{}[]()!|~^$%")
#: sigils forges turn into mentions and references (@user, #12, !3, ~label, %milestone, $snippet)
_REFERENCE_SIGILS = frozenset("@#!~%$")
_WORD_JOINER = "\u2060"
_MARKDOWN_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_HTML = {**_MARKDOWN_HTML, '"': "&quot;", "'": "&#39;"}


def _clean_char(ch: str) -> str:
    if ch in "\n\r\t\v\f\u2028\u2029\x85":
        return " "
    category = unicodedata.category(ch)
    if category == "Cf":
        return ""  # bidi controls, zero widths, soft hyphen, tag characters: invisible
    if category in ("Cc", "Cs", "Co", "Cn"):
        return "\ufffd"
    return ch


def clean(text: object) -> str:
    """One line of visible text: no line breaks, control or invisible format characters."""
    return "".join(_clean_char(ch) for ch in str(text))


def escape_markdown(text: object) -> str:
    """Untrusted text as inert Markdown: no markup, HTML, links, mentions or cell breaks.

    After :func:`clean`, HTML specials become entities, Markdown punctuation
    is backslash-escaped (``|`` included, so tables keep their shape), and a
    word joiner after ``@`` / ``#`` / ``!`` ... keeps forges from making
    mentions or references, inside ``://`` and ``www.`` from making links.
    """
    out: list[str] = []
    for ch in clean(text):
        if ch in _MARKDOWN_HTML:
            out.append(_MARKDOWN_HTML[ch])
        elif ch in _REFERENCE_SIGILS:
            out.append(f"\\{ch}{_WORD_JOINER}")
        elif ch in _MARKDOWN_SPECIALS:
            out.append(f"\\{ch}")
        else:
            out.append(ch)
    return _no_autolinks("".join(out))


_AUTOLINK_RE = re.compile(r"(?i)(:)(//)|\b(www)(\.)")


def _no_autolinks(text: str) -> str:
    """A word joiner in ``://`` and ``www.`` so forges make no bare links (GFM autolinks)."""
    return _AUTOLINK_RE.sub(lambda m: _WORD_JOINER.join(g for g in m.groups() if g), text)


def code_span(text: object) -> str:
    """Untrusted text as a Markdown code span: shown as typed, never a link or a mention.

    Forges render nothing inside code (no emphasis, autolinks, mentions or
    references), so names and paths keep their ``*``, ``@`` and ``:`` and can
    be copied. The fence is longer than any run of backticks inside; ``|`` is
    escaped so the span is safe in a table cell (GFM removes the backslash).
    """
    body = clean(text).replace("|", "\\|")
    if not body.strip():
        return escape_markdown(body) or "—"
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * (longest + 1)
    if body.startswith("`") or body.endswith("`"):
        body = f" {body} "
    return f"{fence}{body}{fence}"


def escape_html(text: object) -> str:
    """Untrusted text for an HTML element or a quoted attribute value."""
    return "".join(_HTML.get(ch, ch) for ch in clean(text))


def escape_terminal(text: object) -> str:
    """Untrusted text for a terminal: no escape sequences, no line breaks, no bidi tricks."""
    return clean(text)


def is_digest(text: str | None) -> bool:
    return bool(text) and _DIGEST_RE.match(text or "") is not None


def short_digest(digest: str | None, length: int = 12) -> str:
    """``sha256:`` and the first ``length`` hex digits (untrusted text otherwise, cleaned)."""
    if not digest:
        return ""
    if is_digest(digest):
        return digest[: len("sha256:") + length]
    return clean(digest)


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


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 image``, ``2 images``; ``many`` for irregular plurals (``registries``)."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def cut(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters, ending in an ellipsis when cut."""
    text = " ".join(clean(text).split())
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + "…"


def join_words(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]

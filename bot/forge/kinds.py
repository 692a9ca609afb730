"""The forge kinds wishbot knows, in one registry.

Each kind's webhook, CI and token knowledge lives in its own module
(:mod:`bot.forge.gitlab_events`, :mod:`bot.forge.github_events`) as a
:class:`~bot.forge.events_model.ForgeKindSpec`; a new forge is one such
module and one line in :data:`SPECS`. ``local`` (a git repository on disk)
has no webhooks, no CI and no token.
"""

from __future__ import annotations

from typing import Literal, get_args

from bot.forge import github_events, gitlab_events
from bot.forge.events_model import ForgeKindSpec

ForgeKind = Literal["gitlab", "github", "local"]
FORGE_KINDS: tuple[str, ...] = get_args(ForgeKind)

#: the forge kinds that send webhooks and run CI jobs, in the order they are tried
SPECS: dict[str, ForgeKindSpec] = {
    spec.kind: spec for spec in (gitlab_events.SPEC, github_events.SPEC)
}


def spec_of(kind: str) -> ForgeKindSpec | None:
    """The spec of forge ``kind`` (None for ``local`` and unknown kinds)."""
    return SPECS.get(kind)


def specs(only: str = "") -> list[ForgeKindSpec]:
    """Every spec, or only ``only``'s when a forge kind is configured."""
    return [spec for kind, spec in SPECS.items() if only in ("", kind)]

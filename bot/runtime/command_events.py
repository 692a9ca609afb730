"""Webhook payloads for comment commands and the dashboard, as neutral events.

Each forge kind parses its own deliveries (``parse_command`` of
:mod:`bot.forge.gitlab_events` and :mod:`bot.forge.github_events`): a GitLab note on a merge request (``Note
Hook``, ``object_kind: note``, ``noteable_type: MergeRequest``), a GitHub
``issue_comment`` on a pull request, and an edit of an issue's body (GitLab
``Issue Hook`` with ``changes.description``, GitHub ``issues`` ``edited``
with ``changes.body.from``) that may be the dashboard.

Only a *new* comment can be a command: GitLab notes carry ``action``
(``create`` / ``update``, docs "Webhook events", Comment events), GitHub
``issue_comment`` has ``created`` / ``edited`` / ``deleted``. An edit is
parsed (``created=False``) so the rules can say why it is not run.
Payloads are untrusted beyond *which* comment or issue: the handler reads
permissions and issue bodies back from the forge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.core.commands import CommentEvent
from bot.forge.events_model import MAX_BODY as MAX_BODY
from bot.forge.events_model import DashboardEdit
from bot.forge.kinds import specs


@dataclass(frozen=True)
class WaitingPublication:
    """A publication was queued while ``behind`` runs: its status says so (``pending``)."""

    forge: str
    repository: str
    branch: str
    sha: str
    behind: str

    @property
    def key(self) -> str:
        return f"waiting:{self.repository}:{self.branch}:{self.sha}"


CommandDelivery = CommentEvent | DashboardEdit | WaitingPublication


def parse_command_delivery(headers: Mapping[str, str], body: bytes) -> CommandDelivery | None:
    """The comment or issue edit of one (authenticated) delivery, as the forge
    kind that sent it parses it (:attr:`ForgeKindSpec.parse_command`); None for
    anything else."""
    for spec in specs():
        name = spec.event_name(headers)
        if not name:
            continue
        try:
            payload = json.loads(body)
            return spec.parse_command(name, payload) if isinstance(payload, dict) else None
        except (KeyError, TypeError, AttributeError, ValueError):
            return None
    return None


def to_payload(event: CommandDelivery) -> dict[str, Any]:
    """The event as a queue job's payload (JSON)."""
    if isinstance(event, CommentEvent):
        return {"event": "comment", **event.__dict__}
    if isinstance(event, WaitingPublication):
        return {"event": "waiting", **event.__dict__}
    return {"event": "dashboard", **event.__dict__}


def from_payload(payload: Mapping[str, Any]) -> CommandDelivery:
    """The event back from a queue job's payload."""
    fields = {k: v for k, v in payload.items() if k != "event"}
    if payload.get("event") == "comment":
        return CommentEvent(**fields)
    if payload.get("event") == "waiting":
        return WaitingPublication(**fields)
    return DashboardEdit(**fields)

"""Webhook deliveries turned into neutral events.

Each forge kind reads its own payloads (:mod:`bot.forge.kinds`); this finds
the kind whose event header the delivery carries and decodes the body once.
The models live in :mod:`bot.forge.events_model` (re-exported here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from bot.forge.events_model import ZERO_SHA, Event, Ignored, MergeRequestEvent, PushEvent, header
from bot.forge.kinds import specs

__all__ = [
    "ZERO_SHA",
    "Event",
    "Ignored",
    "MergeRequestEvent",
    "PushEvent",
    "header",
    "parse_event",
]


def parse_event(headers: Mapping[str, str], body: bytes) -> Event | Ignored:
    """The neutral event of one (already authenticated) webhook delivery."""
    spec = next((s for s in specs() if s.event_name(headers)), None)
    if spec is None:
        return Ignored("not a GitLab or GitHub webhook")
    try:
        payload = json.loads(body)
    except ValueError:
        return Ignored("the body is not JSON")
    if not isinstance(payload, dict):
        return Ignored("the body is not a JSON object")
    try:
        return spec.parse_event(headers, payload)
    except (KeyError, TypeError, AttributeError) as exc:
        return Ignored(f"malformed payload (missing {exc})")

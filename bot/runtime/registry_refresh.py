"""Registry events in ``wishbot serve``: intake on ``/hooks/registry/<format>`` and
the ``refresh`` job that re-publishes what they may concern.

Intake (on the server's bounded HTTP handler, with the forge webhooks' limits:
body size, connections, time, replayed bodies dropped):

1. the format's authentication (:mod:`bot.runtime.registry_events`);
2. parse; deletions are logged and nothing more;
3. only tags of allow-listed ``registry/repository`` globs
   (``registry_events``) are kept — the only gate for Docker Hub, which
   cannot authenticate;
4. one ``refresh`` job per wishlist repository, *debounced*: it waits
   ``registry_event_debounce`` seconds and every event arriving meanwhile
   adds its tags to it (a pipeline pushing 30 tags is one run).

The job runs on the single publish worker: it reads the wishlist of the
default branch, re-resolves only the wishes the tags may concern through the
normal registry client and policy, publishes only what really changed (one
transaction per image) and commits the refreshed catalog.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from prometheus_client import Counter, Histogram

from bot.config import Config
from bot.errors import ConfigError
from bot.forge.base import Forge
from bot.runtime import registry_events as events
from bot.runtime import wish_requests
from bot.runtime.actions import Refresh, encode
from bot.runtime.journal import Journal
from bot.runtime.logs import Throttle, fields
from bot.runtime.metrics import Metrics
from bot.runtime.pipeline_api import Pipeline
from bot.runtime.queue import Job, Queue
from bot.runtime.workflow import (
    PUBLISH,
    Outcome,
    StatusSet,
    commit_catalog,
    guarded_publication,
)

log = logging.getLogger(__name__)

RESULTS = ("received", "accepted", "refused", "ignored", "duplicate")
MAX_LOGGED = 20  # hints named in one log line


class RegistryEvents:
    """Authenticate, parse, filter and queue registry events; count them."""

    def __init__(self, config: Config, queue: Queue, metrics: Metrics, *, token: str, secret: str):
        self.config = config
        self.queue = queue
        self._token = token
        self._secret = secret
        self._refusals = Throttle()
        self.events = Counter(
            "wishbot_registry_events",
            "Registry event deliveries by source (format) and result.",
            ["source", "result"],
            registry=metrics.registry,
        )
        self.latency = Histogram(
            "wishbot_registry_event_to_published_seconds",
            "Seconds from the first registry event of a refresh run to its publication.",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600),
            registry=metrics.registry,
        )
        for source in events.FORMATS:
            for result in RESULTS:
                self.events.labels(source, result)
        if self.enabled and not token:
            log.warning(
                "registry events: WISHBOT_REGISTRY_EVENT_TOKEN is not set; distribution and "
                "Harbor events will be refused (GitHub's are checked with the webhook secret, "
                "Docker Hub's only against registry_events)"
            )

    @property
    def enabled(self) -> bool:
        return bool(self.config.registry_events) and bool(self.config.repositories)

    def may_be_authentic(self, fmt: str, headers: Mapping[str, str]) -> bool:
        return self.enabled and events.may_be_authentic(
            fmt, headers, token=self._token, secret=self._secret
        )

    def intake(
        self, fmt: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """One delivery: the HTTP status, the JSON answer, and facts for the log line."""
        status, answer, facts = self._intake(fmt, headers, body)
        return status, answer, dict(facts, source=fmt)

    def _intake(
        self, fmt: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        if not events.authentic(fmt, headers, body, token=self._token, secret=self._secret):
            return HTTPStatus.UNAUTHORIZED, {"error": "bad or missing token/signature"}, {}
        try:
            parsed = events.parse(fmt, headers, body)
        except events.BadEvent as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}, {}
        for hint in parsed.deleted[:MAX_LOGGED]:
            log.info(
                "registry event: tag deleted upstream; nothing is removed here",
                extra=fields(source=fmt, image=hint.image),
            )
        allowed, refused, facts = self._sorted(parsed)
        if refused and not allowed:
            answer = {"error": "registry or repository is not allow-listed"}
            return HTTPStatus.FORBIDDEN, answer, facts
        if not allowed:
            return HTTPStatus.OK, {"status": "ignored", "reason": "no tag pushed"}, facts
        return self._queue(fmt, headers, body, [h.image for h in allowed], facts)

    def _sorted(
        self, parsed: events.Parsed
    ) -> tuple[list[events.TagHint], list[events.TagHint], dict[str, Any]]:
        """The pushed tags allow-listed by ``registry_events``, those refused, and the facts."""
        allowed = [h for h in parsed.pushed if events.allowed(h, self.config.registry_events)]
        refused = [h for h in parsed.pushed if h not in allowed]
        facts: dict[str, Any] = {"tags": len(allowed)}
        if refused:
            facts["refused"] = [h.image for h in refused[:MAX_LOGGED]]
        return allowed, refused, facts

    def _queue(
        self,
        fmt: str,
        headers: Mapping[str, str],
        body: bytes,
        images: list[str],
        facts: dict[str, Any],
    ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        digest = events.delivery_key(fmt, headers, body)
        result = "queued"
        for repository in self.config.repositories:
            action = Refresh(self.config.forge, repository, tuple(images), time.time())
            result = self.queue.put_merged(
                *encode(action),
                merge="images",
                limit=max(self.config.registry_event_max_tags, 1),
                digest=f"{digest}:{repository}",
                delay=max(self.config.registry_event_debounce, 0.0),
            )
        status = HTTPStatus.OK if result == "duplicate" else HTTPStatus.ACCEPTED
        return status, {"status": result}, dict(facts, images=images[:MAX_LOGGED])

    def note(
        self, fmt: str, status: int, answer: Mapping[str, Any], facts: Mapping[str, Any]
    ) -> None:
        """Count every delivery, and log it in one line; refusals (anyone can cause
        them) are throttled in the log."""
        result = "refused"
        if status == HTTPStatus.ACCEPTED:
            result = "accepted"
        elif status == HTTPStatus.OK:
            result = "ignored" if answer.get("status") == "ignored" else "duplicate"
        self.events.labels(fmt, "received").inc()
        self.events.labels(fmt, result).inc()
        line = dict(
            facts, source=fmt, status=status, result=answer.get("status") or answer.get("error")
        )
        if status >= 400:
            shown, held = self._refusals.allow()
            if not shown:
                return
            if held:
                line["not_logged"] = held
        log.info("registry event", extra=fields(**line))

    def finished(self, job: Job, outcome: Outcome) -> None:
        """Time from the run's first event to its publication."""
        received = job.payload.get("received")
        if outcome.action == "published" and isinstance(received, (int, float)):
            self.latency.observe(max(time.time() - received, 0.0))


def run_refresh(
    action: Refresh, forge: Forge, pipeline: Pipeline, config: Config, journal: Journal | None
) -> Outcome:
    """The ``refresh`` job: re-publish, from the default branch's wishlist, the
    wishes the job's tags may concern (every wish when they overflowed)."""
    images = None if action.overflow else list(action.images)
    refresh = getattr(pipeline, "refresh", None)
    if refresh is None:
        raise ConfigError("this pipeline cannot re-publish on registry events")
    default, head = forge.default_branch()
    wishlist = forge.read_file(config.wishlist_path, head)
    if wishlist is None:
        return Outcome("skipped", f"{config.wishlist_path} does not exist on {default}", head)
    publication = guarded_publication(
        lambda: refresh(wishlist, config.wishlist_path, head, images),
        head,
        what="refresh of",
        failed="re-publication failed",
    )
    catalog_commit = commit_catalog(forge, config, default, head, publication)
    if not publication.ok:
        StatusSet(forge, journal or Journal(), head, default).set(
            PUBLISH,
            "failure",
            f"registry event: {publication.failure or publication.description}",
        )
        detail = publication.failure or publication.description
        return Outcome("failed", detail, head, True, catalog_commit, ok=False)
    wish_requests.note_republished(config, forge, publication)
    done = "published" if publication.published or catalog_commit else "skipped"
    return Outcome(done, publication.description, head, False, catalog_commit)


def registry_token() -> str:
    """The token distribution's and Harbor's endpoints send (``WISHBOT_REGISTRY_EVENT_TOKEN``)."""
    return os.environ.get("WISHBOT_REGISTRY_EVENT_TOKEN", "").strip()

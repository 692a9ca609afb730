"""The poller: review merge requests whose head moved, publish when the default branch moved.

For forges that cannot send webhooks to the bot. The last head seen per
merge request and of the default branch is remembered in a JSON file in
the state directory, so a restart does not redo finished work.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from bot.config import Config
from bot.errors import WishbotError
from bot.forge.base import Forge, MergeRequest
from bot.runtime.actions import Maintain, Publish, Review
from bot.runtime.commands import poll_commands, refresh_dashboard_quietly
from bot.runtime.dispatch import Deps, dispatch
from bot.runtime.journal import Journal
from bot.runtime.pipeline_api import Pipeline
from bot.runtime.workflow import Outcome

log = logging.getLogger(__name__)


class Watcher:
    def __init__(
        self,
        forge: Forge,
        pipeline: Pipeline,
        config: Config,
        journal: Journal,
        state: Path,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.forge = forge
        self.pipeline = pipeline
        self.config = config
        self.journal = journal
        self.state_file = state
        self.clock = clock
        self.seen: dict[str, str] = self._load()

    @property
    def _deps(self) -> Deps:
        # a failed publication is retried at the next poll
        return Deps(self.forge, self.pipeline, self.config, self.journal, retried=True)

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.seen, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.state_file)

    def poll_once(self) -> list[Outcome]:
        """One round: every moved merge request, maintenance when due, then the
        default branch; each is an action handed to :func:`dispatch`."""
        outcomes = self._review_moved()
        outcomes += self._maintain()
        outcomes += self._publish_moved()
        return outcomes

    def _review_moved(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        mrs = self.forge.open_merge_requests()
        outcomes += self._commands(mrs)
        for mr in mrs:
            key = f"mr:{mr.number}"
            # a retargeted request (new base branch, same head) is reviewed again
            target = self.seen.get(f"{key}:target", mr.target_branch)
            if self.seen.get(key) == mr.head_sha and target == mr.target_branch:
                continue
            review = Review(self.forge.kind, self.forge.repository, mr.number, merge_request=mr)
            try:
                outcomes.append(dispatch(review, self._deps))
            except WishbotError as exc:
                log.warning("review of %s failed: %s (will retry)", mr.number, exc)
                continue
            self.seen[key] = mr.head_sha
            self.seen[f"{key}:target"] = mr.target_branch
            self._save()
        return outcomes

    def _publish_moved(self) -> list[Outcome]:
        branch, head = self.forge.default_branch()
        key = f"branch:{branch}"
        if self.seen.get(key) == head:
            return []
        try:
            publish = Publish(self.forge.kind, self.forge.repository, branch, head)
            outcome = dispatch(publish, self._deps)
        except WishbotError as exc:
            log.warning("publishing %s failed: %s (will retry)", head[:12], exc)
            return []
        refresh_dashboard_quietly(self.forge, self.config, outcome)
        if not outcome.retry:
            self.seen[key] = outcome.sha or head
            # the bot's own catalog commit needs no publication of its own
            on_branch = self.config.catalog_branch in ("", branch)
            if (
                outcome.catalog_commit
                and on_branch
                and self.forge.default_branch()[1] == outcome.catalog_commit
            ):
                self.seen[key] = outcome.catalog_commit
            self._save()
        return [outcome]

    def _commands(self, mrs: list[MergeRequest]) -> list[Outcome]:
        """Comment commands and dashboard boxes (bot/runtime/commands), when enabled
        (``watch_commands``); a failure is logged and retried next round."""
        if not self.config.watch_commands:
            return []
        try:
            found = poll_commands(
                self.forge, self.pipeline, self.config, self.journal, mrs, self.seen
            )
        except WishbotError as exc:
            log.warning("reading comment commands failed: %s (will retry)", exc)
            return []
        self._save()
        return found

    def _maintain(self) -> list[Outcome]:
        """Every ``reapply_interval`` seconds: re-publish (tags move upstream) and gc."""
        interval = self.config.reapply_interval
        if interval <= 0:
            return []
        now = self.clock()
        last = float(self.seen.get("maintained", "nan"))
        if last != last:  # first round: start the clock
            self.seen["maintained"] = repr(now)
            self._save()
            return []
        if now - last < interval:
            return []
        try:
            maintain = Maintain(self.forge.kind, self.forge.repository)
            outcome = dispatch(maintain, self._deps)
        except WishbotError as exc:
            log.warning("maintenance failed: %s (will retry)", exc)
            return []
        self.seen["maintained"] = repr(now)
        self._save()
        return [outcome]

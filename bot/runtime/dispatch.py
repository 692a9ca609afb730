"""One dispatcher: every runtime hands its :data:`~bot.runtime.actions.Action` here.

``serve`` (a queued job), ``ci`` (the CI variables) and ``watch`` (a poll)
build an action and call :func:`dispatch` with what it needs (:class:`Deps`);
a router keyed by the action's type picks the workflow step. A new kind of
work is one action type and one handler in :data:`ROUTES`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from bot.config import Config
from bot.errors import WishbotError
from bot.forge.base import Forge
from bot.runtime.actions import Action, Command, Maintain, Publish, Refresh, Review
from bot.runtime.commands import Enqueue, run_command_job
from bot.runtime.journal import Journal
from bot.runtime.pipeline_api import Pipeline
from bot.runtime.registry_refresh import run_refresh
from bot.runtime.workflow import Outcome, on_merge_request, on_push, on_schedule


@dataclass(frozen=True)
class Deps:
    """What a handler works with.

    ``retried`` says the caller runs a failed publication again (its status
    says so); ``job_url`` is the CI job's page; ``deadline`` bounds a review's
    total time in seconds (0: unbounded; a publication is bounded by its lease
    renewal instead, it may legitimately take hours)."""

    forge: Forge
    pipeline: Pipeline
    config: Config
    journal: Journal | None = None
    retried: bool = False
    job_url: str = ""
    deadline: float = 0.0
    #: queues the work a comment command asks for (``serve`` only)
    enqueue: Enqueue | None = None


Handler = Callable[[Any, Deps], Outcome]


def dispatch(action: Action, deps: Deps) -> Outcome:
    """Do ``action``; what came of it."""
    handler = ROUTES.get(type(action))
    if handler is None:
        raise WishbotError(f"no handler for {type(action).__name__}")
    return handler(action, deps)


def review(action: Review, deps: Deps) -> Outcome:
    forge = deps.forge
    if deps.deadline > 0:
        forge = cast(Forge, DeadlineForge(forge, time.monotonic() + deps.deadline, deps.deadline))
    mr = action.merge_request or forge.merge_request(action.number)
    return on_merge_request(
        forge, deps.pipeline, mr, deps.config, deps.journal, job_url=deps.job_url
    )


def publish(action: Publish, deps: Deps) -> Outcome:
    return on_push(
        deps.forge,
        deps.pipeline,
        action.branch,
        action.sha,
        deps.config,
        deps.journal,
        retried=deps.retried,
        job_url=deps.job_url,
    )


def maintain(action: Maintain, deps: Deps) -> Outcome:
    return on_schedule(deps.forge, deps.pipeline, deps.config, deps.journal)


def refresh(action: Refresh, deps: Deps) -> Outcome:
    return run_refresh(action, deps.forge, deps.pipeline, deps.config, deps.journal)


def command(action: Command, deps: Deps) -> Outcome:
    if deps.enqueue is None or deps.journal is None:
        raise WishbotError("comment commands are answered by 'wishbot serve' (and 'watch')")
    return run_command_job(deps.forge, action.delivery, deps.config, deps.journal, deps.enqueue)


#: the router: the handler of each action type
ROUTES: dict[type, Handler] = {
    Review: review,
    Publish: publish,
    Maintain: maintain,
    Refresh: refresh,
    Command: command,
}


class DeadlineExceeded(WishbotError):
    """A job ran past its total deadline (``job_deadline``)."""

    retryable = True


class DeadlineForge:
    """A forge whose reads refuse to start once the job's deadline has passed.

    The writes that report an outcome (statuses, the comment) always go
    through, so a stopped job still ends every status it opened. Each forge
    call is bounded by the forge's own timeout, so a job ends at most one
    call after its deadline.
    """

    _REPORTING = frozenset({"set_status", "upsert_comment", "repository", "kind", "limits"})

    def __init__(self, forge: Forge, deadline: float, seconds: float):
        self._forge = forge
        self._deadline = deadline
        self._seconds = seconds

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._forge, name)
        if name in self._REPORTING or not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            if time.monotonic() > self._deadline:
                raise DeadlineExceeded(
                    f"the job ran longer than its deadline of {self._seconds:g} s",
                    hint="the forge or a registry is too slow; the job will be retried "
                    "(raise job_deadline if such jobs are expected)",
                )
            return value(*args, **kwargs)

        return call

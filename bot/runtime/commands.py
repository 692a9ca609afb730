"""Comment commands and the dashboard, handled: permission, answer, and the work to do.

One entry point, :func:`handle`, takes a neutral event (a comment on a merge
request, or an edit of an issue that may be the dashboard), checks it against
the rules in :mod:`bot.core.commands` and :mod:`bot.core.dashboard`, answers
on the forge (a reaction on every command; a short reply for help and
refusals) and returns the work it asks for as :class:`Work` values — a review
or a publication, shaped like the queue's jobs — for the caller to queue
(``serve``) or run at once (``watch``, :func:`run_now`).

- ``/wishbot plan`` on an open request: review it again (the one plan comment
  is edited);
- ``/wishbot retry`` on a merged request (or any request, for the default
  branch): publish the default branch's head again when its last publication
  did not succeed;
- a ticked dashboard box: ``retry <wish>`` publishes again (a publication is
  of the whole wishlist, so the wish is retried with the others), ``re-plan
  everything`` reviews every open request again. Acted-on boxes are unticked.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.config import Config
from bot.core import dashboard
from bot.core.catalog import CATALOG_JSON
from bot.core.commands import (
    Command,
    CommentEvent,
    Permission,
    allows,
    decide,
    help_text,
    refusal_text,
    required_permission,
    screen,
)
from bot.core.text import code_span, cut
from bot.errors import WishbotError
from bot.forge.base import Forge, Issue, MergeRequest
from bot.runtime.command_events import CommandDelivery, DashboardEdit, WaitingPublication
from bot.runtime.journal import Journal
from bot.runtime.pipeline_api import Pipeline
from bot.runtime.workflow import (
    PUBLISH,
    Outcome,
    StatusSet,
    catalog_path,
    on_merge_request,
    on_push,
)

log = logging.getLogger(__name__)

#: the queue's job kinds (bot.runtime.server REVIEW / PUBLISH)
REVIEW_JOB = "review"
PUBLISH_JOB = "publish"
COMMAND_JOB = "command"


@dataclass(frozen=True)
class Work:
    """One job a command asks for, as the queue takes it (kind, key, payload)."""

    kind: str
    key: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Handled:
    """What came of one event: ``verdict`` is ignore, help, refuse, run or nothing
    (run, but there was nothing to do), ``reason`` says why."""

    verdict: str
    reason: str
    work: tuple[Work, ...] = field(default_factory=tuple)


def review_work(forge: Forge, number: str) -> Work:
    payload = {"forge": forge.kind, "repository": forge.repository, "number": number}
    return Work(REVIEW_JOB, f"review:{forge.repository}:{number}", payload)


def publish_work(forge: Forge, branch: str, sha: str) -> Work:
    payload = {"forge": forge.kind, "repository": forge.repository, "branch": branch, "sha": sha}
    return Work(PUBLISH_JOB, f"publish:{forge.repository}:{branch}", payload)


def handle(
    forge: Forge,
    event: CommandDelivery,
    config: Config,
    journal: Journal | None = None,
    *,
    seen: bool = False,
) -> Handled:
    """Answer one comment or dashboard edit and say what work it asks for."""
    if isinstance(event, CommentEvent):
        return handle_comment(forge, event, config, journal, seen=seen)
    if isinstance(event, WaitingPublication):
        return announce_waiting(forge, event, journal)
    return handle_dashboard_edit(forge, event, config)


def announce_waiting(
    forge: Forge, event: WaitingPublication, journal: Journal | None = None
) -> Handled:
    """``pending`` "queued behind …" on a publication waiting for another job, unless
    its publication has started or finished meanwhile (then its status says so)."""
    if journal is not None and journal.get(forge.repository, event.sha, PUBLISH) is not None:
        return Handled("ignore", "its publication has started")
    text = f"queued behind {cut(event.behind, 80)}"
    _announce(forge, journal, event.branch, event.sha, text)
    return Handled("run", text)


def handle_comment(
    forge: Forge,
    event: CommentEvent,
    config: Config,
    journal: Journal | None = None,
    *,
    seen: bool = False,
) -> Handled:
    command, why = screen(event, forge.bot_user(), seen)
    if command is None:
        return Handled("ignore", why)
    need = required_permission(config.command_permission)
    mr = forge.merge_request(event.number)
    if command.name == "help":
        forge.react(mr, event.comment_id, "eyes")
        forge.add_comment(mr, help_text(need, command.unknown))
        return Handled("help", "help asked" if not command.unknown else "unknown command")
    have = forge.permission(event.author, event.author_id)
    decision = decide(command, have, need)
    if decision.verdict == "refuse":
        forge.react(mr, event.comment_id, "confused")
        forge.add_comment(mr, refusal_text(command, event.author, need))
        return Handled("refuse", decision.reason)
    return _run(forge, mr, event, command, journal)


def _run(
    forge: Forge, mr: MergeRequest, event: CommentEvent, command: Command, journal: Journal | None
) -> Handled:
    if command.name == "plan":
        if mr.state != "open":
            forge.react(mr, event.comment_id, "confused")
            forge.add_comment(mr, f"`/wishbot plan`: this request is {mr.state}; nothing to plan.")
            return Handled("nothing", f"merge request {mr.number} is {mr.state}")
        forge.react(mr, event.comment_id, "+1")
        return Handled("run", "re-plan", (review_work(forge, mr.number),))
    branch, head = forge.default_branch()
    if _published(forge, journal, head):
        forge.react(mr, event.comment_id, "confused")
        forge.add_comment(
            mr,
            f"`/wishbot retry`: the last publication of {code_span(head[:12])} succeeded; "
            "nothing to retry.",
        )
        return Handled("nothing", f"{head[:12]} is published")
    forge.react(mr, event.comment_id, "+1")
    _announce(forge, journal, branch, head, f"queued: retry asked by {cut(event.author, 60)}")
    return Handled("run", "retry the publication", (publish_work(forge, branch, head),))


def _published(forge: Forge, journal: Journal | None, head: str) -> bool:
    """Whether the default branch's head is known (to this bot) to be published; when
    it is not known, a retry publishes it (publishing again is harmless)."""
    if journal is None:
        return False
    record = journal.get(forge.repository, head, PUBLISH)
    return record is not None and record.state == "success"


def _announce(forge: Forge, journal: Journal | None, branch: str, head: str, text: str) -> None:
    """A ``pending`` status saying the publication waits in the queue (never ``failed``)."""
    StatusSet(forge, journal or Journal(), head, branch).set(PUBLISH, "pending", text)


# --- the dashboard -----------------------------------------------------------


def handle_dashboard_edit(forge: Forge, event: DashboardEdit, config: Config) -> Handled:
    bot = forge.bot_user()
    if bot and event.editor.lower() == bot.lower():
        return Handled("ignore", "the bot's own edit")
    issue = _dashboard_issue(forge, bot or "", event.number)
    if issue is None:
        return Handled("ignore", "not the dashboard")
    actions = dashboard.ticked(event.before, issue.body)
    if not actions:
        return Handled("ignore", "no box ticked")
    need = required_permission(config.command_permission)
    have: Permission = forge.permission(event.editor, event.editor_id)
    if not allows(have, need):
        return Handled("refuse", f"{event.editor} needs {need}, has {have}")
    work = dashboard_work(forge, actions)
    forge.edit_issue(issue.number, untick(issue.body, actions))
    return Handled("run", ", ".join(_describe(a) for a in actions), work)


def _dashboard_issue(forge: Forge, bot: str, number: str) -> Issue | None:
    """Issue ``number`` when it is the bot's dashboard (its own issue, marker first)."""
    for issue in forge.open_issues(bot):
        if issue.number == number and issue.body.startswith(dashboard.MARKER):
            return issue
    return None


def dashboard_work(forge: Forge, actions: list[dashboard.DashboardAction]) -> tuple[Work, ...]:
    work: list[Work] = []
    if any(a.kind == "retry" for a in actions):
        branch, head = forge.default_branch()
        work.append(publish_work(forge, branch, head))
    if any(a.kind == "replan" for a in actions):
        work += [review_work(forge, mr.number) for mr in forge.open_merge_requests()]
    return tuple(work)


def _describe(action: dashboard.DashboardAction) -> str:
    return f"retry {action.wish}" if action.kind == "retry" else "re-plan everything"


_TICKED = re.compile(r"^(\s*[-*] )\[[xX]\]( .*)$")


def untick(body: str, actions: list[dashboard.DashboardAction]) -> str:
    """The body with the boxes acted on unticked again (ready for the next time)."""
    wanted = set(actions)
    lines = []
    for line in body.split("\n"):
        match = _TICKED.match(line) if len(line) <= dashboard.MAX_BOX_LINE else None
        if match and dashboard.box_action(match.group(2).strip()) in wanted:
            line = f"{match.group(1)}[ ]{match.group(2)}"
        lines.append(line)
    return "\n".join(lines)


def refresh_dashboard(
    forge: Forge,
    config: Config,
    outcome: Outcome,
    *,
    now: str,
    queue: Mapping[str, int] | None = None,
) -> str:
    """Render the dashboard after a publication (or maintenance) and upsert the issue;
    returns its number. Failing wishes keep the date they first failed."""
    bot = forge.bot_user() or ""
    before = next(
        (i.body for i in forge.open_issues(bot) if i.body.startswith(dashboard.MARKER)), ""
    )
    failed = outcome.action == "failed" or not outcome.ok
    failing = dashboard.failing_from(outcome.detail, now, before) if failed else ()
    result = f"{outcome.action}: {outcome.detail}" if outcome.detail else outcome.action
    state = dashboard.DashboardState(
        failing=failing,
        retiring=dashboard.retiring_from(_catalog(forge, config)),
        last_publication=dashboard.Publication(outcome.sha, result, now),
        queue=tuple(f"{n} {state}" for state, n in sorted((queue or {}).items()) if n),
    )
    body = dashboard.render(state, forge.limits.issue_chars)
    return forge.upsert_issue(dashboard.MARKER, dashboard.TITLE, body)


def _catalog(forge: Forge, config: Config) -> object:
    branch = config.catalog_branch or forge.default_branch()[0]
    data = forge.read_file(catalog_path(config, CATALOG_JSON), branch)
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def refresh_dashboard_quietly(
    forge: Forge, config: Config, outcome: Outcome, queue: Mapping[str, int] | None = None
) -> None:
    """:func:`refresh_dashboard` when configured (``dashboard``), for publication
    outcomes; a failure is logged, never the job's."""
    if not config.dashboard or outcome.action not in (
        "published",
        "failed",
        "waiting",
        "maintained",
    ):
        return
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        refresh_dashboard(forge, config, outcome, now=now, queue=queue)
    except WishbotError as exc:
        log.warning("could not update the dashboard of %s: %s", forge.repository, exc)


# --- running the work --------------------------------------------------------


def run_now(
    forge: Forge, pipeline: Pipeline, config: Config, journal: Journal, work: Work
) -> Outcome:
    """Do one piece of work at once (``watch`` has no queue)."""
    if work.kind == REVIEW_JOB:
        mr = forge.merge_request(str(work.payload["number"]))
        return on_merge_request(forge, pipeline, mr, config, journal)
    return on_push(
        forge,
        pipeline,
        str(work.payload["branch"]),
        str(work.payload["sha"]),
        config,
        journal,
        retried=True,
    )


def poll_commands(
    forge: Forge,
    pipeline: Pipeline,
    config: Config,
    journal: Journal,
    mrs: list[MergeRequest],
    seen: dict[str, str],
) -> list[Outcome]:
    """``watch``: the commands in comments newer than the last seen one on each request
    (and on the merged request of the default branch's head), and the boxes ticked on
    the dashboard since the bot last saw it; their work is done at once.

    ``seen`` is the watcher's memory (updated here). A request seen for the first time
    only sets the mark: comments older than the bot's first look are never run, and
    neither is an edited one (its id is not new)."""
    outcomes: list[Outcome] = []
    merged = forge.merge_request_for_commit(forge.default_branch()[1])
    for mr in [*mrs, *([merged] if merged is not None else [])]:
        for event in _new_comments(forge, mr, seen):
            outcomes += _do(forge, pipeline, config, journal, handle(forge, event, config, journal))
    outcomes += _poll_dashboard(forge, pipeline, config, journal, seen)
    return outcomes


def _new_comments(forge: Forge, mr: MergeRequest, seen: dict[str, str]) -> list[CommentEvent]:
    key = f"comments:{mr.number}"
    comments = forge.comments(mr)
    newest = max((int(c.id) for c in comments if c.id.isdigit()), default=0)
    last = seen.get(key)
    seen[key] = str(max(newest, int(last or 0)))
    if last is None:
        return []
    return [
        CommentEvent(forge.kind, forge.repository, mr.number, c.id, c.author, c.author_id, c.body)
        for c in comments
        if c.id.isdigit() and int(c.id) > int(last)
    ]


def _poll_dashboard(
    forge: Forge, pipeline: Pipeline, config: Config, journal: Journal, seen: dict[str, str]
) -> list[Outcome]:
    """Ticked boxes, against the body the bot saw last. Polling cannot tell who ticked:
    the forge's own rule on who may edit the issue is the check here."""
    bot = forge.bot_user() or ""
    issue = next((i for i in forge.open_issues(bot) if i.body.startswith(dashboard.MARKER)), None)
    if issue is None:
        return []
    before = seen.get("dashboard", issue.body)
    actions = dashboard.ticked(before, issue.body)
    body = untick(issue.body, actions) if actions else issue.body
    if actions:
        forge.edit_issue(issue.number, body)
    seen["dashboard"] = body
    work = dashboard_work(forge, actions) if actions else ()
    return _do(forge, pipeline, config, journal, Handled("run", "dashboard", work))


def _do(
    forge: Forge, pipeline: Pipeline, config: Config, journal: Journal, handled: Handled
) -> list[Outcome]:
    return [run_now(forge, pipeline, config, journal, work) for work in handled.work]


Enqueue = Callable[[str, str, Mapping[str, Any]], str]


def run_command_job(
    forge: Forge,
    event: CommandDelivery,
    config: Config,
    journal: Journal,
    enqueue: Enqueue,
) -> Outcome:
    """The ``command`` job of ``serve``: handle the event, queue the work it asks for."""
    handled = handle(forge, event, config, journal)
    for work in handled.work:
        enqueue(work.kind, work.key, work.payload)
    return Outcome(handled.verdict, handled.reason)

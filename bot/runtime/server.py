"""The webhook server: authenticate, queue durably, answer fast, work in the background.

- ``POST /webhook`` (or ``/``): what the headers can prove is checked before
  any body byte is read (a ``Content-Length`` within ``webhook_max_body``,
  the GitLab token, the shape of GitHub's signature); the body is then read
  within its limits and GitHub's HMAC checked over it before anything is
  parsed. Replays are dropped (the same delivery id, or the same signed body
  under a new id within ``webhook_replay_window``); only allow-listed
  repositories are accepted; the event is queued and the request answered.
  Connections and their time are bounded (:mod:`bot.runtime.httpd`).
- workers: several review (plan) workers in parallel, ONE publish worker so
  publications never overlap. A running job's lease is renewed while it runs,
  so it is never handed to a second worker; a review has a total deadline.
- one log line per delivery and per job (:mod:`bot.runtime.logs`);
  ``GET /healthz`` and ``GET /metrics`` (:mod:`bot.runtime.metrics`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, cast

from bot.config import Config
from bot.core.commands import CommentEvent, screen
from bot.errors import ConfigError, WishbotError, is_retryable
from bot.forge.base import Forge
from bot.forge.kinds import spec_of, specs
from bot.publisher import open_publisher
from bot.publisher.metadata import parse_time
from bot.publisher.verify import read_status
from bot.runtime.actions import FORGE, PUBLISHER, Maintain, action_of, decode, encode, kinds_in
from bot.runtime.actions import MAINTAIN as MAINTAIN  # the job kinds, for callers of run_job
from bot.runtime.actions import PUBLISH as PUBLISH
from bot.runtime.actions import REFRESH as REFRESH
from bot.runtime.actions import REVIEW as REVIEW
from bot.runtime.command_events import (
    CommandDelivery,
    WaitingPublication,
    parse_command_delivery,
    to_payload,
)
from bot.runtime.commands import (
    COMMAND_JOB,
    Enqueue,
    refresh_dashboard_quietly,
)
from bot.runtime.dispatch import Deps, dispatch
from bot.runtime.events import Event, Ignored, MergeRequestEvent, PushEvent, parse_event
from bot.runtime.httpd import BoundedHandler, BoundedHTTPServer, Limits
from bot.runtime.journal import Journal
from bot.runtime.logs import Throttle, fields
from bot.runtime.metrics import CONTENT_TYPE, Metrics
from bot.runtime.pipeline_api import Pipeline
from bot.runtime.queue import Job, Queue, Retention
from bot.runtime.registry_events import route as registry_route
from bot.runtime.registry_refresh import RegistryEvents, registry_token
from bot.runtime.workflow import Outcome, recover

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6

ForgeFor = Callable[[str, str], Forge]


def limits_of(config: Config) -> Limits:
    """The webhook limits of ``config``; each must be positive."""
    for name in (
        "webhook_max_connections",
        "webhook_request_timeout",
        "webhook_max_body",
        "webhook_body_budget",
    ):
        if getattr(config, name) <= 0:
            raise ConfigError(
                f"{name} must be positive, not {getattr(config, name)}",
                hint=f"set WISHBOT_{name.upper()}; see docs/operating.md for the default",
            )
    return Limits(
        max_connections=config.webhook_max_connections,
        request_timeout=config.webhook_request_timeout,
        max_body=config.webhook_max_body,
        body_budget=max(config.webhook_body_budget, config.webhook_max_body),
    )


def retention_of(config: Config) -> Retention:
    return Retention(
        replay_window=config.webhook_replay_window,
        max_deliveries=config.max_deliveries,
        job_days=config.job_retention_days,
        max_finished_jobs=config.max_finished_jobs,
    )


# --- authentication ---------------------------------------------------------------


def verify(headers: Mapping[str, str], body: bytes, secret: str, forge: str = "") -> str | None:
    """Which forge signed this delivery ("gitlab"/"github"), or None if it is not authentic.

    ``forge`` (the configured forge kind) restricts the accepted scheme; the
    first kind whose credential header the delivery carries decides.
    """
    if not secret:
        return None
    spec = next((s for s in specs(forge) if s.claims(headers)), None)
    if spec is None or not spec.verify(headers, body, secret):
        return None
    return spec.kind


def may_be_authentic(headers: Mapping[str, str], secret: str, forge: str = "") -> bool:
    """What the headers alone can prove, before any body byte is read (each forge
    kind's ``may_be_authentic``); :func:`verify` decides after the body."""
    if not secret:
        return False
    spec = next((s for s in specs(forge) if s.claims(headers)), None)
    return spec is not None and spec.may_be_authentic(headers, secret)


def delivery_id(headers: Mapping[str, str], body: bytes, forge: str) -> str:
    """The delivery's unique id as ``forge`` (its signer) names it, else a hash of its body."""
    spec = spec_of(forge)
    found = spec.delivery_id(headers) if spec is not None else None
    return f"{forge}-delivery:{found}" if found else "sha256:" + hashlib.sha256(body).hexdigest()


def body_digest(headers: Mapping[str, str], body: bytes, forge: str) -> str:
    """What the signature covers, as a replay key: the event kind and the body
    (a delivery id is not signed, so a replayer can change it at will)."""
    spec = spec_of(forge)
    kind = spec.event_name(headers) if spec is not None else ""
    digest = hashlib.sha256(kind.encode() + b"\n" + body).hexdigest()
    return f"body:{digest}"


# --- the jobs --------------------------------------------------------------------


def run_job(
    job: Job,
    *,
    config: Config,
    pipeline: Pipeline,
    journal: Journal,
    forge_for: ForgeFor,
    max_attempts: int = MAX_ATTEMPTS,
    enqueue: Enqueue | None = None,
) -> Outcome:
    """Do one queued job: decode its action and hand it to :func:`dispatch`.

    A review must finish within ``config.job_deadline`` seconds; a publication
    is bounded by its lease renewal instead (it may legitimately take hours).
    """
    action = decode(job.kind, job.payload)
    deps = Deps(
        forge=forge_for(action.forge, action.repository),
        pipeline=pipeline,
        config=config,
        journal=journal,
        retried=job.attempts < max_attempts,
        deadline=max(config.job_deadline, 0.0),
        enqueue=enqueue,
    )
    return dispatch(action, deps)


def _parse(headers: Mapping[str, str], body: bytes) -> Event | CommandDelivery | Ignored:
    """The event of a delivery; else a comment command or dashboard edit
    (bot/runtime/command_events), else why it is ignored."""
    event = parse_event(headers, body)
    if isinstance(event, Ignored):
        return parse_command_delivery(headers, body) or event
    return event


def _job_facts(job: Job) -> dict[str, Any]:
    """What a log line says about a job: which repository, request, branch, commit."""
    payload = job.payload
    facts: dict[str, Any] = {"job": job.id, "kind": job.kind, "attempt": job.attempts}
    for name in ("repository", "number", "branch", "sha"):
        if name in payload:
            facts[name] = str(payload[name])
    return facts


class _Heartbeat:
    """Renews a running job's lease every third of it until stopped."""

    def __init__(self, queue: Queue, job: Job):
        self._queue = queue
        self._job = job
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(
            target=self._beat, name=f"wishbot-lease-{job.id}", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(max(self._queue.visibility / 3, 0.05)):
            try:
                if not self._queue.renew(self._job):
                    self.lost = True
                    log.warning("job lost its lease", extra=fields(**_job_facts(self._job)))
                    return
            except Exception as exc:  # the database is busy: try again next beat
                log.warning("cannot renew a job's lease: %s", type(exc).__name__)


# --- the server ------------------------------------------------------------------


class WebhookServer:
    """The HTTP listener and its workers; :meth:`start` returns once listening."""

    def __init__(
        self,
        config: Config,
        *,
        secret: str,
        queue: Queue,
        journal: Journal,
        pipeline: Pipeline,
        forge_for: ForgeFor,
        plan_workers: int = 4,
        poll: float = 0.2,
        backoff: float = 30.0,
        max_attempts: int = MAX_ATTEMPTS,
        registry_token: str = "",
    ):
        if not secret:
            raise ConfigError(
                "refusing to serve webhooks without a secret",
                hint="set WISHBOT_WEBHOOK_SECRET to the secret configured in the forge's webhook",
            )
        if not config.repositories:
            raise ConfigError(
                "refusing to serve webhooks without allow-listed repositories",
                hint="set repositories (WISHBOT_REPOSITORIES=owner/name,...)",
            )
        self.config = config
        self.limits = limits_of(config)
        self.queue = queue
        self.journal = journal
        self.pipeline = pipeline
        self.forge_for = forge_for
        self._secret = secret
        self._allowed = {r.lower() for r in config.repositories}
        self._plan_workers = max(plan_workers, 1)
        self._poll = poll
        self._backoff = backoff
        self._max_attempts = max(max_attempts, 1)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._httpd: BoundedHTTPServer | None = None
        self._refusals = Throttle()
        self.metrics = Metrics(self.queue.counts, self._open_connections, self._verify_gauges)
        self.registry = RegistryEvents(
            config, queue, self.metrics, token=registry_token, secret=secret
        )

    def __repr__(self) -> str:
        return f"WebhookServer(listen={self.config.listen!r})"

    def _open_connections(self) -> int:
        return self._httpd.open_connections if self._httpd is not None else 0

    @property
    def address(self) -> tuple[str, int]:
        if self._httpd is None:
            raise WishbotError("the server is not running")
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self, *, workers: bool = True) -> None:
        host, _, port = self.config.listen.rpartition(":")
        try:
            self._httpd = BoundedHTTPServer(
                (host or "127.0.0.1", int(port)),
                _Handler,
                self.limits,
                on_refused=lambda reason: self.metrics.refused.labels(reason).inc(),
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot listen on {self.config.listen}: {exc}") from None
        self._httpd.webhooks = self  # type: ignore[attr-defined]
        httpd = self._httpd
        self._spawn("wishbot-http", lambda: httpd.serve_forever(poll_interval=0.1))
        if workers:
            # one worker for everything that writes to the publisher
            self._spawn("wishbot-publish", lambda: self._work(kinds_in(PUBLISHER)))
            for n in range(self._plan_workers):
                self._spawn(f"wishbot-review-{n}", lambda: self._work(kinds_in(FORGE)))
        if self.config.reapply_interval > 0 and self.config.forge:
            self._spawn("wishbot-schedule", self._schedule)
        log.info(
            "serving webhooks",
            extra=fields(
                listen=f"{self.address[0]}:{self.address[1]}",
                max_connections=self.limits.max_connections,
                request_timeout=self.limits.request_timeout,
                max_body=self.limits.max_body,
            ),
        )

    def _schedule(self) -> None:
        """Every ``reapply_interval`` seconds, queue maintenance of each repository."""
        while not self._stop.wait(self.config.reapply_interval):
            self.schedule_maintenance()

    def schedule_maintenance(self) -> None:
        for repository in self.config.repositories:
            try:
                self.queue.put(*encode(Maintain(self.config.forge, repository)))
            except Exception as exc:
                log.error("cannot queue maintenance of %s: %s", repository, exc)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def wait(self) -> None:
        """Block until :meth:`stop` (e.g. from a signal handler)."""
        while not self._stop.wait(1.0):
            continue

    # --- webhook intake ------------------------------------------------------

    def may_be_authentic(self, headers: Mapping[str, str]) -> bool:
        return may_be_authentic(headers, self._secret, self.config.forge)

    def accept(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Handle one delivery; returns the HTTP status and a JSON answer."""
        status, answer, _ = self.intake(headers, body)
        return status, answer

    def intake(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """:meth:`accept`, and what the log line says about the job (if any)."""
        signed_by = verify(headers, body, self._secret, self.config.forge)
        if signed_by is None:
            return HTTPStatus.UNAUTHORIZED, {"error": "bad or missing signature/token"}, {}
        event = _parse(headers, body)
        if isinstance(event, Ignored):
            return HTTPStatus.ACCEPTED, {"status": "ignored", "reason": event.reason}, {}
        if event.forge != signed_by:
            return (
                HTTPStatus.UNAUTHORIZED,
                {"error": "event headers do not match the signature"},
                {},
            )
        if event.repository.lower() not in self._allowed:
            facts = {"repository": event.repository}
            return HTTPStatus.FORBIDDEN, {"error": "repository is not allow-listed"}, facts
        if not isinstance(event, MergeRequestEvent | PushEvent):
            return self._intake_command(event, headers, body, signed_by)
        kind, key, payload = encode(action_of(event))
        result = self.queue.put(
            kind,
            key,
            payload,
            delivery=delivery_id(headers, body, signed_by),
            digest=body_digest(headers, body, signed_by),
        )
        self._announce_waiting(kind, result, payload)
        status = HTTPStatus.OK if result == "duplicate" else HTTPStatus.ACCEPTED
        return status, {"status": result}, dict(payload, kind=kind)

    def _announce_waiting(self, kind: str, result: str, payload: Mapping[str, str]) -> None:
        """A publication queued behind a running one gets ``pending`` "queued behind …"
        (set by the command worker: no forge call in the HTTP thread)."""
        if kind != PUBLISH or result == "duplicate":
            return
        busy = self.queue.running((PUBLISH, MAINTAIN, REFRESH))
        if not busy:
            return
        running = busy[0]
        behind = f"the {running.kind} job {running.id}"
        if running.payload.get("sha"):
            behind = f"the {running.kind} of {str(running.payload['sha'])[:12]}"
        waiting = WaitingPublication(
            payload["forge"], payload["repository"], payload["branch"], payload["sha"], behind
        )
        self.queue.put(COMMAND_JOB, waiting.key, to_payload(waiting))

    def _intake_command(
        self, event: CommandDelivery, headers: Mapping[str, str], body: bytes, signed_by: str
    ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """Queue a comment command or dashboard edit as a ``command`` job: one per
        comment id (a redelivery of the same comment is a duplicate)."""
        if isinstance(event, CommentEvent):
            command, why = screen(event, None, seen=False)
            if command is None:  # most comments: no job at all
                return HTTPStatus.ACCEPTED, {"status": "ignored", "reason": why}, {}
        payload = to_payload(event)
        once = event.key if payload["event"] == "comment" else body_digest(headers, body, signed_by)
        result = self.queue.put(
            COMMAND_JOB,
            event.key,
            payload,
            delivery=delivery_id(headers, body, signed_by),
            digest=once,
        )
        status = HTTPStatus.OK if result == "duplicate" else HTTPStatus.ACCEPTED
        facts = {"forge": event.forge, "repository": event.repository, "kind": COMMAND_JOB}
        return status, {"status": result}, facts

    def note_delivery(
        self,
        status: int,
        answer: Mapping[str, Any],
        headers: Mapping[str, str],
        seconds: float,
        job: Mapping[str, Any],
    ) -> None:
        """Count and log one delivery: what it was, what came of it, how long it took."""
        result = _result_of(status, answer)
        self.metrics.webhooks.labels(result).inc()
        self.metrics.webhook_seconds.observe(seconds)
        facts = _delivery_facts(result, status, answer, headers, job)
        facts["seconds"] = round(seconds, 4)
        if status >= 400 and status != HTTPStatus.FORBIDDEN:
            # anyone can cause these at will: a flood must not flood the log too
            shown, held = self._refusals.allow()
            if not shown:
                return
            if held:
                facts["not_logged"] = held
        log.info("webhook %s", result, extra=fields(**facts))

    # --- workers -------------------------------------------------------------

    def _work(self, kinds: tuple[str, ...]) -> None:
        while not self._stop.is_set():
            try:
                job = self.queue.claim(kinds)
            except Exception as exc:
                log.error("cannot read the queue: %s", exc)
                self._stop.wait(self._poll * 10)
                continue
            if job is None:
                self._stop.wait(self._poll)
                continue
            try:
                self.run(job)
            except Exception as exc:  # the queue could not record it: its lease runs out
                log.error("cannot settle job %s: %s: %s", job.id, type(exc).__name__, exc)
                self._stop.wait(self._poll * 10)

    def run(self, job: Job) -> None:
        """Run one claimed job and settle it in the queue; never raises. Its lease is
        renewed while it runs, so no other worker can claim it meanwhile."""
        started = time.monotonic()
        facts = _job_facts(job)
        with _Heartbeat(self.queue, job):
            try:
                outcome = run_job(
                    job,
                    config=self.config,
                    pipeline=self.pipeline,
                    journal=self.journal,
                    forge_for=self.forge_for,
                    max_attempts=self._max_attempts,
                    enqueue=self.queue.put,
                )
            except Exception as exc:
                error = (
                    str(exc) if isinstance(exc, WishbotError) else f"{type(exc).__name__}: {exc}"
                )
                retry = is_retryable(exc)
                action, detail, ok = "error", error, False
            else:
                retry, action, detail, ok = (
                    outcome.retry,
                    outcome.action,
                    outcome.detail,
                    outcome.ok,
                )
                if outcome.sha:
                    facts["sha"] = outcome.sha
                self.registry.finished(job, outcome)
                self._refresh_dashboard(job, outcome)
        seconds = time.monotonic() - started
        self.metrics.job_seconds.labels(job.kind).observe(seconds)
        if action in ("error", "failed"):
            self.metrics.job_failures.labels(job.kind).inc()
        state = self._settle(job, retry=retry, error=detail, raised=action == "error")
        self.metrics.jobs.labels(job.kind, action if state != "lost" else "lost").inc()
        facts.update(outcome=action, queue=state, seconds=round(seconds, 3), detail=detail)
        level = logging.INFO if ok and action != "error" else logging.WARNING
        log.log(level, "job %s %s", job.kind, action, extra=fields(**facts))

    def _refresh_dashboard(self, job: Job, outcome: Outcome) -> None:
        """The dashboard issue after a publication (``dashboard`` setting; bot/runtime/commands)."""
        if not self.config.dashboard or job.kind not in (PUBLISH, MAINTAIN):
            return
        try:
            forge = self.forge_for(str(job.payload["forge"]), str(job.payload["repository"]))
            refresh_dashboard_quietly(forge, self.config, outcome, self.queue.counts())
        except Exception as exc:  # the dashboard never fails the job
            log.warning("could not update the dashboard: %s: %s", type(exc).__name__, exc)

    def _settle(self, job: Job, *, retry: bool, error: str, raised: bool = False) -> str:
        """Done, retried later or failed for good (after its last attempt, or at once
        when it raised an error not worth retrying); "lost" when the lease was lost."""
        if not retry and not raised:
            state, settled = "done", self.queue.done(job)
        elif not retry or job.attempts >= self._max_attempts:
            state, settled = "failed", self.queue.fail(job, error)
        else:
            state = "retry"
            settled = self.queue.retry(job, self._backoff * 2 ** (job.attempts - 1), error)
        return state if settled else "lost"

    def metrics_text(self) -> str:
        return self.metrics.render().decode()

    def _verify_gauges(self) -> dict[str, dict[str, float]]:
        """The last scheduled deep verify (see ``bot.publisher.verify.STATUS``)."""
        if not self.config.publisher:
            return {}
        try:
            status = read_status(open_publisher(self.config.publisher).root)
        except WishbotError:
            status = None
        if status is None:
            return {}
        checked = parse_time(status.get("checked"))
        return {
            "wishbot_verify_findings": {
                "error": float(cast(int, status.get("errors", 0))),
                "warning": float(cast(int, status.get("warnings", 0))),
            },
            "wishbot_verify_checked_timestamp_seconds": {
                "clean" if status.get("ok") else "findings": checked.timestamp() if checked else 0.0
            },
        }


def _result_of(status: int, answer: Mapping[str, Any]) -> str:
    """The ``result`` label of a delivery's answer."""
    named: dict[int, str] = {
        HTTPStatus.UNAUTHORIZED: "unauthorized",
        HTTPStatus.FORBIDDEN: "forbidden",
        HTTPStatus.BAD_REQUEST: "bad_request",
        HTTPStatus.LENGTH_REQUIRED: "length_required",
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "too_large",
        HTTPStatus.SERVICE_UNAVAILABLE: "busy",
    }
    if status in named:
        return named[status]
    if status >= 400:
        return "error"
    result = str(answer.get("status", "error"))
    return "accepted" if result in ("queued", "coalesced") else result


def _lock_state_dir(state_dir: Path) -> IO[str]:
    """Lock ``state_dir/serve.lock`` for as long as the returned file stays open, so
    one server at a time owns the queue."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = (state_dir / "serve.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConfigError(
            f"another wishbot serve is using {state_dir}",
            hint="stop it first, or give this one its own state_dir",
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _announced(headers: Mapping[str, str]) -> dict[str, str]:
    """The event kind and delivery id a delivery's headers claim (unverified: for the log)."""
    for spec in specs():
        event = spec.event_name(headers)
        if event:
            return {"event": event, "delivery": spec.delivery_id(headers) or ""}
    return {"event": "", "delivery": ""}


def _delivery_facts(
    result: str,
    status: int,
    answer: Mapping[str, Any],
    headers: Mapping[str, str],
    job: Mapping[str, Any],
) -> dict[str, Any]:
    """What the log says of one delivery: event, delivery id, the job, why refused."""
    facts: dict[str, Any] = {
        "result": answer.get("status", result),
        "status": status,
        **_announced(headers),
    }
    facts.update({k: v for k, v in job.items() if k != "forge"})
    reason = answer.get("reason") or answer.get("error")
    if reason:
        facts["reason"] = reason
    return facts


def open_server(
    config: Config,
    *,
    secret: str,
    state_dir: Path,
    pipeline: Pipeline,
    forge_for: ForgeFor,
    plan_workers: int = 4,
    visibility: float | None = None,
) -> WebhookServer:
    """The server on ``state_dir``'s queue and journal. At start-up, with the state
    directory locked to this process, what a previous (crashed) run left behind is
    settled at once, not when its lease runs out: its jobs are queued again (or
    failed after their last attempt) and its open statuses failed with a reason.
    Call ``start()`` on it."""
    handle = _lock_state_dir(state_dir)
    queue = Queue(
        state_dir / "queue.sqlite",
        visibility=config.job_lease if visibility is None else visibility,
        retention=retention_of(config),
    )
    for job in queue.interrupted(MAX_ATTEMPTS, "interrupted: wishbot restarted while it ran"):
        again = "failed" if job.attempts >= MAX_ATTEMPTS else "queued again"
        log.warning("job interrupted by a restart: %s", again, extra=fields(**_job_facts(job)))
    queue.prune()
    journal = Journal(state_dir / "journal.sqlite")
    for repository in config.repositories if config.forge else ():
        count = recover(forge_for(config.forge, repository), journal)
        if count:
            log.warning(
                "failed the statuses a previous run left unfinished",
                extra=fields(repository=repository, statuses=count),
            )
    server = WebhookServer(
        config,
        secret=secret,
        queue=queue,
        journal=journal,
        pipeline=pipeline,
        forge_for=forge_for,
        plan_workers=plan_workers,
        registry_token=registry_token(),
    )
    server._state_lock = handle  # type: ignore[attr-defined]  # held for the process's life
    return server


class _Handler(BoundedHandler):
    server_version = "wishbot"
    sys_version = ""

    @property
    def webhooks(self) -> WebhookServer:
        return cast(WebhookServer, self.server.webhooks)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.SERVICE_UNAVAILABLE:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Mapping[str, Any]) -> None:
        self._answer(status, json.dumps(value).encode() + b"\n", "application/json")

    def refuse(self, status: int, reason: str) -> None:
        with suppress(OSError):
            self._json(status, {"error": reason})

    def do_GET(self) -> None:
        self.server.request_read(self.connection)  # a GET has no body: it is working now
        if self.path == "/healthz":
            self._answer(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        elif self.path == "/metrics":
            self._answer(HTTPStatus.OK, self.webhooks.metrics.render(), CONTENT_TYPE)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:
        started = time.monotonic()
        fmt = registry_route(self.path)
        if fmt:
            self._registry_event(fmt)
            return
        if self.path not in ("/", "/webhook"):
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        headers = {k: v for k, v in self.headers.items()}
        status, answer, job = self._deliver(headers)
        if self.cut_off():
            return  # evicted or cut off at its deadline: nobody is listening any more
        self.webhooks.note_delivery(status, answer, headers, time.monotonic() - started, job)
        self._json(status, answer)

    def _registry_event(self, fmt: str) -> None:
        """``POST /hooks/registry/<format>``: the same limits, the format's authentication."""
        events = self.webhooks.registry
        if not events.enabled:
            self._json(HTTPStatus.NOT_FOUND, {"error": "registry events are not enabled"})
            return
        headers = {k: v for k, v in self.headers.items()}
        status, answer, facts = self._deliver(
            headers,
            authentic=lambda: events.may_be_authentic(fmt, headers),
            intake=lambda body: events.intake(fmt, headers, body),
        )
        if self.cut_off():
            return
        events.note(fmt, status, answer, facts)
        self._json(status, answer)

    def _length(self) -> tuple[int, str]:
        """The declared body length, or (an error status, its reason)."""
        if self.headers.get("Transfer-Encoding"):
            return HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not a chunked body"
        text = self.headers.get("Content-Length", "").strip()
        if not text:
            return HTTPStatus.LENGTH_REQUIRED, "Content-Length required"
        if not text.isdigit() or len(text) > 12:
            return HTTPStatus.BAD_REQUEST, "bad Content-Length"
        if int(text) > self.server.limits.max_body:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large"
        return 0, text

    def _deliver(
        self,
        headers: Mapping[str, str],
        authentic: Callable[[], bool] | None = None,
        intake: Callable[[bytes], tuple[int, dict[str, Any], dict[str, Any]]] | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """Check what the headers prove, read the body within its limits, accept it
        (forge webhooks by default; ``authentic`` and ``intake`` for other senders)."""
        status, detail = self._length()
        if status:
            return status, {"error": detail}, {}
        length = int(detail)
        if not (authentic() if authentic else self.webhooks.may_be_authentic(headers)):
            self.discard_body(length)
            return HTTPStatus.UNAUTHORIZED, {"error": "bad or missing signature/token"}, {}
        budget = self.server.budget
        if not budget.reserve(length):
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "busy, try again"}, {}
        try:
            body = self.read_body(length)
            if body is None:
                return HTTPStatus.BAD_REQUEST, {"error": "body shorter than Content-Length"}, {}
            if intake is not None:
                return intake(body)
            return self.webhooks.intake(headers, body)
        except Exception as exc:
            log.error("webhook intake failed: %s: %s", type(exc).__name__, exc)
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": type(exc).__name__}, {}
        finally:
            budget.release(length)

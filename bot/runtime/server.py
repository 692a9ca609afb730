"""The webhook server: authenticate, queue durably, answer fast, work in the background.

- ``POST /webhook`` (or ``/``): the signature (``X-Hub-Signature-256``) or
  token (``X-Gitlab-Token``) is checked over the raw body *before* anything
  is parsed; replays and duplicate deliveries are dropped; only allow-listed
  repositories are accepted; the event is queued and the request answered.
- workers: several review (plan) workers in parallel, ONE publish worker so
  publications never overlap.
- ``GET /healthz`` and ``GET /metrics`` (Prometheus text format).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from bot.config import Config
from bot.errors import ConfigError, WishbotError
from bot.forge.base import Forge
from bot.publisher.backend import open_publisher
from bot.publisher.metadata import parse_time
from bot.publisher.verify import read_status
from bot.runtime.events import Ignored, MergeRequestEvent, PushEvent, header, parse_event
from bot.runtime.journal import Journal
from bot.runtime.pipeline_api import Pipeline
from bot.runtime.queue import Job, Queue
from bot.runtime.workflow import Outcome, on_merge_request, on_push, on_schedule, recover

log = logging.getLogger(__name__)

MAX_BODY = 25 * 2**20  # GitHub caps payloads at 25 MB
MAX_ATTEMPTS = 6
REVIEW = "review"
PUBLISH = "publish"
MAINTAIN = "maintain"  # periodic re-publication (tags move upstream) and gc

ForgeFor = Callable[[str, str], Forge]


# --- authentication ---------------------------------------------------------------


def verify(headers: Mapping[str, str], body: bytes, secret: str, forge: str = "") -> str | None:
    """Which forge signed this delivery ("gitlab"/"github"), or None if it is not authentic.

    ``forge`` (the configured forge kind) restricts the accepted scheme.
    """
    if not secret:
        return None
    token = header(headers, "X-Gitlab-Token")
    signature = header(headers, "X-Hub-Signature-256")
    if token and forge in ("", "gitlab"):
        if hmac.compare_digest(token.encode(), secret.encode()):
            return "gitlab"
        return None
    if signature and forge in ("", "github"):
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(signature.strip().encode(), expected.encode()):
            return "github"
    return None


def delivery_id(headers: Mapping[str, str], body: bytes) -> str:
    """The delivery's unique id (GitHub, GitLab), else a hash of its body."""
    for name in ("X-GitHub-Delivery", "X-Gitlab-Event-UUID"):
        value = header(headers, name)
        if value:
            return f"{name.lower()}:{value}"
    return "sha256:" + hashlib.sha256(body).hexdigest()


# --- metrics ---------------------------------------------------------------------


class Metrics:
    """Counters and duration sums, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._help = {
            "wishbot_webhook_events_total": "Webhook deliveries by result.",
            "wishbot_jobs_total": "Finished jobs by kind and outcome.",
            "wishbot_job_failures_total": "Jobs that raised or failed, by kind.",
            "wishbot_job_duration_seconds_sum": "Total seconds spent in jobs, by kind.",
            "wishbot_job_duration_seconds_count": "Jobs timed, by kind.",
        }

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self, gauges: Mapping[str, Mapping[str, float]] | None = None) -> str:
        lines: list[str] = []
        with self._lock:
            items = sorted(self._counters.items())
        seen: set[str] = set()
        for (name, labels), value in items:
            if name not in seen:
                seen.add(name)
                kind = "counter" if name.endswith("_total") else "untyped"
                lines.append(f"# HELP {name} {self._help.get(name, name)}")
                lines.append(f"# TYPE {name} {kind}")
            lines.append(f"{name}{_labels(labels)} {value:g}")
        for name, series in (gauges or {}).items():
            lines.append(f"# HELP {name} {name.replace('_', ' ')}")
            lines.append(f"# TYPE {name} gauge")
            for label, value in sorted(series.items()):
                lines.append(f'{name}{{state="{_escape_label(label)}"}} {value:g}')
        return "\n".join(lines) + "\n"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels) + "}"


# --- the jobs --------------------------------------------------------------------


def run_job(
    job: Job,
    *,
    config: Config,
    pipeline: Pipeline,
    journal: Journal,
    forge_for: ForgeFor,
    max_attempts: int = MAX_ATTEMPTS,
) -> Outcome:
    """Do one queued job: review a merge request or publish a pushed branch."""
    payload = job.payload
    forge = forge_for(str(payload["forge"]), str(payload["repository"]))
    if job.kind == REVIEW:
        mr = forge.merge_request(str(payload["number"]))
        return on_merge_request(forge, pipeline, mr, config, journal)
    if job.kind == PUBLISH:
        return on_push(
            forge,
            pipeline,
            str(payload["branch"]),
            str(payload["sha"]),
            config,
            journal,
            retried=job.attempts < max_attempts,
        )
    if job.kind == MAINTAIN:
        return on_schedule(forge, pipeline, config, journal)
    raise WishbotError(f"unknown job kind {job.kind!r}")


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
        self.queue = queue
        self.journal = journal
        self.pipeline = pipeline
        self.forge_for = forge_for
        self.metrics = Metrics()
        self._secret = secret
        self._allowed = {r.lower() for r in config.repositories}
        self._plan_workers = max(plan_workers, 1)
        self._poll = poll
        self._backoff = backoff
        self._max_attempts = max(max_attempts, 1)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._httpd: ThreadingHTTPServer | None = None

    def __repr__(self) -> str:
        return f"WebhookServer(listen={self.config.listen!r})"

    @property
    def address(self) -> tuple[str, int]:
        if self._httpd is None:
            raise WishbotError("the server is not running")
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self, *, workers: bool = True) -> None:
        host, _, port = self.config.listen.rpartition(":")
        try:
            self._httpd = ThreadingHTTPServer((host or "127.0.0.1", int(port)), _handler(self))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot listen on {self.config.listen}: {exc}") from None
        self._httpd.daemon_threads = True
        httpd = self._httpd
        self._spawn("wishbot-http", lambda: httpd.serve_forever(poll_interval=0.1))
        if workers:
            # one worker for everything that writes to the publisher
            self._spawn("wishbot-publish", lambda: self._work((PUBLISH, MAINTAIN)))
            for n in range(self._plan_workers):
                self._spawn(f"wishbot-review-{n}", lambda: self._work((REVIEW,)))
        if self.config.reapply_interval > 0 and self.config.forge:
            self._spawn("wishbot-schedule", self._schedule)

    def _schedule(self) -> None:
        """Every ``reapply_interval`` seconds, queue maintenance of each repository."""
        while not self._stop.wait(self.config.reapply_interval):
            self.schedule_maintenance()

    def schedule_maintenance(self) -> None:
        for repository in self.config.repositories:
            payload = {"forge": self.config.forge, "repository": repository}
            try:
                self.queue.put(MAINTAIN, f"maintain:{repository}", payload)
            except Exception:
                log.exception("cannot queue maintenance of %s", repository)

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

    def accept(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Handle one delivery; returns the HTTP status and a JSON answer."""
        signed_by = verify(headers, body, self._secret, self.config.forge)
        if signed_by is None:
            self.metrics.inc("wishbot_webhook_events_total", result="unauthorized")
            return HTTPStatus.UNAUTHORIZED, {"error": "bad or missing signature/token"}
        event = parse_event(headers, body)
        if isinstance(event, Ignored):
            self.metrics.inc("wishbot_webhook_events_total", result="ignored")
            return HTTPStatus.ACCEPTED, {"status": "ignored", "reason": event.reason}
        if event.forge != signed_by:
            self.metrics.inc("wishbot_webhook_events_total", result="unauthorized")
            return HTTPStatus.UNAUTHORIZED, {"error": "event headers do not match the signature"}
        if event.repository.lower() not in self._allowed:
            self.metrics.inc("wishbot_webhook_events_total", result="forbidden")
            return HTTPStatus.FORBIDDEN, {"error": "repository is not allow-listed"}
        payload = {"forge": event.forge, "repository": event.repository}
        if isinstance(event, MergeRequestEvent):
            kind, key = REVIEW, f"review:{event.repository}:{event.number}"
            payload["number"] = event.number
        else:
            assert isinstance(event, PushEvent)
            kind, key = PUBLISH, f"publish:{event.repository}:{event.branch}"
            payload.update(branch=event.branch, sha=event.sha)
        result = self.queue.put(kind, key, payload, delivery=delivery_id(headers, body))
        if result == "duplicate":
            self.metrics.inc("wishbot_webhook_events_total", result="duplicate")
            return HTTPStatus.OK, {"status": "duplicate"}
        self.metrics.inc("wishbot_webhook_events_total", result="accepted")
        return HTTPStatus.ACCEPTED, {"status": result}

    # --- workers -------------------------------------------------------------

    def _work(self, kinds: tuple[str, ...]) -> None:
        while not self._stop.is_set():
            try:
                job = self.queue.claim(kinds)
            except Exception:
                log.exception("cannot read the queue")
                self._stop.wait(self._poll * 10)
                continue
            if job is None:
                self._stop.wait(self._poll)
                continue
            self.run(job)

    def run(self, job: Job) -> None:
        """Run one claimed job and settle it in the queue; never raises."""
        started = time.monotonic()
        try:
            outcome = run_job(
                job,
                config=self.config,
                pipeline=self.pipeline,
                journal=self.journal,
                forge_for=self.forge_for,
                max_attempts=self._max_attempts,
            )
        except Exception as exc:
            error = str(exc) if isinstance(exc, WishbotError) else f"{type(exc).__name__}: {exc}"
            log.warning("job %s (%s) failed: %s", job.id, job.kind, error)
            self.metrics.inc("wishbot_job_failures_total", kind=job.kind)
            self.metrics.inc("wishbot_jobs_total", kind=job.kind, outcome="error")
            self._settle(job, retry=True, error=error)
        else:
            self.metrics.inc("wishbot_jobs_total", kind=job.kind, outcome=outcome.action)
            if outcome.action == "failed":
                self.metrics.inc("wishbot_job_failures_total", kind=job.kind)
            self._settle(job, retry=outcome.retry, error=outcome.detail)
        finally:
            elapsed = time.monotonic() - started
            self.metrics.inc("wishbot_job_duration_seconds_sum", elapsed, kind=job.kind)
            self.metrics.inc("wishbot_job_duration_seconds_count", kind=job.kind)

    def _settle(self, job: Job, *, retry: bool, error: str) -> None:
        if not retry:
            self.queue.done(job)
        elif job.attempts >= self._max_attempts:
            self.queue.fail(job, error)
        else:
            self.queue.retry(job, self._backoff * 2 ** (job.attempts - 1), error)

    def metrics_text(self) -> str:
        try:
            counts = {k: float(v) for k, v in self.queue.counts().items()}
        except Exception:
            counts = {}
        return self.metrics.render({"wishbot_queue_jobs": counts, **self._verify_gauges()})

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


def open_server(
    config: Config,
    *,
    secret: str,
    state_dir: Path,
    pipeline: Pipeline,
    forge_for: ForgeFor,
    plan_workers: int = 4,
    visibility: float = 900.0,
) -> WebhookServer:
    """The server on ``state_dir``'s queue and journal, after failing the statuses a
    previous (crashed) run left pending or running. Call ``start()`` on it."""
    journal = Journal(state_dir / "journal.sqlite")
    for repository in config.repositories if config.forge else ():
        count = recover(forge_for(config.forge, repository), journal)
        if count:
            log.warning(
                "%s: failed %d status(es) a previous run left unfinished", repository, count
            )
    return WebhookServer(
        config,
        secret=secret,
        queue=Queue(state_dir / "queue.sqlite", visibility=visibility),
        journal=journal,
        pipeline=pipeline,
        forge_for=forge_for,
        plan_workers=plan_workers,
    )


def _handler(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "wishbot"
        sys_version = ""
        timeout = 10

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: Mapping[str, Any]) -> None:
            self._answer(status, json.dumps(value).encode() + b"\n", "application/json")

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            elif self.path == "/metrics":
                text = server.metrics_text().encode()
                self._answer(HTTPStatus.OK, text, "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path not in ("/", "/webhook"):
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
                return
            if length < 0 or length > MAX_BODY:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
                return
            body = self.rfile.read(length)
            headers = {k: v for k, v in self.headers.items()}
            try:
                status, answer = server.accept(headers, body)
            except Exception as exc:
                log.exception("webhook intake failed")
                server.metrics.inc("wishbot_webhook_events_total", result="error")
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": type(exc).__name__})
                return
            self._json(status, answer)

    return Handler

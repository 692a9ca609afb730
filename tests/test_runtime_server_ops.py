"""What an operator sees of ``serve``: one log line per delivery and job (text or
JSON, no secrets), typed metrics from the start, a slow job never run twice,
and failures (forge down, a job past its deadline) that end within a bound."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from forge_sites import RecordingPipeline
from test_runtime_webhooks import (
    CONFIG,
    SECRET,
    Forges,
    Make,
    github_headers,
    open_github_pull,
    post,
    wait_for,
)
from test_runtime_webhooks import forges as forges
from test_runtime_webhooks import make_server as make_server
from webhook_payloads import github_pull

from bot.config import Config
from bot.errors import ConfigError, ForgeError, WishlistError
from bot.forge.gitlab import GitLabForge
from bot.runtime.journal import Journal
from bot.runtime.logs import (
    JsonFormatter,
    RedactSecrets,
    TextFormatter,
    Throttle,
    configure,
    fields,
)
from bot.runtime.pipeline_api import Review
from bot.runtime.queue import Queue
from bot.runtime.server import REVIEW, WebhookServer, open_server
from bot.runtime.workflow import PLAN


class SlowPipeline(RecordingPipeline):
    """Reviews take ``seconds``; counts how many run at once."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def review(self, *args: Any, **kwargs: Any) -> Review:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return super().review(*args, **kwargs)


def deliver_pull(server: WebhookServer, number: int, delivery: str) -> None:
    payload = github_pull("opened")
    payload["pull_request"]["number"] = number
    body = json.dumps(payload).encode()
    assert post(server, github_headers("pull_request", body, delivery), None, body)[0] == 202


def test_a_slow_job_outlives_its_lease_and_runs_once(
    tmp_path: Path, forges: Forges, caplog: pytest.LogCaptureFixture
) -> None:
    number, head = open_github_pull(forges)
    pipeline = SlowPipeline(6.0)
    server = WebhookServer(
        CONFIG,
        secret=SECRET,
        queue=Queue(
            tmp_path / "queue.sqlite", visibility=1.5
        ),  # 4 leases long; renewed every 0.5 s, so a loaded machine keeps up
        journal=Journal(tmp_path / "journal.sqlite"),
        pipeline=pipeline,
        forge_for=forges,
        plan_workers=3,
        poll=0.05,
    )
    server.start()
    try:
        deliver_pull(server, number, "slow-1")
        wait_for(lambda: server.queue.counts() == {"done": 1})
    finally:
        server.stop()
    assert len(pipeline.reviews) == 1 and pipeline.most == 1
    assert (forges.github.status_of(head, PLAN) or {}).get("state") == "success"
    assert "lost its lease" not in caplog.text


def test_one_log_line_per_delivery_and_per_job(
    make_server: Make, forges: Forges, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    number, head = open_github_pull(forges)
    server = make_server()
    deliver_pull(server, number, "log-1")
    wait_for(lambda: server.queue.counts() == {"done": 1})
    records = [r for r in caplog.records if r.name == "bot.runtime.server"]
    webhook = [r for r in records if r.getMessage().startswith("webhook")]
    jobs = [r for r in records if r.getMessage().startswith("job")]
    assert len(webhook) == 1 and len(jobs) == 1
    facts = vars(webhook[0])["wishbot_fields"]
    assert facts["result"] == "queued" and facts["delivery"] == "log-1"
    assert facts["repository"] == "octo/wishlist" and facts["number"] == str(number)
    assert webhook[0].levelno == logging.INFO
    done = vars(jobs[0])["wishbot_fields"]
    assert done["outcome"] == "reviewed" and done["queue"] == "done"
    assert done["sha"] == head and done["number"] == str(number) and done["seconds"] >= 0
    assert SECRET not in caplog.text


def test_json_and_text_formats_and_secrets_never_logged() -> None:
    record = logging.LogRecord(
        "bot.runtime.server", logging.INFO, __file__, 1, "job %s failed: token %s", None, None
    )
    record.args = ("review", "glpat-SECRET123")
    vars(record).update(fields(repository="g/w", detail="Bearer glpat-SECRET123 refused", n=3))
    RedactSecrets(["glpat-SECRET123"]).filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "job review failed: token ***"
    assert entry["repository"] == "g/w" and entry["detail"] == "Bearer *** refused"
    assert entry["level"] == "INFO" and entry["time"].endswith("Z")
    text = TextFormatter().format(record)
    assert "glpat" not in text and 'detail="Bearer *** refused"' in text and " n=3" in text


def test_configure_takes_secrets_from_the_environment() -> None:
    stream = io.StringIO()
    handler = configure(
        "json",
        environ={"WISHBOT_WEBHOOK_SECRET": "hook-secret-1", "GITLAB_TOKEN": "glpat-abcdef"},
    )
    try:
        handler.setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("bot.runtime.server").info(
            "webhook %s", "hook-secret-1", extra=fields(token="glpat-abcdef")
        )
        logging.getLogger("bot.runtime.server").debug("not at INFO")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "webhook ***"
    assert json.loads(lines[0])["token"] == "***"


def test_metrics_are_typed_and_present_from_the_start(make_server: Make) -> None:
    text = make_server(workers=False).metrics_text()
    for line in (
        "# TYPE wishbot_webhook_events_total counter",
        'wishbot_webhook_events_total{result="unauthorized"} 0.0',
        'wishbot_webhook_events_total{result="accepted"} 0.0',
        "# TYPE wishbot_jobs_total counter",
        'wishbot_jobs_total{kind="review",outcome="reviewed"} 0.0',
        'wishbot_jobs_total{kind="publish",outcome="failed"} 0.0',
        "# TYPE wishbot_job_duration_seconds histogram",
        'wishbot_job_duration_seconds_count{kind="maintain"} 0.0',
        "# TYPE wishbot_webhook_duration_seconds histogram",
        'wishbot_webhook_connections_refused_total{reason="timeout"} 0.0',
        "# TYPE wishbot_queue_jobs gauge",
        'wishbot_queue_jobs{state="failed"} 0.0',
        "wishbot_webhook_connections_open 0.0",
        "# TYPE process_resident_memory_bytes gauge",
    ):
        assert line in text, line


def _review_job(server: WebhookServer, number: str = "7") -> None:
    server.queue.put(REVIEW, f"review:group/wishlist:{number}", {
        "forge": "gitlab", "repository": "group/wishlist", "number": number,
    })  # fmt: skip


def test_a_review_with_the_forge_down_fails_within_a_few_timeouts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Connection refused, and a forge that accepts and never answers: before,
    python-gitlab's own retries took 102 s whatever WISHBOT_TIMEOUT said."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    try:
        for port in (refused_port, silent.getsockname()[1]):
            server = WebhookServer(
                CONFIG,
                secret=SECRET,
                queue=Queue(tmp_path / f"q{port}.sqlite"),
                journal=Journal(),
                pipeline=RecordingPipeline(),
                forge_for=lambda kind, repo, port=port: GitLabForge(  # type: ignore[misc]
                    f"http://127.0.0.1:{port}", repo, "token", timeout=1.0
                ),
            )
            _review_job(server)
            job = server.queue.claim((REVIEW,))
            assert job is not None
            started = time.monotonic()
            server.run(job)
            assert time.monotonic() - started < 5.0  # WISHBOT_TIMEOUT=1: 3 tries + 0.3 s
            assert server.queue.counts() == {"queued": 1}  # retried later: it may come back
    finally:
        silent.close()
    assert "ForgeError" not in caplog.text or "Traceback" not in caplog.text


class SlowReads:
    """A forge whose reads take ``seconds`` each (every one within its timeout)."""

    def __init__(self, forge: Any, seconds: float):
        self._forge = forge
        self._seconds = seconds

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._forge, name)
        if name in ("read_file", "merge_request", "default_branch"):

            def slow(*args: Any, **kwargs: Any) -> Any:
                time.sleep(self._seconds)
                return value(*args, **kwargs)

            return slow
        return value


def test_a_review_past_its_deadline_ends_with_final_statuses(
    tmp_path: Path, forges: Forges
) -> None:
    number, head = open_github_pull(forges)
    config = Config(
        listen="127.0.0.1:0", repositories=("octo/wishlist",), job_deadline=0.5, forge="github"
    )
    pipeline = RecordingPipeline()
    server = WebhookServer(
        config,
        secret=SECRET,
        queue=Queue(tmp_path / "q.sqlite"),
        journal=Journal(),
        pipeline=pipeline,
        forge_for=lambda kind, repo: SlowReads(forges(kind, repo), 0.3),  # type: ignore[arg-type,return-value]
    )
    server.queue.put(REVIEW, "review:octo/wishlist:1", {
        "forge": "github", "repository": "octo/wishlist", "number": str(number),
    })  # fmt: skip
    job = server.queue.claim((REVIEW,))
    assert job is not None
    started = time.monotonic()
    server.run(job)
    assert time.monotonic() - started < 0.5 + 2 * 0.3 + 1.0
    assert pipeline.reviews == []
    status = forges.github.status_of(head, PLAN) or {}
    assert status.get("state") == "error" and "deadline" in status.get("description", "")


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (WishlistError("wishlist.yaml:3:5: bad"), "failed"),
        (ConfigError("no publisher"), "failed"),
        (ForgeError("HTTP 401", retryable=False), "failed"),
        (ForgeError("HTTP 503"), "queued"),
        (OSError("disk full"), "queued"),
        (KeyError("bug"), "failed"),
    ],
)
def test_only_errors_worth_retrying_are_retried(
    tmp_path: Path, error: Exception, state: str
) -> None:
    class Raising:
        def __call__(self, kind: str, repository: str) -> Any:
            raise error

    server = WebhookServer(
        CONFIG,
        secret=SECRET,
        queue=Queue(tmp_path / "q.sqlite"),
        journal=Journal(),
        pipeline=RecordingPipeline(),
        forge_for=Raising(),
        backoff=60,
    )
    _review_job(server)
    job = server.queue.claim((REVIEW,))
    assert job is not None
    server.run(job)
    assert server.queue.counts() == {state: 1}


def test_a_second_server_on_the_same_state_directory_is_refused(
    tmp_path: Path, forges: Forges
) -> None:
    def start() -> WebhookServer:
        return open_server(
            CONFIG, secret=SECRET, state_dir=tmp_path, pipeline=RecordingPipeline(),
            forge_for=forges,
        )  # fmt: skip

    first = start()
    with pytest.raises(ConfigError, match="another wishbot serve"):
        start()
    del first


@pytest.fixture(autouse=True)
def _quiet_root_logger() -> Iterator[None]:
    """configure() replaces the root handlers; give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_refused_deliveries_cannot_flood_the_log(
    make_server: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    server = make_server(workers=False)
    for _ in range(30):
        assert post(server, {"X-GitHub-Event": "push"}, {"a": 1})[0] == 401
    lines = [r for r in caplog.records if r.getMessage() == "webhook unauthorized"]
    assert len(lines) == 20  # a burst per 10 s; the rest are counted in the metrics
    assert server.metrics.value("wishbot_webhook_events_total", result="unauthorized") == 30


def test_throttle_says_how_many_it_held_back() -> None:
    throttle = Throttle(burst=2, window=0.2)
    assert [throttle.allow() for _ in range(4)] == [(True, 0), (True, 0), (False, 0), (False, 0)]
    time.sleep(0.25)
    assert throttle.allow() == (True, 2)


def test_limits_must_be_positive(tmp_path: Path, forges: Forges) -> None:
    config = Config(listen="127.0.0.1:0", repositories=("a/b",), webhook_request_timeout=0)
    with pytest.raises(ConfigError, match="webhook_request_timeout must be positive"):
        WebhookServer(
            config,
            secret=SECRET,
            queue=Queue(tmp_path / "q.sqlite"),
            journal=Journal(),
            pipeline=RecordingPipeline(),
            forge_for=forges,
        )


def test_what_the_headers_prove_before_the_body_is_read() -> None:
    from bot.runtime.server import may_be_authentic

    good_shape = {"X-Hub-Signature-256": "sha256=" + "ab" * 32}
    assert may_be_authentic(good_shape, SECRET)
    assert not may_be_authentic(good_shape, SECRET, "gitlab")  # GitLab sends tokens
    assert not may_be_authentic({"X-Hub-Signature-256": "sha256=xyz"}, SECRET)
    assert not may_be_authentic({"X-Hub-Signature-256": "sha1=" + "ab" * 20}, SECRET)
    assert may_be_authentic({"X-Gitlab-Token": SECRET}, SECRET)
    assert not may_be_authentic({"X-Gitlab-Token": SECRET[:-1]}, SECRET)
    assert not may_be_authentic({"X-Gitlab-Token": SECRET}, SECRET, "github")
    assert not may_be_authentic({}, SECRET)

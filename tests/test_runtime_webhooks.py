"""The webhook server over real HTTP: signatures, replays, allow-list, the durable
queue across a restart, health and metrics; workers talk to the fake forges."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_github import FakeGitHub
from fake_gitlab import FakeGitLab
from forge_sites import CHANGED, WISHLIST, RecordingPipeline
from webhook_payloads import github_pull, github_push, gitlab_mr

from bot.config import Config
from bot.errors import ConfigError
from bot.forge.base import Forge
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.runtime.journal import Journal
from bot.runtime.queue import Queue
from bot.runtime.server import WebhookServer
from bot.runtime.workflow import PLAN, PUBLISH

SECRET = "s3cret-webhook"
CONFIG = Config(listen="127.0.0.1:0", repositories=("octo/wishlist", "group/wishlist"))


class Forges:
    def __init__(self) -> None:
        self.github = FakeGitHub()
        self.gitlab = FakeGitLab()
        for fake in (self.github, self.gitlab):
            fake.start()
            fake.repo.commit("main", {"wishlist.yaml": WISHLIST}, "initial")

    def __call__(self, kind: str, repository: str) -> Forge:
        if kind == "github":
            return GitHubForge(
                self.github.api_url, repository, self.github.token, write_interval=None
            )
        return GitLabForge(self.gitlab.url, repository, self.gitlab.token)

    def stop(self) -> None:
        self.github.stop()
        self.gitlab.stop()


@pytest.fixture
def forges() -> Iterator[Forges]:
    found = Forges()
    yield found
    found.stop()


Make = Callable[..., WebhookServer]


@pytest.fixture
def make_server(tmp_path: Path, forges: Forges) -> Iterator[Make]:
    started: list[WebhookServer] = []

    def make(*, workers: bool = True, pipeline: Any = None, **kwargs: Any) -> WebhookServer:
        server = WebhookServer(
            CONFIG,
            secret=SECRET,
            queue=Queue(tmp_path / "queue.sqlite"),
            journal=Journal(tmp_path / "journal.sqlite"),
            pipeline=pipeline or RecordingPipeline(),
            forge_for=forges,
            poll=0.05,
            backoff=0.1,
            **kwargs,
        )
        server.start(workers=workers)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(
    server: WebhookServer, headers: dict[str, str], payload: Any, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    host, port = server.address
    body = raw if raw is not None else json.dumps(payload).encode()
    request = urllib.request.Request(
        f"http://{host}:{port}/webhook",
        data=body,
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def github_headers(event: str, body: bytes, delivery: str) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(body),
    }


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def open_github_pull(forges: Forges) -> tuple[int, str]:
    fake = forges.github
    fake.repo.branch("add-alpine", "main")
    head = fake.repo.commit("add-alpine", {"wishlist.yaml": CHANGED}, "add alpine")
    return fake.open_pull("add-alpine").number, head


def test_signed_pull_request_is_reviewed(make_server: Make, forges: Forges) -> None:
    number, head = open_github_pull(forges)
    server = make_server()
    payload = github_pull("opened")
    payload["pull_request"]["number"] = number
    body = json.dumps(payload).encode()
    status, answer = post(server, github_headers("pull_request", body, "d-1"), None, body)
    assert (status, answer["status"]) == (202, "queued")
    done = wait_for(lambda: forges.github.status_of(head, PLAN))
    wait_for(lambda: (forges.github.status_of(head, PLAN) or {}).get("state") == "success")
    assert done["context"] == PLAN
    assert len(forges.github.pulls[number].comments) == 1


def test_bad_or_missing_signatures_are_refused(make_server: Make, forges: Forges) -> None:
    server = make_server(workers=False)
    body = json.dumps(github_push("main", "a" * 40)).encode()
    bad = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(body, "wrong")}
    assert post(server, bad, None, body)[0] == 401
    assert post(server, {"X-GitHub-Event": "push"}, None, body)[0] == 401
    other_body = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(body + b" ")}
    assert post(server, other_body, None, body)[0] == 401
    wrong_token = {"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": "nope"}
    assert post(server, wrong_token, gitlab_mr("open"))[0] == 401
    # a GitLab token cannot vouch for a payload that claims to be from GitHub
    mixed = {"X-GitHub-Event": "push", "X-Gitlab-Token": SECRET}
    assert post(server, mixed, None, body)[0] == 401
    assert server.queue.counts() == {}
    text = server.metrics_text()
    assert 'wishbot_webhook_events_total{result="unauthorized"} 5' in text


def test_replays_and_duplicates_are_dropped(make_server: Make) -> None:
    server = make_server(workers=False)
    body = json.dumps(github_push("main", "b" * 40)).encode()
    headers = github_headers("push", body, "delivery-42")
    assert post(server, headers, None, body) == (202, {"status": "queued"})
    assert post(server, headers, None, body) == (200, {"status": "duplicate"})
    gitlab = {"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": SECRET}
    assert post(server, gitlab, gitlab_mr("open"))[0] == 202
    assert post(server, gitlab, gitlab_mr("open")) == (200, {"status": "duplicate"})
    assert server.queue.counts() == {"queued": 2}


def test_unknown_events_and_foreign_repositories(make_server: Make) -> None:
    server = make_server(workers=False)
    body = json.dumps({"zen": "hi", "repository": {"full_name": "octo/wishlist"}}).encode()
    status, answer = post(server, github_headers("ping", body, "p-1"), None, body)
    assert (status, answer["status"]) == (202, "ignored")
    gitlab = {"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": SECRET}
    assert post(server, gitlab, gitlab_mr("update"))[1]["status"] == "ignored"
    foreign = github_push("main", "c" * 40)
    foreign["repository"]["full_name"] = "mallory/wishlist"
    body = json.dumps(foreign).encode()
    assert post(server, github_headers("push", body, "f-1"), None, body)[0] == 403
    assert server.queue.counts() == {}


def test_refuses_to_start_without_secret_or_allow_list(tmp_path: Path, forges: Forges) -> None:
    common: dict[str, Any] = {
        "queue": Queue(tmp_path / "q.sqlite"),
        "journal": Journal(),
        "pipeline": RecordingPipeline(),
        "forge_for": forges,
    }
    with pytest.raises(ConfigError, match="secret"):
        WebhookServer(CONFIG, secret="", **common)
    with pytest.raises(ConfigError, match="allow-listed"):
        WebhookServer(Config(listen="127.0.0.1:0"), secret=SECRET, **common)


def test_the_queue_survives_a_restart(make_server: Make, forges: Forges) -> None:
    number, head = open_github_pull(forges)
    first = make_server(workers=False)
    payload = github_pull("synchronize")
    payload["pull_request"]["number"] = number
    body = json.dumps(payload).encode()
    assert post(first, github_headers("pull_request", body, "r-1"), None, body)[0] == 202
    first.stop()
    assert forges.github.status_of(head, PLAN) is None
    second = make_server()
    wait_for(lambda: (forges.github.status_of(head, PLAN) or {}).get("state") == "success")
    wait_for(lambda: second.queue.counts() == {"done": 1})
    # the replay of the same delivery to the restarted server is still a duplicate
    assert post(second, github_headers("pull_request", body, "r-1"), None, body)[0] == 200


def test_gitlab_merge_publishes_on_the_default_branch(make_server: Make, forges: Forges) -> None:
    fake = forges.gitlab
    fake.repo.branch("add-alpine", "main")
    fake.repo.commit("add-alpine", {"wishlist.yaml": CHANGED}, "add alpine")
    mr = fake.open_mr("add-alpine")
    merge_sha = fake.merge(mr.iid)
    pipeline = RecordingPipeline()
    server = make_server(pipeline=pipeline)
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET}
    push = {
        "object_kind": "push",
        "ref": "refs/heads/main",
        "after": merge_sha,
        "project": {"path_with_namespace": "group/wishlist"},
        "commits": [{"id": merge_sha, "message": "Merge branch 'add-alpine'"}],
    }
    assert post(server, headers, push)[0] == 202
    wait_for(lambda: (fake.status_of(merge_sha, PUBLISH) or {}).get("status") == "success")
    assert pipeline.publications == [(CHANGED, merge_sha)]
    catalog_head = fake.repo.branches["main"]
    assert catalog_head != merge_sha
    assert fake.repo.file_at(catalog_head, "CATALOG.md") == b"# Catalog\n"
    wait_for(lambda: any("wishbot:publish" in n["body"] for n in mr.notes))


def test_failing_jobs_are_retried_then_settle(make_server: Make, forges: Forges) -> None:
    number, _ = open_github_pull(forges)
    server = make_server(pipeline=RecordingPipeline(publish_ok=False), max_attempts=3)
    merge_sha = forges.github.merge(number)
    body = json.dumps(github_push("main", merge_sha)).encode()
    assert post(server, github_headers("push", body, "x-1"), None, body)[0] == 202
    wait_for(lambda: server.queue.counts().get("failed") == 1, timeout=30)
    assert server.metrics.value("wishbot_jobs_total", kind="publish", outcome="failed") >= 2
    assert forges.github.status_of(merge_sha, PUBLISH)["state"] == "failure"  # type: ignore[index]


def test_healthz_and_metrics(make_server: Make) -> None:
    server = make_server(workers=False)
    host, port = server.address
    with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as response:
        assert response.status == 200 and response.read() == b"ok\n"
    body = json.dumps(github_push("main", "d" * 40)).encode()
    post(server, github_headers("push", body, "m-1"), None, body)
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    assert "# TYPE wishbot_webhook_events_total counter" in text
    assert 'wishbot_webhook_events_total{result="accepted"} 1' in text
    assert 'wishbot_queue_jobs{state="queued"} 1' in text


def test_a_job_that_raises_does_not_stop_the_workers(make_server: Make, forges: Forges) -> None:
    server = make_server(max_attempts=2, plan_workers=1)
    ghost = github_pull("opened")
    ghost["pull_request"]["number"] = 99  # the forge answers 404
    body = json.dumps(ghost).encode()
    assert post(server, github_headers("pull_request", body, "g-1"), None, body)[0] == 202
    wait_for(lambda: server.queue.counts().get("failed") == 1)
    # a 404 will not go away: failed at once, not retried like a 503
    assert server.metrics.value("wishbot_job_failures_total", kind="review") == 1
    number, head = open_github_pull(forges)
    payload = github_pull("opened")
    payload["pull_request"]["number"] = number
    body = json.dumps(payload).encode()
    assert post(server, github_headers("pull_request", body, "g-2"), None, body)[0] == 202
    wait_for(lambda: (forges.github.status_of(head, PLAN) or {}).get("state") == "success")


def test_a_killed_server_fails_its_statuses_and_reruns_the_job(
    tmp_path: Path, forges: Forges
) -> None:
    """kill -9 during a review; the restarted server fails the stale statuses at
    start and runs the job again at once: long before its (60 s) lease would expire."""
    number, head = open_github_pull(forges)
    hang = tmp_path / "hang"
    hang.touch()
    address = tmp_path / "address"
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps(
            {
                "repository": forges.github.full_name,
                "api_url": forges.github.api_url,
                "token": forges.github.token,
                "secret": SECRET,
                "state_dir": str(tmp_path / "state"),
                "hang": str(hang),
                "address": str(address),
                "visibility": 60.0,
            }
        )
    )
    script = Path(__file__).with_name("serve_process.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}

    def launch() -> tuple[subprocess.Popen[bytes], str]:
        address.unlink(missing_ok=True)
        process = subprocess.Popen([sys.executable, str(script), str(settings)], env=env)
        wait_for(address.exists)
        return process, address.read_text()

    first, where = launch()
    try:
        payload = github_pull("opened")
        payload["pull_request"]["number"] = number
        body = json.dumps(payload).encode()
        request = urllib.request.Request(
            f"http://{where}/webhook",
            data=body,
            headers=github_headers("pull_request", body, "k-1"),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202
        wait_for(lambda: (forges.github.status_of(head, PLAN) or {}).get("state") == "pending")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    hang.unlink()
    second, _ = launch()
    restarted = time.monotonic()
    try:
        states = lambda: [s["state"] for s in forges.github.statuses.get(head, [])]  # noqa: E731
        wait_for(lambda: "error" in states())  # failed at start by recover()
        wait_for(lambda: states()[-1] == "success" and states().count("success") == 2)
        assert time.monotonic() - restarted < 30  # not after the lease
        assert len(forges.github.pulls[number].comments) == 1
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)

"""A site for registry events: the real ``docker-registry`` sending its own
notifications (distribution's envelope, a bearer token in the endpoint's
headers) to a running webhook server with the real pipeline and a ``local:``
publisher, and a local wishlist repository. Used by tests/test_registry_events.py
and bench/latency.py."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from forge_sites import git

from bot.config import Config
from bot.forge.local import LocalForge
from bot.publisher.state import read_state
from bot.runtime.journal import Journal
from bot.runtime.pipeline import WishbotPipeline
from bot.runtime.queue import Queue
from bot.runtime.server import WebhookServer
from bot.sandbox.demo_images import base_layer, push_demo_image
from bot.sandbox.image_builder import PushedImage
from bot.sandbox.registry_server import LocalRegistry

TOKEN = "registry-token-for-tests"
SECRET = "forge-secret-for-tests"
CVMFS_REPO = "unpacked.example.org"
ENVELOPE = "application/vnd.docker.distribution.events.v1+json"
BASE = base_layer()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Site:
    registry: LocalRegistry
    server: WebhookServer
    repo: Path
    tree: Path
    forge: LocalForge
    cvmfs_repo: str = CVMFS_REPO
    #: where published images are looked for (a client mount for ``cvmfs:``); default ``tree``
    view: Callable[[], Path] | None = None

    @property
    def url(self) -> str:
        host, port = self.server.address
        return f"http://{host}:{port}"

    def wish(self, *inputs: str) -> None:
        """Commit a wishlist of ``events/<input>`` images on main."""
        lines = [
            "version: 1",
            "user: tester",
            f"cvmfs_repo: '{self.cvmfs_repo}'",
            "output_format: 'example.org/thin/$(image)'",
            "input:",
            *[f"  - '{self.registry.host}/events/{text}'" for text in inputs],
        ]
        git(self.repo, "checkout", "-q", "main")
        (self.repo / "wishlist.yaml").write_text("\n".join(lines) + "\n")
        git(self.repo, "commit", "-q", "--allow-empty", "-am", "wishlist")
        git(self.repo, "checkout", "-q", "--detach")

    def push(self, name: str, tag: str, version: str) -> PushedImage:
        image = push_demo_image(self.registry.url, f"events/{name}", tag, version, base=BASE)
        return image.pushed

    def published(self, name: str, tag: str) -> str | None:
        """The manifest digest the publisher serves for ``events/name:tag``."""
        path = f"{self.registry.host}/events/{name}:{tag}"
        root = self.view() if self.view else self.tree
        for image in read_state(root, self.cvmfs_repo).images:
            if image.path == path:
                return image.manifest_digest
        return None

    def refresh_jobs(self) -> list[tuple[str, dict[str, object]]]:
        with sqlite3.connect(self.server.queue.path) as db:
            rows = db.execute("SELECT state, payload FROM jobs WHERE kind = 'refresh'").fetchall()
        return [(state, json.loads(payload)) for state, payload in rows]

    def idle(self) -> bool:
        return all(state in ("done", "failed") for state, _ in self.refresh_jobs())

    def post(self, fmt: str, body: bytes, headers: dict[str, str]) -> requests.Response:
        return requests.post(
            f"{self.url}/hooks/registry/{fmt}", data=body, headers=headers, timeout=10
        )


def wait_for(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def notifications_to(port: int) -> dict[str, object]:
    """distribution's ``notifications:`` block sending pushes to a server on ``port``."""
    return {
        "endpoints": [
            {
                "name": "wishbot",
                "url": f"http://127.0.0.1:{port}/hooks/registry/distribution",
                "headers": {"Authorization": [f"Bearer {TOKEN}"]},
                "timeout": "2s",
                "threshold": 5,
                "backoff": "200ms",
                "ignore": {"actions": ["pull"]},
            }
        ]
    }


@contextmanager
def event_site(
    work: Path,
    *,
    debounce: float = 1.0,
    publisher: str | None = None,
    cvmfs_repo: str = CVMFS_REPO,
    view: Callable[[], Path] | None = None,
) -> Iterator[Site]:
    """A real registry whose notifications go to a running server (real pipeline,
    ``local:`` publisher under ``work`` unless ``publisher`` says otherwise), and
    the wishlist repository."""
    port = _free_port()
    notifications = notifications_to(port)
    repo = work / "wishlists"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "wishlist.yaml").write_text(
        f"version: 1\nuser: t\ncvmfs_repo: '{cvmfs_repo}'\n"
        "output_format: 'example.org/thin/$(image)'\ninput: []\n"
    )
    git(repo, "add", "wishlist.yaml")
    git(repo, "commit", "-q", "-m", "empty")
    git(repo, "checkout", "-q", "--detach")
    forge = LocalForge(repo, default="main")
    with LocalRegistry(notifications=notifications) as registry:
        config = Config(
            insecure_registries=(registry.host,),
            publisher=publisher or f"local:{work / 'tree'}",
            thin=False,
            forge="local",
            repositories=("team/wishlist",),
            listen=f"127.0.0.1:{port}",
            registry_events=(f"{registry.host}/events/*", "docker.io/team/*"),
            registry_event_debounce=debounce,
            state_dir=str(work / "state"),
            reapply_interval=0,
            timeout=10.0,
            retries=1,
            backoff=0.01,
        )
        server = WebhookServer(
            config,
            secret=SECRET,
            queue=Queue(work / "state" / "queue.sqlite", visibility=60),
            journal=Journal(work / "state" / "journal.sqlite"),
            pipeline=WishbotPipeline(config),
            forge_for=lambda kind, repository: forge,
            plan_workers=1,
            poll=0.05,
            registry_token=TOKEN,
        )
        server.start()
        try:
            yield Site(registry, server, repo, work / "tree", forge, cvmfs_repo, view)
        finally:
            server.stop()

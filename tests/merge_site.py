"""A site for merges published through the forge webhook: the GitLab fake
(loopback) holding the wishlist, a real registry, and a running webhook server
with the real pipeline and a ``local:`` publisher. A merge on the fake is
delivered to the server as GitLab's push webhook (``Push Hook``). Used by
bench/latency.py and the registry-event note tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from fake_gitlab import FakeGitLab
from registry_events_site import TOKEN, _free_port, notifications_to

from bot.config import Config
from bot.forge.gitlab import GitLabForge
from bot.publisher.state import read_state
from bot.runtime.journal import Journal
from bot.runtime.pipeline import WishbotPipeline
from bot.runtime.queue import Queue
from bot.runtime.server import WebhookServer
from bot.sandbox.demo_images import base_layer, push_demo_image
from bot.sandbox.image_builder import PushedImage
from bot.sandbox.registry_server import LocalRegistry

SECRET = "forge-secret-for-tests"
CVMFS_REPO = "unpacked.example.org"
BASE = base_layer()


@dataclass
class MergeSite:
    fake: FakeGitLab
    registry: LocalRegistry
    server: WebhookServer
    tree: Path

    def wishlist(self, *inputs: str) -> bytes:
        lines = [
            "version: 1",
            "user: tester",
            f"cvmfs_repo: '{CVMFS_REPO}'",
            "output_format: 'example.org/thin/$(image)'",
            "input:",
            *[f"  - '{self.registry.host}/merged/{text}'" for text in inputs],
        ]
        return ("\n".join(lines) + "\n").encode()

    def push(self, name: str, tag: str, version: str) -> PushedImage:
        image = push_demo_image(self.registry.url, f"merged/{name}", tag, version, base=BASE)
        return image.pushed

    def merge(self, branch: str, *inputs: str) -> tuple[int, str]:
        """A merge request on ``branch`` setting the wishlist to ``inputs``, merged:
        its number and the merge commit."""
        self.fake.repo.branch(branch, "main")
        self.fake.repo.commit(branch, {"wishlist.yaml": self.wishlist(*inputs)}, branch)
        mr = self.fake.open_mr(branch, title=branch)
        return mr.iid, self.fake.merge(mr.iid)

    def deliver_push(self, sha: str) -> int:
        """GitLab's push webhook for ``sha`` on main; the HTTP status."""
        host, port = self.server.address
        push: dict[str, Any] = {
            "object_kind": "push",
            "ref": "refs/heads/main",
            "after": sha,
            "project": {"path_with_namespace": self.fake.project},
            "commits": [{"id": sha, "message": "merge"}],
        }
        answer = requests.post(
            f"http://{host}:{port}/webhook",
            data=json.dumps(push).encode(),
            headers={
                "Content-Type": "application/json",
                "X-Gitlab-Event": "Push Hook",
                "X-Gitlab-Token": SECRET,
            },
            timeout=10,
        )
        return answer.status_code

    def published(self, name: str, tag: str) -> str | None:
        """The manifest digest the publisher serves for ``merged/name:tag``."""
        path = f"{self.registry.host}/merged/{name}:{tag}"
        for image in read_state(self.tree, CVMFS_REPO).images:
            if image.path == path:
                return image.manifest_digest
        return None


@contextmanager
def merge_site(work: Path, **settings: Any) -> Iterator[MergeSite]:
    """The fake GitLab with an empty wishlist on main, a registry, and a running
    server (real pipeline, ``local:`` publisher under ``work``); ``settings``
    are more Config fields. With ``registry_events`` among them, the registry
    sends its notifications to the server too (``registry_events_site``'s way)."""
    port = _free_port()
    fake = FakeGitLab()
    fake.start()
    try:
        events = "registry_events" in settings
        with LocalRegistry(notifications=notifications_to(port) if events else None) as registry:
            site_of = MergeSite(fake, registry, None, work / "tree")  # type: ignore[arg-type]
            fake.repo.commit("main", {"wishlist.yaml": site_of.wishlist()}, "initial")
            forge = GitLabForge(fake.url, fake.project, fake.token)
            config = Config(
                insecure_registries=(registry.host,),
                publisher=f"local:{work / 'tree'}",
                thin=False,
                forge="gitlab",
                repositories=(fake.project,),
                listen=f"127.0.0.1:{port}",
                state_dir=str(work / "state"),
                reapply_interval=0,
                timeout=10.0,
                retries=1,
                backoff=0.01,
                **settings,
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
            site_of.server = server
            try:
                yield site_of
            finally:
                server.stop()
    finally:
        fake.stop()

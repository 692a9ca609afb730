"""Test-side control of the three forges (shared by the forge and runtime tests):
GitLab and GitHub fakes on loopback, a real local git repository, and a small
recording Pipeline (wishbot's own interface, so an in-test one is fine)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fake_github import FakeGitHub
from fake_gitlab import FakeGitLab

from bot.forge.base import Forge
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.forge.local import LocalForge
from bot.runtime.pipeline_api import PLAN_MARKER, Publication, Review

WISHLIST = b"version: 1\nimages: []\n"
CHANGED = b"version: 1\nimages:\n  - docker.io/library/alpine:3.19\n"


class Site(Protocol):
    """Test-side control of a forge: make branches and merge requests, look at state."""

    @property
    def forge(self) -> Forge: ...

    def branch(self, name: str, files: dict[str, bytes]) -> str: ...
    def open(self, branch: str, *, fork: bool = False, draft: bool = False) -> str: ...
    def merge(self, number: str) -> str: ...
    def head(self, branch: str) -> str: ...
    def status(self, sha: str, context: str) -> str | None: ...
    def comment_bodies(self, number: str) -> list[str]: ...
    def human_comment(self, number: str, body: str) -> None: ...


class GitLabSite:
    def __init__(self) -> None:
        self.fake = FakeGitLab()
        self.fake.start()
        self.fake.repo.commit("main", {"wishlist.yaml": WISHLIST}, "initial")
        self.forge = GitLabForge(self.fake.url, self.fake.project, self.fake.token)

    def branch(self, name: str, files: dict[str, bytes]) -> str:
        self.fake.repo.branch(name, "main")
        return self.fake.repo.commit(name, dict(files), f"change on {name}")

    def open(self, branch: str, *, fork: bool = False, draft: bool = False) -> str:
        return str(self.fake.open_mr(branch, fork=fork, draft=draft).iid)

    def merge(self, number: str) -> str:
        return self.fake.merge(int(number))

    def head(self, branch: str) -> str:
        return self.fake.repo.branches[branch]

    def status(self, sha: str, context: str) -> str | None:
        found = self.fake.status_of(sha, context)
        return None if found is None else str(found["status"])

    def comment_bodies(self, number: str) -> list[str]:
        return [n["body"] for n in self.fake.mrs[int(number)].notes]

    def human_comment(self, number: str, body: str) -> None:
        self.fake.human_note(int(number), body)


class GitHubSite:
    def __init__(self) -> None:
        self.fake = FakeGitHub()
        self.fake.start()
        self.fake.repo.commit("main", {"wishlist.yaml": WISHLIST}, "initial")
        self.forge = GitHubForge(
            self.fake.api_url, self.fake.full_name, self.fake.token, write_interval=None
        )

    def branch(self, name: str, files: dict[str, bytes]) -> str:
        self.fake.repo.branch(name, "main")
        return self.fake.repo.commit(name, dict(files), f"change on {name}")

    def open(self, branch: str, *, fork: bool = False, draft: bool = False) -> str:
        return str(self.fake.open_pull(branch, fork=fork, draft=draft).number)

    def merge(self, number: str) -> str:
        return self.fake.merge(int(number))

    def head(self, branch: str) -> str:
        return self.fake.repo.branches[branch]

    def status(self, sha: str, context: str) -> str | None:
        found = self.fake.status_of(sha, context)
        return None if found is None else str(found["state"])

    def comment_bodies(self, number: str) -> list[str]:
        return [c["body"] for c in self.fake.pulls[int(number)].comments]

    def human_comment(self, number: str, body: str) -> None:
        self.fake.human_comment(int(number), body)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class LocalSite:
    """A real repository; the working tree stays detached so branch updates are safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        git(path, "init", "-q", "-b", "main")
        (path / "wishlist.yaml").write_bytes(WISHLIST)
        git(path, "add", "wishlist.yaml")
        git(path, "commit", "-q", "-m", "initial")
        git(path, "checkout", "-q", "--detach")
        self.forge: LocalForge = LocalForge(path, default="main")

    def branch(self, name: str, files: dict[str, bytes]) -> str:
        git(self.path, "checkout", "-q", "-B", name, "main")
        for file, content in files.items():
            (self.path / file).parent.mkdir(parents=True, exist_ok=True)
            (self.path / file).write_bytes(content)
            git(self.path, "add", file)
        git(self.path, "commit", "-q", "-m", f"change on {name}")
        git(self.path, "checkout", "-q", "--detach")
        return git(self.path, "rev-parse", name)

    def open(self, branch: str, *, fork: bool = False, draft: bool = False) -> str:
        assert not fork, "the local forge has no forks"
        if draft:
            git(self.path, "branch", "-m", branch, f"draft/{branch}")
            return f"draft/{branch}"
        return branch

    def merge(self, number: str) -> str:
        return self.forge.merge(number)

    def head(self, branch: str) -> str:
        return git(self.path, "rev-parse", branch)

    def status(self, sha: str, context: str) -> str | None:
        found = self.forge.statuses(sha).get(context)
        return None if found is None else found[0]

    def comment_bodies(self, number: str) -> list[str]:
        return [c.body for c in self.forge.comments(self.forge.merge_request(number))]

    def human_comment(self, number: str, body: str) -> None:
        self.forge.add_comment_as(self.forge.merge_request(number), "mallory", body)


@dataclass
class RecordingPipeline:
    """Records what it was asked; ``fail`` makes the next call raise it."""

    reviews: list[tuple[bytes | None, bytes, bool]] = field(default_factory=list)
    publications: list[tuple[bytes, str]] = field(default_factory=list)
    fail: Exception | None = None
    valid: bool = True
    publish_ok: bool = True
    collections: int = 0

    def review(
        self,
        base: bytes | None,
        head: bytes,
        path: str,
        *,
        trusted: bool,
        catalog: bytes | None = None,
    ) -> Review:
        self.reviews.append((base, head, trusted))
        if self.fail:
            raise self.fail
        return Review(
            valid=self.valid,
            validate_description="1 image, valid" if self.valid else "1 problem",
            planned=self.valid,
            plan_description="1 image to add" if self.valid else "not planned",
            comment=f"{PLAN_MARKER}\n### Plan\nreview number {len(self.reviews)}\n",
        )

    def publish(self, wishlist: bytes, path: str, commit: str) -> Publication:
        self.publications.append((wishlist, commit))
        if self.fail:
            raise self.fail
        if not self.publish_ok:
            return Publication(ok=False, description="failed", failure="registry down")
        return Publication(
            ok=True,
            description="1 image published",
            published=("/cvmfs/unpacked.example.org/registry.hub.docker.com/library/alpine:3.19",),
            catalog={"CATALOG.md": b"# Catalog\n", "catalog.json": b'{"images": 1}\n'},
        )

    def collect(self) -> str:
        self.collections += 1
        return "gc: deleted 0 image(s) and 0 layer(s); 0 waiting for their grace period"

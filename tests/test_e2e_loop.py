"""The whole GitOps loop with real parts: a git wishlist repository (local forge),
a registry process on loopback, the real pipeline, a local publisher tree.

merge request -> one plan comment + statuses -> new commit -> the same comment
updated -> merge -> publish (symlinks, flat images, catalog committed back,
publish comment) -> a request that moves a tag and removes an image -> publish
-> gc after the grace period. Plus invalid requests, and the same review over
real HTTP against the fake GitLab.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from fake_gitlab import FakeGitLab
from forge_sites import git

from bot.config import Config
from bot.core import layout
from bot.core.catalog import CATALOG_JSON, CATALOG_MD
from bot.forge.gitlab import GitLabForge
from bot.forge.local import LocalForge
from bot.publisher import open_publisher
from bot.publisher.gc import GcReport, collect
from bot.runtime.journal import Journal
from bot.runtime.pipeline import WishbotPipeline
from bot.runtime.pipeline_api import PLAN_MARKER, PUBLISH_MARKER
from bot.runtime.workflow import PLAN, PUBLISH, VALIDATE, on_merge_request, on_push, on_schedule
from bot.sandbox.demo_images import DemoImage, base_layer, message, push_demo_image
from bot.sandbox.registry_server import LocalRegistry

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CVMFS_REPO = "unpacked.example.org"
GRACE_DAYS = 7
BASE = base_layer()


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Loop:
    """A wishlist repository, a publisher tree and the bot's configuration."""

    registry: LocalRegistry
    prefix: str  # repository name prefix on the registry (unique per test)
    repo: Path
    tree: Path
    clock: Clock = field(default_factory=Clock)
    journal: Journal = field(default_factory=Journal)

    def __post_init__(self) -> None:
        self.repo.mkdir()
        git(self.repo, "init", "-q", "-b", "main")
        self.write(self.wishlist([]))
        git(self.repo, "add", "wishlist.yaml")
        git(self.repo, "commit", "-q", "-m", "empty wishlist")
        git(self.repo, "checkout", "-q", "--detach")
        self.forge = LocalForge(self.repo, default="main")

    # --- configuration ----------------------------------------------------------
    def config(self, *, publisher: bool = True) -> Config:
        return Config(
            insecure_registries=(self.registry.host,),
            publisher=f"local:{self.tree}" if publisher else "",
            grace_days=GRACE_DAYS,
            timeout=10.0,
            retries=0,
            backoff=0.01,
        )

    def pipeline(self, *, publisher: bool = True) -> WishbotPipeline:
        return WishbotPipeline(self.config(publisher=publisher), clock=self.clock)

    # --- images and wishlists ---------------------------------------------------
    def push(self, name: str, tag: str, version: str) -> DemoImage:
        return push_demo_image(self.registry.url, f"{self.prefix}/{name}", tag, version, base=BASE)

    def wishlist(self, inputs: list[str]) -> str:
        lines = [
            "version: 1",
            "user: tester",
            f"cvmfs_repo: '{CVMFS_REPO}'",
            f"output_format: '{self.registry.host}/thin/$(image)'",
        ]
        lines += ["input:", *[f"  - '{text}'" for text in inputs]] if inputs else ["input: []"]
        return "\n".join(lines) + "\n"

    def write(self, text: str) -> None:
        (self.repo / "wishlist.yaml").write_text(text)

    def commit(self, branch: str, text: str, *, new: bool = True) -> str:
        """Commit ``text`` as the wishlist on ``branch`` (created from main when ``new``)."""
        git(self.repo, "checkout", "-q", *(["-B", branch, "main"] if new else [branch]))
        self.write(text)
        git(self.repo, "commit", "-q", "-am", f"wishlist change on {branch}")
        git(self.repo, "checkout", "-q", "--detach")
        return git(self.repo, "rev-parse", branch)

    # --- the bot ----------------------------------------------------------------
    def review(self, branch: str, *, publisher: bool = True) -> tuple[str, dict[str, str]]:
        """Run the bot on the request; its one plan comment and head statuses."""
        mr = self.forge.merge_request(branch)
        on_merge_request(
            self.forge, self.pipeline(publisher=publisher), mr, self.config(), self.journal
        )
        plans = [c.body for c in self.forge.comments(mr) if PLAN_MARKER in c.body]
        assert len(plans) == 1, plans
        statuses = {k: f"{s}: {d}" for k, (s, d) in self.forge.statuses(mr.head_sha).items()}
        return plans[0], statuses

    def merge_and_publish(self, branch: str) -> tuple[str, str]:
        merge = self.forge.merge(branch)
        outcome = on_push(self.forge, self.pipeline(), "main", merge, self.config(), self.journal)
        assert outcome.ok, outcome
        return merge, outcome.catalog_commit

    def gc(self, now: datetime) -> GcReport:
        publisher = open_publisher(f"local:{self.tree}")
        with publisher.lock():
            return collect(publisher, now, grace_days=GRACE_DAYS, max_deletions=100)

    def path(self, image: DemoImage) -> Path:
        return self.tree / image.registry / f"{image.repository}:{image.tag}"


@pytest.fixture
def loop(registry: LocalRegistry, unique_repo: str, tmp_path: Path) -> Loop:
    return Loop(registry, unique_repo, tmp_path / "wishlist", tmp_path / "tree")


def base_digest(image: DemoImage) -> str:
    return image.pushed.layer_digests[0]


def layer_bytes(*images: DemoImage) -> int:
    """Compressed bytes of the distinct layers of ``images``."""
    sizes: dict[str, int] = {}
    for image in images:
        sizes.update(zip(image.pushed.layer_digests, image.pushed.layer_sizes, strict=True))
    return sum(sizes.values())


def _image_rows(comment: str) -> dict[str, str]:
    """Rows of a plan comment's every-image table: reference -> the whole row."""
    rows = {}
    for line in comment.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and "/" in cells[0]:
            rows[cells[0].strip("`")] = line  # paths are code spans
    return rows


def test_the_whole_loop(loop: Loop) -> None:
    hello = loop.push("hello", "1.0", "1.0")
    greeter = loop.push("greeter", "2.1", "2.1")
    tool = loop.push("tool", "3", "3.0")

    # 1. a merge request asking for two images: one comment, statuses success
    loop.commit("add-images", loop.wishlist([hello.reference, greeter.reference]))
    comment, statuses = loop.review("add-images")
    assert statuses[VALIDATE].startswith("success: wishlist.yaml is valid, 2 new")
    size = layer_bytes(hello, greeter)
    assert size < 1000  # shown in bytes
    assert statuses[PLAN] == f"success: 2 images to add, 3 layers ({size} B) to ingest"
    rows = _image_rows(comment)
    assert set(rows) == {hello.reference, greeter.reference}
    for image in (hello, greeter):
        assert "➕ add" in rows[image.reference]
        assert f"`{image.pushed.manifest_digest[7:19]}`" in rows[image.reference]
        assert "linux/amd64" in rows[image.reference]
    assert f"3 layers to download ({size} B)" in comment
    for digest in {*hello.pushed.layer_digests, *greeter.pushed.layer_digests}:
        assert f"`{digest}`" in comment
    short = base_digest(hello)[7:19]
    base_row = next(line for line in comment.splitlines() if line.startswith(f"| `{short}` |"))
    assert base_row.endswith("| 2 | — |")  # two users after the change

    # 2. a new commit on the request: the same comment is edited, still one
    loop.commit(
        "add-images",
        loop.wishlist([hello.reference, greeter.reference, tool.reference]),
        new=False,
    )
    updated, statuses = loop.review("add-images")
    assert updated != comment and set(_image_rows(updated)) == {
        hello.reference,
        greeter.reference,
        tool.reference,
    }
    assert statuses[PLAN].startswith("success: 3 images to add, 4 layers")
    mr = loop.forge.merge_request("add-images")
    assert len(loop.forge.comments(mr)) == 1

    # 3. merge and publish
    merge, catalog_commit = loop.merge_and_publish("add-images")
    assert loop.forge.statuses(merge)[PUBLISH] == ("success", "3 images published")
    for image in (hello, greeter, tool):
        link = loop.path(image)
        assert link.is_symlink() and not os.readlink(link).startswith("/")
        assert link.resolve() == (loop.tree / layout.flat_dir(image.image_id)).resolve()
        name = image.repository.rsplit("/", 1)[-1]
        assert (link / f"srv/{name}/message.txt").read_text() == message(name, image.version)
        assert os.access(link / "bin/hello", os.X_OK)
    # the thin image went to the registry named by output_format
    thin = requests.get(f"{loop.registry.url}/v2/thin/{hello.repository}/tags/list", timeout=10)
    assert thin.status_code == 200 and thin.json()["tags"] == ["1.0"]
    # the catalog, committed back on main by the bot
    assert catalog_commit and git(loop.repo, "rev-parse", "main") == catalog_commit
    assert git(loop.repo, "rev-parse", f"{catalog_commit}^") == merge
    assert "[skip ci]" in git(loop.repo, "log", "-1", "--format=%s", catalog_commit)
    catalog = json.loads(loop.forge.read_file(CATALOG_JSON, "main") or b"")
    catalog_md = (loop.forge.read_file(CATALOG_MD, "main") or b"").decode()
    assert json.dumps(catalog).count(hello.image_id) >= 1
    for image in (hello, greeter, tool):
        assert f"/cvmfs/{CVMFS_REPO}/{image.reference}" in catalog_md
    # the publish comment on the merged request lists the /cvmfs paths
    merged = loop.forge.merge_request("add-images")
    assert merged.state == "merged"
    (published,) = [c.body for c in loop.forge.comments(merged) if PUBLISH_MARKER in c.body]
    for image in (hello, greeter, tool):
        assert f"/cvmfs/{CVMFS_REPO}/{image.reference}" in published.replace("\\", "")
    assert loop.journal.unfinished() == []

    # 4. a request moving hello's tag to a new build and removing greeter
    loop.clock.now = START + timedelta(days=1)
    moved = loop.push("hello", "1.0", "1.1")
    assert moved.image_id != hello.image_id
    loop.commit("drop-greeter", loop.wishlist([hello.reference, tool.reference]))
    # the review reads the current state from catalog.json when it has no publisher ...
    from_catalog, statuses = loop.review("drop-greeter", publisher=False)
    assert statuses[VALIDATE].startswith("success")
    # ... and from the tree when it has one: both see the same removal
    from_tree, _ = loop.review("drop-greeter", publisher=True)
    deletion = (START + timedelta(days=1 + GRACE_DAYS)).date().isoformat()
    greeter_layer = greeter.pushed.layer_digests[1]
    for comment in (from_catalog, from_tree):
        row = _image_rows(comment)[greeter.reference]
        assert f"➖ remove, served until {deletion}" in row
        assert f"1 removed path keeps working until {deletion}, then it is deleted" in comment
        assert f"`{greeter.pushed.manifest_digest[7:19]}`" in row
        assert "1 layer deleted after the grace period" in comment
        assert f"`{greeter_layer}`" in comment
        assert base_digest(hello) not in comment  # still used by the others
    # merging publishes the whole wishlist: the moved tag and the removal
    merge, _ = loop.merge_and_publish("drop-greeter")
    state, description = loop.forge.statuses(merge)[PUBLISH]
    assert (state, description) == ("success", "1 image published, 2 images scheduled for removal")
    assert loop.path(hello).resolve() == (loop.tree / layout.flat_dir(moved.image_id)).resolve()
    assert (loop.path(hello) / "srv/hello/message.txt").read_text() == message("hello", "1.1")
    # greeter left the wishlist: its path serves the same image until gc (queued jobs work)
    assert loop.path(greeter).resolve() == (loop.tree / layout.flat_dir(greeter.image_id)).resolve()
    catalog = json.loads(loop.forge.read_file(CATALOG_JSON, "main") or b"")
    (served,) = [i for i in catalog["images"] if i["image_id"] == greeter.image_id]
    assert served["deletion"].startswith(deletion)  # served, and scheduled for deletion
    (entry,) = [r for r in catalog["schedule"] if r["id"] == greeter.image_id]
    assert entry["serving"] and entry["path"] == str(greeter.reference)
    catalog_md = (loop.forge.read_file(CATALOG_MD, "main") or b"").decode()
    assert f"⏳ removed from the wishlist, deleted after {deletion}" in catalog_md

    # 5. gc: nothing goes within the grace period, the old images and their layers after it
    early = loop.gc(START + timedelta(days=GRACE_DAYS))
    assert early.deleted_images == [] and early.deleted_layers == []
    assert (loop.tree / layout.flat_dir(hello.image_id)).is_dir()
    assert (loop.path(greeter) / "srv/greeter/message.txt").is_file()  # still served
    # ... and the bot's scheduled maintenance (re-publish, then gc) after it
    loop.clock.now = START + timedelta(days=GRACE_DAYS + 2)
    catalog_before = loop.forge.read_file(CATALOG_JSON, "main")
    done = on_schedule(loop.forge, loop.pipeline(), loop.config(), loop.journal)
    assert done.action == "maintained", done
    assert "gc: deleted 1 retiring path(s), 2 image(s) and 2 layer(s)" in done.detail
    assert not os.path.lexists(loop.path(greeter))
    assert "nothing to publish" in done.detail
    catalog_after = loop.forge.read_file(CATALOG_JSON, "main")
    assert catalog_before and catalog_after and catalog_after != catalog_before
    assert greeter.image_id not in catalog_after.decode()  # deleted, so no longer listed
    for gone in (hello.image_id, greeter.image_id):
        assert not (loop.tree / layout.flat_dir(gone)).exists()
    for digest in (hello.pushed.layer_digests[1], greeter_layer):
        assert not (loop.tree / layout.layer_dir(digest)).exists()
    for kept in (moved, tool):
        assert (loop.tree / layout.flat_dir(kept.image_id)).is_dir()
        for digest in kept.pushed.layer_digests:
            assert (loop.tree / layout.layerfs_dir(digest)).is_dir()
    assert (loop.path(tool) / "srv/tool/message.txt").read_text() == message("tool", "3.0")


def test_invalid_wishlist_fails_validation_at_its_line(loop: Loop) -> None:
    text = loop.wishlist([f"{loop.registry.host}/{loop.prefix}/fine:1", "@@"])
    text = text.replace("  - '@@'", "  - [nested, list]")
    head = loop.commit("broken", text)
    comment, statuses = loop.review("broken")
    assert statuses[VALIDATE].startswith("failure: ")
    assert statuses[PLAN].startswith("failure: ")
    line = text.splitlines().index("  - [nested, list]") + 1
    assert re.search(rf"wishlist\.yaml:{line}:\d+", comment), comment
    assert f"line {line}" in statuses[VALIDATE]
    assert loop.forge.statuses(head)[VALIDATE][0] == "failure"
    assert "cannot be planned" in comment


def test_yaml_syntax_error_points_at_file_and_line(loop: Loop) -> None:
    text = loop.wishlist([]).replace("input: []", "input:\n  - 'unterminated")
    loop.commit("syntax", text)
    comment, statuses = loop.review("syntax")
    assert statuses[VALIDATE].startswith("failure: ")
    assert re.search(r"wishlist\.yaml:\d+:\d+", comment), comment


def test_nonexistent_tag_fails_validation_with_not_found_at_its_line(loop: Loop) -> None:
    hello = loop.push("hello", "1.0", "1.0")
    missing = f"{loop.registry.host}/{hello.repository}:no-such-tag"
    text = loop.wishlist([hello.reference, missing])
    loop.commit("typo", text)
    comment, statuses = loop.review("typo")
    line = text.splitlines().index(f"  - '{missing}'") + 1
    assert statuses[VALIDATE].startswith("failure: 1 error: ")
    assert f"line {line}: {missing}: no such image" in statuses[VALIDATE]
    assert statuses[PLAN].startswith("failure: blocked")
    # no internal code ("not-found"): the line, the image and what the registry said
    assert re.search(rf"❌ \*\*wishlist\.yaml:{line}:\d+\*\* `{re.escape(missing)}`", comment)
    # the good image is still planned, the bad one's wish row says it is not published
    rows = _image_rows(comment)
    assert "➕ add" in rows[hello.reference]
    (wish_row,) = [line for line in comment.splitlines() if f"| `{missing}` |" in line]
    assert "❌ not published" in wish_row


def test_ignored_error_is_a_warning_in_the_comment_and_the_statuses(loop: Loop) -> None:
    """ignoreErrors agrees with itself: statuses success, the comment says ⚠️, not ❌."""
    hello = loop.push("hello", "1.0", "1.0")
    missing = f"{loop.registry.host}/{hello.repository}:no-such-tag"
    text = loop.wishlist([hello.reference, missing])
    text = text.replace("input:", f"ignoreErrors: ['{missing}']\ninput:")
    loop.commit("ignored", text)
    comment, statuses = loop.review("ignored")
    assert statuses[VALIDATE].startswith("success: ") and statuses[PLAN].startswith("success: ")
    assert "❌" not in comment
    assert comment.count("**✅ ") == 1 and "; 1 warning**" in comment
    (wish_row,) = [line for line in comment.splitlines() if f"| `{missing}` |" in line]
    assert "⚠️ not published (error ignored)" in wish_row


@pytest.fixture
def gitlab(loop: Loop) -> Iterator[FakeGitLab]:
    fake = FakeGitLab()
    fake.start()
    fake.repo.commit("main", {"wishlist.yaml": loop.wishlist([]).encode()}, "initial")
    yield fake
    fake.stop()


def test_gitlab_review_with_the_real_pipeline_over_http(loop: Loop, gitlab: FakeGitLab) -> None:
    hello = loop.push("hello", "1.0", "1.0")
    gitlab.repo.branch("add-hello", "main")
    head = gitlab.repo.commit(
        "add-hello", {"wishlist.yaml": loop.wishlist([hello.reference]).encode()}, "add hello"
    )
    iid = gitlab.open_mr("add-hello").iid
    forge = GitLabForge(gitlab.url, gitlab.project, gitlab.token)
    for _ in range(2):  # a re-run edits the comment, never adds one
        outcome = on_merge_request(
            forge, loop.pipeline(), forge.merge_request(str(iid)), loop.config(), Journal()
        )
        assert outcome.ok and outcome.action == "reviewed"
    (note,) = [n["body"] for n in gitlab.mrs[iid].notes]
    assert PLAN_MARKER in note and "➕ add" in _image_rows(note)[hello.reference]
    for context in (VALIDATE, PLAN):
        status = gitlab.status_of(head, context)
        assert status is not None and status["status"] == "success", status

"""``wishbot demo``: the whole GitOps loop on this machine, with no network.

It starts a real registry on loopback with a few small example images,
creates a wishlist repository (a plain git repository served by the local
forge: a branch is a merge request), and then plays two merge requests:

1. one asking for two images: the bot's plan comment and statuses, the
   merge, the publication into a local tree, the catalog committed back;
2. one moving a tag to a new build and removing an image: the plan shows the
   scheduled removal (the removed image's path keeps working until gc) and
   what publishing will do to the moved tag; merge and publish again;

then garbage collection with a simulated clock (after the grace period),
and, when bubblewrap works here, ``/bin/hello`` run inside a published image.

Everything goes into ``--dir`` (default ``./demo-output``), which is wiped
and recreated on each run and left for you to look at. The registry is
stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bot.config import Config
from bot.core.catalog import CATALOG_MD
from bot.core.recipe import load_wishlist
from bot.core.render import render_text
from bot.errors import UsageError
from bot.forge.base import MergeRequest
from bot.publisher import open_publisher
from bot.publisher.gc import GcReport, collect
from bot.publisher.safetree import force_rmtree
from bot.publisher.state import read_state
from bot.registry.client import RegistryClient
from bot.runtime.journal import Journal
from bot.runtime.pipeline import WishbotPipeline
from bot.runtime.pipeline_api import PLAN_MARKER, PUBLISH_MARKER
from bot.runtime.plan_change import plan_change
from bot.runtime.workflow import PLAN, PUBLISH, VALIDATE, on_merge_request, on_push
from bot.sandbox.demo_images import DemoImage, base_layer, push_demo_image
from bot.sandbox.registry_server import LocalRegistry, SandboxError

if TYPE_CHECKING:  # GitPython needs a git binary at import: only the demo imports it
    import git

DEFAULT_DIR = "demo-output"
MARKER = ".wishbot-demo"
CVMFS_REPO = "unpacked.example.org"
WISHLIST = "wishlist.yaml"
CATALOG_LINES = 25
_IDENTITY = {
    "GIT_AUTHOR_NAME": "Demo User",
    "GIT_AUTHOR_EMAIL": "demo@example.org",
    "GIT_COMMITTER_NAME": "Demo User",
    "GIT_COMMITTER_EMAIL": "demo@example.org",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="play the whole loop locally: registry, merge requests, publish, catalog, gc",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dir",
        default=DEFAULT_DIR,
        metavar="DIR",
        help=f"work directory, wiped and recreated (default ./{DEFAULT_DIR})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    work = prepare_directory(Path(args.dir))
    registry = LocalRegistry()
    try:
        registry.start()
        Demo(work, registry, sys.stdout).play()
    finally:
        registry.stop()
    return 0


# --- the work directory --------------------------------------------------------


def prepare_directory(work: Path) -> Path:
    """Wipe and recreate ``work``; refuse a directory the demo did not make."""
    work = work.absolute()
    if work.exists() or work.is_symlink():
        if work.is_symlink() or not work.is_dir():
            raise UsageError(f"{work} exists and is not a directory", hint="choose another --dir")
        if any(work.iterdir()) and not (work / MARKER).is_file():
            raise UsageError(
                f"{work} is not empty and was not made by 'wishbot demo'",
                hint="choose another --dir, or remove it yourself",
            )
        force_rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text("made by 'wishbot demo'; wiped on its next run\n")
    return work


# --- the scenario --------------------------------------------------------------


class Demo:
    """One run of the demo scenario in ``work`` against a running ``registry``."""

    def __init__(self, work: Path, registry: LocalRegistry, out: TextIO):
        self.work = work
        self.registry = registry
        self.out = out
        self.repo_dir = work / "wishlist-repo"
        self.tree = work / "cvmfs" / CVMFS_REPO
        self.config = Config(
            insecure_registries=(registry.host,),
            publisher=f"local:{self.tree}",
            state_dir=str(work / "state"),
            forge="local",
            forge_url=str(self.repo_dir),
            wishlist_path=WISHLIST,
            timeout=10.0,
            retries=1,
            backoff=0.05,
        )
        self.pipeline = WishbotPipeline(self.config)
        self.journal = Journal.in_state_dir(self.config.state_dir)
        self.repo = self.create_repository()
        from bot.forge.local import LocalForge

        self.forge = LocalForge(self.repo_dir, default="main")

    # --- output ---------------------------------------------------------------

    def heading(self, title: str) -> None:
        print(f"\n{'=' * 78}\n== {title}\n{'=' * 78}", file=self.out)

    def say(self, text: str = "") -> None:
        print(text, file=self.out)

    def block(self, text: str, indent: str = "  | ") -> None:
        for line in text.rstrip("\n").splitlines():
            self.say(f"{indent}{line}".rstrip())

    # --- steps ----------------------------------------------------------------

    def play(self) -> None:
        self.out.write(f"wishbot demo in {self.work}\n")
        self.heading("1. A registry on loopback with example images")
        self.say(f"registry: {self.registry.url} (pid {self.registry.pid})")
        base = base_layer()
        hello = push_demo_image(self.registry.url, "demo/hello", "1.0", "1.0", base=base)
        greeter = push_demo_image(self.registry.url, "demo/greeter", "2.1", "2.1", base=base)
        for image in (hello, greeter):
            self.describe_image(image)
        self.say("both images share their first (base) layer")

        self.heading("2. The wishlist repository")
        self.say(f"a git repository with {WISHLIST} (no images yet): {self.repo_dir}")
        self.say("the local forge treats every branch as a merge request against main")

        self.heading("3. Merge request 'add-images' asks for two images")
        first = self.propose("add-images", [hello, greeter], "Add hello and greeter")
        self.show_review(first)

        self.heading("4. Merge and publish")
        self.merge_and_publish(first)
        self.show_published([hello, greeter])
        self.show_catalog()

        self.heading("5. Merge request 'move-hello' moves a tag and removes an image")
        moved = push_demo_image(self.registry.url, "demo/hello", "1.0", "1.1", base=base)
        self.say(f"pushed a new build of {moved.reference} (the tag moved):")
        self.describe_image(moved)
        second = self.propose("move-hello", [moved], "Drop greeter (hello:1.0 was rebuilt)")
        self.show_review(second)
        self.say(
            "\nThe comment covers what the request changes; hello:1.0 is unchanged in the\n"
            "wishlist, so the review does not look it up again. What merging will do to the\n"
            "publisher (the whole wishlist against the tree, as 'wishbot plan --publisher'):"
        )
        self.block(self.whole_plan(second), indent="  ")

        self.heading("6. Merge and publish again")
        self.merge_and_publish(second)
        self.show_published([moved])
        self.say(
            f"\n{greeter.reference} left the wishlist but keeps working until gc deletes it\n"
            "after the grace period (jobs may still use the path).\n"
            f"still served: {', '.join(self.served())}"
        )

        self.heading(f"7. Garbage collection {self.config.grace_days + 1} days later")
        report = self.collect_garbage()
        self.block(report.render(), indent="  ")
        self.expect(
            any(image_id == hello.image_id for image_id, _ in report.deleted_images),
            "gc did not delete the old build of demo/hello",
        )
        self.say(f"still served: {', '.join(self.served())}")

        self.heading("8. Running /bin/hello inside a published image")
        self.run_in_sandbox(moved)

        self.heading("Where to look")
        self.where_to_look()

    def describe_image(self, image: DemoImage) -> None:
        sizes = ", ".join(
            f"{digest[7:19]} ({size} B)"
            for digest, size in zip(
                image.pushed.layer_digests, image.pushed.layer_sizes, strict=True
            )
        )
        self.say(f"  {image.reference}  id {image.image_id[7:19]}  layers: {sizes}")

    def expect(self, condition: bool, failure: str) -> None:
        if not condition:
            raise SandboxError(f"the demo went wrong: {failure}", hint="re-run with --debug")

    def create_repository(self) -> git.Repo:
        """The wishlist repository: an empty wishlist on main, main checked out."""
        import git

        self.repo_dir.mkdir()
        repo = git.Repo.init(self.repo_dir, initial_branch="main")
        repo.git.update_environment(**_IDENTITY)
        (self.repo_dir / WISHLIST).write_text(self.wishlist_text([]))
        repo.git.add(WISHLIST)
        repo.git.commit("-q", "-m", "An empty wishlist")
        return repo

    def wishlist_text(self, images: list[DemoImage]) -> str:
        lines = [
            "# The container images to publish on CernVM-FS (wishbot demo)",
            "version: 1",
            "user: demo",
            f"cvmfs_repo: '{CVMFS_REPO}'",
            f"output_format: '{self.registry.host}/thin/$(image)'",
        ]
        if images:
            lines += ["input:", *[f"  - '{image.reference}'" for image in images]]
        else:
            lines.append("input: []")
        return "\n".join(lines) + "\n"

    def write_wishlist(self, images: list[DemoImage]) -> None:
        (self.repo_dir / WISHLIST).write_text(self.wishlist_text(images))

    def propose(self, branch: str, images: list[DemoImage], message: str) -> MergeRequest:
        """Commit a new wishlist on ``branch`` (from main), review it; main stays checked out."""
        self.repo.git.checkout("-q", "-b", branch, "main")
        try:
            self.write_wishlist(images)
            self.repo.git.add(WISHLIST)
            self.repo.git.commit("-q", "-m", message)
        finally:
            self.repo.git.checkout("-q", "main")
        diff = self.repo.git.diff("main", branch, "--", WISHLIST)
        self.say(f"branch {branch}: {message}")
        self.block(diff)
        mr = self.forge.merge_request(branch)
        outcome = on_merge_request(self.forge, self.pipeline, mr, self.config, self.journal)
        self.expect(outcome.ok, f"the review of {branch} failed: {outcome.detail}")
        return mr

    def show_review(self, mr: MergeRequest) -> None:
        self.say("\nstatuses:")
        statuses = self.forge.statuses(mr.head_sha)
        for context in (VALIDATE, PLAN):
            state, description = statuses[context]
            self.say(f"  {context}: {state} — {description}")
        self.say("\nthe bot's comment (Markdown):")
        for comment in self.forge.comments(mr):
            if PLAN_MARKER in comment.body:
                self.block(comment.body)

    def whole_plan(self, mr: MergeRequest) -> str:
        """The plan of the request's whole wishlist against the publisher tree, as text."""
        wishlist, problems = load_wishlist(
            self.forge.read_file(WISHLIST, mr.head_sha) or b"", WISHLIST
        )
        if wishlist is None:
            raise SandboxError(
                f"the demo went wrong: the wishlist of {mr.source_branch} is invalid"
            )
        with RegistryClient(self.config) as client:
            change = plan_change(
                wishlist,
                problems,
                current=lambda cvmfs_repo: read_state(self.tree, cvmfs_repo),
                resolve=client.resolve_all,
                now=datetime.now(UTC),
                grace_days=self.config.grace_days,
                whole=True,
            )
        return render_text(change.plan)

    def merge_and_publish(self, mr: MergeRequest) -> None:
        merge = self.forge.merge(mr.source_branch)
        self.say(f"merged {mr.source_branch} into main: {merge[:12]}")
        outcome = on_push(self.forge, self.pipeline, "main", merge, self.config, self.journal)
        state, description = self.forge.statuses(merge)[PUBLISH]
        self.say(f"status {PUBLISH} on {merge[:12]}: {state} — {description}")
        self.expect(outcome.ok, f"publishing {merge[:12]} failed: {outcome.detail}")
        if outcome.catalog_commit and outcome.catalog_commit != merge:
            subject = self.repo.git.log("-1", "--format=%s", outcome.catalog_commit)
            self.say(
                f"the bot committed the catalog on main: {outcome.catalog_commit[:12]} {subject}"
            )
        merged = self.forge.merge_request(mr.source_branch)
        self.say("\nthe bot's comment on the merged request:")
        for comment in self.forge.comments(merged):
            if PUBLISH_MARKER in comment.body:
                self.block(comment.body)

    def image_path(self, image: DemoImage) -> Path:
        return self.tree / image.registry / f"{image.repository}:{image.tag}"

    def show_published(self, images: list[DemoImage]) -> None:
        self.say("\nin the publisher tree:")
        for image in images:
            link = self.image_path(image)
            self.expect(link.is_symlink(), f"{link} was not published")
            name = image.repository.rsplit("/", 1)[-1]
            text = (link / "srv" / name / "message.txt").read_text().strip()
            self.say(f"  {link.relative_to(self.tree)} -> {os.readlink(link)}")
            self.say(f"    srv/{name}/message.txt: {text}")

    def show_catalog(self) -> None:
        data = self.forge.read_file(CATALOG_MD, "main")
        self.expect(data is not None, "no CATALOG.md on main")
        lines = (data or b"").decode().splitlines()
        self.say(f"\n{CATALOG_MD} on main (first {min(CATALOG_LINES, len(lines))} lines):")
        self.block("\n".join(lines[:CATALOG_LINES]))

    def collect_garbage(self) -> GcReport:
        later = datetime.now(UTC) + timedelta(days=self.config.grace_days + 1)
        self.say(f"simulated clock: {later:%Y-%m-%d %H:%M} UTC")
        publisher = open_publisher(self.config.publisher)
        with publisher.lock():
            publisher.recover()
            return collect(
                publisher,
                later,
                grace_days=self.config.grace_days,
                max_deletions=self.config.max_deletions,
            )

    def served(self) -> list[str]:
        return sorted(
            str(path.relative_to(self.tree))
            for path in (self.tree / self.registry.host).rglob("*")
            if path.is_symlink()
        )

    def run_in_sandbox(self, image: DemoImage) -> None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            self.say("bubblewrap (bwrap) is not installed: skipped")
            return
        root = os.path.realpath(self.image_path(image))
        command = [
            bwrap,
            "--ro-bind",
            root,
            "/",
            "--ro-bind",
            "/usr",
            "/usr",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "/bin/hello",
        ]
        self.say(f"$ bwrap --ro-bind {root} / --ro-bind /usr /usr ... /bin/hello")
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.say(f"bubblewrap could not run here ({exc}): skipped")
            return
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            self.say(f"bubblewrap could not run the image here ({reason}): skipped")
            return
        self.block(done.stdout, indent="  ")

    def where_to_look(self) -> None:
        from bot.forge.local import COMMENTS_REF, STATUSES_REF

        repo = self.repo_dir
        self.say(f"the published tree:      {self.tree}")
        self.say(f"the wishlist repository: {repo}")
        self.say(f"  git -C {repo} log --oneline --graph --all")
        self.say(f"  git -C {repo} notes --ref={COMMENTS_REF} list   # the bot's comments")
        self.say(f"  git -C {repo} notes --ref={STATUSES_REF} show main~1   # statuses")
        self.say(f"the run journal:         {self.config.state_dir}")
        self.say(f"the registry ({self.registry.url}) is stopped now; this directory stays.")

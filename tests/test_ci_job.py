"""``wishbot ci`` as a CI job runs it: a subprocess with exactly the variables
GitLab CI or GitHub Actions give a job, against the fake forges over real HTTP,
a real registry on loopback and a local publisher tree.

GitLab: a merge-request pipeline reviews (one plan note, statuses joined to
the job's pipeline) on a shared runner with no publisher; the publish job after
the merge publishes, commits the catalog with "[skip ci]" and notes the merged
request; a later request plans against that committed catalog. Broken
wishlists fail at their line; other branches do nothing. GitHub Actions: the
same review from a real event file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from fake_github import FakeGitHub
from fake_gitlab import FakeGitLab

from bot.core import layout
from bot.core.catalog import CATALOG_JSON, CATALOG_MD
from bot.runtime.pipeline_api import PLAN_MARKER, PUBLISH_MARKER
from bot.runtime.workflow import PLAN, PUBLISH, VALIDATE
from bot.sandbox.demo_images import DemoImage, base_layer, message, push_demo_image
from bot.sandbox.registry_server import LocalRegistry

CVMFS_REPO = "unpacked.example.org"
BASE = base_layer()


@dataclass(frozen=True)
class Job:
    """One finished ``wishbot ci`` process."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_job(env: dict[str, str], workdir: Path, secret: str, *options: str) -> Job:
    """``python -m bot [options] ci`` with only ``env`` (plus PATH and HOME) in its
    environment, as a CI runner starts it; the token must never show in what it prints."""
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), **env}
    done = subprocess.run(
        [sys.executable, "-m", "bot", *options, "ci"],
        cwd=workdir,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    job = Job(done.returncode, done.stdout, done.stderr)
    assert secret not in job.output, "the token leaked into the job log"
    return job


def wishlist(registry: LocalRegistry, references: list[str]) -> bytes:
    lines = [
        "version: 1",
        "user: tester",
        f"cvmfs_repo: '{CVMFS_REPO}'",
        f"output_format: '{registry.host}/thin/$(image)'",
    ]
    lines += ["input:", *[f"  - '{r}'" for r in references]] if references else ["input: []"]
    return ("\n".join(lines) + "\n").encode()


def image_row(comment: str, reference: str) -> str:
    """The image table row of ``reference`` in a plan comment."""
    rows = [line for line in comment.splitlines() if line.startswith(f"| `{reference}` ")]
    assert len(rows) == 1, comment
    return rows[0]


# --- GitLab ------------------------------------------------------------------


@dataclass
class GitLabProject:
    """The fake GitLab with a wishlist asking for ``hello``, and CI job environments."""

    fake: FakeGitLab
    registry: LocalRegistry
    prefix: str
    workdir: Path
    tree: Path

    def push(self, name: str, tag: str, version: str) -> DemoImage:
        return push_demo_image(self.registry.url, f"{self.prefix}/{name}", tag, version, base=BASE)

    def request(self, branch: str, content: bytes) -> tuple[int, str]:
        """A merge request changing the wishlist on ``branch``: (iid, head sha)."""
        self.fake.repo.branch(branch, "main")
        head = self.fake.repo.commit(branch, {"wishlist.yaml": content}, f"change on {branch}")
        return self.fake.open_mr(branch).iid, head

    def _common(self, sha: str, ref: str) -> dict[str, str]:
        """The variables of a job in a new pipeline for ``sha`` on ``ref`` (GitLab
        makes the pipeline first: the statuses join it by its id)."""
        pipeline = self.fake.run_pipeline(sha, ref)
        return {
            "GITLAB_CI": "true",
            "CI": "true",
            "CI_SERVER_URL": self.fake.url,
            "CI_API_V4_URL": f"{self.fake.url}/api/v4",
            "CI_PROJECT_PATH": self.fake.project,
            "CI_PROJECT_ID": "42",
            "CI_DEFAULT_BRANCH": "main",
            "CI_COMMIT_SHA": sha,
            "CI_PIPELINE_ID": str(pipeline),
            "CI_JOB_URL": f"{self.fake.url}/{self.fake.project}/-/jobs/{pipeline}",
            "GITLAB_TOKEN": self.fake.token,
            "WISHBOT_FORGE": "gitlab",
            "WISHBOT_WISHLIST_PATH": "wishlist.yaml",
            "WISHBOT_INSECURE_REGISTRIES": self.registry.host,
            "WISHBOT_TIMEOUT": "10",
            "WISHBOT_RETRIES": "0",
        }

    def review(self, iid: int, head: str, *options: str, token: str = "") -> tuple[Job, int]:
        """The plan job of a merge-request pipeline on a shared runner (no publisher)."""
        env = self._common(head, f"refs/merge-requests/{iid}/head")
        env["GITLAB_TOKEN"] = token or self.fake.token
        env |= {
            "CI_PIPELINE_SOURCE": "merge_request_event",
            "CI_MERGE_REQUEST_IID": str(iid),
            "CI_MERGE_REQUEST_PROJECT_PATH": self.fake.project,
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": self.fake.mrs[iid].source_branch,
            "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
            "CI_COMMIT_REF_NAME": self.fake.mrs[iid].source_branch,
        }
        job = run_job(env, self.workdir, env["GITLAB_TOKEN"], *options)
        return job, int(env["CI_PIPELINE_ID"])

    def publish(self, branch: str, sha: str, **overrides: str) -> tuple[Job, int]:
        """The publish job of a branch pipeline on the publisher's runner."""
        env = self._common(sha, branch)
        env |= {
            "CI_PIPELINE_SOURCE": "push",
            "CI_COMMIT_BRANCH": branch,
            "CI_COMMIT_REF_NAME": branch,
            "WISHBOT_PUBLISHER": f"local:{self.tree}",
            "WISHBOT_GRACE_DAYS": "7",
        }
        env = {k: v for k, v in (env | overrides).items() if v}
        return run_job(env, self.workdir, self.fake.token), int(env["CI_PIPELINE_ID"])

    def status(self, sha: str, name: str) -> dict[str, object]:
        found = self.fake.status_of(sha, name)
        assert found is not None, f"no {name} status on {sha[:12]}: {self.fake.statuses}"
        return found

    def notes(self, iid: int, marker: str) -> list[str]:
        return [n["body"] for n in self.fake.mrs[iid].notes if marker in n["body"]]


@pytest.fixture
def gitlab(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> Iterator[tuple[GitLabProject, DemoImage]]:
    fake = FakeGitLab()
    fake.start()
    project = GitLabProject(fake, registry, unique_repo, tmp_path / "job", tmp_path / "tree")
    project.workdir.mkdir()
    hello = project.push("hello", "1.0", "1.0")
    fake.repo.commit("main", {"wishlist.yaml": wishlist(registry, [hello.reference])}, "hello")
    yield project, hello
    fake.stop()


def test_gitlab_review_publish_and_review_against_the_catalog(
    gitlab: tuple[GitLabProject, DemoImage],
) -> None:
    project, hello = gitlab
    greeter = project.push("greeter", "2.1", "2.1")

    # 1. the merge-request pipeline: one plan note, both statuses on the job's pipeline
    text = wishlist(project.registry, [hello.reference, greeter.reference])
    iid, head = project.request("add-greeter", text)
    job, pipeline = project.review(iid, head)
    assert job.code == 0, job.output
    assert f"wishbot: reviewed {head[:12]}" in job.stdout
    (plan,) = project.notes(iid, PLAN_MARKER)
    assert len(project.fake.mrs[iid].notes) == 1
    assert "➕ add" in image_row(plan, greeter.reference)
    assert f"`{greeter.pushed.manifest_digest[7:19]}`" in image_row(plan, greeter.reference)
    for name in (VALIDATE, PLAN):
        status = project.status(head, name)
        assert status["status"] == "success", status
        # joined to the merge-request pipeline, whose ref is the merge request's
        assert status["pipeline_id"] == pipeline
        assert status["ref"] == f"refs/merge-requests/{iid}/head"
        assert (
            status["target_url"] == f"{project.fake.url}/{project.fake.project}/-/jobs/{pipeline}"
        )
    assert str(project.status(head, VALIDATE)["description"]).startswith("wishlist.yaml is valid")
    assert not project.tree.exists()  # a shared runner has no publisher

    # 2. merge; the publish job on main converts both images and commits the catalog
    merge = project.fake.merge(iid)
    job, pipeline = project.publish("main", merge)
    assert job.code == 0, job.output
    assert f"wishbot: published {merge[:12]}" in job.stdout
    for image in (hello, greeter):
        link = project.tree / image.registry / f"{image.repository}:{image.tag}"
        assert link.is_symlink(), link
        assert link.resolve() == (project.tree / layout.flat_dir(image.image_id)).resolve()
        name = image.repository.rsplit("/", 1)[-1]
        assert (link / f"srv/{name}/message.txt").read_text() == message(name, image.version)
    thin = requests.get(
        f"{project.registry.url}/v2/thin/{greeter.repository}/tags/list", timeout=10
    )
    assert thin.status_code == 200 and thin.json()["tags"] == ["2.1"]
    published = project.status(merge, PUBLISH)
    assert published["status"] == "success" and published["pipeline_id"] == pipeline
    assert published["description"] == "2 images published"
    catalog_commit = project.fake.repo.branches["main"]
    assert catalog_commit != merge
    commit = project.fake.repo.commits[catalog_commit]
    assert commit.parents == [merge] and "[skip ci]" in commit.message
    catalog = json.loads(project.fake.repo.file_at("main", CATALOG_JSON) or b"")
    listed = {image["image_id"] for image in catalog["images"]}
    assert {hello.image_id, greeter.image_id} <= listed
    catalog_md = (project.fake.repo.file_at("main", CATALOG_MD) or b"").decode()
    for image in (hello, greeter):
        assert f"/cvmfs/{CVMFS_REPO}/{image.reference}" in catalog_md
    (note,) = project.notes(iid, PUBLISH_MARKER)
    assert f"✅ wishbot published `{merge[:12]}`" in note
    assert f"/cvmfs/{CVMFS_REPO}/{greeter.reference}" in note.replace("\\", "")

    # 3. a later request removing hello, reviewed with no publisher: the committed
    #    catalog is its current state, so hello shows up scheduled for removal
    iid2, head2 = project.request("drop-hello", wishlist(project.registry, [greeter.reference]))
    job, _ = project.review(iid2, head2)
    assert job.code == 0, job.output
    (plan2,) = project.notes(iid2, PLAN_MARKER)
    assert "➖ remove" in image_row(plan2, hello.reference)
    assert f"`{hello.pushed.manifest_digest[7:19]}`" in image_row(plan2, hello.reference)
    assert "1 layer deleted after the grace period" in plan2
    assert f"`{hello.pushed.layer_digests[1]}`" in plan2
    assert project.status(head2, PLAN)["status"] == "success"


def test_gitlab_broken_wishlist_fails_the_job_at_its_line(
    gitlab: tuple[GitLabProject, DemoImage],
) -> None:
    project, hello = gitlab
    text = wishlist(project.registry, [hello.reference, "@@"]).decode()
    text = text.replace("  - '@@'", "  - [nested, list]")
    line = text.splitlines().index("  - [nested, list]") + 1
    iid, head = project.request("broken", text.encode())
    job, pipeline = project.review(iid, head)
    assert job.code == 1, job.output
    assert f"line {line}" in job.stdout  # the job's log says where, too
    for name in (VALIDATE, PLAN):
        status = project.status(head, name)
        assert status["status"] == "failed" and status["pipeline_id"] == pipeline, status
    assert f"line {line}" in str(project.status(head, VALIDATE)["description"])
    (plan,) = project.notes(iid, PLAN_MARKER)
    assert re.search(rf"wishlist\.yaml:{line}:\d+", plan), plan
    assert "cannot be planned" in plan


def test_gitlab_push_to_another_branch_does_nothing(
    gitlab: tuple[GitLabProject, DemoImage],
) -> None:
    project, _ = gitlab
    project.fake.repo.branch("feature", "main")
    sha = project.fake.repo.commit("feature", {"notes.txt": b"x"}, "notes")
    requests_before = len(project.fake.requests)
    job, _ = project.publish("feature", sha)
    assert job.code == 0, job.output
    assert "nothing to do" in job.stdout and "feature is not the default branch" in job.stdout
    assert len(project.fake.requests) == requests_before  # not even a read
    assert project.fake.statuses == {} and not project.tree.exists()


def test_gitlab_wrong_token_fails_the_job_without_showing_it(
    gitlab: tuple[GitLabProject, DemoImage],
) -> None:
    project, hello = gitlab
    iid, head = project.request("retag", wishlist(project.registry, [hello.reference]))
    wrong = "glpat-wrong-token-value"
    job, _ = project.review(iid, head, "--debug", token=wrong)  # run_job checks the log
    assert job.code == 1, job.output
    assert "wishbot: error: GitLab group/wishlist" in job.stderr
    assert "HTTP 401" in job.stderr and "GITLAB_TOKEN" in job.stderr
    assert project.fake.token not in job.output
    assert project.fake.statuses == {} and project.fake.mrs[iid].notes == []


def test_gitlab_rerun_of_a_failed_publish_job_fixes_its_commit_and_note(
    gitlab: tuple[GitLabProject, DemoImage],
) -> None:
    project, hello = gitlab
    greeter = project.push("greeter", "2.1", "2.1")
    text = wishlist(project.registry, [hello.reference, greeter.reference])
    iid, _ = project.request("add-greeter", text)
    merge = project.fake.merge(iid)
    # the publisher's runner was missing a setting: the loopback registry is refused
    job, _ = project.publish("main", merge, WISHBOT_INSECURE_REGISTRIES="")
    assert job.code == 1, job.output
    assert project.status(merge, PUBLISH)["status"] == "failed"
    (note,) = project.notes(iid, PUBLISH_MARKER)
    assert "could not publish" in note
    # "re-run the job": the same pipeline variables, the setting fixed
    job, pipeline = project.publish("main", merge)
    assert job.code == 0, job.output
    published = project.status(merge, PUBLISH)
    assert published["status"] == "success", published
    assert published["pipeline_id"] == pipeline  # the re-run job's own pipeline
    (note,) = project.notes(iid, PUBLISH_MARKER)
    assert "wishbot published" in note, note
    catalog = json.loads(project.fake.repo.file_at("main", CATALOG_JSON) or b"")
    assert {hello.image_id, greeter.image_id} <= {i["image_id"] for i in catalog["images"]}
    # a re-run with nothing left to do leaves the commit and the note as they are
    job, _ = project.publish("main", merge)
    assert job.code == 0 and "nothing to publish" in job.stdout, job.output
    assert project.status(merge, PUBLISH)["id"] == published["id"]
    assert project.notes(iid, PUBLISH_MARKER) == [note]
    for image in (hello, greeter):
        assert (project.tree / image.registry / f"{image.repository}:{image.tag}").is_symlink()


# --- GitHub Actions -------------------------------------------------------------


@dataclass
class GitHubRepository:
    """The fake GitHub with a wishlist asking for ``hello``, and Actions job environments."""

    fake: FakeGitHub
    registry: LocalRegistry
    workdir: Path
    tree: Path
    runs: int = 9000

    def job(self, event_name: str, event: Mapping[str, Any], sha: str, ref: str) -> Job:
        """One Actions job: the event file GitHub writes and the variables it sets."""
        self.runs += 1
        event_path = self.workdir.parent / f"event-{self.runs}.json"
        event_path.write_text(json.dumps(event))
        env = {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": event_name,
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_REPOSITORY": self.fake.full_name,
            "GITHUB_API_URL": self.fake.api_url,
            "GITHUB_SERVER_URL": self.fake.base,
            "GITHUB_REF": ref,
            "GITHUB_SHA": sha,
            "GITHUB_RUN_ID": str(self.runs),
            "GITHUB_WORKSPACE": str(self.workdir),
            "GITHUB_TOKEN": self.fake.token,
            "WISHBOT_FORGE": "github",
            "WISHBOT_WISHLIST_PATH": "wishlist.yaml",
            "WISHBOT_INSECURE_REGISTRIES": self.registry.host,
            "WISHBOT_TIMEOUT": "10",
            "WISHBOT_RETRIES": "0",
            "WISHBOT_GITHUB_WRITE_INTERVAL": "0",  # no pacing against the fake
        }
        if event_name == "pull_request":
            head_ref = event["pull_request"]["head"]["ref"]
            env |= {"GITHUB_HEAD_REF": head_ref, "GITHUB_BASE_REF": "main"}
        else:
            env |= {"WISHBOT_PUBLISHER": f"local:{self.tree}", "WISHBOT_THIN": "0"}
        return run_job(env, self.workdir, self.fake.token)

    def review(self, number: int) -> Job:
        """The plan job of a ``pull_request`` event (GitHub's payload shape)."""
        pull = self.fake._pull_json(self.fake.pulls[number])
        event = {
            "action": "opened",
            "number": number,
            "pull_request": pull,
            "repository": self.fake._repo_json(),
            "sender": {"login": "alice", "type": "User"},
        }
        # Actions checks out refs/pull/N/merge; GITHUB_SHA is that test merge, not the head
        return self.job("pull_request", event, "f" * 40, f"refs/pull/{number}/merge")

    def publish(self, sha: str) -> Job:
        """The publish job of a ``push`` event on main."""
        event = {
            "ref": "refs/heads/main",
            "before": self.fake.repo.commits[sha].parents[0],
            "after": sha,
            "head_commit": {"id": sha, "message": self.fake.repo.commits[sha].message},
            "repository": self.fake._repo_json(),
        }
        return self.job("push", event, sha, "refs/heads/main")


@pytest.fixture
def github(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> Iterator[tuple[GitHubRepository, DemoImage, DemoImage]]:
    hello = push_demo_image(registry.url, f"{unique_repo}/hello", "1.0", "1.0", base=BASE)
    greeter = push_demo_image(registry.url, f"{unique_repo}/greeter", "2.1", "2.1", base=BASE)
    fake = FakeGitHub()
    fake.start()
    fake.repo.commit("main", {"wishlist.yaml": wishlist(registry, [hello.reference])}, "hello")
    repository = GitHubRepository(fake, registry, tmp_path / "job", tmp_path / "tree")
    repository.workdir.mkdir()
    yield repository, hello, greeter
    fake.stop()


def test_github_actions_review_and_publish(
    github: tuple[GitHubRepository, DemoImage, DemoImage],
) -> None:
    repository, hello, greeter = github
    fake = repository.fake
    fake.repo.branch("add-greeter", "main")
    text = wishlist(repository.registry, [hello.reference, greeter.reference])
    head = fake.repo.commit("add-greeter", {"wishlist.yaml": text}, "add greeter")
    number = fake.open_pull("add-greeter").number

    # the pull_request job: one comment, both statuses on the pull request's head
    for _ in range(2):  # a re-run edits the comment
        job = repository.review(number)
        assert job.code == 0, job.output
        assert f"wishbot: reviewed {head[:12]}" in job.stdout
    (comment,) = [c["body"] for c in fake.pulls[number].comments]
    assert PLAN_MARKER in comment
    assert "➕ add" in image_row(comment, greeter.reference)
    run_page = f"{fake.base}/{fake.full_name}/actions/runs/"
    for context in (VALIDATE, PLAN):
        status = fake.status_of(head, context)
        assert status is not None and status["state"] == "success", status
        # "Details" leads to the job's run page; the comment links it and the catalog
        assert str(status["target_url"]).startswith(run_page), status
    assert f"[job log]({run_page}" in comment and "[catalog](" in comment

    # the push job on main after the merge: publish (no thin images), commit the catalog
    merge = fake.merge(number)
    job = repository.publish(merge)
    assert job.code == 0, job.output
    assert f"wishbot: published {merge[:12]}" in job.stdout
    for image in (hello, greeter):
        link = repository.tree / image.registry / f"{image.repository}:{image.tag}"
        assert link.resolve() == (repository.tree / layout.flat_dir(image.image_id)).resolve()
    thin = requests.get(
        f"{repository.registry.url}/v2/thin/{greeter.repository}/tags/list", timeout=10
    )
    assert thin.status_code == 404  # WISHBOT_THIN=0: no thin images
    status = fake.status_of(merge, PUBLISH)
    assert status is not None and status["state"] == "success", status
    catalog_commit = fake.repo.branches["main"]
    commit = fake.repo.commits[catalog_commit]
    assert commit.parents == [merge] and "[skip ci]" in commit.message
    catalog_md = (fake.repo.file_at("main", CATALOG_MD) or b"").decode()
    assert f"/cvmfs/{CVMFS_REPO}/{greeter.reference}" in catalog_md
    notes = [c["body"] for c in fake.pulls[number].comments if PUBLISH_MARKER in c["body"]]
    assert len(notes) == 1 and f"✅ wishbot published `{merge[:12]}`" in notes[0]


def test_gitlab_scheduled_pipeline_collects_and_republishes_a_moved_tag(
    gitlab: tuple[GitLabProject, DemoImage],
) -> None:
    project, hello = gitlab
    main = project.fake.repo.branches["main"]
    job, _ = project.publish("main", main)
    assert job.code == 0, job.output
    served = project.tree / hello.registry / f"{hello.repository}:{hello.tag}"
    assert (served / "srv/hello/message.txt").read_text() == message("hello", "1.0")

    # the tag moves upstream: no commit, no merge request; only the schedule sees it
    moved = project.push("hello", "1.0", "1.1")
    env = project._common(project.fake.repo.branches["main"], "main") | {
        "CI_PIPELINE_SOURCE": "schedule",
        "CI_COMMIT_BRANCH": "main",
        "WISHBOT_PUBLISHER": f"local:{project.tree}",
    }
    statuses_before = {sha: list(v) for sha, v in project.fake.statuses.items()}
    job = run_job(env, project.workdir, project.fake.token)
    assert job.code == 0, job.output
    assert "maintained" in job.stdout and "gc:" in job.stdout
    assert (served / "srv/hello/message.txt").read_text() == message("hello", "1.1")
    assert os.readlink(served).endswith(moved.image_id.split(":")[1])
    # quiet: the catalog is committed, but no new status on any commit
    catalog = project.fake.repo.file_at("main", CATALOG_JSON)
    assert catalog is not None and moved.image_id in catalog.decode()
    assert {sha: list(v) for sha, v in project.fake.statuses.items()} == statuses_before

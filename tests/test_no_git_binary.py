"""``wishbot --help``, ``validate`` and ``ci`` work where no ``git`` binary exists
(e.g. the ``python:3.11-slim`` image a CI template uses): GitPython is imported
only by the commands that use it (the local forge, the demo)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_gitlab import FakeGitLab

from bot.runtime.pipeline_api import PLAN_MARKER

WISHLIST = b"""version: 1
user: tester
cvmfs_repo: 'unpacked.example.org'
output_format: 'registry.example.org/thin/$(image)'
input: []
"""


def run_without_git(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m bot ARGS`` with a PATH on which no git can be found."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    environ = {"PATH": str(empty), "HOME": str(tmp_path), **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_no_git_on_the_test_path(tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import shutil; print(shutil.which('git'))"],
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "None"


def test_help_without_git(tmp_path: Path) -> None:
    done = run_without_git(tmp_path, "--help")
    assert done.returncode == 0 and "validate" in done.stdout and "ci" in done.stdout


def test_validate_without_git(tmp_path: Path) -> None:
    (tmp_path / "wishlist.yaml").write_bytes(WISHLIST)
    done = run_without_git(tmp_path, "validate", "wishlist.yaml")
    assert done.returncode == 0, done.stderr


@pytest.fixture
def gitlab() -> Iterator[FakeGitLab]:
    fake = FakeGitLab()
    fake.start()
    fake.repo.commit("main", {"wishlist.yaml": WISHLIST}, "initial")
    yield fake
    fake.stop()


def test_ci_review_without_git(tmp_path: Path, gitlab: FakeGitLab) -> None:
    gitlab.repo.branch("feature", "main")
    head = gitlab.repo.commit(
        "feature", {"wishlist.yaml": WISHLIST.replace(b"tester", b"someone")}, "change"
    )
    iid = gitlab.open_mr("feature").iid
    pipeline = gitlab.run_pipeline(head, f"refs/merge-requests/{iid}/head")
    env = {
        "GITLAB_CI": "true",
        "CI_SERVER_URL": gitlab.url,
        "CI_PROJECT_PATH": gitlab.project,
        "CI_MERGE_REQUEST_PROJECT_PATH": gitlab.project,
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_MERGE_REQUEST_IID": str(iid),
        "CI_COMMIT_SHA": head,
        "CI_PIPELINE_ID": str(pipeline),
        "CI_DEFAULT_BRANCH": "main",
        "GITLAB_TOKEN": gitlab.token,
        "WISHBOT_FORGE": "gitlab",
        "WISHBOT_RETRIES": "0",
    }
    done = run_without_git(tmp_path, "ci", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"reviewed {head[:12]}" in done.stdout
    (note,) = gitlab.mrs[iid].notes
    assert note["body"].startswith(PLAN_MARKER)
    assert gitlab.token not in done.stdout + done.stderr

"""The CI templates in examples/ are valid for their forge (GitHub's workflow
schema, GitLab's CI schema: the copies check-jsonschema ships, offline) and
keep the promises an outside requester relies on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GITHUB = EXAMPLES / ".github" / "workflows" / "wishbot.yml"
GITLAB = EXAMPLES / ".gitlab-ci.yml"
#: a pinned git revision, or a wheel the site hosts pinned by its sha256
PINNED = re.compile(r"^git\+https://\S+@[0-9a-f]{40}$|^https://\S+\.whl#sha256=[0-9a-f]{64}$")


def lint(path: Path, schema: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *extra, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load(path: Path) -> Any:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in data:
        data["on"] = data.pop(True)
    return data


def test_github_workflow_matches_githubs_schema() -> None:
    done = lint(GITHUB, "vendor.github-workflows")
    assert done.returncode == 0, done.stdout + done.stderr


def test_gitlab_ci_matches_gitlabs_schema() -> None:
    done = lint(GITLAB, "vendor.gitlab-ci", "--data-transform", "gitlab-ci")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_lint_catches_mistakes(tmp_path: Path) -> None:
    """A control: the offline schemas do reject broken templates."""
    broken = tmp_path / "wishbot.yml"
    broken.write_text(GITHUB.read_text().replace("runs-on: ubuntu-latest", "runs_on: x"))
    assert lint(broken, "vendor.github-workflows").returncode != 0
    broken_ci = tmp_path / ".gitlab-ci.yml"
    broken_ci.write_text(GITLAB.read_text().replace("interruptible: true", "interruptible: maybe"))
    assert lint(broken_ci, "vendor.gitlab-ci", "--data-transform", "gitlab-ci").returncode != 0


def test_github_review_is_fork_safe() -> None:
    workflow = load(GITHUB)
    assert "pull_request_target" in workflow["on"] and "pull_request" not in workflow["on"]
    assert "edited" in workflow["on"]["pull_request_target"]["types"]  # retargeting
    assert workflow["permissions"] == {}
    review = workflow["jobs"]["review"]
    steps = review["steps"]
    # never checks out (so never runs) the request's code, no third-party action
    assert all("uses" not in step for step in steps)
    for step in steps:
        # nothing from the event is interpolated into a shell command
        assert "${{" not in step.get("run", ""), step
    assert set(review["permissions"]) == {"contents", "statuses", "pull-requests"}
    assert review["permissions"]["contents"] == "read"
    assert "secrets." not in str({k: v for k, v in review.get("env", {}).items()})
    assert PINNED.match(review["env"]["WISHBOT_SOURCE"]), review["env"]["WISHBOT_SOURCE"]
    assert workflow["env"]["WISHBOT_BOT_LOGIN"] == "github-actions[bot]"


def test_github_publish_only_on_the_default_branch_on_the_site_runner() -> None:
    workflow = load(GITHUB)
    publish = workflow["jobs"]["publish"]
    condition = " ".join(publish["if"].split())
    assert "pull_request" not in condition
    assert "github.ref == 'refs/heads/main'" in condition
    assert "self-hosted" in publish["runs-on"]
    assert publish["environment"] == "cvmfs-publisher"
    assert [step["run"] for step in publish["steps"]] == ["/opt/wishbot/bin/wishbot ci"]
    assert workflow["env"]["WISHBOT_CATALOG_BRANCH"] == "wishbot-catalog"


def rules(job: dict[str, Any]) -> list[str]:
    return [" ".join(str(rule["if"]).split()) for rule in job["rules"]]


def test_gitlab_review_reads_no_code_and_needs_no_protected_variable() -> None:
    ci = load(GITLAB)
    review = ci["review"]
    assert rules(review) == [
        '$CI_PIPELINE_SOURCE == "merge_request_event" && $CI_PROJECT_PATH == $WISHBOT_PROJECT'
    ]
    assert review["variables"]["GIT_STRATEGY"] == "none"
    script = " ".join(review["script"])
    assert "WISHBOT_REVIEW_TOKEN" in script  # not protected: MR pipelines get no others
    assert "pip install" in script and '"$WISHBOT_SOURCE"' in script
    assert PINNED.match(ci["variables"]["WISHBOT_SOURCE"])
    assert "pip install wishbot" not in GITLAB.read_text()


def test_gitlab_publish_only_on_the_parent_default_branch_never_on_schedules() -> None:
    ci = load(GITLAB)
    (publish,) = rules(ci["publish"])
    for needed in (
        '$CI_PIPELINE_SOURCE != "schedule"',
        '$CI_PIPELINE_SOURCE != "merge_request_event"',
        "$CI_PROJECT_PATH == $WISHBOT_PROJECT",
        "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH",
    ):
        assert needed in publish
    assert "||" not in publish
    (maintain,) = rules(ci["maintain"])
    assert maintain.startswith('$CI_PIPELINE_SOURCE == "schedule" && ')
    assert "$CI_PROJECT_PATH == $WISHBOT_PROJECT" in maintain and "||" not in maintain
    for job in ("publish", "maintain"):
        assert ci[job]["tags"] == ["cvmfs-publisher"]
        assert ci[job]["resource_group"] == "cvmfs-publisher"
        assert ci[job]["script"] == ["/opt/wishbot/bin/wishbot ci"]
    assert "must be PROTECTED" in GITLAB.read_text()
    assert ci["variables"]["WISHBOT_CATALOG_BRANCH"] == "wishbot-catalog"


@pytest.mark.parametrize("path", [GITHUB, GITLAB])
def test_templates_install_wishbot_from_a_source_the_site_controls(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"pip install\s+(--\S+\s+)*[\"']?wishbot\b", text)
    assert "WISHBOT_INSTALL" not in text

"""The CI runtime: what a GitLab CI or GitHub Actions job asks the bot to do.

:func:`ci_job` reads the CI variables (pure: it takes the environment and
the event file's text) and says which forge, repository and step to run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

from bot.errors import UsageError
from bot.runtime.actions import Action, Maintain, Publish, Review


@dataclass(frozen=True)
class CiJob:
    """``step`` is "review" (with ``number``), "push" (with ``branch`` and ``sha``),
    "maintain" (a scheduled run: gc, then re-publish the default branch) or "none"."""

    forge: str
    url: str
    repository: str
    step: str
    number: str = ""
    branch: str = ""
    sha: str = ""
    reason: str = ""
    pipeline: tuple[str, int] | None = None  # GitLab: (CI_COMMIT_SHA, CI_PIPELINE_ID)
    job_url: str = ""  # the job's page: statuses' "Details" and the comments link there


def job_url(env: Mapping[str, str]) -> str:
    """The running job's web page: GitLab's ``CI_JOB_URL``, GitHub's run page ("" if unknown)."""
    if env.get("CI_JOB_URL"):
        return env["CI_JOB_URL"]
    server, repository, run = (
        env.get("GITHUB_SERVER_URL", ""),
        env.get("GITHUB_REPOSITORY", ""),
        env.get("GITHUB_RUN_ID", ""),
    )
    if server and repository and run.isdigit():
        return f"{server.rstrip('/')}/{repository}/actions/runs/{run}"
    return ""


def ci_job(env: Mapping[str, str], event_text: str | None = None) -> CiJob:
    """The job described by GitLab CI or GitHub Actions variables."""
    if env.get("GITLAB_CI") or env.get("CI_PIPELINE_SOURCE"):
        return replace(_gitlab(env), job_url=job_url(env))
    if env.get("GITHUB_ACTIONS") or env.get("GITHUB_EVENT_NAME"):
        return replace(_github(env, event_text), job_url=job_url(env))
    raise UsageError(
        "not running in GitLab CI or GitHub Actions",
        hint="wishbot ci reads CI_* (GitLab) or GITHUB_* (GitHub Actions) variables",
    )


def _need(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise UsageError(f"the CI variable {name} is not set")
    return value


def _gitlab_pipeline(env: Mapping[str, str]) -> tuple[str, int] | None:
    sha, pipeline = env.get("CI_COMMIT_SHA", ""), env.get("CI_PIPELINE_ID", "")
    return (sha, int(pipeline)) if sha and pipeline.isdigit() else None


def _gitlab(env: Mapping[str, str]) -> CiJob:
    source = env.get("CI_PIPELINE_SOURCE", "")
    url = _need(env, "CI_SERVER_URL")
    project = _need(env, "CI_PROJECT_PATH")
    pipeline = _gitlab_pipeline(env)
    if source == "merge_request_event":
        number = _need(env, "CI_MERGE_REQUEST_IID")
        # the merge request lives in the target project; a fork's request may run its
        # pipeline in the fork (CI_PROJECT_PATH), whose pipeline the parent cannot use
        target = env.get("CI_MERGE_REQUEST_PROJECT_PATH", "") or project
        if target != project:
            pipeline = None
        return CiJob("gitlab", url, target, "review", number=number, pipeline=pipeline)
    if source == "schedule":
        return CiJob("gitlab", url, project, "maintain", reason="scheduled pipeline")
    branch = env.get("CI_COMMIT_BRANCH", "")
    if not branch:
        return CiJob("gitlab", url, project, "none", reason="not a branch pipeline")
    if branch != env.get("CI_DEFAULT_BRANCH", ""):
        return CiJob("gitlab", url, project, "none", reason=f"{branch} is not the default branch")
    sha = _need(env, "CI_COMMIT_SHA")
    return CiJob("gitlab", url, project, "push", branch=branch, sha=sha, pipeline=pipeline)


def _github(env: Mapping[str, str], event_text: str | None) -> CiJob:
    name = env.get("GITHUB_EVENT_NAME", "")
    url = env.get("GITHUB_API_URL", "") or "https://api.github.com"
    repository = _need(env, "GITHUB_REPOSITORY")
    if name in ("pull_request", "pull_request_target"):
        if event_text is None:
            raise UsageError("GITHUB_EVENT_PATH is not set or cannot be read")
        try:
            event = json.loads(event_text)
            number = str(event["pull_request"]["number"])
        except (ValueError, KeyError, TypeError):
            raise UsageError("the GitHub event file has no pull_request.number") from None
        if event.get("action") == "edited" and "base" not in (event.get("changes") or {}):
            return CiJob("github", url, repository, "none", reason="edited, not retargeted")
        return CiJob("github", url, repository, "review", number=number)
    if name == "push":
        ref = _need(env, "GITHUB_REF")
        if not ref.startswith("refs/heads/"):
            return CiJob("github", url, repository, "none", reason=f"{ref} is not a branch")
        branch = ref.removeprefix("refs/heads/")
        return CiJob("github", url, repository, "push", branch=branch, sha=_need(env, "GITHUB_SHA"))
    if name == "schedule":
        return CiJob("github", url, repository, "maintain", reason="scheduled workflow")
    return CiJob("github", url, repository, "none", reason=f"event {name!r} needs no work")


def ci_action(job: CiJob) -> Action | None:
    """The action a CI job asks for (None: nothing to do, ``job.reason`` says why)."""
    if job.step == "review":
        return Review(job.forge, job.repository, job.number)
    if job.step == "push":
        return Publish(job.forge, job.repository, job.branch, job.sha)
    if job.step == "maintain":
        return Maintain(job.forge, job.repository)
    return None

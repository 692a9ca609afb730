"""The CI runtime: what a GitLab CI or GitHub Actions job asks the bot to do.

:func:`ci_job` reads the CI variables (pure: it takes the environment and
the event file's text) through each forge kind's ``ci_job``
(:mod:`bot.forge.kinds`); :func:`ci_action` is the action it asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from bot.errors import UsageError
from bot.forge.events_model import CiJob as CiJob
from bot.forge.kinds import specs
from bot.runtime.actions import Action, Maintain, Publish, Review


def job_url(env: Mapping[str, str]) -> str:
    """The running job's web page: GitLab's ``CI_JOB_URL``, GitHub's run page ("" if unknown)."""
    return next((url for url in (spec.job_url(env) for spec in specs()) if url), "")


def ci_job(env: Mapping[str, str], event_text: str | None = None) -> CiJob:
    """The job described by GitLab CI or GitHub Actions variables."""
    for spec in specs():
        job = spec.ci_job(env, event_text)
        if job is not None:
            return replace(job, job_url=job_url(env))
    raise UsageError(
        "not running in GitLab CI or GitHub Actions",
        hint="wishbot ci reads CI_* (GitLab) or GITHUB_* (GitHub Actions) variables",
    )


def ci_action(job: CiJob) -> Action | None:
    """The action a CI job asks for (None: nothing to do, ``job.reason`` says why)."""
    build = _ACTIONS.get(job.step)
    return build(job) if build is not None else None


#: the action of each CI step ("none" has none)
_ACTIONS: dict[str, Callable[[CiJob], Action]] = {
    "review": lambda job: Review(job.forge, job.repository, job.number),
    "push": lambda job: Publish(job.forge, job.repository, job.branch, job.sha),
    "maintain": lambda job: Maintain(job.forge, job.repository),
}

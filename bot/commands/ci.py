"""``wishbot ci``: run as a GitLab CI or GitHub Actions job."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bot.config import Config
from bot.forge.factory import make_forge
from bot.runtime.ci import ci_action, ci_job
from bot.runtime.dispatch import Deps, dispatch
from bot.runtime.journal import Journal
from bot.runtime.wiring import load_pipeline


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ci",
        help="review a merge request or publish, as a CI job",
        description="In a merge-request pipeline: validate, plan, comment and set statuses. "
        "On the default branch: publish and commit the catalog. In a scheduled pipeline: gc, "
        "then re-publish the default branch (tags move upstream). Reads the GitLab CI or GitHub "
        "Actions variables; the token comes from GITLAB_TOKEN / GITHUB_TOKEN.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = Config.load()
    event_path = os.environ.get("GITHUB_EVENT_PATH", "")
    event_text = None
    if event_path:
        try:
            event_text = Path(event_path).read_text(encoding="utf-8")
        except OSError:
            event_text = None
    job = ci_job(os.environ, event_text)
    action = ci_action(job)
    if action is None:
        print(f"wishbot: nothing to do: {job.reason}")
        return 0
    forge = make_forge(config, job.repository, kind=job.forge, url=job.url, pipeline=job.pipeline)
    deps = Deps(
        forge=forge,
        pipeline=load_pipeline(config),
        config=config,
        journal=Journal.in_state_dir(config.state_dir),
        job_url=job.job_url,
    )
    outcome = dispatch(action, deps)
    print(f"wishbot: {outcome.action} {outcome.sha[:12]}: {outcome.detail}")
    return 0 if outcome.ok else 1

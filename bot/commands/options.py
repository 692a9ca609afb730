"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from datetime import UTC, datetime

from bot.config import Config
from bot.core.shard import Shard
from bot.errors import UsageError


def add_publisher_arguments(parser: argparse.ArgumentParser) -> None:
    """``--publisher``, ``--format text|json`` and ``--now`` (apply, gc)."""
    parser.add_argument(
        "--publisher",
        metavar="TARGET",
        help="local:DIR or cvmfs:REPO (default: the 'publisher' setting)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--now", metavar="ISO", help="pretend the time is ISO-8601 TIME (tests, replays)"
    )


def parse_time(text: str | None, option: str = "--now") -> datetime:
    """An ISO-8601 time from the command line (UTC when no offset is given); now when None."""
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} '{text}' is not an ISO-8601 time", hint="e.g. 2026-01-31T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def publisher_target(args: argparse.Namespace, config: Config) -> str:
    """``--publisher`` or the ``publisher`` setting; a usage error when neither is given."""
    target: str | None = args.publisher or config.publisher
    if not target:
        raise UsageError("no publisher given", hint="pass --publisher local:DIR or cvmfs:REPO")
    return target


#: what GitLab sets in each job of ``parallel: N`` (https://docs.gitlab.com/ee/ci/yaml/#parallel):
#: CI_NODE_INDEX 1..N and CI_NODE_TOTAL N; in a job without ``parallel`` CI_NODE_INDEX is
#: not set and CI_NODE_TOTAL is 1 (https://docs.gitlab.com/ee/ci/variables/predefined_variables.html)
NODE_INDEX, NODE_TOTAL = "CI_NODE_INDEX", "CI_NODE_TOTAL"


def parse_shard(text: str | None, environ: Mapping[str, str] = os.environ) -> Shard | None:
    """``--shard I/N`` (or ``auto``: GitLab's CI_NODE_INDEX/CI_NODE_TOTAL); None without it."""
    if text is None:
        return None
    if text.strip() != "auto":
        return Shard.parse(text)
    index, total = environ.get(NODE_INDEX, "").strip(), environ.get(NODE_TOTAL, "").strip()
    if not index and total == "1":
        return Shard(1, 1)  # a job without parallel: does everything
    if not index or not total:
        raise UsageError(
            f"--shard auto: {NODE_INDEX} and {NODE_TOTAL} are not set",
            hint="GitLab sets them in the jobs of 'parallel: N'; elsewhere pass --shard I/N",
        )
    return Shard.parse(f"{index}/{total}", option=f"--shard auto ({NODE_INDEX}/{NODE_TOTAL})")

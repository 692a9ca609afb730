"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from bot.config import Config
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

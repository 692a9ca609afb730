"""``wishbot gc --publisher TARGET``: delete images and layers whose grace period is over.

Only what nobody uses any more is deleted, each after its grace period:
retiring paths (wishes removed from the wishlist) with their images,
scheduled images no other path points at, and layers no remaining image
refers to; at most ``max_deletions`` per run. ``--dry-run`` only says what
would go. The publisher tree must exist: gc never creates one.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bot.commands.options import add_publisher_arguments, parse_time
from bot.commands.target import publisher_of, require_tree, require_writable
from bot.config import Config
from bot.errors import UsageError
from bot.publisher.gc import collect


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gc",
        help="delete unused images and layers after their grace period",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_publisher_arguments(parser)
    parser.add_argument(
        "--grace-days", type=int, metavar="DAYS", help="grace period (default: grace_days, 30)"
    )
    parser.add_argument(
        "--max-deletions", type=int, metavar="N", help="cap per run (default: max_deletions)"
    )
    parser.add_argument("--dry-run", action="store_true", help="delete nothing, report only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = Config.load()
    publisher = publisher_of(args.publisher, config)
    grace = config.grace_days if args.grace_days is None else args.grace_days
    if grace < 0:
        raise UsageError("--grace-days must not be negative")
    cap = config.max_deletions if args.max_deletions is None else args.max_deletions
    require_tree(publisher, hint="check the path; gc never creates a publisher tree")
    require_writable(publisher)
    with publisher.lock():
        if not args.dry_run:
            for line in publisher.recover():
                print(f"recovery: {line}", file=sys.stderr)
        report = collect(
            publisher,
            parse_time(args.now),
            grace_days=grace,
            max_deletions=cap,
            dry_run=args.dry_run,
        )
    if args.format == "json":
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(report.render())
    return 0

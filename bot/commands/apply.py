"""``wishbot apply WISHLIST --publisher TARGET``: converge a publisher to a wishlist.

Load the wishlist, resolve every wish against its registry, read what the
publisher serves, plan, and execute the plan (one transaction per image).
A local:DIR that does not exist yet is created (apply is the only command
that creates a tree) and the repository name is recorded in it, so catalog
needs no --cvmfs-repo. On a terminal a live block shows image N of M,
bytes, speed and time left; in logs and pipes, plain step lines. Exit status
0 only when every wish converged; 1 otherwise, naming each failing wish; 2
for a wrong command line, a bad setting, or a wishlist for another repository
than the publisher.

With --shard I/N (N hosts, each run with its own I = 1..N) this run executes
only shard I's share of the plan: every host computes the same split from the
wishlist on its own, no coordinator (wishbot plan --shards N shows it). The
report, its totals line and the exit status cover that share only. --shard
auto takes I and N from CI_NODE_INDEX and CI_NODE_TOTAL (GitLab's parallel:
N). Write the catalog once every shard has finished. Through a CernVM-FS
repository gateway, a shard of several publishes each image in small steps,
each on a lease on the paths it writes; a run alone publishes it in one
transaction on the whole repository (WISHBOT_GATEWAY_LEASES=paths|repository
overrides).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from bot.commands.options import add_publisher_arguments, parse_shard, parse_time
from bot.commands.progress import apply_display, write_lines
from bot.commands.target import publisher_of, require_tree, require_writable
from bot.config import Config
from bot.core.recipe import load_wishlist
from bot.core.shard import Shard
from bot.publisher.apply import ApplyReport, failing_wishes
from bot.publisher.converge import converge
from bot.publisher.repoinfo import check_repository, tree_repository


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "apply",
        help="publish a wishlist's images (layers, flat images, symlinks, thin images)",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("wishlist", metavar="WISHLIST", help="the wishlist YAML file")
    add_publisher_arguments(parser)
    parser.add_argument("--no-thin", action="store_true", help="do not push thin images")
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="execute only shard I of N (1-based) of the plan, one of N hosts publishing "
        "in parallel; 'auto': CI_NODE_INDEX/CI_NODE_TOTAL (GitLab parallel: N)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bot.commands.validate import read_wishlist_file
    from bot.registry.client import RegistryClient

    config = Config.load()
    publisher = publisher_of(args.publisher, config)
    now = parse_time(args.now)
    shard = parse_shard(args.shard)
    if args.no_thin:
        config = _without_thin(config)

    data, problem = read_wishlist_file(args.wishlist)
    if data is None:
        print(problem, file=sys.stderr)
        return 1
    wishlist, problems = load_wishlist(data, args.wishlist)
    if wishlist is None:
        for item in problems:
            print(item, file=sys.stderr)
        return 1

    what = f"the publisher {publisher.target}"
    check_repository(wishlist.cvmfs_repo, tree_repository(publisher), what, where=args.wishlist)
    if publisher.cvmfs_repo:  # a repository is made by cvmfs_server mkfs, never by apply
        require_tree(publisher)
    require_writable(publisher)
    if not publisher.root.exists():
        write_lines([f"wishbot: creating the publisher tree {publisher.root}"], sys.stderr)
    with apply_display(sys.stderr) as display, RegistryClient(config) as client:
        _plan, report = converge(
            wishlist,
            publisher,
            client,
            config=config,
            now=now,
            progress=display.step,
            meter=display.meter,
            watch=display,
            shard=shard,
        )
    render(report, args.format, sys.stdout, shard)
    if report.ok:
        return 0
    write_lines([f"wishbot: not converged: {wish}" for wish in failing_wishes(report)], sys.stderr)
    return 1


def _without_thin(config: Config) -> Config:
    from dataclasses import replace

    return replace(config, thin=False)


def render(report: ApplyReport, fmt: str, out: TextIO, shard: Shard | None = None) -> None:
    if fmt == "json":
        data = report.to_json()
        if shard is not None:
            data["shard"] = str(shard)
        json.dump(data, out, indent=2)
        out.write("\n")
        return
    write_lines(report_lines(report, shard), out)


def report_lines(report: ApplyReport, shard: Shard | None = None) -> list[str]:
    """The text report: a line per image, then the totals (which shard's, with one)."""
    head = "apply:" if shard is None else f"apply: shard {shard}:"
    if not report.results:
        if shard is not None:
            return [f"{head} nothing to do, the publisher already serves this shard's paths"]
        return ["apply: nothing to do, the publisher already serves the wishlist"]
    lines = []
    for result in report.results:
        mark = "ok  " if result.ok else "FAIL"
        line = f"{mark} {result.action:<7} {result.path}"
        if result.platform:
            line += f" ({result.platform})"
        if result.thin_image:
            line += f" thin: {result.thin_image}"
        if not result.ok:
            line += f": {result.message}"
        lines.append(line)
    failed = len(report.failures)
    lines.append(
        f"{head} {len(report.results) - failed} image(s) converged, {failed} failed, "
        f"{report.downloaded_layers} layer(s) downloaded, {report.transactions} transaction(s)"
    )
    return lines

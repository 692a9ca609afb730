"""``wishbot plan WISHLIST``: what ``apply`` would do, as a table, Markdown comment or JSON.

Without ``--base`` the plan covers the whole wishlist (what ``apply`` would do
now). With ``--base OLD`` it covers only what changes between OLD and
WISHLIST: new and changed wishes are resolved, removed wishes have their
images scheduled, unchanged wishes are not contacted at all.

The current state comes from ``--catalog catalog.json``, from
``--publisher TARGET`` (or the ``publisher`` setting), or is empty when
neither is given. A publisher tree that does not exist (a local:DIR typo, an
unmounted cvmfs:REPO) is an error, not an empty publisher; an existing empty
directory is one. Exit status: 0 when the plan has no errors, 1 when it has
(a wish that cannot be resolved, an invalid wishlist, an unmounted
repository), 2 for a wrong command line, a missing local tree, a bad setting,
or a catalog or tree of another repository than the wishlist's. An error about an
image that ``ignoreErrors`` matches is a warning, as in ``validate``.

With ``--shards N`` the plan also says which of N publisher hosts
(``wishbot apply --shard I/N``) executes each path.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.commands.options import parse_time
from bot.config import Config
from bot.core.model import CurrentState, Problem, Resolution, Wish, Wishlist
from bot.core.plan import Plan
from bot.core.recipe import load_wishlist
from bot.core.render import DEFAULT_TITLE, render_json, render_markdown, render_text
from bot.core.shard import Shard, shards_json, shards_text
from bot.errors import PublisherError, UsageError
from bot.runtime.plan_change import plan_change

if TYPE_CHECKING:
    from bot.registry.client import RegistryClient


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show what apply would do (dry run; text, Markdown or JSON)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("wishlist", metavar="WISHLIST", help="the wishlist YAML file")
    parser.add_argument(
        "--base",
        metavar="OLD",
        help="the wishlist before the change: plan only what changes (merge-request view)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--publisher",
        metavar="TARGET",
        help="read the current state from local:DIR, cvmfs:REPO or a read-only mount "
        "such as /cvmfs/unpacked.cern.ch",
    )
    source.add_argument(
        "--catalog", metavar="FILE", help="read the current state from a catalog.json"
    )
    parser.add_argument(
        "--format", choices=("text", "markdown", "json"), default="text", help="output format"
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=60000,
        metavar="CHARS",
        help="size limit of the Markdown output (default 60000)",
    )
    parser.add_argument("--title", default=DEFAULT_TITLE, help="heading of the Markdown output")
    parser.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="also show which of N hosts (apply --shard I/N) executes each path "
        "(text and json; not with --base)",
    )
    parser.add_argument(
        "--now", metavar="ISO", help="pretend the time is ISO-8601 TIME (tests, replays)"
    )
    parser.set_defaults(func=run)


def _load(path: str) -> tuple[Wishlist | None, list[Problem]]:
    from bot.commands.validate import read_wishlist_file

    data, problem = read_wishlist_file(path)
    if data is None:
        return None, [problem] if problem else []
    return load_wishlist(data, path)


def read_catalog(path: str) -> CurrentState:
    """The current state from a ``catalog.json`` file (clear errors for unreadable files)."""
    from bot.core.catalog import state_from_catalog

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the catalog: {exc.strerror or exc}", where=path) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PublisherError(
            f"the catalog is not JSON: {exc}", where=path, hint="pass a catalog.json wishbot wrote"
        ) from None
    return state_from_catalog(data)


def current_state(args: argparse.Namespace, config: Config, cvmfs_repo: str) -> CurrentState:
    """What the publisher serves now; an error when it is not the wishlist's repository."""
    from bot.publisher.repoinfo import check_repository

    if args.catalog:
        state = read_catalog(args.catalog)
        what = f"the catalog {args.catalog}"
        check_repository(cvmfs_repo, state.cvmfs_repo, what, where=args.wishlist)
        return state
    target = args.publisher or config.publisher
    if not target:
        print("wishbot: no publisher given: planning against an empty one", file=sys.stderr)
        return CurrentState(cvmfs_repo)
    root, known = _tree(target)
    check_repository(cvmfs_repo, known, f"the publisher {target}", where=args.wishlist)
    from bot.publisher.state import read_state

    return read_state(root, cvmfs_repo)


def _tree(target: str) -> tuple[Path, str | None]:
    """The tree to read for ``--publisher`` and the repository name it is known by."""
    from bot.commands.target import require_mount, require_tree
    from bot.publisher import open_publisher
    from bot.publisher.repoinfo import recorded_repository, tree_repository

    if target.startswith("/"):
        # a read-only mount such as /cvmfs/unpacked.cern.ch: read it, touch nothing
        require_mount(Path(target))
        return Path(target), recorded_repository(Path(target))
    publisher = open_publisher(target)
    require_tree(
        publisher,
        hint="check the path; to plan for a new publisher leave out --publisher, "
        "or create the empty directory (wishbot apply creates the tree)",
    )
    return publisher.root, tree_repository(publisher)


def resolve(
    config: Config, wishes: tuple[Wish, ...], client: RegistryClient | None = None
) -> list[Resolution]:
    """Resolve ``wishes`` with ``client`` (or a client of ``config``, closed afterwards)."""
    if not wishes:
        return []
    if client is not None:
        return client.resolve_all(wishes)
    from bot.registry.client import RegistryClient

    with RegistryClient(config) as own:
        return own.resolve_all(wishes)


def build_plan(
    args: argparse.Namespace, config: Config, client: RegistryClient | None = None
) -> Plan:
    """Load, diff, resolve and plan as the command line says (no output).

    ``client`` (optional) is the registry client to resolve with, e.g. to count
    its ``requests_made``; by default one is made from ``config``.
    """
    now = parse_time(args.now)
    wishlist, problems = _load(args.wishlist)
    # an unreadable base: every wish counts as new, nothing counts as removed
    base = _load(args.base)[0] if args.base is not None else None
    return plan_change(
        wishlist,
        problems,
        current=lambda cvmfs_repo: current_state(args, config, cvmfs_repo),
        resolve=lambda wishes: resolve(config, tuple(wishes), client),
        now=now,
        grace_days=config.grace_days,
        base=base,
        whole=args.base is None,
    ).plan


def run(args: argparse.Namespace) -> int:
    if args.budget < 1000:
        raise UsageError(f"--budget {args.budget} is too small", hint="use at least 1000")
    _check_shards(args)
    config = Config.load()
    plan = build_plan(args, config)
    if args.format == "json":
        data = render_json(plan)
        if args.shards is not None:
            data["shards"] = shards_json(plan, args.shards)
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    elif args.format == "markdown":
        sys.stdout.write(render_markdown(plan, budget=args.budget, title=args.title))
    else:
        sys.stdout.write(render_text(plan))
        if args.shards is not None:
            sys.stdout.write(shards_text(plan, args.shards))
    return 1 if plan.has_errors else 0


def _check_shards(args: argparse.Namespace) -> None:
    if args.shards is None:
        return
    Shard(1, args.shards)  # the range check
    if args.base is not None:
        raise UsageError(
            "--shards shows how apply splits the whole wishlist; a --base plan is only a change",
            hint="leave out --base",
        )
    if args.format == "markdown":
        raise UsageError("--shards is shown in text and json", hint="use --format text or json")

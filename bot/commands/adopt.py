"""``wishbot adopt WISHLIST --publisher TARGET [--dry-run]``: take over a repository
the reference converter (DUCC) wrote.

Says what of the repository is in DUCC's formats and what wishbot will do with
it, audits it (wishbot verify), and shows the plan of the wishlist against it:
what is already converted stays as it is ("unchanged"), new wishes are
added, paths the wishlist does not name are scheduled for removal (they keep
serving until gc, after the grace period). With --dry-run nothing is written;
without it the plan is applied (wishbot apply) and the result verified.

Exit status: 0 done (or, with --dry-run, a plan without errors), 1 problems, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bot.commands.options import add_publisher_arguments, parse_time, publisher_target
from bot.config import Config
from bot.errors import UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "adopt",
        help="take over a repository written by the reference converter (DUCC)",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("wishlist", metavar="WISHLIST", help="the wishlist (recipe) to publish")
    add_publisher_arguments(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would change, write nothing"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bot.commands.plan import build_plan
    from bot.core.recipe import load_wishlist
    from bot.core.render import render_json, render_text
    from bot.publisher import open_publisher
    from bot.publisher.adopt import inventory
    from bot.publisher.verify import verify

    config = Config.load()
    target = publisher_target(args, config)
    publisher = open_publisher(target)
    if not publisher.root.is_dir():
        raise UsageError(f"{publisher.root} does not exist", hint=f"check --publisher {target}")
    root = publisher.root
    found = inventory(root)
    audit_before = verify(root)
    plan_args = argparse.Namespace(
        wishlist=args.wishlist, now=args.now, catalog=None, publisher=target, base=None
    )
    plan = build_plan(plan_args, config)
    out: dict[str, object] = {
        "schema": "wishbot-adopt/1",
        "dry_run": args.dry_run,
        "inventory": found.to_json(),
        "verify_before": audit_before.to_json(),
        "plan": render_json(plan),
        "applied": None,
        "verify": None,
    }
    text = [f"taking over {publisher.target}:", *(f"  {line}" for line in found.render())]
    text.append("verify, before: " + audit_before.render().replace("\n", "\n  "))
    text.append(render_text(plan).rstrip("\n"))
    renamed = renamed_paths(plan)
    out["renamed"] = [{"from": old, "to": new} for old, new in renamed]
    text.extend(_notes(renamed, plan.images_removed))
    ok = not plan.has_errors
    if not args.dry_run and ok:
        ok = _apply(args, config, publisher, load_wishlist, out, text)
        after = verify(root)
        out["verify"] = after.to_json()
        text.append("verify, after: " + after.render())
        ok = ok and after.ok
    elif args.dry_run:
        text.append("dry run: nothing was written")
    if args.format == "json":
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(text))
    return 0 if ok else 1


def _notes(renamed: list[tuple[str, str]], removed: int) -> list[str]:
    """What taking over renames, and what it retires."""
    notes = [
        f"note: {old} moves to {new} (wishbot's one spelling of the registry); the old path "
        "serves until gc deletes it after the grace period"
        for old, new in renamed
    ]
    if removed > len(renamed):
        notes.append(
            f"note: {removed - len(renamed)} path(s) the wishlist does not name "
            "will retire (they serve until gc deletes them after the grace period)"
        )
    return notes


def _apply(
    args: argparse.Namespace,
    config: Config,
    publisher: Any,
    load_wishlist: Any,
    out: dict[str, object],
    text: list[str],
) -> bool:
    from bot.commands.validate import read_wishlist_file
    from bot.publisher.converge import converge
    from bot.registry.client import RegistryClient

    data, problem = read_wishlist_file(args.wishlist)
    wishlist, _problems = load_wishlist(data or b"", args.wishlist)
    if wishlist is None:
        raise UsageError(f"cannot read the wishlist: {problem}", where=args.wishlist)
    with RegistryClient(config) as client:
        _plan, report = converge(
            wishlist,
            publisher,
            client,
            config=config,
            now=parse_time(args.now),
            progress=lambda line: print(line, file=sys.stderr),
        )
    out["applied"] = report.to_json()
    text.append(
        f"applied: {len(report.results) - len(report.failures)} image(s) converged, "
        f"{len(report.failures)} failed, {report.downloaded_layers} layer(s) downloaded"
    )
    text.extend(f"  FAIL {r.path}: {r.message}" for r in report.failures)
    return report.ok


def renamed_paths(plan: Any) -> list[tuple[str, str]]:
    """(old, new): paths the plan removes because the same image is added under the
    registry's normal spelling (DUCC kept ``docker.io/…``; wishbot writes
    ``registry.hub.docker.com/…``)."""
    from bot.core.layout import image_path
    from bot.core.reference import ReferenceError, parse

    added = {c.path for c in plan.images if c.action == "add"}
    out: list[tuple[str, str]] = []
    for change in plan.images:
        if change.action != "remove":
            continue
        try:
            normal = image_path(parse(change.path))
        except ReferenceError:
            continue
        if normal != change.path and normal in added:
            out.append((change.path, normal))
    return out

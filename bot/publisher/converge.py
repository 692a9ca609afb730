"""One ``apply`` run: resolve, lock, recover, read the state, plan, apply.

Shared by ``wishbot apply`` and the bot's publish step, so the command line
and the bot converge the publisher the same way.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.config import Config
from bot.core.model import Wishlist
from bot.core.plan import Plan, make_plan
from bot.core.recipe import ignored_by
from bot.core.shard import Shard, select
from bot.errors import UsageError
from bot.publisher.apply import ApplyReport, Meter, Progress, Watch, apply_plan, published_configs
from bot.publisher.backend import Publisher
from bot.publisher.diskerrors import disk_errors
from bot.publisher.repoinfo import check_repository, tree_repository
from bot.publisher.scratch import clean_stale
from bot.publisher.state import read_state


def converge(
    wishlist: Wishlist,
    publisher: Publisher,
    client: Any,
    *,
    config: Config,
    now: datetime,
    progress: Progress | None = None,
    meter: Meter | None = None,
    watch: Watch | None = None,
    shard: Shard | None = None,
) -> tuple[Plan, ApplyReport]:
    """Resolve, lock, recover, read the state, plan and apply: one ``apply`` run.

    ``client`` is a :class:`bot.registry.client.RegistryClient` (or anything
    with its ``resolve_all``, ``download_blob``, ``push_blob`` and
    ``push_manifest``). With ``shard`` only that shard's share of the plan is
    executed (and returned): see :mod:`bot.core.shard`.
    """
    if "/" in wishlist.cvmfs_repo:
        # The layout, thin.json URLs and catalog paths would all have to move
        # under the subdirectory; refuse rather than publish a tree whose thin
        # images point elsewhere.
        raise UsageError(
            f"cvmfs_repo '{wishlist.cvmfs_repo}' names a subdirectory, which apply does not "
            "support yet",
            where=wishlist.path,
            hint="publish into the repository root (cvmfs_repo: REPO)",
        )
    check_repository(
        wishlist.cvmfs_repo,
        tree_repository(publisher),
        f"the publisher {publisher.target}",
        where=wishlist.path,
    )
    say = progress or (lambda _line: None)
    say(f"resolving {len(wishlist.wishes)} wish(es)")
    remember = getattr(client, "remember_configs", None)
    if remember is not None:
        remember(published_configs(publisher.root))  # no config download for those
    resolutions = client.resolve_all(wishlist.wishes)
    with disk_errors(f"publisher {publisher.target}"), publisher.lock():
        for line in publisher.recover():
            say(f"recovery: {line}")
        for name in clean_stale(Path(tempfile.gettempdir())):
            say(f"recovery: removed {name}, the scratch directory of a killed run")
        current = read_state(publisher.root, wishlist.cvmfs_repo)
        plan = make_plan(
            wishlist.wishes,
            resolutions,
            current,
            now,
            grace_days=config.grace_days,
            cvmfs_repo=wishlist.cvmfs_repo,
        )
        if shard is not None:
            plan = _share(plan, shard, say)
        publisher.share_with(shard.count if shard is not None else 1)
        report = apply_plan(
            plan,
            publisher,
            client,
            config=config,
            progress=say,
            output_format=wishlist.output_format,
            meter=meter,
            watch=watch,
        )
    return plan, honour_ignore_errors(report, wishlist)


def _share(plan: Plan, shard: Shard, say: Progress) -> Plan:
    """The part of ``plan`` that ``shard`` executes."""
    share = select(plan, shard)
    paths = len({change.path for change in share.images})
    total = len({change.path for change in plan.images})
    say(f"shard {shard}: {paths} of {total} path(s)")
    return share


def honour_ignore_errors(report: ApplyReport, wishlist: Wishlist) -> ApplyReport:
    """A wish that could not be resolved and matches ``ignoreErrors`` is not
    a failure of the run: its row stays in the report, marked ignored."""
    for index, result in enumerate(report.results):
        glob = ignored_by(result.wish, wishlist.ignore_errors) if result.wish else None
        if result.action == "error" and not result.ok and glob is not None:
            message = f"not published, ignored (matches ignoreErrors '{glob}'): {result.message}"
            report.results[index] = replace(result, ok=True, message=message)
    return report

"""One ``apply`` run: resolve, lock, recover, read the state, plan, apply.

Shared by ``wishbot apply`` and the bot's publish step, so the command line
and the bot converge the publisher the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.config import Config
from bot.core.model import Wishlist
from bot.core.plan import Plan, make_plan
from bot.errors import UsageError
from bot.publisher.apply import ApplyReport, Meter, Progress, apply_plan, published_configs
from bot.publisher.backend import Publisher
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
) -> tuple[Plan, ApplyReport]:
    """Resolve, lock, recover, read the state, plan and apply: one ``apply`` run.

    ``client`` is a :class:`bot.registry.client.RegistryClient` (or anything
    with its ``resolve_all``, ``download_blob``, ``push_blob`` and
    ``push_manifest``).
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
    say = progress or (lambda _line: None)
    say(f"resolving {len(wishlist.wishes)} wish(es)")
    remember = getattr(client, "remember_configs", None)
    if remember is not None:
        remember(published_configs(publisher.root))  # no config download for those
    resolutions = client.resolve_all(wishlist.wishes)
    with publisher.lock():
        for line in publisher.recover():
            say(f"recovery: {line}")
        current = read_state(publisher.root, wishlist.cvmfs_repo)
        plan = make_plan(
            wishlist.wishes,
            resolutions,
            current,
            now,
            grace_days=config.grace_days,
            cvmfs_repo=wishlist.cvmfs_repo,
        )
        report = apply_plan(
            plan,
            publisher,
            client,
            config=config,
            progress=say,
            output_format=wishlist.output_format,
            meter=meter,
        )
    return plan, report

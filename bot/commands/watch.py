"""``wishbot watch``: poll the forge instead of receiving webhooks."""

from __future__ import annotations

import argparse
import hashlib
import logging
import time

from bot.config import Config
from bot.errors import WishbotError
from bot.runtime.journal import Journal
from bot.runtime.watcher import Watcher
from bot.runtime.wiring import Forges, load_pipeline, state_dir
from bot.runtime.workflow import recover

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="poll open merge requests and the default branch",
        description="Review merge requests whose head moved and publish when the default "
        "branch moved, every --interval seconds.",
    )
    parser.add_argument("--repository", help="owner/name (or a path for the local forge)")
    parser.add_argument("--state-dir", help="where to remember what was seen (default: state_dir)")
    parser.add_argument("--interval", type=float, help="seconds between polls")
    parser.add_argument("--once", action="store_true", help="poll once and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = Config.load()
    forge = Forges(config)(config.forge, args.repository or _first(config))
    directory = state_dir(config, args.state_dir)
    journal = Journal(directory / "journal.sqlite")
    recover(forge, journal)
    name = hashlib.sha256(forge.repository.encode()).hexdigest()[:16]
    watcher = Watcher(
        forge, load_pipeline(config), config, journal, directory / f"watch-{name}.json"
    )
    interval = args.interval if args.interval is not None else config.poll_interval
    while True:
        try:
            for outcome in watcher.poll_once():
                print(f"wishbot: {outcome.action} {outcome.sha[:12]}: {outcome.detail}", flush=True)
        except WishbotError as exc:
            if args.once:
                raise
            log.warning("poll failed: %s", exc)
        if args.once:
            return 0
        time.sleep(max(interval, 1.0))


def _first(config: Config) -> str:
    return config.repositories[0] if config.repositories else config.forge_url

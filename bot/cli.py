"""The ``wishbot`` command line: parse arguments, run one subcommand, print errors.

Each subcommand lives in ``bot/commands/<name>.py`` and exposes
``register(subparsers)``; it sets ``func`` on its parser, a callable taking the
parsed arguments and returning the exit code. Only :class:`WishbotError` is
caught here: it is printed without a traceback (``--debug`` shows one); so
is an ``OSError`` (a read-only or full disk), with the path and what to do.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from bot import __version__
from bot.errors import WishbotError

COMMANDS = (
    "validate",
    "schema",
    "resolve",
    "plan",
    "apply",
    "gc",
    "catalog",
    "verify",
    "adopt",
    "ci",
    "serve",
    "watch",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wishbot",
        description="Validate, plan and publish container-image wishlists onto CernVM-FS.",
    )
    parser.add_argument("--version", action="version", version=f"wishbot {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"bot.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bot.commands.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except WishbotError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"wishbot: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the disk under a command (read-only, not ours, full)
        from bot.publisher.diskerrors import disk_error

        if args.debug:
            traceback.print_exc()
        print(f"wishbot: error: {disk_error(exc, 'cannot go on')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wishbot: interrupted", file=sys.stderr)
        return 130

"""The ``wishbot`` command line: parse arguments, run one subcommand, print errors.

Each subcommand lives in ``bot/commands/<name>.py`` and exposes
``register(subparsers)``; it sets ``func`` on its parser, a callable taking the
parsed arguments and returning the exit code. :class:`WishbotError` is printed
without a traceback (``--debug`` shows one); so is an :class:`OSError` that
escaped a command (a file or directory it could not use), naming the path.
Help texts come from docstrings: their reStructuredText markup
(````literal````, ``:class:`X```) is shown as plain text.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
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
    "lease",
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
    for command in subparsers.choices.values():
        _plain_help(command)
    return parser


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain(text: str) -> str:
    """Docstring markup as plain text: ````--base```` -> ``--base``, ``:class:`X``` -> ``X``."""
    return _ROLE.sub(r"\1", text).replace("``", "")


def _plain_help(parser: argparse.ArgumentParser) -> None:
    if parser.description:
        parser.description = plain(parser.description)
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = plain(action.help)


def error_text(exc: WishbotError) -> str:
    """``wishbot: error: where: what — what to do``, with ``error:`` said once."""
    text = exc.message
    for prefix in ("wishbot: error: ", "error: "):
        text = text.removeprefix(prefix)
    where, sep, rest = text.partition(": error: ")
    if sep and " " not in where:
        text = f"{where}: {rest}"  # "x.yaml: error: …" (a Problem) -> "x.yaml: …"
    if exc.where:
        text = f"{exc.where}: {text}"
    if exc.hint:
        text += f" — {exc.hint}"
    return f"wishbot: error: {text}"


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
        print(error_text(exc), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the disk under a command (read-only, not ours, full)
        if args.debug:
            traceback.print_exc()
        print(os_error_text(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wishbot: interrupted", file=sys.stderr)
        return 130


def os_error_text(exc: OSError) -> str:
    """``wishbot: error: cannot use '/srv/tree/.wishbot': Permission denied — what to do``
    from an OSError that escaped a command (one rule: :func:`disk_error`)."""
    from bot.publisher.diskerrors import disk_error

    return error_text(disk_error(exc, "cannot use"))

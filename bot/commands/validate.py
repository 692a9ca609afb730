"""``wishbot validate FILE...``: check wishlists offline (YAML, schema, meaning).

Exit status: 0 when every file is valid (warnings allowed), 1 when any file
is invalid or cannot be read, 2 for a wrong command line (argparse).
:func:`validate_file` is the reusable part; :func:`render` prints problems as
text (``path:line:col: severity: message``) or JSON (a list of objects).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from bot.core.model import Location, Problem, Wishlist
from bot.core.recipe import load_wishlist
from bot.core.safeyaml import MAX_BYTES


def read_wishlist_file(path: str) -> tuple[bytes | None, Problem | None]:
    """The file's bytes (at most one byte over the size limit), or a problem saying why not."""
    where = Location(path)
    try:
        # a FIFO or device would block or never end: look before opening
        if not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path):
            return None, Problem("error", "not a regular file", where, "unreadable")
        with open(path, "rb") as handle:
            return handle.read(MAX_BYTES + 1), None
    except FileNotFoundError:
        return None, Problem(
            "error", "no such file", where, "not-found", "check the path of the wishlist"
        )
    except IsADirectoryError:
        return None, Problem("error", "is a directory, not a wishlist file", where, "unreadable")
    except PermissionError:
        return None, Problem("error", "permission denied", where, "unreadable")
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        return None, Problem("error", f"cannot read the file: {reason}", where, "unreadable")


def validate_file(path: str) -> tuple[Wishlist | None, list[Problem]]:
    """Read and check one wishlist file; the Wishlist is None when there is an error."""
    data, problem = read_wishlist_file(path)
    if data is None:
        return None, [problem] if problem else []
    return load_wishlist(data, path)


def render(problems: Sequence[Problem], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        payload: list[dict[str, Any]] = [problem.to_json() for problem in problems]
        json.dump(payload, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return
    for problem in problems:
        out.write(f"{_printable(str(problem))}\n")


def _printable(text: str) -> str:
    """Keep one problem on one line whatever the wishlist contained."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check wishlist files (YAML, schema, image references) without network access",
        description=(
            "Check wishlist files offline. Exit 0 when all are valid (warnings allowed), "
            "1 when any is invalid."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="wishlist YAML file")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="output format (default: text, one problem per line)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    problems: list[Problem] = []
    invalid = 0
    wishes = 0
    for path in args.files:
        wishlist, found = validate_file(path)
        problems.extend(found)
        if wishlist is None:
            invalid += 1
        else:
            wishes += len(wishlist.wishes)
    render(problems, args.format, sys.stdout)
    if args.format == "text":
        errors = sum(problem.severity == "error" for problem in problems)
        warnings = len(problems) - errors
        files = len(args.files)
        verdict = f"{invalid} of {files} invalid" if invalid else f"{files} valid"
        noun = "file" if files == 1 else "files"
        print(
            f"wishbot validate: {verdict} {noun}, {errors} error(s), {warnings} warning(s)"
            + ("" if invalid else f", {wishes} image(s)"),
            file=sys.stderr,
        )
    return 1 if invalid else 0
